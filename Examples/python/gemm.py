"""C[M,N] = A[M,K] . B[K,N] on a virtual NeuronCore, checked against numpy.

    python3 Examples/python/gemm.py                    # 512 x 512 x 512, fp32
    python3 Examples/python/gemm.py 1000 300 700 bf16  # M K N, operands in bf16

The kernel tiles C into 128 x 512 blocks (the PE array's 128 columns, one 2 KiB PSUM bank of
fp32) and walks K in steps of 128 (the PE array's rows), accumulating in PSUM: the first matmul
of a block overwrites, the others add. A is read transposed straight from HBM (a strided DMA
access), because the stationary operand is [K, M]. Blocks go column by column, and the column's
panel of B (K x 512) stays in SBUF for all of its blocks when it fits, so B crosses DMA once.
In bf16 the HBM tensors are bf16 too (the host rounds A and B to nearest even), so DMA moves
half the bytes and the PE runs 4x faster.

Engines run in parallel, so the stages hand over with semaphores, double buffered:

    DMA   load B's panel (column j) --PANEL_LOADED--> PE starts the column
    DMA   load A^T (step s) --LOADED-->  PE  matmul (step s) --CONSUMED--> DMA may reuse the buffer
    PE    last matmul of block t --PSUM_READY--> DVE copy PSUM -> SBUF --EVACUATED--> PE may reuse the bank
    DVE   --EVACUATED--> DMA store block t --STORED--> DVE may reuse the SBUF output tile

It prints the host's wall time of the execution, the estimated device time, and GFLOP/s of both.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import numpy as np  # noqa: E402

import vtrn  # noqa: E402

TILE_K, TILE_M, TILE_N = 128, 128, 512  # partitions; PE columns; fp32 elements of one PSUM bank
RESIDENT_BYTES = 96 * 1024  # of each SBUF partition, for two panels of B
LOADED, CONSUMED, PSUM_READY, EVACUATED, STORED, PANEL_LOADED = range(6)  # semaphores


def build(runtime, m_size, k_size, n_size, dtype):
    program = runtime.program()
    a = program.parameter("a", (m_size, k_size), dtype)
    b = program.parameter("b", (k_size, n_size), dtype)
    c = program.parameter("c", (m_size, n_size), "float32")
    k_starts = range(0, k_size, TILE_K)
    n_starts = range(0, n_size, TILE_N)
    blocks = [(m0, n0) for n0 in n_starts for m0 in range(0, m_size, TILE_M)]
    steps_per_column = len(blocks) // len(n_starts) * len(k_starts)
    stationary = [program.sbuf((TILE_K, TILE_M), dtype) for _ in range(2)]
    # B's panel for a column of blocks, [K, 512], stays in SBUF while every block of the column
    # uses it, when two panels fit; else B streams through two tiles like A^T.
    resident = 2 * len(k_starts) * TILE_N * vtrn.numpy_dtype(dtype).itemsize <= RESIDENT_BYTES
    panels = [[program.sbuf((TILE_K, TILE_N), dtype) for _ in k_starts] for _ in range(2 if resident else 0)]
    moving = [program.sbuf((TILE_K, TILE_N), dtype) for _ in range(0 if resident else 2)]
    accumulators = [program.psum((TILE_M, TILE_N), "float32") for _ in range(2)]
    results = [program.sbuf((TILE_M, TILE_N), "float32") for _ in range(2)]

    step = 0
    for block, (m0, n0) in enumerate(blocks):
        m, n = min(TILE_M, m_size - m0), min(TILE_N, n_size - n0)
        column = n_starts.index(n0)
        if resident and m0 == 0:  # a new column: load its panel of B
            panel = panels[column % 2]
            for index, k0 in enumerate(k_starts):
                k = min(TILE_K, k_size - k0)
                # The panel buffer is free once every matmul of column - 2 is done.
                free = (CONSUMED, (column - 1) * steps_per_column) if index == 0 and column >= 2 else None
                program.dma_copy(panel[index][:k, :n], b[k0:k0 + k, n0:n0 + n], wait=free,
                                 signal=(PANEL_LOADED, 1) if index == len(k_starts) - 1 else None)
            program.sem_wait("pe", PANEL_LOADED, column + 1)
        accumulator = accumulators[block % 2][:m, :n]
        if block >= 2:  # the bank still holds block - 2 until the DVE has copied it out
            program.sem_wait("pe", EVACUATED, block - 1)
        for index, k0 in enumerate(k_starts):
            k = min(TILE_K, k_size - k0)
            buffer = step % 2
            # A^T[k0:k0+k, m0:m0+m]: partition i reads A's column k0 + i (stride 1), its free axis
            # walks a row of A (stride K). The buffer is free once matmul step - 2 is done.
            program.dma_copy(stationary[buffer][:k, :m], a.T[k0:k0 + k, m0:m0 + m],
                             wait=(CONSUMED, step - 1) if step >= 2 else None, signal=(LOADED, 1) if resident else None)
            if resident:
                rhs = panels[column % 2][index][:k, :n]
            else:
                rhs = moving[buffer][:k, :n]
                program.dma_copy(rhs, b[k0:k0 + k, n0:n0 + n], signal=(LOADED, 1))
            program.matmul(accumulator, stationary[buffer][:k, :m], rhs, accumulate=index > 0,
                           wait=(LOADED, step + 1), signal=(CONSUMED, 1))
            step += 1
        program.sem_signal("pe", PSUM_READY, 1)
        if block >= 1:  # store the previous block now, so its DMA overlaps this block's loads
            store(program, c, blocks, block - 1, results, m_size, n_size)
        if block >= 2:  # the SBUF output tile still holds block - 2 until DMA has stored it
            program.sem_wait("dve", STORED, block - 1)
        program.tensor_copy(results[block % 2][:m, :n], accumulator, wait=(PSUM_READY, block + 1),
                            signal=(EVACUATED, 1))
    store(program, c, blocks, len(blocks) - 1, results, m_size, n_size)
    return program


def store(program, c, blocks, block, results, m_size, n_size):
    m0, n0 = blocks[block]
    m, n = min(TILE_M, m_size - m0), min(TILE_N, n_size - n0)
    program.dma_copy(c[m0:m0 + m, n0:n0 + n], results[block % 2][:m, :n], wait=(EVACUATED, block + 1),
                     signal=(STORED, 1))


def main():
    arguments = [argument for argument in sys.argv[1:] if argument not in ("fp32", "bf16")]
    dtype = "bf16" if "bf16" in sys.argv[1:] else "fp32"
    m_size, k_size, n_size = (int(value) for value in arguments) if arguments else (512, 512, 512)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m_size, k_size)).astype(np.float32)
    b = rng.standard_normal((k_size, n_size)).astype(np.float32)

    with vtrn.Runtime(topology="trn1") as runtime:
        device = runtime.device(0)
        start = time.perf_counter()
        with build(runtime, m_size, k_size, n_size, dtype) as program, device.load(program, core=0) as kernel:
            built = time.perf_counter() - start
            print(f"C[{m_size},{n_size}] = A[{m_size},{k_size}] . B[{k_size},{n_size}] in {dtype}: "
                  f"{program.instruction_count} instructions, built and loaded in {built * 1e3:.1f} ms")
            a_hbm = device.to_device(a.astype(vtrn.numpy_dtype(dtype)))
            b_hbm = device.to_device(b.astype(vtrn.numpy_dtype(dtype)))
            c_hbm = device.allocate(m_size * n_size * 4)
            runs = []
            for _ in range(5):
                with kernel.execute(a=a_hbm, b=b_hbm, c=c_hbm) as fence:
                    fence.wait()
                    runs.append(fence.info)
            result = device.from_device(c_hbm, np.float32, (m_size, n_size))
            for memory in (a_hbm, b_hbm, c_hbm):
                memory.free()

    # The reference multiplies the operands as the device saw them (rounded to bf16, if so) in
    # float64; fp32 accumulation over K stays within K * 2^-24 of sum |a||b| per element.
    a_seen = a.astype(vtrn.numpy_dtype(dtype)).astype(np.float64)
    b_seen = b.astype(vtrn.numpy_dtype(dtype)).astype(np.float64)
    reference = a_seen @ b_seen
    bound = k_size * 2.0 ** -24 * (np.abs(a_seen) @ np.abs(b_seen)) + 1e-30
    worst = float(np.max(np.abs(result - reference) / bound))

    flops = 2.0 * m_size * n_size * k_size
    best = min(runs, key=lambda info: info.wall_ns)
    info = runs[-1]
    print(f"  wall time    {best.wall_ns / 1e3:10.1f} us  (best of {len(runs)})  {flops / best.wall_ns:8.2f} GFLOP/s")
    print(f"  device time  {info.device_ns / 1e3:10.1f} us  ({info.device_cycles} PE cycles)  "
          f"{flops / info.device_ns:8.2f} GFLOP/s")
    busy = ", ".join(f"{engine} {info.engine_busy_ns[engine] / 1e3:.1f}" for engine in ("pe", "dve", "dma"))
    print(f"  busy (us)    {busy}; instructions {info.instructions}")
    if not all(run.device_ns == info.device_ns for run in runs):
        print("the device time differs between runs of the same kernel", file=sys.stderr)
        return 1
    if worst > 1:
        print(f"wrong result: the worst element is {worst:.2f}x its error bound", file=sys.stderr)
        return 1
    print(f"verified against numpy: the worst element uses {worst:.1%} of its fp32 error bound")
    return 0


if __name__ == "__main__":
    sys.exit(main())
