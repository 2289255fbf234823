"""Several threads at once: runtimes created, queried and destroyed concurrently, and
vtrn_last_error() kept per thread."""

import ctypes
import threading

import vtrn
from support import run_threads
from vtrn._library import DeviceHandle, lib

THREADS = 8
ROUNDS = 25


def canonical(index):
    """The topology of thread ``index`` as the library spells it ("trn1", "trn1:2", ...)."""
    return "trn1" if index == 0 else f"trn1:{index + 1}"


def test_create_query_destroy_from_many_threads():
    handles = [set() for _ in range(THREADS)]

    def work(index):
        for _ in range(ROUNDS):
            with vtrn.Runtime(topology=f"trn1:{index + 1}", visible_cores="0") as runtime:
                handles[index].add(runtime.handle.value)
                assert runtime.info.topology == canonical(index)
                devices = runtime.devices
                assert len(devices) == index + 1
                assert [device.info.index for device in devices] == list(range(index + 1))
                assert devices[-1].core_info(1).global_index == 2 * index + 1
            try:
                runtime.info
            except vtrn.InvalidHandleError as error:
                # "it was destroyed", or "... (or never existed)" once another thread reused and freed the slot
                assert error.message.startswith(
                    f"vtrn_runtime_get_info: vtrn_runtime_t {runtime.handle.value:#x} is stale: it was destroyed")
            else:
                raise AssertionError("a destroyed runtime answered")

    run_threads(THREADS, work)
    # Slots are reused, but never the same token: the generation changes.
    every = [handle for per_thread in handles for handle in per_thread]
    assert len(every) == len(set(every)) == THREADS * ROUNDS


def test_last_error_is_per_thread():
    barrier = threading.Barrier(THREADS, timeout=60)

    def work(index):
        with vtrn.Runtime(topology=f"trn1:{index + 1}") as runtime:
            for round_ in range(ROUNDS):
                wanted = 100 + index * ROUNDS + round_
                out = DeviceHandle()
                assert lib.vtrn_device_get(runtime.handle, wanted, ctypes.byref(out)) == vtrn.Status.ERROR_NOT_FOUND
                barrier.wait()  # every thread has failed its own way before anyone reads
                expected = (f'vtrn_device_get: device {wanted} does not exist: the topology "{canonical(index)}" has '
                            f"{index + 1} device")
                assert vtrn.last_error().startswith(expected), vtrn.last_error()
                runtime.info  # a success on this thread changes nothing
                assert vtrn.last_error().startswith(expected)
                barrier.wait()

    run_threads(THREADS, work)


def test_python_errors_carry_their_own_thread_message():
    barrier = threading.Barrier(THREADS, timeout=60)

    def work(index):
        with vtrn.Runtime(topology="trn2") as runtime:
            device = runtime.device(0)
            for _ in range(ROUNDS):
                barrier.wait()
                try:
                    device.core_info(8 + index)
                except vtrn.NotFoundError as error:
                    assert error.message == f"vtrn_device_get_core_info: device 0 has 8 cores (0-7); core {8 + index} requested"
                else:
                    raise AssertionError("core_info did not fail")

    run_threads(THREADS, work)


def test_shared_runtime_queried_from_many_threads():
    with vtrn.Runtime(topology="trn1,trn2:3") as runtime:
        expected = [device.info for device in runtime.devices]

        def work(index):
            for _ in range(ROUNDS):
                assert [device.info for device in runtime.devices] == expected
                assert runtime.device(index % 4).core_info(1).device_index == index % 4

        run_threads(THREADS, work)
