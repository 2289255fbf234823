"""Row softmax of X[R, D] on a virtual NeuronCore, checked against numpy.

    python3 Examples/python/softmax.py              # 1000 rows of 512
    python3 Examples/python/softmax.py 300 2048     # R D

Rows go to partitions, 128 at a time. For each block of rows:

    DMA   x <- X[rows]                                                 --LOADED-->
    DVE   negated_max = -max(x) along the row            (TENSOR_REDUCE, negate)  --REDUCED-->
    ACT   e = exp(x + negated_max), sums = sum(e)        (ACTIVATE, bias, accumulate_out)
    ACT   inverse = 1 / sums                             (ACTIVATE reciprocal)  --INVERTED-->
    DVE   e = e * inverse                                (TENSOR_SCALAR, a [P,1] operand)  --SCALED-->
    DMA   Y[rows] <- e                                                 --STORED-->

Each semaphore counts blocks, and every tile is double buffered, so block b + 1 loads while block
b computes; a stage reuses a buffer only once the stage of block b - 1 that read it has signalled.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import numpy as np  # noqa: E402

import vtrn  # noqa: E402

LOADED, REDUCED, INVERTED, SCALED, STORED, EXPONENTIATED = range(6)  # semaphores, counting blocks


def build(runtime, rows, columns):
    program = runtime.program()
    x_hbm = program.parameter("x", (rows, columns), "float32")
    y_hbm = program.parameter("y", (rows, columns), "float32")
    x = [program.sbuf((128, columns)) for _ in range(2)]
    e = [program.sbuf((128, columns)) for _ in range(2)]
    negated_max = [program.sbuf((128, 1)) for _ in range(2)]
    sums = [program.sbuf((128, 1)) for _ in range(2)]
    inverse = [program.sbuf((128, 1)) for _ in range(2)]

    starts = list(range(0, rows, 128))
    for block, start in enumerate(starts):
        p = min(128, rows - start)
        i = block % 2
        # x[i] is free once block - 2's exp has read it.
        program.dma_copy(x[i][:p], x_hbm[start:start + p],
                         wait=(EXPONENTIATED, block - 1) if block >= 2 else None, signal=(LOADED, 1))
        if block >= 1:  # store the previous block after this load, so that they overlap
            store(program, y_hbm, e, starts, block - 1, rows)
        program.tensor_reduce(negated_max[i][:p], x[i][:p], "max", negate=True, wait=(LOADED, block + 1),
                              signal=(REDUCED, 1))
        if block >= 2:  # e[i] is free once block - 2 has been stored
            program.sem_wait("act", STORED, block - 1)
        program.activate(e[i][:p], "exp", x[i][:p], bias=negated_max[i][:p], accumulate_out=sums[i][:p],
                         wait=(REDUCED, block + 1), signal=(EXPONENTIATED, 1))
        program.activate(inverse[i][:p], "reciprocal", sums[i][:p], signal=(INVERTED, 1))
        program.tensor_scalar(e[i][:p], e[i][:p], "multiply", inverse[i][:p], wait=(INVERTED, block + 1),
                              signal=(SCALED, 1))
    store(program, y_hbm, e, starts, len(starts) - 1, rows)
    return program


def store(program, y_hbm, e, starts, block, rows):
    start = starts[block]
    p = min(128, rows - start)
    program.dma_copy(y_hbm[start:start + p], e[block % 2][:p], wait=(SCALED, block + 1), signal=(STORED, 1))


def main():
    rows, columns = (int(value) for value in sys.argv[1:3]) if len(sys.argv) > 2 else (1000, 512)
    x = (np.random.default_rng(0).standard_normal((rows, columns)) * 4).astype(np.float32)

    with vtrn.Runtime(topology="trn1") as runtime:
        device = runtime.device(0)
        with build(runtime, rows, columns) as program, device.load(program) as kernel, \
                kernel.execute(x=x, y=None) as fence:
            y = fence.result("y")
            info = fence.info

    shifted = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    reference = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    error = float(np.max(np.abs(y - reference)))
    print(f"softmax of {rows} x {columns}: wall {info.wall_ns / 1e3:.1f} us, device {info.device_ns / 1e3:.1f} us, "
          f"instructions {info.instructions}")
    if not np.allclose(y, reference, rtol=1e-5, atol=1e-7):
        print(f"wrong result: largest error {error:.3g}", file=sys.stderr)
        return 1
    print(f"verified against numpy: largest error {error:.3g}, rows sum to 1 within "
          f"{float(np.max(np.abs(y.sum(axis=1) - 1))):.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
