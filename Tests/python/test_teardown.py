"""Teardown under fire and leaks, from Python: live-handle counts, a runtime closed while other
threads use it, and the library loaded, used and unloaded again (ctypes + dlclose)."""

import threading
import time

import numpy as np

import vtrn
from vtrn._library import lib
from support import SerialProgram, run_python


def test_handle_counts_follow_every_kind_of_object():
    before = vtrn.handle_counts()
    with vtrn.Runtime(topology="trn1:2") as runtime:
        device = runtime.devices[0]
        buffer = runtime.host_buffer(4096)
        memory = device.allocate(4096)
        queue = device.dma_queue(core=0, engine=3)
        program = runtime.program()
        during = vtrn.handle_counts()
        assert during.runtimes == before.runtimes + 1
        assert during.devices == before.devices + 2
        assert during.host_buffers == before.host_buffers + 1
        assert during.device_memory == before.device_memory + 1
        assert during.dma_queues == before.dma_queues + 1
        assert during.programs == before.programs + 1
        assert during.total == before.total + 7
        queue.close()
        memory.free()
        buffer.close()
        program.close()
        assert vtrn.handle_counts().total == before.total + 3
    assert vtrn.handle_counts() == before


def test_closing_the_runtime_while_threads_use_it_only_invalidates_their_handles():
    """Workers copy with vtrn_memcpy, drive a DMA queue and execute kernels while the main thread
    closes the runtime: each call succeeds or raises InvalidHandleError, and nothing hangs."""
    before = vtrn.handle_counts()
    runtime = vtrn.Runtime(topology="trn1")
    device = runtime.devices[0]
    stop = threading.Event()
    outcomes = {"ok": 0, "invalid": 0}
    unexpected = []
    lock = threading.Lock()

    def tally(key):
        with lock:
            outcomes[key] += 1

    def guarded(work):
        def run():
            while not stop.is_set():
                try:
                    work()
                    tally("ok")
                except vtrn.InvalidHandleError:
                    tally("invalid")
                except BaseException as error:  # anything else is a failure, reported below
                    unexpected.append(repr(error))
                    return
        return run

    def copies():
        source, target = runtime.host_buffer(8192), runtime.host_buffer(8192)
        memory = device.allocate(8192)
        try:
            device.memcpy(memory, source, 8192)
            device.memcpy(target, memory, 8192)
        finally:
            for item in (memory, source, target):
                item.close()

    def transfers(queue_state={}):
        if "queue" not in queue_state:
            queue_state["queue"] = device.dma_queue(core=0, engine=5)
            queue_state["buffer"] = runtime.host_buffer(65536)
            queue_state["memory"] = device.allocate(65536)
        queue = queue_state["queue"]
        queue.enqueue([(queue_state["memory"], queue_state["buffer"], 65536)])
        queue.wait(queue.submit())

    def executions(state={}):
        if "kernel" not in state:
            serial = SerialProgram(runtime)
            serial.store("y", serial.load("x", np.arange(512, dtype=np.float32).reshape(16, 32)))
            state["kernel"] = device.load(serial.program, core=1)
            state["x"] = np.arange(512, dtype=np.float32).reshape(16, 32)
        with state["kernel"].execute(x=state["x"], y=None) as fence:
            assert np.array_equal(fence.result("y"), state["x"])

    threads = [threading.Thread(target=guarded(work)) for work in (copies, copies, transfers, executions)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    runtime.close()
    time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker hung after the runtime closed"
    assert unexpected == []
    assert outcomes["ok"] > 0 and outcomes["invalid"] > 0, outcomes
    after = vtrn.handle_counts()
    assert after.total == before.total, (before, after)


def test_the_library_unloads_and_reloads_cleanly():
    """ctypes loads libvtrn, uses it, and dlcloses it, 20 times in one process: every round works,
    the library stays mapped (it is linked -z nodelete: the Swift runtime cannot forget its type
    metadata, see Package.swift) so every load finds the same copy, and no thread is left behind."""
    code = f"""
import ctypes, os, _ctypes
path = {lib._name!r}
def threads():
    return len(os.listdir("/proc/self/task"))
baseline = None
unloaded = 0
for round in range(20):
    library = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    runtime, device = ctypes.c_uint64(), ctypes.c_uint64()
    buffer, memory = ctypes.c_uint64(), ctypes.c_uint64()
    assert library.vtrn_runtime_create(None, ctypes.byref(runtime)) == 0
    assert library.vtrn_device_get(runtime, 0, ctypes.byref(device)) == 0
    assert library.vtrn_host_buffer_create(runtime, ctypes.c_size_t(1 << 16), None, ctypes.byref(buffer)) == 0
    assert library.vtrn_device_memory_alloc(device, ctypes.c_uint64(1 << 16), ctypes.c_uint64(0), ctypes.byref(memory)) == 0
    class Ref(ctypes.Structure):
        _fields_ = [("memory", ctypes.c_uint64), ("offset", ctypes.c_uint64)]
    library.vtrn_memcpy.argtypes = [ctypes.c_uint64, Ref, Ref, ctypes.c_uint64]
    assert library.vtrn_memcpy(device, Ref(memory.value, 0), Ref(buffer.value, 0), 1 << 16) == 0
    # Destroyed with its buffer and memory still alive: the runtime takes them along.
    assert library.vtrn_runtime_destroy(runtime) == 0
    _ctypes.dlclose(library._handle)
    del library
    try:
        ctypes.CDLL(path, mode=os.RTLD_NOLOAD)
    except OSError:
        unloaded += 1
    # After the first round: the library's dependencies stay loaded with it (OpenBLAS keeps its
    # worker thread), so the steady state is measured from there.
    if baseline is None:
        baseline = threads()
print("rounds 20 unloaded", unloaded, "threads", baseline, threads())
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.split()
    assert words[:4] == ["rounds", "20", "unloaded", "0"], result.stdout
    assert words[5] == words[6], f"threads before and after: {result.stdout}"
