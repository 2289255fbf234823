"""Injected faults, device resets and error counters from Python: Device.inject_fault and
VTRN_FAULTS, what the caller sees (exception class, status and message), that other queues,
cores and devices go on with right data, one-shot against sticky, hangs ended by
VTRN_EXEC_TIMEOUT_MS or a reset, a lost device beside a working one, Device.reset and
Device.error_counters."""

import ctypes
import threading
import time

import numpy as np
import pytest

import vtrn
from vtrn._library import DeviceErrorCountersStruct, FaultStruct, lib

from support import failure, open_runtime

KIB = 1 << 10
TIMEOUT_MS = 300
SHAPE = (128, 16)


@pytest.fixture
def runtime(monkeypatch):
    monkeypatch.setenv("VTRN_EXEC_TIMEOUT_MS", str(TIMEOUT_MS))
    with open_runtime(topology="trn1:2") as runtime:
        # Devices are the process's: start clean whatever ran before, and leave clean.
        for device in runtime.devices:
            device.reset(clear_counters=True)
        yield runtime
        for device in runtime.devices:
            device.reset(clear_counters=True)


@pytest.fixture
def device(runtime):
    return runtime.device(0)


def doubling(runtime):
    """y = x * 2 through SBUF: DMA in (instruction 0), DVE (1), DMA out (2), ordered by semaphore 0."""
    program = runtime.program()
    x = program.parameter("x", SHAPE)
    y = program.parameter("y", SHAPE)
    tile = program.sbuf(SHAPE)
    program.dma_copy(tile, x, signal=(0, 1))
    program.tensor_scalar(tile, tile, "multiply", 2.0, wait=(0, 1), signal=(0, 1))
    program.dma_copy(y, tile, wait=(0, 2))
    return program


def values():
    return np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)


def wait_for_hangs(device, count):
    """Waits (up to 10 s) until `count` hangs have begun on the device."""
    deadline = time.monotonic() + 10
    while device.error_counters.hangs < count and time.monotonic() < deadline:
        time.sleep(0.001)
    assert device.error_counters.hangs >= count


def later(action, *arguments):
    """Runs action(*arguments) on a thread; returns the thread (join it)."""
    thread = threading.Thread(target=action, args=arguments)
    thread.start()
    return thread


# -- arguments ----------------------------------------------------------------------------------

def test_arguments_are_checked_in_python_and_in_c(device):
    with pytest.raises(ValueError, match="fault kind 'meltdown' is not one of dma_abort"):
        device.inject_fault("meltdown")
    with pytest.raises(ValueError, match="core 'x' is not a number, None \\(any\\) or \"host\""):
        device.inject_fault("dma_abort", core="x")
    with pytest.raises(ValueError, match="engine 'tpu' is not one of pe, act, dve, pool, dma"):
        device.inject_fault("engine_hang", engine="tpu")
    message = failure(vtrn.InvalidArgumentError, lambda: device.inject_fault("dma_abort", core=5))
    assert message == "vtrn_device_inject_fault: core 5 does not exist: device 0 (Trainium1) has 2 cores (0-1)"
    with pytest.raises(ValueError, match="core 'host' is not a number or None \\(any\\)"):
        device.inject_fault("engine_hang", core="host")
    raw = FaultStruct.init(kind=vtrn.FAULT_KINDS["engine_hang"], core=vtrn._library.FAULT_HOST)
    assert lib.vtrn_device_inject_fault(device.handle, ctypes.byref(raw)) == vtrn.Status.ERROR_INVALID_ARGUMENT
    assert vtrn.last_error() == "vtrn_device_inject_fault: fault.core is -2; accepted: a number or VTRN_FAULT_ANY (-1)"
    message = failure(vtrn.InvalidArgumentError, lambda: device.inject_fault("hbm_ue", address=64))
    assert message == "vtrn_device_inject_fault: the HBM range has 0 bytes"
    message = failure(vtrn.InvalidArgumentError, lambda: device.inject_fault("device_loss", after=2))
    assert "after is 2, but device-loss counts nothing" in message
    raw = FaultStruct.init(kind=vtrn.FAULT_KINDS["device_loss"], flags=0x8)
    assert lib.vtrn_device_inject_fault(device.handle, ctypes.byref(raw)) == vtrn.Status.ERROR_INVALID_ARGUMENT
    assert "fault.flags has unknown bits 0x8" in vtrn.last_error()
    raw.struct_size = 16
    assert lib.vtrn_device_inject_fault(device.handle, ctypes.byref(raw)) == vtrn.Status.ERROR_INVALID_ARGUMENT
    assert "fault.struct_size is 16, smaller than 56" in vtrn.last_error()
    counters = DeviceErrorCountersStruct.init(struct_size=8)
    assert lib.vtrn_device_get_error_counters(device.handle, ctypes.byref(counters)) == vtrn.Status.ERROR_INVALID_ARGUMENT
    assert "VTRN_DEVICE_ERROR_COUNTERS_INIT" in vtrn.last_error()
    assert lib.vtrn_device_reset(device.handle, 2) == vtrn.Status.ERROR_INVALID_ARGUMENT
    assert vtrn.last_error() == "vtrn_device_reset: flags has unknown bits 0x2; accepted: VTRN_DEVICE_RESET_CLEAR_COUNTERS"
    assert device.error_counters == vtrn.ErrorCounters(False, 0, 0, 0, 0, 0, 0, 0, 0)


# -- DMA aborts ---------------------------------------------------------------------------------

def test_a_dma_abort_fails_its_sequence_once_and_the_rest_goes_on(runtime, device):
    other = runtime.device(1)
    data = np.random.default_rng(1).integers(0, 256, 256 * KIB, dtype=np.uint8)  # 4 descriptors
    source, sink = runtime.register(data.copy()), runtime.host_buffer(256 * KIB)
    spare_sink, far_sink = runtime.host_buffer(256 * KIB), runtime.host_buffer(256 * KIB)
    with device.dma_queue(core=1, engine=7, queue=3) as queue, device.dma_queue(core=1, engine=7, queue=4) as neighbour, \
            other.dma_queue(core=1, engine=7, queue=3) as far:
        device.inject_fault("dma_abort", core=1, engine=7, queue=3, after=1)
        queue.enqueue([(sink, source, 256 * KIB)])
        failed = queue.submit()
        neighbour.enqueue([(spare_sink, source, 256 * KIB)])
        far.enqueue([(far_sink, source, 256 * KIB)])
        assert neighbour.wait(neighbour.submit()) and far.wait(far.submit())
        message = failure(vtrn.DmaFaultError, lambda: queue.wait(failed))
        assert message == ("vtrn_dma_queue_wait: DMA abort on queue 3 of DMA engine 7 of core 1 of device 0: descriptor 1 "
                           "(ring slot 1) failed with a descriptor error (injected fault 1 (dma-abort:core=1:engine=7:queue=3:"
                           "after=1)); sequence 1 failed (descriptors 1-3 did not complete); the queue goes on with later "
                           "submissions")
        assert failure(vtrn.DmaFaultError, lambda: queue.wait(failed, timeout_ns=0)) == message
        assert (sink.numpy()[:64 * KIB] == data[:64 * KIB]).all() and not sink.numpy()[64 * KIB:].any()
        assert (spare_sink.numpy() == data).all() and (far_sink.numpy() == data).all()
        # One-shot: the queue goes on.
        queue.enqueue([(sink, source, 256 * KIB)])
        assert queue.wait(queue.submit())
        assert (sink.numpy() == data).all()
        # Sticky: every submission fails until a reset.
        device.inject_fault("dma_abort", core=1, sticky=True)
        for _ in range(3):
            neighbour.enqueue([(spare_sink, source, 64)])
            message = failure(vtrn.DmaFaultError, lambda: neighbour.wait(neighbour.submit()))
            assert "injected fault 2 (dma-abort:core=1:sticky)" in message
        device.reset()
        neighbour.enqueue([(spare_sink, source, 256 * KIB)])
        assert neighbour.wait(neighbour.submit())
    counters = device.error_counters
    assert (counters.dma_aborts, counters.armed_faults, counters.faults_injected, counters.resets) == (4, 0, 2, 1)
    assert other.error_counters.dma_aborts == 0


# -- HBM uncorrectable errors ---------------------------------------------------------------------

def test_an_hbm_error_fails_reads_with_hardware_error(runtime, device):
    x = device.to_device(values())
    y = device.allocate(x.bytes)
    bad = x.info.address + 1024
    device.inject_fault("hbm_ue", address=bad, bytes=4, sticky=True)
    message = failure(vtrn.HardwareError, lambda: device.from_device(x, np.float32, SHAPE))
    assert message.startswith(f"vtrn_memcpy: uncorrectable HBM error on device 0: host DMA engine ")
    assert f"read HBM bytes [{x.info.address:#x}, {x.info.address + x.bytes:#x}) at descriptor" in message
    assert f"injected fault 1 (hbm-ue:address={bad:#x}:bytes=4:sticky)" in message
    # Writes succeed; reads beside the range too.
    device.memcpy(x, runtime.register(values()), x.bytes)
    assert (device.from_device(x, np.float32, (512,), offset=2048) == values().reshape(-1)[512:1024]).all()
    # A kernel reading it: its fence raises HardwareError naming instruction, core and parameter.
    with doubling(runtime) as program, device.load(program, core=1) as kernel:
        with kernel.execute(x=x, y=y) as fence:
            message = failure(vtrn.HardwareError, fence.wait)
            assert fence.status == vtrn.Status.ERROR_HARDWARE
        assert message.startswith("vtrn_fence_wait: uncorrectable HBM error on device 0: instruction 0 (DMA_COPY on DMA) "
                                  "of the execution on core 1 read src (parameter \"x\") at HBM bytes")
        # Another block is fine all along.
        z = device.to_device(values())
        with kernel.execute(x=z, y=y) as fence:
            assert (fence.result("y") == 2 * values()).all()
        assert device.error_counters.hbm_uncorrectable_errors == 2
        # A reset clears the sticky error; memory and contents stay.
        device.reset()
        with kernel.execute(x=x, y=y) as fence:
            assert (fence.result("y") == 2 * values()).all()


# -- hangs --------------------------------------------------------------------------------------

def test_an_engine_hang_ends_at_the_execution_timeout_while_the_other_core_works(runtime, device):
    with doubling(runtime) as program, device.load(program, core=0) as hung_kernel, \
            device.load(program, core=1) as other_kernel:
        device.inject_fault("engine_hang", core=0, engine="dve")
        start = time.monotonic()
        hung = hung_kernel.execute(x=values(), y=None)
        wait_for_hangs(device, 1)
        with other_kernel.execute(x=values(), y=None) as other:
            assert (other.result("y") == 2 * values()).all()
        assert hung.status == vtrn.Status.NOT_READY
        message = failure(vtrn.DeviceTimeoutError, hung.wait)
        assert time.monotonic() - start >= TIMEOUT_MS / 1000 * 0.95
        assert message == ("vtrn_fence_wait: instruction 1 (TENSOR_SCALAR on DVE) never finished: DVE of core 0 of device 0 "
                           "hung (injected fault 1 (engine-hang:core=0:engine=dve)); the execution timeout of 300 ms "
                           "(VTRN_EXEC_TIMEOUT_MS) ended it")
        hung.close()
        # One-shot: the core goes on.
        with hung_kernel.execute(x=values(), y=None) as fence:
            assert (fence.result("y") == 2 * values()).all()
    counters = device.error_counters
    assert (counters.hangs, counters.execution_timeouts) == (1, 1)


def test_a_reset_ends_a_hang_and_fails_queued_executions(runtime, device):
    with doubling(runtime) as program, device.load(program, core=0) as kernel:
        device.inject_fault("engine_hang", core=0, after=1, sticky=True)
        running, queued = kernel.execute(x=values(), y=None), kernel.execute(x=values(), y=None)
        thread = later(lambda: (wait_for_hangs(device, 1), device.reset()))
        message = failure(vtrn.DeviceResetError, running.wait)
        thread.join()
        assert message == ("vtrn_fence_wait: instruction 1 (TENSOR_SCALAR on DVE) never finished: DVE of core 0 of device 0 "
                           "hung (injected fault 1 (engine-hang:core=0:after=1:sticky)) until device 0 was reset "
                           "(vtrn_device_reset)")
        assert failure(vtrn.DeviceResetError, queued.wait) == (
            "vtrn_fence_wait: device 0 was reset (vtrn_device_reset) while the execution was queued on core 0; it did not run")
        running.close()
        queued.close()
        with kernel.execute(x=values(), y=None) as fence:
            assert (fence.result("y") == 2 * values()).all()
    assert device.error_counters.resets == 1


def test_a_dma_hang_ends_even_a_wait_forever_at_the_execution_timeout(runtime, device):
    data = np.arange(128 * KIB, dtype=np.uint8)
    source, sink = runtime.register(data.copy()), runtime.host_buffer(128 * KIB)
    with device.dma_queue(core=0, engine=2, queue=9) as queue:
        device.inject_fault("dma_hang", core=0, engine=2, queue=9, after=1)
        queue.enqueue([(sink, source, 128 * KIB)])
        sequence = queue.submit()
        wait_for_hangs(device, 1)
        assert queue.wait(sequence, timeout_ns=0) is False
        start = time.monotonic()
        message = failure(vtrn.DeviceTimeoutError, lambda: queue.wait(sequence))
        assert time.monotonic() - start < 10
        assert message == ("vtrn_dma_queue_wait: queue 9 of DMA engine 2 of core 0 of device 0 hung at descriptor 1 (ring slot 1) "
                           "(injected fault 1 (dma-hang:core=0:engine=2:queue=9:after=1)); the execution timeout of 300 ms "
                           "(VTRN_EXEC_TIMEOUT_MS) ended the wait for it; sequence 1 failed (descriptor 1 did not complete); "
                           "the queue goes on with later submissions")
        queue.enqueue([(sink, source, 128 * KIB)])
        assert queue.wait(queue.submit())
        assert (sink.numpy() == data).all()
        # Sticky, and a reset before the timeout: the sequence fails with DeviceResetError.
        device.inject_fault("dma_hang", sticky=True)
        queue.enqueue([(sink, source, 128 * KIB)])
        sequence = queue.submit()
        thread = later(lambda: (wait_for_hangs(device, 2), device.reset()))
        message = failure(vtrn.DeviceResetError, lambda: queue.wait(sequence))
        thread.join()
        assert message == ("vtrn_dma_queue_wait: device 0 was reset (vtrn_device_reset) while the work was in flight on queue 9 "
                           "of DMA engine 2 of core 0 of device 0; sequence 3 failed (descriptors 4-5 did not complete); the queue "
                           "is clean and usable again")
        queue.enqueue([(sink, source, 128 * KIB)])
        assert queue.wait(queue.submit())


# -- device loss --------------------------------------------------------------------------------

def test_a_lost_device_fails_every_call_the_other_works_and_a_reset_brings_it_back(runtime):
    alive, lost = runtime.devices
    x = lost.to_device(values())
    with lost.dma_queue(core=0) as queue, doubling(runtime) as program, lost.load(program) as kernel, \
            alive.load(program) as alive_kernel:
        lost.inject_fault("device_loss")
        why = "device 1 is lost (lost by injected fault 1 (device-loss)); vtrn_device_reset brings it back"
        assert failure(vtrn.DeviceLostError, lambda: lost.allocate(64)) == f"vtrn_device_memory_alloc: {why}"
        assert failure(vtrn.DeviceLostError, lambda: lost.dma_queue(core=0, queue=1)) == f"vtrn_dma_queue_create: {why}"
        assert failure(vtrn.DeviceLostError, lambda: lost.from_device(x)) == f"vtrn_memcpy: {why}"
        assert failure(vtrn.DeviceLostError, queue.submit) == f"vtrn_dma_queue_submit: {why}"
        assert failure(vtrn.DeviceLostError, lambda: kernel.execute(x=x, y=x)) == f"vtrn_kernel_execute: {why}"
        assert failure(vtrn.DeviceLostError, lambda: lost.load(program, core=1)) == f"vtrn_kernel_load: {why}"
        assert failure(vtrn.DeviceLostError, lambda: lost.inject_fault("device_loss")) == f"vtrn_device_inject_fault: {why}"
        assert lost.info.index == 1 and lost.error_counters.lost
        # The other device works.
        with alive_kernel.execute(x=values(), y=None) as fence:
            assert (fence.result("y") == 2 * values()).all()
        assert not alive.error_counters.lost
        # A reset brings it back, memory kept.
        lost.reset()
        assert (lost.from_device(x, np.float32, SHAPE) == values()).all()
        with kernel.execute(x=x, y=None) as fence:
            assert (fence.result("y") == 2 * values()).all()
    counters = lost.error_counters
    assert (counters.lost, counters.device_losses, counters.resets) == (False, 1, 1)


# -- VTRN_FAULTS --------------------------------------------------------------------------------

def test_vtrn_faults_arms_faults_at_runtime_creation(monkeypatch):
    monkeypatch.setenv("VTRN_FAULTS", "dma-abort:core=0:engine=0:queue=0:sticky, device-loss:device=1")
    with open_runtime(topology="trn1:2") as runtime:
        device, lost = runtime.devices
        assert device.error_counters.armed_faults == 1 and lost.error_counters.lost
        buffer = runtime.host_buffer(4096)
        with device.dma_queue() as queue:
            queue.enqueue([((buffer, 0), (buffer, 2048), 2048)])
            message = failure(vtrn.DmaFaultError, lambda: queue.wait(queue.submit()))
            assert "injected fault 1 (dma-abort:core=0:engine=0:queue=0:sticky)" in message
        assert "lost by injected fault 1 (device-loss)" in failure(vtrn.DeviceLostError, lambda: lost.allocate(64))
        device.reset(clear_counters=True)
        lost.reset(clear_counters=True)


def test_vtrn_faults_hangs_and_hbm_errors(monkeypatch):
    monkeypatch.setenv("VTRN_EXEC_TIMEOUT_MS", str(TIMEOUT_MS))
    monkeypatch.setenv("VTRN_FAULTS", "hbm-ue:address=0:bytes=4:sticky,engine-hang:core=1:engine=act")
    with open_runtime(topology="trn1") as runtime:
        device = runtime.device(0)
        try:
            x = device.to_device(values())  # a fresh device hands out address 0 first
            assert x.info.address == 0
            assert "injected fault 1 (hbm-ue:address=0x0:bytes=4:sticky)" in failure(
                vtrn.HardwareError, lambda: device.from_device(x))
            program = runtime.program()
            a = program.parameter("a", SHAPE)
            tile = program.sbuf(SHAPE)
            program.tensor_copy(tile, tile, engine="act")
            program.dma_copy(a, tile, wait=None)
            with program, device.load(program, core=1) as kernel, kernel.execute(a=device.allocate(x.bytes)) as fence:
                message = failure(vtrn.DeviceTimeoutError, fence.wait)
            assert message.startswith("vtrn_fence_wait: instruction 0 (TENSOR_COPY on ACT) never finished: ACT of core 1 of "
                                      "device 0 hung (injected fault 2 (engine-hang:core=1:engine=act))")
        finally:
            device.reset(clear_counters=True)


@pytest.mark.parametrize("text, problem", [
    ("hang", "fault 1 (\"hang\") has kind \"hang\", which is not dma-abort, dma-hang, hbm-ue, engine-hang or device-loss"),
    ("device-loss,,", "fault 2 is empty"),
    ("dma-abort:core=2", "fault 1 (\"dma-abort:core=2\"): core 2 does not exist: device 0 (Trainium1) has 2 cores (0-1)"),
    ("dma-abort:speed=9", "option \"speed\", which dma-abort does not take"),
    ("hbm-ue:address=0x100", "needs both address=A and bytes=N"),
    ("hbm-ue:address=0x100:bytes=zero", "bytes=\"zero\", which is not a number"),
    ("engine-hang:engine=npu", "engine=\"npu\", which is not pe, act, dve, pool, dma or any"),
    ("device-loss:device=9", "names device 9, which does not exist: the topology \"trn1:2\" has 2 devices (0-1)"),
])
def test_vtrn_faults_errors_name_the_bad_part(monkeypatch, text, problem):
    monkeypatch.setenv("VTRN_FAULTS", text)
    message = failure(vtrn.InvalidArgumentError, lambda: vtrn.Runtime(topology="trn1:2"))
    assert message.startswith(f"vtrn_runtime_create: VTRN_FAULTS=\"{text}\": ")
    assert problem in message
    assert "accepted: faults separated by commas, each KIND[:OPTION]..." in message
