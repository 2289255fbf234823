"""Device memory (HBM): allocation, alignment, the usage report, out of memory, coalescing of
freed blocks, and stale handles. HBM is backed lazily, so whole-device allocations cost nothing
until written."""

import ctypes
import gc
import re
from ctypes import byref

import numpy as np
import pytest

import vtrn
from vtrn import Status
from vtrn._library import DeviceMemoryHandle, DeviceMemoryInfoStruct, MemoryUsageStruct, lib

from support import open_runtime

GIB = 1 << 30
TRN1_HBM = 32 * GIB


@pytest.fixture
def runtime():
    with open_runtime(topology="trn1") as runtime:
        yield runtime


@pytest.fixture
def device(runtime):
    device = runtime.device(0)
    # Devices are the process's: a runtime leaked by an earlier test would show here.
    assert device.memory_usage().used_bytes == 0
    return device


def failure(error_class, call):
    with pytest.raises(error_class) as caught:
        call()
    assert caught.value.status == error_class.status
    return caught.value.message


def round_up(size, alignment=64):
    return -(-size // alignment) * alignment


# -- allocation ------------------------------------------------------------------------------------------

def test_default_alignment_is_64(device):
    with device.allocate(100) as memory:
        assert memory.info == vtrn.DeviceMemoryInfo(device_index=0, address=memory.address, bytes=100, alignment=64)
        assert (memory.bytes, memory.alignment) == (100, 64)
        assert memory.address % 64 == 0
        assert memory.device is device and memory.runtime is device.runtime


@pytest.mark.parametrize("alignment", [1, 2, 64, 4096, 1 << 21, GIB])
def test_power_of_two_alignments(device, alignment):
    with device.allocate(10) as small, device.allocate(3, alignment=alignment) as memory:
        assert memory.info.alignment == alignment
        assert memory.address % alignment == 0
        assert memory.address != small.address


@pytest.mark.parametrize("alignment", [3, 96, 1 << 31, (1 << 63) + 1])
def test_bad_alignment(device, alignment):
    message = failure(vtrn.InvalidArgumentError, lambda: device.allocate(64, alignment=alignment))
    assert message == (f"vtrn_device_memory_alloc: alignment {alignment} is not a power of two up to 1 GiB "
                       "(or 0 for the default, 64)")


def test_zero_bytes(device):
    message = failure(vtrn.InvalidArgumentError, lambda: device.allocate(0))
    assert message == "vtrn_device_memory_alloc: bytes is 0; a device memory block holds at least 1 byte"


def test_sizes_that_do_not_fit_uint64_are_refused_in_python(device):
    with pytest.raises(ValueError) as caught:
        device.allocate(-1)
    assert str(caught.value) == "bytes -1 is out of range: it must be 0 to 18446744073709551615 (a uint64_t)"


def test_null_out_and_struct_sizes_raw(device):
    assert lib.vtrn_device_memory_alloc(device.handle, 64, 0, None) == Status.ERROR_INVALID_ARGUMENT
    assert vtrn.last_error() == "vtrn_device_memory_alloc: out is NULL"
    assert lib.vtrn_device_get_memory_usage(device.handle, None) == Status.ERROR_INVALID_ARGUMENT
    assert vtrn.last_error() == "vtrn_device_get_memory_usage: usage is NULL"
    usage = MemoryUsageStruct.init()
    usage.struct_size = 8
    assert lib.vtrn_device_get_memory_usage(device.handle, byref(usage)) == Status.ERROR_INVALID_ARGUMENT
    assert vtrn.last_error() == ("vtrn_device_get_memory_usage: usage.struct_size is 8, smaller than 72, the size of "
                                 "the first vtrn_memory_usage_t; initialize it with VTRN_MEMORY_USAGE_INIT")
    with device.allocate(64) as memory:
        info = DeviceMemoryInfoStruct.init()
        info.struct_size = 8
        assert lib.vtrn_device_memory_get_info(memory.handle, byref(info)) == Status.ERROR_INVALID_ARGUMENT
        assert vtrn.last_error() == ("vtrn_device_memory_get_info: info.struct_size is 8, smaller than 40, the size of "
                                     "the first vtrn_device_memory_info_t; initialize it with "
                                     "VTRN_DEVICE_MEMORY_INFO_INIT")
        assert lib.vtrn_device_memory_get_info(memory.handle, None) == Status.ERROR_INVALID_ARGUMENT
        assert vtrn.last_error() == "vtrn_device_memory_get_info: info is NULL"


# -- usage and out of memory -----------------------------------------------------------------------------

def test_usage_tracks_allocations_and_frees(device):
    empty = device.memory_usage()
    assert empty == vtrn.MemoryUsage(total_bytes=TRN1_HBM, used_bytes=0, free_bytes=TRN1_HBM,
                                     largest_free_block=TRN1_HBM, tensor_bytes=0, kernel_bytes=0, allocation_count=0,
                                     resident_bytes=0)
    sizes = [1, 100, 4096, 1 << 20, 5 * GIB + 3]
    blocks = [device.allocate(size) for size in sizes]
    used = sum(round_up(size) for size in sizes)
    usage = device.memory_usage()
    assert (usage.used_bytes, usage.tensor_bytes, usage.allocation_count) == (used, used, len(sizes))
    assert usage.free_bytes == TRN1_HBM - used
    assert device.info.hbm_used_bytes == used
    blocks.pop(1).free()
    used -= round_up(100)
    assert device.memory_usage().used_bytes == device.info.hbm_used_bytes == used
    assert device.memory_usage().allocation_count == len(sizes) - 1
    for block in blocks:
        block.free()
    assert device.memory_usage() == empty
    assert device.info.hbm_used_bytes == 0


def test_resident_bytes_follow_what_is_written(device):
    data = np.ones(10 << 20, dtype=np.uint8)
    with device.to_device(data):
        assert device.memory_usage().resident_bytes >= data.nbytes
    assert device.memory_usage().resident_bytes == 0  # freed blocks give their pages back


def test_out_of_device_memory_report(device):
    requested = 33 * GIB
    message = failure(vtrn.OutOfDeviceMemoryError, lambda: device.allocate(requested))
    assert message == ("vtrn_device_memory_alloc: device 0 (Trainium1) cannot allocate 33 GiB (35433480192 bytes) "
                       "(alignment 64): 32 GiB (34359738368 bytes) of 32 GiB (34359738368 bytes) free, largest free "
                       "block 32 GiB (34359738368 bytes); in use: tensors 0 bytes, kernels 0 bytes in 0 blocks")


def test_out_of_device_memory_report_names_what_is_in_use(device):
    with device.allocate(GIB), device.allocate(100):
        message = failure(vtrn.OutOfDeviceMemoryError, lambda: device.allocate(TRN1_HBM - GIB))
    used = GIB + 128
    free = TRN1_HBM - used
    assert str(requested := TRN1_HBM - GIB) in message
    assert f"cannot allocate 31 GiB ({requested} bytes) (alignment 64)" in message
    assert f"31 GiB ({free} bytes) of 32 GiB ({TRN1_HBM} bytes) free" in message
    assert f"largest free block 31 GiB ({free} bytes)" in message
    assert message.endswith(f"in use: tensors 1 GiB ({used} bytes), kernels 0 bytes in 2 blocks")


def test_freed_space_coalesces(device):
    blocks = [device.allocate(8 * GIB) for _ in range(4)]
    usage = device.memory_usage()
    assert (usage.used_bytes, usage.free_bytes, usage.largest_free_block) == (TRN1_HBM, 0, 0)
    message = failure(vtrn.OutOfDeviceMemoryError, lambda: device.allocate(1))
    assert "cannot allocate 1 byte (alignment 64): 0 bytes of 32 GiB" in message
    # Free out of order, so that the last free must join blocks on both sides.
    for index in (1, 3, 0):
        blocks[index].free()
    usage = device.memory_usage()
    assert (usage.free_bytes, usage.largest_free_block) == (24 * GIB, 16 * GIB)
    failure(vtrn.OutOfDeviceMemoryError, lambda: device.allocate(24 * GIB))  # fragmented: 16 + 8
    blocks[2].free()
    assert device.memory_usage().largest_free_block == TRN1_HBM
    with device.allocate(TRN1_HBM) as whole:
        assert whole.address == 0
        assert device.memory_usage().free_bytes == 0


def test_usage_is_the_devices_not_the_runtimes(device):
    # Runtimes with the same topology share the device, as processes share a real one.
    with open_runtime(topology="trn1") as other, device.allocate(GIB):
        assert other.device(0).memory_usage().used_bytes == GIB
        assert other.device(0).info.hbm_used_bytes == GIB


def test_runtime_close_frees_its_memory():
    with open_runtime(topology="trn1") as runtime:
        raw = DeviceMemoryHandle()  # a block no Python object frees
        assert lib.vtrn_device_memory_alloc(runtime.device(0).handle, 8 * GIB, 0, byref(raw)) == Status.SUCCESS
        kept = runtime.device(0).allocate(GIB)
        assert runtime.device(0).memory_usage().used_bytes == 9 * GIB
    assert kept.closed
    with open_runtime(topology="trn1") as runtime:
        assert runtime.device(0).memory_usage().used_bytes == 0


def test_trn2_has_96_gib(runtime):
    with open_runtime(topology="trn2") as trn2:
        device = trn2.device(0)
        assert device.memory_usage().total_bytes == 96 * GIB
        with device.allocate(90 * GIB) as memory:
            assert memory.bytes == 90 * GIB
        message = failure(vtrn.OutOfDeviceMemoryError, lambda: device.allocate(97 * GIB))
        assert message.startswith("vtrn_device_memory_alloc: device 0 (Trainium2) cannot allocate 97 GiB")


# -- freeing and stale handles ------------------------------------------------------------------------------

def test_free_twice_raw(device):
    memory = device.allocate(64)
    handle = memory.handle
    assert lib.vtrn_device_memory_free(handle) == Status.SUCCESS
    assert lib.vtrn_device_memory_free(handle) == Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error() == f"vtrn_device_memory_free: vtrn_device_memory_t {handle.value:#x} is stale: it was freed"
    # The Python object was freed behind its back: it says so once, then it is closed.
    with pytest.raises(vtrn.InvalidHandleError) as caught:
        memory.free()
    assert caught.value.message == f"vtrn_device_memory_free: vtrn_device_memory_t {handle.value:#x} is stale: it was freed"
    memory.free()
    assert lib.vtrn_device_memory_free(None) == Status.SUCCESS


def test_free_and_close_are_one(device):
    memory = device.allocate(64)
    memory.free()
    memory.close()
    memory.free()
    assert memory.closed and "closed" in repr(memory)
    with device.allocate(64) as memory:
        pass
    assert memory.closed
    assert device.memory_usage().allocation_count == 0


def test_stale_after_free(device):
    memory = device.allocate(64)
    value = memory.handle.value
    memory.free()
    with pytest.raises(vtrn.InvalidHandleError) as caught:
        memory.info
    assert caught.value.message == f"vtrn_device_memory_get_info: vtrn_device_memory_t {value:#x} is stale: it was freed"


def test_dropped_memory_is_freed(device):
    memory = device.allocate(GIB)
    value = memory.handle.value
    del memory
    gc.collect()
    assert device.memory_usage().used_bytes == 0
    info = DeviceMemoryInfoStruct.init()
    assert lib.vtrn_device_memory_get_info(DeviceMemoryHandle(value), byref(info)) == Status.ERROR_INVALID_HANDLE


def test_stale_after_runtime_close():
    with open_runtime(topology="trn1") as runtime:
        device = runtime.device(0)
        memory = device.allocate(64)
    value = memory.handle.value
    with pytest.raises(vtrn.InvalidHandleError) as caught:
        memory.info
    assert re.fullmatch(rf"vtrn_device_memory_get_info: vtrn_device_memory_t {value:#x} is stale: runtime \d+, which "
                        r"owned it, was destroyed", caught.value.message), caught.value.message
    with pytest.raises(vtrn.InvalidHandleError) as caught:
        device.allocate(64)
    assert caught.value.message.startswith(f"vtrn_device_memory_alloc: vtrn_device_t {device.handle.value:#x} is stale")
    with pytest.raises(vtrn.InvalidHandleError) as caught:
        device.memory_usage()
    assert caught.value.message.startswith("vtrn_device_get_memory_usage: vtrn_device_t ")
    memory.free()  # the runtime released it: nothing to do
    assert lib.vtrn_device_memory_free(DeviceMemoryHandle(value)) == Status.ERROR_INVALID_HANDLE


def test_foreign_handle(device):
    value = device.handle.value
    assert lib.vtrn_device_memory_free(DeviceMemoryHandle(value)) == Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error() == f"vtrn_device_memory_free: {value:#x} is a vtrn_device_t, not a vtrn_device_memory_t"
    memory_handle = ctypes.c_void_p(0x1234)
    assert lib.vtrn_device_memory_free(DeviceMemoryHandle(memory_handle.value)) == Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error() == "vtrn_device_memory_free: 0x1234 is not a vtrn handle (garbage, uninitialized, or a pointer)"
