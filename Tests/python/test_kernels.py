"""Kernels from the Python builder to the fence: access patterns and tiles as the builder makes
them, bindings, executions and their failures (deadlock, timeout, out of bounds at run time),
determinism, the cost model's counters, several cores at once, queues of executions, and handles
that go stale. Every error is checked with its status and message."""

import json
import os
import re
import subprocess
import sys
import threading
from ctypes import byref

import numpy as np
import pytest

import vtrn
from vtrn import Status
from vtrn._library import BindingStruct, FenceHandle, lib

from support import REPOSITORY, SerialProgram, child_environment, failure, open_runtime, run_python

ml_dtypes = pytest.importorskip("ml_dtypes")


@pytest.fixture
def runtime():
    with open_runtime(topology="trn1") as runtime:
        yield runtime


@pytest.fixture
def device(runtime):
    return runtime.device(0)


def serial_of(runtime):
    return SerialProgram(runtime)


def copy_program(runtime, shape=(4, 8), dtype="float32", semaphore=0):
    """y = x + 1 through SBUF: DMA in, DVE add, DMA out, handed over by one semaphore."""
    program = runtime.program()
    x = program.parameter("x", shape, dtype)
    y = program.parameter("y", shape, dtype)
    tile = program.sbuf(shape, dtype)
    program.dma_copy(tile, x, signal=(semaphore, 1))
    program.tensor_scalar(tile, tile, "add", 1.0, wait=(semaphore, 1), signal=(semaphore, 1))
    program.dma_copy(y, tile, wait=(semaphore, 2))
    return program


def runtime_serial(message):
    return int(re.search(r"runtime (\d+)", message).group(1))


# -- access patterns ----------------------------------------------------------------------------------

def fields(pattern):
    access = pattern.struct()
    return (access.space, access.dtype, access.start_partition, access.partitions, access.offset, access.parameter,
            access.dims, list(access.size), list(access.stride), access.partition_stride)


def test_tiles_and_parameters_as_access_structs(runtime):
    with runtime.program() as program:
        tile = program.sbuf((128, 4, 16), "bf16")
        assert (tile.space, tile.dtype, tile.shape, tile.strides, tile.offset) == ("sbuf", "bf16", (128, 4, 16),
                                                                                     (None, 16, 1), 0)
        # vtrn_access_t counts dimensions from the fastest: size[0] is the last numpy axis.
        assert fields(tile) == (1, 2, 0, 128, 0, 0, 2, [16, 4, 1, 1], [1, 16, 0, 0], 0)
        a = program.parameter("a", (300, 200), "float32")
        b = program.parameter("b", (64,), "fp8_e4m3")
        assert (a.space, a.parameter, a.shape, a.strides, a.name) == ("hbm", 0, (300, 200), (200, 1), "a")
        assert fields(a) == (3, 1, 0, 300, 0, 0, 1, [200, 1, 1, 1], [1, 0, 0, 0], 200)
        assert fields(b) == (3, 4, 0, 1, 0, 1, 1, [64, 1, 1, 1], [1, 0, 0, 0], 0)
        assert repr(a[1:3, ::2]) == "<vtrn.AccessPattern HBM a +800 fp32 shape=(2, 100) strides=(200, 2)>"
        assert repr(tile[32:64, 1]) == "<vtrn.AccessPattern SBUF[32:64] +32 bf16 shape=(32, 16) strides=(None, 1)>"


def test_views_slice_step_reverse_and_index(runtime):
    with runtime.program() as program:
        a = program.parameter("a", (300, 200), "float32")
        # A^T tile: partition i reads column k0 + i (stride 1), its free axis walks a row (stride 200).
        view = a.T[64:192, 5:133]
        assert (view.shape, view.strides, view.offset) == ((128, 128), (1, 200), (5 * 200 + 64) * 4)
        assert fields(view)[3:] == (128, 4256, 0, 1, [128, 1, 1, 1], [200, 0, 0, 0], 1)
        reversed_rows = a[::-1, 10:0:-3]
        assert (reversed_rows.shape, reversed_rows.strides, reversed_rows.offset) == ((300, 4), (-200, -3),
                                                                                      (299 * 200 + 10) * 4)
        assert a[7].shape == (200,) and a[7].offset == 7 * 200 * 4 and a[7].partitions == 1
        assert a[7, -1].shape == (1,) and a[7, -1].offset == (7 * 200 + 199) * 4
        assert a[..., 3].shape == (300,) and a[..., 3].strides == (200,)
        tile = program.sbuf((128, 2, 8), offset=64)
        view = tile[32:64, ..., ::-1]
        assert (view.start_partition, view.shape, view.strides, view.offset) == (32, (32, 2, 8), (None, 8, -1), 64 + 28)
        assert tile[5].start_partition == 5 and tile[5].shape == (1, 2, 8)  # an SBUF partition axis stays
        assert tile[:, 1, 3].shape == (128,) and fields(tile[:, 1, 3])[6:9] == (1, [1, 1, 1, 1], [1, 0, 0, 0])
        broadcast = program.parameter("w", (64,)).broadcast_to((128, 64))
        assert (broadcast.shape, broadcast.strides, fields(broadcast)[3], fields(broadcast)[9]) == ((128, 64), (0, 1),
                                                                                                  128, 0)
        assert program.sbuf((4, 1)).broadcast_to((4, 9)).strides == (None, 0)


def test_view_errors(runtime):
    with runtime.program() as program:
        tile, a = program.sbuf((8, 8)), program.parameter("a", (4, 4))
        cases = [
            (IndexError, lambda: tile[::2], "the partition axis of SBUF takes slices of step 1, not 2"),
            (IndexError, lambda: tile[0, 0, 0], "too many indices: the view has 2 axes, 3 given"),
            (IndexError, lambda: a[4], "index 4 is out of range for axis 0 of size 4"),
            (IndexError, lambda: a[..., ...], "an index can only have a single ellipsis ('...')"),
            (IndexError, lambda: a["x"], "index 'x' is not an integer, a slice or '...'"),
            (ValueError, lambda: tile.T, "an SBUF tile's partition axis cannot trade places with a free axis in an "
                                         "access pattern; use Program.transpose (the PE) to transpose a tile"),
            (ValueError, lambda: tile[0].broadcast_to((16, 8)), "an SBUF view cannot broadcast its partition axis"),
            (ValueError, lambda: a.broadcast_to((4, 5)), "cannot broadcast shape (4, 4) to (4, 5)"),
            (ValueError, lambda: program.sbuf((8,)), "a tile's shape is (partitions, free...), at least 2 axes; (8,) given"),
            (ValueError, lambda: program.psum((8, -1)), "size -1 is negative"),
        ]
        for error, call, message in cases:
            with pytest.raises(error) as caught:
                call()
            assert str(caught.value) == message


def test_tiles_are_placed_by_a_bump_allocator(runtime):
    with runtime.program() as program:
        assert program.sbuf((128, 3)).offset == 0
        assert program.sbuf((128, 1), "bf16").offset == 64  # 64-byte aligned
        assert program.sbuf((4, 100)).offset == 128
        assert program.sbuf((4, 4), offset=1000).offset == 1000
        assert program.sbuf((4, 4)).offset == 1024  # after the highest tile so far
        # PSUM: a tile that fits a 2 KiB bank never crosses one; a larger one starts a bank.
        assert program.psum((128, 500)).offset == 0
        assert program.psum((128, 20)).offset == 2048
        assert program.psum((128, 512)).offset == 4096
        assert program.psum((128, 1)).offset == 6144
        assert program.psum((128, 1024)).offset == 8192
        assert program.psum((128, 16)).offset == 12288
        assert program.psum((32, 4), partition=96).start_partition == 96


def test_views_move_the_right_elements(runtime, device):
    serial = serial_of(runtime)
    a = np.arange(40 * 30, dtype=np.float32).reshape(40, 30)
    w = np.arange(16, dtype=np.float32) * 0.5
    a_hbm = serial.program.parameter("a", a.shape, "float32")
    w_hbm = serial.program.parameter("w", w.shape, "float32")
    serial.inputs.update(a=a, w=w)
    program = serial.program
    transposed = program.sbuf((30, 40))
    program.dma_copy(transposed, a_hbm.T, **serial())  # strided HBM read
    corner = program.sbuf((20, 2, 5))
    program.dma_copy(corner, a_hbm[10:30, 3:13], **serial())  # 2-D free axes, flat order
    reversed_tile = program.sbuf((20, 10))
    program.dma_copy(reversed_tile, a_hbm[39:19:-1, ::-3], **serial())  # negative strides
    broadcast = program.sbuf((128, 16))
    program.dma_copy(broadcast, w_hbm.broadcast_to((128, 16)), **serial())  # partition stride 0
    flipped = program.sbuf((20, 10), partition=32)
    program.tensor_copy(flipped, reversed_tile[:, ::-1], **serial())  # a reversed SBUF read
    four = program.sbuf((3, 2, 3, 2, 2))
    program.iota(four, [12, 4, 2, 1], channel_multiplier=100, **serial())
    strided = program.sbuf((3, 6))
    program.tensor_copy(strided, four[:, 1, :, 0, :], **serial())  # a view with steps in 3 free axes
    for name, tile in (("transposed", transposed), ("corner", corner), ("reversed", reversed_tile),
                       ("broadcast", broadcast), ("flipped", flipped), ("strided", strided)):
        serial.store(name, tile)
    written = serial.output("written", (40, 30), "float32")
    program.memset(broadcast[:10, :3], -1.0, **serial())
    program.dma_copy(written, a_hbm, **serial())  # HBM to HBM
    program.dma_copy(written.T[2:5, 0:10], broadcast[:3, :10], **serial())  # a strided HBM write
    results = serial.run(device)
    assert np.array_equal(results["transposed"], a.T)
    assert np.array_equal(results["corner"], a[10:30, 3:13].reshape(20, 2, 5))
    assert np.array_equal(results["reversed"], a[39:19:-1, ::-3])
    assert np.array_equal(results["broadcast"], np.broadcast_to(w, (128, 16)))
    assert np.array_equal(results["flipped"], a[39:19:-1, ::-3][:, ::-1])
    iota = (np.arange(3)[:, None, None, None, None] * 100 + np.arange(2)[:, None, None, None] * 12
            + np.arange(3)[:, None, None] * 4 + np.arange(2)[:, None] * 2 + np.arange(2)).astype(np.float32)
    assert np.array_equal(results["strided"], iota[:, 1, :, 0, :].reshape(3, 6))
    expected = a.copy()
    expected.T[2:5, 0:10] = np.where(np.arange(10) < 3, -1.0, w[:10])[None, :].repeat(3, 0)
    assert np.array_equal(results["written"], expected)


# -- bindings and executions ------------------------------------------------------------------------

def test_execute_binds_numpy_none_and_device_memory(runtime, device):
    with copy_program(runtime, (4, 8), "bf16") as program, device.load(program) as kernel:
        assert kernel.parameters["x"] == vtrn.Parameter("x", 0, (4, 8), "bf16", 64)
        x = np.linspace(-3, 3, 32, dtype=np.float32).reshape(4, 8)
        with kernel.execute(x=x, y=None) as fence:  # fp32 is rounded to the parameter's bf16
            y = fence.result("y")
            assert y.dtype == ml_dtypes.bfloat16 and y.shape == (4, 8)
            assert np.array_equal(y, (x.astype(ml_dtypes.bfloat16).astype(np.float32) + 1).astype(ml_dtypes.bfloat16))
            memory, offset = fence.memory("y")
            assert isinstance(memory, vtrn.DeviceMemory) and offset == 0 and memory.bytes == 64
        assert memory.closed  # the fence freed what it allocated
        block = device.allocate(256)
        with device.to_device(x.astype(ml_dtypes.bfloat16)) as source, block:
            with kernel.execute(x=source, y=(block, 128)) as fence:
                assert fence.memory("y") == (block, 128)
                assert np.array_equal(fence.result("y"), y)
            assert not block.closed  # yours stays yours
            assert np.array_equal(device.from_device(block, ml_dtypes.bfloat16, (4, 8), 128), y)
        with pytest.raises(ValueError) as caught:
            kernel.execute(x=np.zeros(31, np.float32), y=None)
        assert str(caught.value) == "parameter 'x' is (4, 8) of bf16; the array has shape (31,) (31 elements)"
        with pytest.raises(TypeError) as caught:
            kernel.execute(x=[1.0], y=None)
        assert str(caught.value) == ("x is a list; bind a numpy array, None (new memory), a DeviceMemory or a "
                                     "(DeviceMemory, offset) tuple")


def test_a_kernel_without_parameters(runtime, device):
    with runtime.program() as program:
        program.memset(program.sbuf((4, 4)), 1.0)
        with device.load(program) as kernel, kernel.execute() as fence:
            assert fence.wait() is True
            assert fence.status == Status.SUCCESS


def test_execute_errors(runtime, device):
    with copy_program(runtime) as program, device.load(program) as kernel, device.allocate(128) as memory:
        x = np.zeros((4, 8), np.float32)
        before = device.memory_usage().allocation_count
        assert failure(vtrn.NotFoundError, lambda: kernel.execute(x=x, y=None, z=None)) == \
            'vtrn_kernel_execute: the kernel has no parameter "z"; its parameters are "x", "y"'
        assert failure(vtrn.InvalidArgumentError, lambda: kernel.execute(x=x)) == \
            'vtrn_kernel_execute: parameter "y" is not bound'
        assert failure(vtrn.OutOfBoundsError, lambda: kernel.execute(x=x, y=(memory, 129))) == \
            'vtrn_kernel_execute: parameter "y" is bound at offset 129 of a 128-byte block'
        assert device.memory_usage().allocation_count == before  # what execute allocated is freed again
        freed = device.allocate(128)
        freed.free()
        message = failure(vtrn.InvalidHandleError, lambda: kernel.execute(x=x, y=freed))
        assert message == f"vtrn_kernel_execute: bindings[1].memory: vtrn_device_memory_t {freed.handle.value:#x} " \
                          "is stale: it was freed"
        # Through ctypes: a parameter bound twice, NULL names, memories and out-pointers.
        twice = (BindingStruct * 3)(BindingStruct(b"x", memory.handle, 0), BindingStruct(b"y", memory.handle, 0),
                                    BindingStruct(b"x", memory.handle, 0))
        fence = FenceHandle()
        invalid = Status.ERROR_INVALID_ARGUMENT
        assert lib.vtrn_kernel_execute(kernel.handle, twice, 3, byref(fence)) == invalid
        assert vtrn.last_error() == 'vtrn_kernel_execute: parameter "x" is bound twice'
        null_memory = (BindingStruct * 1)(BindingStruct(b"x", None, 0))
        assert lib.vtrn_kernel_execute(kernel.handle, null_memory, 1, byref(fence)) == Status.ERROR_INVALID_HANDLE
        assert vtrn.last_error() == "vtrn_kernel_execute: bindings[0].memory: the vtrn_device_memory_t is NULL"
        null_name = (BindingStruct * 1)(BindingStruct(None, memory.handle, 0))
        assert lib.vtrn_kernel_execute(kernel.handle, null_name, 1, byref(fence)) == invalid
        assert vtrn.last_error() == "vtrn_kernel_execute: bindings[0].name is NULL"
        assert lib.vtrn_kernel_execute(kernel.handle, None, 2, byref(fence)) == invalid
        assert vtrn.last_error() == "vtrn_kernel_execute: bindings is NULL and count is 2"
        assert lib.vtrn_kernel_execute(kernel.handle, twice, 2, None) == invalid
        assert vtrn.last_error() == "vtrn_kernel_execute: out is NULL"
        assert fence.value is None  # untouched


def test_memory_of_another_runtime_or_device():
    with open_runtime(topology="trn1,trn2") as first, open_runtime(topology="trn1,trn2") as second:
        with copy_program(first) as program, first.device(0).load(program, core=1) as kernel:
            x = np.zeros((4, 8), np.float32)
            with second.device(0).allocate(128) as foreign, first.device(1).allocate(128) as other_device:
                message = failure(vtrn.InvalidArgumentError, lambda: kernel.execute(x=x, y=foreign))
                mine, theirs = runtime_serial(message.split(";")[1]), runtime_serial(message.split(";")[0])
                assert mine != theirs
                assert message == (f'vtrn_kernel_execute: parameter "y" is bound to memory of device 0 of runtime '
                                   f"{theirs}; the kernel is on device 0 of runtime {mine}")
                assert failure(vtrn.InvalidArgumentError, lambda: kernel.execute(x=x, y=other_device)) == (
                    f'vtrn_kernel_execute: parameter "y" is bound to memory of device 1 of runtime {mine}; the kernel '
                    f"is on device 0 of runtime {mine}")


def test_run_time_out_of_bounds_fails_only_that_execution(runtime, device):
    with copy_program(runtime, (4, 8)) as program, device.load(program) as kernel:
        x = np.arange(32, dtype=np.float32).reshape(4, 8)
        with device.allocate(100) as short:  # the parameter has 128 bytes; the binding leaves 100
            with kernel.execute(x=x, y=short) as fence:
                message = failure(vtrn.OutOfBoundsError, fence.wait)
                assert message == ('vtrn_fence_wait: instruction 2 (DMA_COPY on DMA): dst reaches byte 128 of parameter '
                                   '"y", but its binding leaves 100 bytes')
                assert fence.status == Status.ERROR_OUT_OF_BOUNDS
                assert fence.info.status == Status.ERROR_OUT_OF_BOUNDS
                assert fence.info.instructions == {"pe": 0, "act": 0, "dve": 1, "pool": 0, "dma": 1, "cc": 0}
                assert failure(vtrn.OutOfBoundsError, lambda: fence.result("y")) == message
            with device.allocate(256) as long, kernel.execute(x=x, y=(long, 100)) as fence:  # 156 bytes left: enough
                assert np.array_equal(fence.result("y"), x + 1)
        with kernel.execute(x=x, y=None) as fence:
            assert np.array_equal(fence.result("y"), x + 1)


def test_deadlock_names_every_blocked_engine(runtime, device):
    with runtime.program() as program:
        tile = program.sbuf((4, 4))
        program.memset(tile, 1.0, signal=(7, 1))
        program.memset(tile, 2.0, engine="pool", wait=(3, 1))
        program.sem_wait("act", 7, 2)
        program.sem_wait("pe", 9, 1)
        program.dma_copy(tile, tile, wait=(7, 6))
        with device.load(program) as kernel:
            expected = ("vtrn_fence_wait: every unfinished engine waits on a semaphore that nothing pending can raise: "
                        "PE at instruction 3 (SEM_WAIT) waits for semaphore 9 >= 1, which is 0; "
                        "ACT at instruction 2 (SEM_WAIT) waits for semaphore 7 >= 2, which is 1; "
                        "POOL at instruction 1 (MEMSET) waits for semaphore 3 >= 1, which is 0; "
                        "DMA at instruction 4 (DMA_COPY) waits for semaphore 7 >= 6, which is 1")
            for _ in range(2):  # semaphores start at 0 in each execution: the same deadlock again
                with kernel.execute() as fence:
                    assert failure(vtrn.DeadlockError, fence.wait) == expected
                    info = fence.info
                    assert info.status == Status.ERROR_DEADLOCK
                    assert info.instructions == {"pe": 0, "act": 0, "dve": 1, "pool": 0, "dma": 0, "cc": 0}


def test_execution_timeout(monkeypatch):
    monkeypatch.setenv("VTRN_EXEC_TIMEOUT_MS", "50")
    with open_runtime(topology="trn1") as runtime:
        assert runtime.info.exec_timeout_ns == 50_000_000
        device = runtime.device(0)
        with runtime.program() as program:
            tile = program.sbuf((128, 16384))
            for _ in range(96):  # each exp of 2M elements takes milliseconds of host time
                program.activate(tile, "exp", tile)
            with device.load(program) as kernel, kernel.execute() as fence:
                message = failure(vtrn.DeviceTimeoutError, fence.wait)
                match = re.fullmatch(r"vtrn_fence_wait: instruction (\d+) \(ACTIVATE on ACT\) was still running when "
                                     r"the execution reached its timeout", message)
                assert match and int(match.group(1)) < 95, message
                assert fence.info.status == Status.ERROR_TIMEOUT
                assert fence.info.instructions["act"] <= int(match.group(1)) + 1
        with copy_program(runtime) as program, device.load(program) as kernel:  # the core goes on working
            with kernel.execute(x=np.ones((4, 8), np.float32), y=None) as fence:
                assert np.array_equal(fence.result("y"), np.full((4, 8), 2, np.float32))


def test_fence_poll_and_finite_waits(runtime, device):
    with runtime.program() as program:
        tile = program.sbuf((128, 8192))
        for _ in range(40):
            program.activate(tile, "tanh", tile)
        with device.load(program) as kernel, kernel.execute() as fence:
            assert fence.wait(0) is False  # tens of milliseconds of work: still running
            assert fence.status == Status.NOT_READY
            info = fence.info
            assert (info.status, info.wall_ns, info.device_ns, info.instructions["act"]) == (Status.NOT_READY, 0, 0, 0)
            assert failure(vtrn.DeviceTimeoutError, lambda: fence.wait(1000)) == \
                "vtrn_fence_wait: the execution did not finish within 1000 ns of waiting; it goes on"
            assert fence.wait() is True
            assert fence.wait(0) is True and fence.status == Status.SUCCESS
            assert fence.info.instructions["act"] == 40


def test_fence_info_counts_and_the_cost_model(runtime, device):
    with runtime.program() as program:
        a, b, c = program.sbuf((128, 1000)), program.sbuf((128, 1000)), program.sbuf((128, 128))
        program.memset(a, 1.0)  # DVE: 1000 cycles at 1.12 GHz
        program.memset(b, 2.0, engine="pool")  # POOL, in parallel: 1000 cycles at 1.4 GHz
        program.matmul(program.psum((128, 512)), c, a[:, :512], wait=(0, 1))  # fp32: 4 x 512 cycles at 2.8 GHz
        program.sem_signal("dve", 0, 1)
        program.tensor_copy(c, c, engine="act")
        program.activate(c, "copy", c)
        program.dma_copy(c[:1, :1], c[1:2, :1])  # 4 bytes: the DMA's minimum of 64 ACT cycles
        with device.load(program) as kernel, kernel.execute() as fence:
            assert fence.wait()
            info = fence.info
    assert info.status == Status.SUCCESS
    assert info.instructions == {"pe": 1, "act": 2, "dve": 2, "pool": 1, "dma": 1, "cc": 0}
    assert info.engine_busy_ns["dve"] == round(1000 / 1.12 + 64 / 1.12)
    assert info.engine_busy_ns["pool"] == round(1000 / 1.4)
    assert info.engine_busy_ns["pe"] == round(4 * 512 / 2.8)
    assert info.engine_busy_ns["act"] == round(2 * 128 / 1.4)
    # The PE starts when the DVE's signal lands, after its memset and SEM_SIGNAL.
    assert info.device_ns == round((1000 + 64) / 1.12 + 4 * 512 / 2.8)
    assert abs(info.device_cycles - info.device_ns * 2.8) <= 2
    assert info.wall_ns > 0 and info.queued_ns > 0


def pipeline(runtime, rows=300, columns=200):
    """A softmax over engines in parallel, semaphores between them: what determinism must hold for."""
    program = runtime.program()
    x_hbm = program.parameter("x", (rows, columns))
    y_hbm = program.parameter("y", (rows, columns))
    for block, start in enumerate(range(0, rows, 128)):
        p = min(128, rows - start)
        x, e = program.sbuf((p, columns)), program.sbuf((p, columns))
        maximum, sums = program.sbuf((p, 1)), program.sbuf((p, 1))
        program.dma_copy(x, x_hbm[start:start + p], signal=(1, 1))
        program.tensor_reduce(maximum, x, "max", negate=True, wait=(1, block + 1), signal=(2, 1))
        program.activate(e, "exp", x, bias=maximum, accumulate_out=sums, wait=(2, block + 1))
        program.activate(sums, "reciprocal", sums, signal=(3, 1))
        program.tensor_scalar(e, e, "multiply", sums, wait=(3, block + 1), signal=(4, 1))
        program.dma_copy(y_hbm[start:start + p], e, wait=(4, block + 1))
    return program


def test_executions_are_deterministic(runtime, device):
    x = np.random.default_rng(0).standard_normal((300, 200)).astype(np.float32)
    with pipeline(runtime) as program, device.load(program) as kernel:
        results, infos = [], []
        for _ in range(3):
            with kernel.execute(x=x, y=None) as fence:
                results.append(fence.result("y"))
                infos.append(fence.info)
    assert all(np.array_equal(result, results[0]) for result in results)
    assert len({(info.device_ns, info.device_cycles, tuple(info.engine_busy_ns.values())) for info in infos}) == 1
    np.testing.assert_allclose(results[0].sum(axis=1), 1, rtol=1e-5)


def test_concurrent_executions_on_four_cores():
    with open_runtime(topology="trn2") as runtime:
        device = runtime.device(0)
        errors, results = [], {}

        def work(core):
            try:
                with pipeline(runtime, rows=256, columns=512) as program, device.load(program, core=core) as kernel:
                    x = np.random.default_rng(core).standard_normal((256, 512)).astype(np.float32)
                    fences = [kernel.execute(x=x * (index + 1), y=None) for index in range(4)]
                    results[core] = [(x * (index + 1), fence.result("y")) for index, fence in enumerate(fences)]
                    for fence in fences:
                        fence.close()
            except BaseException as error:  # reported by the main thread
                errors.append(error)

        threads = [threading.Thread(target=work, args=(core,)) for core in (0, 3, 5, 7)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(results) == [0, 3, 5, 7]
        for runs in results.values():
            for x, y in runs:
                shifted = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
                np.testing.assert_allclose(y, shifted / shifted.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_a_queue_of_executions_runs_in_order(runtime, device):
    # Each execution copies what the one before it left in "last" to its own slot of "seen", then
    # leaves its own token: seen[i] == token[i - 1] only if they ran one after the other, in order.
    count = 300
    with runtime.program() as program:
        last, seen, token = (program.parameter(name, (1, 1), "int32") for name in ("last", "seen", "token"))
        program.dma_copy(seen, last)  # one engine's stream runs in order: no semaphores needed
        program.dma_copy(last, token)
        tokens = np.random.default_rng(1).permutation(count).astype(np.int32) + 1000
        with device.load(program) as kernel, device.to_device(np.array([-1], np.int32)) as last_memory, \
                device.to_device(tokens) as token_memory, device.allocate(4 * count) as seen_memory:
            fences = [kernel.execute(last=last_memory, seen=(seen_memory, 4 * index), token=(token_memory, 4 * index))
                      for index in range(count)]
            assert fences[-1].wait() is True
            assert [fence.status for fence in fences] == [Status.SUCCESS] * count
            seen_values = device.from_device(seen_memory, np.int32)
            for fence in fences:
                fence.close()
    assert seen_values[0] == -1
    assert np.array_equal(seen_values[1:], tokens[:-1])


def test_a_full_command_queue(runtime, device):
    with runtime.program() as slow, runtime.program() as cheap:
        tile = slow.sbuf((128, 16384))
        for _ in range(30):  # tens of milliseconds: the queue fills behind it
            slow.activate(tile, "exp", tile)
        cheap.memset(cheap.sbuf((4, 4)), 1.0)
        with device.load(slow) as slow_kernel, device.load(cheap) as cheap_kernel, slow_kernel.execute() as running:
            queued = []
            with pytest.raises(vtrn.QueueFullError) as caught:
                for _ in range(1100):
                    queued.append(cheap_kernel.execute())
            assert caught.value.message == ("vtrn_kernel_execute: core 0 of device 0 has 1024 executions queued; wait "
                                            "for some to finish")
            assert len(queued) == 1024 and running.status == Status.NOT_READY
            assert queued[-1].wait() is True
            for fence in queued:
                fence.close()


def test_broadcast_operands_larger_than_a_partition_do_not_crash():
    code = """
import vtrn
with vtrn.Runtime(topology="trn1") as runtime:
    program = runtime.program()
    tile = program.sbuf((128, 4))
    big = tile[:, 0:1].broadcast_to((128, 400000))
    program.tensor_scalar(big, big, "add", 1.0)
    try:
        with runtime.device(0).load(program) as kernel, kernel.execute() as fence:
            fence.wait()
    except vtrn.VtrnError as error:  # refusing the program, or failing the execution, is fine
        print(error)
print("no crash")
"""
    result = run_python(code)
    assert result.returncode == 0 and result.stdout.strip().endswith("no crash"), result.stderr[-2000:]
    assert ("dst: has 400000 elements per partition; compute engines process at most 196608 (the bytes of an SBUF "
            "partition)") in result.stdout


def test_semaphore_set_and_add(runtime, device):
    serial = serial_of(runtime)
    program = serial.program
    tile = program.sbuf((4, 4))
    program.memset(tile, 1.0, engine="pool", signal=(10, 3))
    program.sem_signal("pool", 10, 3)  # adds: 6
    program.tensor_scalar(tile, tile, "multiply", 5.0, wait=(10, 6), signal_set=(12, 9))
    program.sem_signal("dve", 12, 4, op="set")  # sets: 4, after the ACT below saw 9 or not
    program.activate(tile, "copy", tile, scale=2.0, wait=(12, 9), signal=(11, 1))
    program.sem_wait("dma", 11, 1)
    program.dma_copy(serial.output("y", (4, 4), "fp32"), tile)
    with program, device.load(program) as kernel, kernel.execute(y=None) as fence:
        assert np.array_equal(fence.result("y"), np.full((4, 4), 10, np.float32))
        assert fence.info.instructions == {"pe": 0, "act": 1, "dve": 2, "pool": 2, "dma": 2, "cc": 0}


# -- handles, unloading and claims ---------------------------------------------------------------------

def test_program_kernel_and_fence_after_destroy(runtime, device):
    program = copy_program(runtime)
    kernel = device.load(program)
    program.close()  # a loaded kernel does not need its program
    fence = kernel.execute(x=np.ones((4, 8), np.float32), y=None)
    assert np.array_equal(fence.result("y"), np.full((4, 8), 2, np.float32))
    tile = program.sbuf((4, 4))  # Python-side only
    assert failure(vtrn.InvalidHandleError, lambda: program.memset(tile, 0.0)) == \
        f"vtrn_program_memset: vtrn_program_t {program.handle.value:#x} is stale: it was destroyed"
    assert failure(vtrn.InvalidHandleError, lambda: device.load(program)) == \
        f"vtrn_kernel_load: vtrn_program_t {program.handle.value:#x} is stale: it was destroyed"
    fence.close()
    assert failure(vtrn.InvalidHandleError, fence.wait) == \
        f"vtrn_fence_wait: vtrn_fence_t {fence.handle.value:#x} is stale: it was destroyed"
    assert failure(vtrn.InvalidHandleError, lambda: fence.info) == \
        f"vtrn_fence_get_info: vtrn_fence_t {fence.handle.value:#x} is stale: it was destroyed"
    # Unloading lets queued executions finish, then refuses new ones.
    x = np.ones((4, 8), np.float32)
    queued = [kernel.execute(x=x * index, y=None) for index in range(5)]
    kernel.unload()
    assert [fence.result("y")[0, 0] for fence in queued] == [1, 2, 3, 4, 5]
    assert failure(vtrn.InvalidHandleError, lambda: kernel.execute(x=x, y=None)) == \
        f"vtrn_kernel_execute: vtrn_kernel_t {kernel.handle.value:#x} is stale: it was unloaded"
    kernel.close()  # again: nothing
    for fence in queued:
        fence.close()
    # Destroying NULL handles is a no-op.
    assert lib.vtrn_program_destroy(None) == lib.vtrn_kernel_unload(None) == lib.vtrn_fence_destroy(None) == 0


def test_handles_after_the_runtime_closes():
    runtime = vtrn.Runtime(topology="trn1")
    try:
        device = runtime.device(0)
        program = copy_program(runtime)
        kernel = device.load(program)
        fence = kernel.execute(x=np.ones((4, 8), np.float32), y=None)
        fence.wait()
    finally:
        runtime.close()
    assert program.closed and kernel.closed and fence.closed
    stale = "is stale: runtime {}, which owned it, was destroyed"
    message = failure(vtrn.InvalidHandleError, fence.wait)
    serial = runtime_serial(message)
    assert message == f"vtrn_fence_wait: vtrn_fence_t {fence.handle.value:#x} {stale.format(serial)}"
    assert failure(vtrn.InvalidHandleError, lambda: kernel.execute()) == \
        f"vtrn_kernel_execute: vtrn_kernel_t {kernel.handle.value:#x} {stale.format(serial)}"
    assert failure(vtrn.InvalidHandleError, lambda: program.instruction_count) == \
        f"vtrn_program_instruction_count: vtrn_program_t {program.handle.value:#x} {stale.format(serial)}"
    assert failure(vtrn.InvalidHandleError, lambda: runtime.program()) == \
        f"vtrn_program_create: vtrn_runtime_t {runtime.handle.value:#x} is stale: it was destroyed"
    for thing in (program, kernel, fence):  # closing after the runtime released them does nothing
        thing.close()


def test_handles_of_the_wrong_kind(runtime, device):
    with copy_program(runtime) as program, device.load(program) as kernel:
        bogus = vtrn._library.FenceHandle(kernel.handle.value)
        assert lib.vtrn_fence_wait(bogus, 0) == Status.ERROR_INVALID_HANDLE
        assert vtrn.last_error() == (f"vtrn_fence_wait: {kernel.handle.value:#x} is a vtrn_kernel_t, "
                                     "not a vtrn_fence_t")


def test_kernel_load_on_hidden_missing_and_claimed_cores():
    with open_runtime(topology="trn1", visible_cores="1") as first, open_runtime(topology="trn1") as second:
        with copy_program(first) as program:
            message = failure(vtrn.InvalidArgumentError, lambda: first.device(0).load(program, core=0))
            holder = runtime_serial(message)
            assert message == (f"vtrn_kernel_load: core 0 of device 0 (global core 0) is not visible to runtime "
                               f"{holder}: its visible cores are 1 (options.visible_cores or VTRN_VISIBLE_CORES)")
            assert failure(vtrn.InvalidArgumentError, lambda: first.device(0).load(program, core=2)) == \
                "vtrn_kernel_load: device 0 has 2 cores (0-1); core 2 requested"
            with pytest.raises(ValueError):
                first.device(0).load(program, core=-1)
            with second.program() as invalid:
                invalid.memset(invalid.sbuf((4, 4)), 0.0, engine="act")
                failure(vtrn.InvalidProgramError, lambda: second.device(0).load(invalid, core=1))  # claims nothing
            first.device(0).load(program, core=1).close()  # the claim outlives the kernel
        with copy_program(second) as program:
            busy = f"core 1 of device 0 is claimed by runtime {holder} until it is destroyed"
            assert failure(vtrn.BusyError, lambda: second.device(0).load(program, core=1)) == f"vtrn_kernel_load: {busy}"
            assert failure(vtrn.BusyError, lambda: second.device(0).dma_queue(core=1)) == f"vtrn_dma_queue_create: {busy}"
            second.device(0).load(program, core=0).close()  # the other core is free
            first.close()
            with second.device(0).load(program, core=1) as kernel, \
                    kernel.execute(x=np.zeros((4, 8), np.float32), y=None) as fence:
                assert np.array_equal(fence.result("y"), np.ones((4, 8), np.float32))


# -- the examples -------------------------------------------------------------------------------------

@pytest.mark.parametrize("script, arguments", [
    ("gemm.py", ["130", "300", "600"]),  # B's panels stay in SBUF
    ("gemm.py", ["40", "6000", "70"]),  # B streams: its panels are too large
    ("gemm.py", ["64", "129", "65", "bf16"]),
    ("softmax.py", ["300", "100"]),
    ("rmsnorm.py", ["129", "64"]),
    ("nki_matmul.py", ["256", "512", "1024"]),
    ("data_parallel.py", []),  # 16 devices of a trn1.32xlarge, all-reduce in the kernel and from the host
    ("nki_data_parallel.py", ["4", "256"]),  # an NKI kernel with nki.collectives on 4 ranks
])
def test_examples_verify_against_numpy(script, arguments):
    path = os.path.join(REPOSITORY, "Examples", "python", script)
    result = subprocess.run([sys.executable, path, *arguments], capture_output=True, text=True, timeout=120,
                            env=child_environment())
    assert result.returncode == 0, result.stderr
    assert "verified against numpy" in result.stdout


def test_vtrn_trace_writes_every_instruction_on_its_engine_track(tmp_path):
    trace = tmp_path / "trace-%r.json"
    code = f"""
import os
os.environ["VTRN_TRACE"] = {str(trace)!r}
import numpy as np
import vtrn
with vtrn.Runtime(topology="trn1") as runtime:
    program = runtime.program()
    x = program.parameter("x", shape=(128, 64), dtype="float32")
    tile = program.sbuf((128, 64))
    program.dma_copy(tile, x, signal=(0, 1))
    program.activate(tile, "exp", tile, wait=(0, 1), signal=(1, 1))
    program.sem_wait("dma", 1, 1)
    program.dma_copy(x, tile)
    with runtime.device(0).load(program) as kernel, kernel.execute(x=np.zeros((128, 64), np.float32)) as fence:
        fence.wait()
print("done")
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    written = list(tmp_path.glob("trace-*.json"))
    assert len(written) == 1, written
    events = json.loads(written[0].read_text())["traceEvents"]
    spans = [event for event in events if event.get("cat") == "instruction"]
    assert [span["name"] for span in spans] == ["DMA_COPY", "ACTIVATE", "SEM_WAIT", "DMA_COPY"] or \
        sorted(span["name"] for span in spans) == sorted(["DMA_COPY", "ACTIVATE", "SEM_WAIT", "DMA_COPY"])
    names = {(event["pid"], event["tid"]): event["args"]["name"] for event in events if event.get("name") == "thread_name"}
    assert {names[(span["pid"], span["tid"])] for span in spans} == {"core 0 DMA", "core 0 ACT"}
    # The ACTIVATE starts after the load it waits for has ended, on the virtual timeline.
    load = next(span for span in spans if span["args"]["instruction"] == 0)
    activate = next(span for span in spans if span["name"] == "ACTIVATE")
    assert activate["ts"] >= load["ts"] + load["dur"] - 1e-6
