"""RMS normalisation of X[R, D] with a weight vector W[D] on a virtual NeuronCore, checked
against numpy: Y = X / sqrt(mean(X^2 along the row) + eps) * W.

    python3 Examples/python/rmsnorm.py              # 1000 rows of 1024
    python3 Examples/python/rmsnorm.py 300 4096     # R D

W is loaded once, broadcast to all 128 partitions by a DMA read whose partition stride is 0.
Rows go to partitions, 128 at a time. For each block of rows:

    DMA   x <- X[rows]                                                   --LOADED-->
    ACT   mean = sum((x / sqrt(D))^2)       (ACTIVATE square, scale, accumulate_out)  --SQUARED-->
    DVE   rstd = (mean + eps) rsqrt         (TENSOR_SCALAR, two stages)  --RSTD-->
    ACT   y = x * rstd                      (ACTIVATE copy, a [P,1] scale)  --SCALED-->
    DVE   y = y * w                         (TENSOR_TENSOR)  --WEIGHTED-->
    DMA   Y[rows] <- y                                                   --STORED-->

Each semaphore counts blocks; tiles are double buffered, so block b + 1 loads while b computes.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import numpy as np  # noqa: E402

import vtrn  # noqa: E402

EPSILON = 1e-6
LOADED, SQUARED, RSTD, SCALED, WEIGHTED, STORED, WEIGHTS = range(7)  # semaphores


def build(runtime, rows, columns):
    program = runtime.program()
    x_hbm = program.parameter("x", (rows, columns), "float32")
    w_hbm = program.parameter("w", (columns,), "float32")
    y_hbm = program.parameter("y", (rows, columns), "float32")
    w = program.sbuf((128, columns))
    x = [program.sbuf((128, columns)) for _ in range(2)]
    y = [program.sbuf((128, columns)) for _ in range(2)]
    squares = program.sbuf((128, columns))  # ACTIVATE writes them; only their sums matter
    mean = [program.sbuf((128, 1)) for _ in range(2)]
    rstd = [program.sbuf((128, 1)) for _ in range(2)]

    program.dma_copy(w, w_hbm.broadcast_to((128, columns)), signal=(WEIGHTS, 1))
    program.sem_wait("dve", WEIGHTS, 1)
    starts = list(range(0, rows, 128))
    for block, start in enumerate(starts):
        p = min(128, rows - start)
        i = block % 2
        # x[i] is free once block - 2's scaling (its last reader) has finished.
        program.dma_copy(x[i][:p], x_hbm[start:start + p], wait=(SCALED, block - 1) if block >= 2 else None,
                         signal=(LOADED, 1))
        if block >= 1:
            store(program, y_hbm, y, starts, block - 1, rows)
        program.activate(squares[:p], "square", x[i][:p], scale=1 / np.sqrt(columns), accumulate_out=mean[i][:p],
                         wait=(LOADED, block + 1), signal=(SQUARED, 1))
        program.tensor_scalar(rstd[i][:p], mean[i][:p], "add", EPSILON, "rsqrt", 0.0, wait=(SQUARED, block + 1),
                              signal=(RSTD, 1))
        if block >= 2:  # y[i] is free once block - 2 has been stored
            program.sem_wait("act", STORED, block - 1)
        program.activate(y[i][:p], "copy", x[i][:p], scale=rstd[i][:p], wait=(RSTD, block + 1), signal=(SCALED, 1))
        program.tensor_tensor(y[i][:p], y[i][:p], w[:p], "multiply", wait=(SCALED, block + 1), signal=(WEIGHTED, 1))
    store(program, y_hbm, y, starts, len(starts) - 1, rows)
    return program


def store(program, y_hbm, y, starts, block, rows):
    start = starts[block]
    p = min(128, rows - start)
    program.dma_copy(y_hbm[start:start + p], y[block % 2][:p], wait=(WEIGHTED, block + 1), signal=(STORED, 1))


def main():
    rows, columns = (int(value) for value in sys.argv[1:3]) if len(sys.argv) > 2 else (1000, 1024)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, columns)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, columns).astype(np.float32)

    with vtrn.Runtime(topology="trn1") as runtime:
        device = runtime.device(0)
        with build(runtime, rows, columns) as program, device.load(program) as kernel, \
                kernel.execute(x=x, w=w, y=None) as fence:
            y = fence.result("y")
            info = fence.info

    x64 = x.astype(np.float64)
    reference = x64 / np.sqrt(np.mean(x64 * x64, axis=1, keepdims=True) + EPSILON) * w
    error = float(np.max(np.abs(y - reference)))
    print(f"rmsnorm of {rows} x {columns}: wall {info.wall_ns / 1e3:.1f} us, device {info.device_ns / 1e3:.1f} us, "
          f"instructions {info.instructions}")
    if not np.allclose(y, reference, rtol=1e-5, atol=1e-6):
        print(f"wrong result: largest error {error:.3g}", file=sys.stderr)
        return 1
    print(f"verified against numpy: largest error {error:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
