"""Communicators and collectives from Python: every operation, dtype and group size against a
numpy reference that folds in the documented ring order (exact: the same arithmetic in the same
order), kernels that all-reduce on the CC engine, and every error a user meets."""

import os
import shutil
import subprocess
import sys
import time

import ml_dtypes
import numpy
import pytest

import vtrn
from support import child_environment, failure, open_runtime

REPOSITORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

DTYPES = {"fp32": numpy.float32, "bf16": ml_dtypes.bfloat16, "fp16": numpy.float16, "fp8_e4m3": ml_dtypes.float8_e4m3,
          "int32": numpy.int32, "int8": numpy.int8, "uint8": numpy.uint8}


def chunk(index, count, parts):
    base, extra = divmod(count, parts)
    start = index * base + min(index, extra)
    return slice(start, start + base + (1 if index < extra else 0))


def combine(op, a, b):
    if op == "max":
        return numpy.maximum(a, b)
    if op == "min":
        return numpy.minimum(a, b)
    with numpy.errstate(over="ignore"):
        return a + b  # in the dtype: rounded (floats) or wrapped (integers) at every step


def ring_reduce(inputs, op="add", chunks=None):
    """The ring's fold: chunk c from rank c+1 round to rank c, in the dtype at every step."""
    n, count = len(inputs), inputs[0].size
    result = numpy.empty_like(inputs[0])
    for c in range(n):
        where = chunks(c) if chunks else chunk(c, count, n)
        accumulator = inputs[(c + 1) % n][where].copy()
        for k in range(2, n + 1):
            accumulator = combine(op, accumulator, inputs[(c + k) % n][where]).astype(inputs[0].dtype)
        result[where] = accumulator
    return result


def random_inputs(ranks, count, dtype, seed=7):
    generator = numpy.random.default_rng(seed)
    if numpy.issubdtype(numpy.dtype(dtype), numpy.integer):
        info = numpy.iinfo(dtype)
        return [generator.integers(info.min, info.max, count, endpoint=True).astype(dtype) for _ in range(ranks)]
    scale = 8.0 if dtype == ml_dtypes.float8_e4m3 else 100.0
    return [(generator.standard_normal(count) * scale).astype(dtype) for _ in range(ranks)]


@pytest.fixture
def runtime():
    with open_runtime(topology="trn1:16") as runtime:
        yield runtime


@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 8, 16])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_all_reduce_is_the_ring_fold(runtime, ranks, dtype):
    inputs = random_inputs(ranks, 1001, DTYPES[dtype])
    with vtrn.Communicator(runtime, runtime.devices[:ranks]) as comm:
        for op in ("add", "max", "min"):
            results = comm.all_reduce_arrays(inputs, op=op)
            expected = ring_reduce(inputs, op)
            for result in results:
                assert result.tobytes() == expected.tobytes(), (dtype, op)


@pytest.mark.parametrize("ranks", [2, 3, 4, 8])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int32", "uint8"])
def test_gather_scatter_and_all_to_all(runtime, ranks, dtype):
    each = 6
    inputs = random_inputs(ranks, each * ranks, DTYPES[dtype])
    with vtrn.Communicator(runtime, runtime.devices[:ranks]) as comm:
        gathered = comm.all_gather_arrays([array[:each] for array in inputs])
        for result in gathered:
            assert result.tobytes() == numpy.concatenate([array[:each] for array in inputs]).tobytes()
        scattered = comm.reduce_scatter_arrays(inputs)
        full = ring_reduce(inputs, chunks=lambda c: slice(c * each, (c + 1) * each))
        for rank, result in enumerate(scattered):
            assert result.tobytes() == full[rank * each:(rank + 1) * each].tobytes()
        exchanged = comm.all_to_all_arrays(inputs)
        for rank, result in enumerate(exchanged):
            expected = numpy.concatenate([inputs[j][rank * each:(rank + 1) * each] for j in range(ranks)])
            assert result.tobytes() == expected.tobytes()


def test_two_cores_of_one_device_and_in_place(runtime):
    devices = runtime.devices
    members = [(devices[0], 0), (devices[0], 1), (devices[1], 1)]
    inputs = random_inputs(3, 333, numpy.float32)
    with vtrn.Communicator(runtime, members) as comm:
        assert comm.rank_of(devices[0], 1) == 1
        memories = [device.to_device(array) for (device, _), array in zip(members, inputs)]
        fences = [comm.all_reduce(rank, memories[rank], memories[rank]) for rank in range(3)]
        for fence in fences:
            assert fence.wait()
        assert fences[0].info.instructions["cc"] == 1 and fences[0].info.engine_busy_ns["cc"] > 0
        for (device, _), memory in zip(members, memories):
            assert device.from_device(memory, numpy.float32, (333,)).tobytes() == ring_reduce(inputs).tobytes()


def test_broadcast_send_receive_and_permute(runtime):
    devices = runtime.devices[:4]
    inputs = random_inputs(4, 50, numpy.int32)
    with vtrn.Communicator(runtime, devices) as comm:
        sources = [device.to_device(array) for device, array in zip(devices, inputs)]
        outputs = [device.allocate(200) for device in devices]
        fences = [comm.broadcast(rank, sources[rank] if rank == 2 else None, outputs[rank], root=2, dtype="int32")
                  for rank in range(4)]
        for fence in fences:
            fence.wait()
        for device, output in zip(devices, outputs):
            assert (device.from_device(output, numpy.int32, (50,)) == inputs[2]).all()
        fences = []
        for rank in range(4):  # a ring of sends: even ranks send first
            send = lambda: comm.send(rank, sources[rank], peer=(rank + 1) % 4, dtype="int32")  # noqa: E731
            receive = lambda: comm.recv(rank, outputs[rank], peer=(rank + 3) % 4, dtype="int32")  # noqa: E731
            fences += [send(), receive()] if rank % 2 == 0 else [receive(), send()]
        for fence in fences:
            fence.wait()
        for rank, (device, output) in enumerate(zip(devices, outputs)):
            assert (device.from_device(output, numpy.int32, (50,)) == inputs[(rank + 3) % 4]).all()
        targets = [1, 0, 3, 2]  # pairwise swaps
        fences = [comm.permute(rank, sources[rank], outputs[rank], targets, dtype="int32") for rank in range(4)]
        for fence in fences:
            fence.wait()
        for rank, (device, output) in enumerate(zip(devices, outputs)):
            assert (device.from_device(output, numpy.int32, (50,)) == inputs[targets[rank]]).all()


def test_all_reduce_inside_kernels_overlaps_compute(runtime):
    """x -> SBUF (DMA), doubled (DVE), all-reduced SBUF to SBUF (CC), out (DMA): semaphores order them."""
    devices = runtime.devices[:4]
    with vtrn.Communicator(runtime, [(device, 1) for device in devices]) as comm:
        program = vtrn.Program(runtime)
        x = program.parameter("x", (128, 32))
        y = program.parameter("y", (128, 32))
        tile = program.sbuf((128, 32))
        reduced = program.sbuf((128, 32))
        program.dma_copy(tile, x, signal=(0, 1))
        program.tensor_scalar(tile, tile, "multiply", 2.0, wait=(0, 1), signal=(1, 1))
        program.all_reduce(comm, reduced, tile, wait=(1, 1), signal=(2, 1))
        program.dma_copy(y, reduced, wait=(2, 1))
        kernels = [device.load(program, core=1) for device in devices]
        inputs = [numpy.arange(128 * 32, dtype=numpy.float32).reshape(128, 32) + rank for rank in range(4)]
        fences = [kernel.execute(x=array, y=None) for kernel, array in zip(kernels, inputs)]
        expected = ring_reduce([2 * array.reshape(-1) for array in inputs]).reshape(128, 32)
        for fence in fences:
            assert (fence.result("y") == expected).all()
            assert fence.info.instructions["cc"] == 1
        message = failure(vtrn.InvalidProgramError, lambda: devices[0].load(program, core=0))
        assert "is not a member of communicator" in message


def test_mismatched_ranks_all_fail_naming_them(runtime):
    devices = runtime.devices[:2]
    with vtrn.Communicator(runtime, devices) as comm:
        memories = [device.allocate(64) for device in devices]
        fences = [comm.all_reduce(0, memories[0], memories[0], count=16), comm.all_reduce(1, memories[1], memories[1], count=8)]
        for fence in fences:
            message = failure(vtrn.InvalidArgumentError, fence.wait)
            assert "rank 1 (device 1 core 0) asked for ALL_REDUCE of 8 fp32 (add)" in message
        fences = [comm.all_reduce(0, memories[0], memories[0], dtype="int32"), comm.all_gather(1, memories[1], memories[1], count=8)]
        for fence in fences:
            assert "every rank must call the same collectives" in failure(vtrn.InvalidArgumentError, fence.wait)


def test_a_rank_that_never_joins_is_named(monkeypatch):
    monkeypatch.setenv("VTRN_EXEC_TIMEOUT_MS", "200")
    with open_runtime(topology="trn1:3") as runtime:
        devices = runtime.devices
        with vtrn.Communicator(runtime, devices) as comm:
            memories = [device.allocate(64) for device in devices]
            started = time.monotonic()
            fences = [comm.all_reduce(rank, memories[rank], memories[rank]) for rank in range(2)]
            for fence in fences:
                message = failure(vtrn.DeviceTimeoutError, fence.wait)
                assert "rank 2 (device 2 core 0) never joined within the execution timeout of 200 ms" in message
            assert time.monotonic() - started < 10
            late = comm.all_reduce(2, memories[2], memories[2])
            assert "joined too late" in failure(vtrn.DeviceTimeoutError, late.wait)


def test_a_device_lost_mid_collective_fails_every_rank(runtime):
    devices = runtime.devices[:2]
    with vtrn.Communicator(runtime, devices) as comm:
        memories = [device.allocate(64) for device in devices]
        fence = comm.all_reduce(0, memories[0], memories[0])
        time.sleep(0.02)
        devices[1].inject_fault("device_loss")
        message = failure(vtrn.DeviceLostError, fence.wait)
        assert "rank 1 (device 1 core 0) is on device 1, which was lost" in message
        assert "device 1 is lost" in failure(vtrn.DeviceLostError, lambda: comm.all_reduce(1, memories[1], memories[1]))
        devices[1].reset()


@pytest.mark.parametrize("ranks", [2, 3, 5, 8])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_the_ring_steps_give_the_same_bits(monkeypatch, ranks, dtype):
    """VTRN_CC_STEPS=1: the ring's steps one by one (each rank's DMA sends to the next, a barrier
    between steps) give what the default, direct data path gives, bit for bit."""
    each = 37
    inputs = random_inputs(ranks, each * ranks, DTYPES[dtype])
    results = {}
    for steps in ("0", "1"):
        monkeypatch.setenv("VTRN_CC_STEPS", steps)
        with open_runtime(topology="trn1:8") as runtime, vtrn.Communicator(runtime, runtime.devices[:ranks]) as comm:
            results[steps] = [comm.all_reduce_arrays(inputs, op=op) for op in ("add", "max")]
            results[steps] += [comm.reduce_scatter_arrays(inputs), comm.all_gather_arrays([a[:each] for a in inputs]),
                               comm.all_to_all_arrays(inputs)]
    for direct, stepped in zip(results["0"], results["1"]):
        assert [a.tobytes() for a in direct] == [a.tobytes() for a in stepped]
    assert results["0"][0][0].tobytes() == ring_reduce(inputs).tobytes()
    monkeypatch.setenv("VTRN_CC_STEPS", "2")
    assert "VTRN_CC_STEPS=\"2\" is neither 0" in failure(vtrn.InvalidArgumentError, lambda: vtrn.Runtime(topology="trn1"))


@pytest.mark.parametrize("steps", ["0", "1"])
def test_a_dma_abort_on_one_ranks_cc_ring_fails_every_rank(monkeypatch, steps):
    """Collectives move their data on each core's CC ring (DMA engine 15): a DMA abort aimed at one
    rank's core fails every rank with DmaFaultError naming the ring, and the next one is right."""
    monkeypatch.setenv("VTRN_CC_STEPS", steps)
    inputs = random_inputs(4, 50_000, numpy.float32)
    with open_runtime(topology="trn1:4") as runtime, vtrn.Communicator(runtime, runtime.devices) as comm:
        aborts = runtime.devices[3].error_counters.dma_aborts  # counted since the process made the device
        runtime.devices[3].inject_fault("dma_abort", core=0, after=1)
        message = failure(vtrn.DmaFaultError, lambda: comm.all_reduce_arrays(inputs))
        assert "DMA abort on the CC ring of rank 3 (device 3 core 0) (DMA engine 15 of core 0) at descriptor 1 of collective 0" in message
        assert "every rank of the collective failed with it" in message
        assert ("in step 1 of 7" in message) == (steps == "1")
        assert runtime.devices[3].error_counters.dma_aborts == aborts + 1
        for result in comm.all_reduce_arrays(inputs):
            assert result.tobytes() == ring_reduce(inputs).tobytes()
        # An uncorrectable HBM error under rank 2's input, which another rank's ring reads too.
        memories = [device.to_device(array) for device, array in zip(runtime.devices, inputs)]
        runtime.devices[2].inject_fault("hbm_ue", address=memories[2].info.address + 1024, bytes=8)
        fences = [comm.all_reduce(rank, memories[rank], memories[rank]) for rank in range(4)]
        for fence in fences:
            assert "uncorrectable HBM error: the CC ring of rank" in failure(vtrn.HardwareError, fence.wait)


def test_bad_arguments(runtime):
    devices = runtime.devices[:2]
    assert "members is NULL" in failure(vtrn.InvalidArgumentError, lambda: vtrn.Communicator(runtime, []))
    assert "is rank 0 already" in failure(vtrn.InvalidArgumentError, lambda: vtrn.Communicator(runtime, [devices[0], devices[0]]))
    with vtrn.Communicator(runtime, devices) as comm:
        memory, other = devices[0].allocate(64), devices[1].allocate(64)
        assert "rank 2 does not exist" in failure(vtrn.InvalidArgumentError, lambda: comm.all_reduce(2, memory, memory))
        assert "rank 0 is on device 0" in failure(vtrn.InvalidArgumentError, lambda: comm.all_reduce(0, other, other))
        assert "add, max or min" in failure(vtrn.InvalidArgumentError, lambda: comm.all_reduce(0, memory, memory, op="divide"))
        assert "cannot send to itself" in failure(vtrn.InvalidArgumentError, lambda: comm.send(0, memory, peer=0))
        assert "64-byte block" in failure(vtrn.OutOfBoundsError, lambda: comm.all_reduce(0, memory, memory, count=17))
        assert "both send to rank 1" in failure(vtrn.InvalidArgumentError, lambda: comm.permute(0, memory, memory, [1, 1]))
        with pytest.raises(TypeError, match="collectives read and write device memory"):
            comm.all_reduce(0, numpy.zeros(4), memory)  # type: ignore[arg-type]
        with vtrn.HostBuffer.create(runtime, 64) as host:
            with pytest.raises(TypeError):
                comm.all_reduce(0, host, memory)  # type: ignore[arg-type]
        assert vtrn.handle_counts().comms == 1
    assert "was destroyed" in failure(vtrn.InvalidHandleError, lambda: comm.all_reduce(0, memory, memory))
    assert vtrn.handle_counts().comms == 0


def test_cost_model_follows_the_links():
    """The same all-reduce costs more on trn1 (96 GiB/s links) than on trn1n (twice that)."""
    times = {}
    for topology in ("trn1.32xlarge", "trn1n.32xlarge"):
        with open_runtime(topology=topology) as runtime:
            with vtrn.Communicator(runtime, runtime.devices) as comm:
                memories = [device.allocate(1 << 20) for device in runtime.devices]
                fences = [comm.all_reduce(rank, memories[rank], memories[rank]) for rank in range(16)]
                for fence in fences:
                    fence.wait()
                times[topology] = max(fence.info.engine_busy_ns["cc"] for fence in fences)
    assert times["trn1.32xlarge"] > times["trn1n.32xlarge"] > 0


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun is not installed (openmpi-bin; Scripts/setup installs it)")
def test_the_example_under_mpirun_matches_numpy_in_every_process():
    """Examples/python/data_parallel.py under mpirun -np 2: a communicator across two Python
    processes (vtrn loads Open MPI itself; there is no mpi4py), each hosting 8 devices."""
    script = os.path.join(REPOSITORY, "Examples", "python", "data_parallel.py")
    result = subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2", sys.executable, script],
                            capture_output=True, text=True, timeout=300, env=child_environment())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("verified against numpy") == 2, result.stdout
    assert "16 ranks (8 in process 1 of 2" in result.stdout


def test_the_torus_all_reduce_folds_rows_then_columns_and_costs_less(monkeypatch):
    """VTRN_CC_ALGORITHM=torus on a trn1.32xlarge: rows of 4 ranks, then the columns, in the
    documented order; the cost model charges one-hop steps, so small all-reduces cost less."""
    inputs = random_inputs(16, 1001, numpy.float32)
    columns, rows, count = 4, 4, 1001
    expected = numpy.empty(count, numpy.float32)
    for i in range(count):
        column = next(c for c in range(columns) if chunk(c, count, columns).start <= i < chunk(c, count, columns).stop)
        row = next(r for r in range(rows) if chunk(r, count, rows).start <= i < chunk(r, count, rows).stop)
        sums = []
        for k in range(rows):
            value = inputs[k * columns + (column + 1) % columns][i]
            for m in range(2, columns + 1):
                value = numpy.float32(value + inputs[k * columns + (column + m) % columns][i])
            sums.append(value)
        value = sums[(row + 1) % rows]
        for m in range(2, rows + 1):
            value = numpy.float32(value + sums[(row + m) % rows])
        expected[i] = value
    estimates = {}
    for algorithm in ("ring", "torus"):
        monkeypatch.setenv("VTRN_CC_ALGORITHM", algorithm)
        with open_runtime(topology="trn1.32xlarge") as runtime, vtrn.Communicator(runtime, runtime.devices) as comm:
            if algorithm == "torus":
                for result in comm.all_reduce_arrays(inputs):
                    assert result.tobytes() == expected.tobytes()
            memories = [device.allocate(8) for device in runtime.devices]
            fences = [comm.all_reduce(rank, memories[rank], memories[rank], count=2) for rank in range(16)]
            for fence in fences:
                fence.wait()
            estimates[algorithm] = max(fence.info.engine_busy_ns["cc"] for fence in fences)
    assert estimates["torus"] < estimates["ring"] / 3, estimates
    monkeypatch.setenv("VTRN_CC_ALGORITHM", "tree")
    assert "accepted: ring" in failure(vtrn.InvalidArgumentError, lambda: vtrn.Runtime(topology="trn1"))
