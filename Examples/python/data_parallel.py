"""One data-parallel training step across many Trainium devices, from Python, checked against numpy.

    VTRN_TOPOLOGY=trn1.32xlarge python3 Examples/python/data_parallel.py        # 16 devices, 1 process
    mpirun -np 4 python3 Examples/python/data_parallel.py                       # 4 processes x 4 devices
                                        (as root add --allow-run-as-root; on 2 CPUs --oversubscribe)

Each rank (core 0 of a device) holds a shard of the batch, X_r [128, 128] and dY_r [128, 256], and
computes its weight gradient G_r = X_r^T . dY_r on the tensor engine. The gradients are summed
across the ranks twice: inside the kernel (the CC engine all-reduces the gradient tile once the
matmul's result is in SBUF, ordered by semaphores) and from the host (``Communicator.all_reduce``
of each rank's local gradient). Both are compared with numpy's sum of the shards' gradients.
Under mpirun each process hosts 16/P of the devices and the communicator spans the processes.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import numpy as np  # noqa: E402

import vtrn  # noqa: E402

BATCH, IN, OUT = 128, 128, 256
LOADED, MULTIPLIED, COPIED, REDUCED = range(4)  # semaphores


def shard(rank):
    generator = np.random.default_rng(rank)
    return (generator.standard_normal((BATCH, IN)).astype(np.float32),
            generator.standard_normal((BATCH, OUT)).astype(np.float32))


def main():
    processes = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    process = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    topology = os.environ.get("VTRN_TOPOLOGY", "trn1.32xlarge")
    with vtrn.Runtime(topology=topology) as runtime:
        total = min(len(runtime.devices), 16)
        local = total // processes
        devices = runtime.devices[process * local:(process + 1) * local]
        with vtrn.Communicator(runtime, devices, mpi=processes > 1) as comm:
            program = runtime.program()
            x = program.parameter("x", (BATCH, IN))
            dy = program.parameter("dy", (BATCH, OUT))
            grad = program.parameter("grad", (IN, OUT))
            x_tile, dy_tile = program.sbuf((BATCH, IN)), program.sbuf((BATCH, OUT))
            g_psum, g_tile, g_sum = program.psum((IN, OUT)), program.sbuf((IN, OUT)), program.sbuf((IN, OUT))
            program.dma_copy(x_tile, x)
            program.dma_copy(dy_tile, dy, signal=(LOADED, 1))
            program.matmul(g_psum, x_tile, dy_tile, wait=(LOADED, 1), signal=(MULTIPLIED, 1))
            program.tensor_copy(g_tile, g_psum, wait=(MULTIPLIED, 1), signal=(COPIED, 1))
            program.all_reduce(comm, g_sum, g_tile, wait=(COPIED, 1), signal=(REDUCED, 1))
            program.dma_copy(grad, g_sum, wait=(REDUCED, 1))

            shards = {rank: shard(rank) for rank in range(comm.size)}
            expected = sum(x_r.astype(np.float64).T @ dy_r.astype(np.float64) for x_r, dy_r in shards.values())
            started = time.perf_counter()
            kernels = [device.load(program, core=0) for device in devices]
            fences = [kernel.execute(x=shards[rank][0], dy=shards[rank][1], grad=None)
                      for kernel, rank in zip(kernels, comm.local_ranks)]
            in_kernel = [fence.result("grad") for fence in fences]
            kernel_seconds = time.perf_counter() - started
            device_ns = max(fence.info.device_ns for fence in fences)
            cc_ns = max(fence.info.engine_busy_ns["cc"] for fence in fences)

            local_gradients = [shards[rank][0].T @ shards[rank][1] for rank in comm.local_ranks]
            started = time.perf_counter()
            from_host = comm.all_reduce_arrays(local_gradients)
            host_seconds = time.perf_counter() - started

            worst = max(float(np.max(np.abs(result.reshape(IN, OUT) - expected) / (1 + np.abs(expected))))
                        for result in in_kernel + from_host)
            ok = worst < 1e-4
            print(f"data_parallel.py: {comm.size} ranks ({local} in process {process} of {processes}, {topology})")
            print(f"  kernel, matmul + in-kernel all-reduce: {kernel_seconds * 1e3:.1f} ms wall, estimated device time "
                  f"{device_ns / 1e3:.1f} us (CC engine {cc_ns / 1e3:.1f} us)")
            print(f"  host-called all-reduce of {IN * OUT * 4 // 1024} KiB per rank: {host_seconds * 1e3:.1f} ms wall")
            print(f"  worst relative error against numpy: {worst:.2e}: "
                  f"{'verified against numpy' if ok else 'MISMATCH'}")
            for fence in fences:
                fence.close()
            for kernel in kernels:
                kernel.close()
            program.close()
            return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
