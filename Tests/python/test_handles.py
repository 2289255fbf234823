"""What the C library does with bad handles and bad pointers, called straight through ctypes:
stale, garbage, foreign and NULL handles; NULL out-pointers; struct_size too small or larger
than ours; double destroy; out-parameters left untouched on failure."""

import ctypes
from ctypes import byref

import pytest

import vtrn
from vtrn import Status
from vtrn._library import (
    CoreInfoStruct,
    DeviceHandle,
    DeviceInfoStruct,
    RuntimeHandle,
    RuntimeInfoStruct,
    RuntimeOptionsStruct,
    lib,
)

STALE_RUNTIME = "is stale: it was destroyed"


@pytest.fixture
def runtime():
    with vtrn.Runtime(topology="trn1,trn2") as runtime:
        yield runtime


def raw_failure(status, call):
    """Runs a raw C call that must fail with ``status``; returns this thread's message."""
    assert call() == status
    return vtrn.last_error()


# -- stale handles through the Python objects ----------------------------------------------------

def test_runtime_after_close(runtime):
    handle = runtime.handle.value
    runtime.close()
    expected = f"vtrn_runtime_t {handle:#x} {STALE_RUNTIME}"
    for use, function in ((lambda: runtime.info, "vtrn_runtime_get_info"),
                          (lambda: runtime.devices, "vtrn_device_count"),
                          (lambda: runtime.device_count, "vtrn_device_count"),
                          (lambda: runtime.device(0), "vtrn_device_get")):
        with pytest.raises(vtrn.InvalidHandleError) as caught:
            use()
        assert caught.value.status == Status.ERROR_INVALID_HANDLE
        assert caught.value.status_name == "VTRN_ERROR_INVALID_HANDLE"
        assert caught.value.message == f"{function}: {expected}"


def test_devices_after_close(runtime):
    devices = runtime.devices
    runtime.close()
    for device in devices:
        for use, function in ((lambda: device.info, "vtrn_device_get_info"),
                              (lambda: device.core_info(0), "vtrn_device_get_core_info"),
                              (device.cores, "vtrn_device_get_info")):
            with pytest.raises(vtrn.InvalidHandleError) as caught:
                use()
            message = caught.value.message
            assert message.startswith(f"{function}: vtrn_device_t {device.handle.value:#x} is stale: runtime ")
            assert message.endswith(", which owned it, was destroyed")


def test_stale_handles_stay_stale_when_new_runtimes_are_made(runtime):
    device = runtime.device(0)
    runtime.close()
    others = [vtrn.Runtime(topology="trn1,trn2") for _ in range(4)]
    try:
        with pytest.raises(vtrn.InvalidHandleError):
            device.info
        with pytest.raises(vtrn.InvalidHandleError):
            runtime.info
    finally:
        for other in others:
            other.close()


# -- garbage, foreign and NULL handles, raw ------------------------------------------------------

@pytest.mark.parametrize("value", [0x1234, 0xDEADBEEF, 0xFFFF_FFFF_FFFF_FFFF, 0x7700_0000_0000_0001])
def test_garbage_runtime_handle(value):
    count = ctypes.c_uint32(77)
    message = raw_failure(Status.ERROR_INVALID_HANDLE, lambda: lib.vtrn_device_count(RuntimeHandle(value), byref(count)))
    assert message == f"vtrn_device_count: {value:#x} is not a vtrn handle (garbage, uninitialized, or a pointer)"
    assert count.value == 77


@pytest.mark.parametrize("value", [0x1234, 0xFFFF_FFFF_FFFF_FFFF])
def test_garbage_device_handle(value):
    info = DeviceInfoStruct.init()
    message = raw_failure(Status.ERROR_INVALID_HANDLE, lambda: lib.vtrn_device_get_info(DeviceHandle(value), byref(info)))
    assert message == f"vtrn_device_get_info: {value:#x} is not a vtrn handle (garbage, uninitialized, or a pointer)"


def test_well_formed_handle_that_never_existed():
    value = 0x7610_0FFF_0000_0001  # the runtime kind, a slot never used
    info = RuntimeInfoStruct.init()
    message = raw_failure(Status.ERROR_INVALID_HANDLE, lambda: lib.vtrn_runtime_get_info(RuntimeHandle(value), byref(info)))
    assert message == f"vtrn_runtime_get_info: vtrn_runtime_t {value:#x} is stale: it was destroyed (or never existed)"


def test_device_handle_passed_as_runtime_handle(runtime):
    device = runtime.device(1).handle
    count = ctypes.c_uint32()
    # ctypes itself refuses the wrong handle class: the argtypes are typed.
    with pytest.raises(ctypes.ArgumentError):
        lib.vtrn_device_count(device, byref(count))
    # The same bits as a runtime handle reach C, which recognises them.
    message = raw_failure(Status.ERROR_INVALID_HANDLE, lambda: lib.vtrn_device_count(RuntimeHandle(device.value), byref(count)))
    assert message == f"vtrn_device_count: {device.value:#x} is a vtrn_device_t, not a vtrn_runtime_t"


def test_runtime_handle_passed_as_device_handle(runtime):
    info = CoreInfoStruct.init()
    value = runtime.handle.value
    message = raw_failure(Status.ERROR_INVALID_HANDLE,
                          lambda: lib.vtrn_device_get_core_info(DeviceHandle(value), 0, byref(info)))
    assert message == f"vtrn_device_get_core_info: {value:#x} is a vtrn_runtime_t, not a vtrn_device_t"


def test_null_handles():
    count = ctypes.c_uint32()
    message = raw_failure(Status.ERROR_INVALID_HANDLE, lambda: lib.vtrn_device_count(None, byref(count)))
    assert message == "vtrn_device_count: the vtrn_runtime_t is NULL"
    message = raw_failure(Status.ERROR_INVALID_HANDLE, lambda: lib.vtrn_device_count(RuntimeHandle(), byref(count)))
    assert message == "vtrn_device_count: the vtrn_runtime_t is NULL"
    info = DeviceInfoStruct.init()
    message = raw_failure(Status.ERROR_INVALID_HANDLE, lambda: lib.vtrn_device_get_info(None, byref(info)))
    assert message == "vtrn_device_get_info: the vtrn_device_t is NULL"


# -- NULL out-pointers -----------------------------------------------------------------------------

def test_null_out_pointers(runtime):
    device = runtime.device(0).handle
    calls = {
        "vtrn_runtime_create: out is NULL": lambda: lib.vtrn_runtime_create(None, None),
        "vtrn_runtime_get_info: info is NULL": lambda: lib.vtrn_runtime_get_info(runtime.handle, None),
        "vtrn_device_count: count is NULL": lambda: lib.vtrn_device_count(runtime.handle, None),
        "vtrn_device_get: out is NULL": lambda: lib.vtrn_device_get(runtime.handle, 0, None),
        "vtrn_device_get_info: info is NULL": lambda: lib.vtrn_device_get_info(device, None),
        "vtrn_device_get_core_info: info is NULL": lambda: lib.vtrn_device_get_core_info(device, 0, None),
    }
    for expected, call in calls.items():
        assert raw_failure(Status.ERROR_INVALID_ARGUMENT, call) == expected
        with pytest.raises(vtrn.InvalidArgumentError) as caught:
            vtrn.errors.check(call())
        assert caught.value.message == expected


def test_null_options_means_defaults():
    handle = RuntimeHandle()
    assert lib.vtrn_runtime_create(None, byref(handle)) == Status.SUCCESS
    try:
        info = RuntimeInfoStruct.init()
        assert lib.vtrn_runtime_get_info(handle, byref(info)) == Status.SUCCESS
        assert info.topology == b"trn1"
    finally:
        assert lib.vtrn_runtime_destroy(handle) == Status.SUCCESS


# -- struct_size -------------------------------------------------------------------------------------

C_NAMES = {RuntimeOptionsStruct: "vtrn_runtime_options_t", RuntimeInfoStruct: "vtrn_runtime_info_t",
           DeviceInfoStruct: "vtrn_device_info_t", CoreInfoStruct: "vtrn_core_info_t"}


# Structs that have grown since their first version: the size of that version, the smallest
# struct_size the library accepts (the offset of the first field appended).
FIRST_VERSION_SIZES = {RuntimeInfoStruct: RuntimeInfoStruct.instance_type.offset,
                       DeviceInfoStruct: DeviceInfoStruct.interconnect.offset}


def first_version_size(cls):
    return FIRST_VERSION_SIZES.get(cls, ctypes.sizeof(cls))


def struct_size_message(parameter, cls, size=8):
    c_name = C_NAMES[cls]
    macro = "VTRN_" + c_name[len("vtrn_"):-len("_t")].upper() + "_INIT"
    return (f"{parameter}.struct_size is {size}, smaller than {first_version_size(cls)}, the size of the first {c_name}; "
            f"initialize it with {macro}")


@pytest.mark.parametrize("size", [0, 8, 31])
def test_options_struct_size_too_small(size):
    options = RuntimeOptionsStruct.init(topology=b"trn2")
    options.struct_size = size
    handle = RuntimeHandle(0x5555)
    message = raw_failure(Status.ERROR_INVALID_ARGUMENT, lambda: lib.vtrn_runtime_create(byref(options), byref(handle)))
    assert message == "vtrn_runtime_create: " + struct_size_message("options", RuntimeOptionsStruct, size)
    assert message.endswith("initialize it with VTRN_RUNTIME_OPTIONS_INIT")
    assert handle.value == 0x5555  # untouched


def test_info_struct_size_too_small(runtime):
    device = runtime.device(0).handle
    cases = [
        ("vtrn_runtime_get_info", RuntimeInfoStruct, lambda info: lib.vtrn_runtime_get_info(runtime.handle, byref(info))),
        ("vtrn_device_get_info", DeviceInfoStruct, lambda info: lib.vtrn_device_get_info(device, byref(info))),
        ("vtrn_device_get_core_info", CoreInfoStruct, lambda info: lib.vtrn_device_get_core_info(device, 0, byref(info))),
    ]
    for function, cls, call in cases:
        info = cls.init()
        info.struct_size = 8
        before = bytes(info)
        message = raw_failure(Status.ERROR_INVALID_ARGUMENT, lambda: call(info))
        assert message == f"{function}: " + struct_size_message("info", cls)
        assert bytes(info) == before  # nothing written


def test_first_version_info_structs_are_filled_up_to_their_size(runtime):
    # A caller built against the first vtrn_runtime_info_t (288 bytes) or vtrn_device_info_t (224)
    # still works, and nothing past its struct is written.
    device = runtime.device(0).handle
    calls = {RuntimeInfoStruct: lambda info: lib.vtrn_runtime_get_info(runtime.handle, byref(info)),
             DeviceInfoStruct: lambda info: lib.vtrn_device_get_info(device, byref(info))}
    for cls, call in calls.items():
        size = first_version_size(cls)
        assert size in (288, 224)
        info = cls.init()
        ctypes.memset(ctypes.addressof(info), 0xAB, ctypes.sizeof(cls))
        info.struct_size = size
        assert call(info) == Status.SUCCESS
        assert info.struct_size == size
        assert bytes(info)[size:] == b"\xab" * (ctypes.sizeof(cls) - size)
        assert info.core_count != 0xABABABAB


def larger(cls, extra=64):
    """A struct that is ``cls`` followed by ``extra`` bytes of a newer version we do not know."""
    class Larger(ctypes.Structure):
        _fields_ = [("known", cls), ("newer", ctypes.c_uint8 * extra)]
    value = Larger()
    value.known = cls.init()
    value.known.struct_size = ctypes.sizeof(Larger)
    ctypes.memset(value.newer, 0xAB, extra)
    return value


def test_larger_info_structs_are_filled_up_to_what_the_library_knows(runtime):
    device = runtime.device(1).handle
    for cls, call in ((RuntimeInfoStruct, lambda p: lib.vtrn_runtime_get_info(runtime.handle, p)),
                      (DeviceInfoStruct, lambda p: lib.vtrn_device_get_info(device, p)),
                      (CoreInfoStruct, lambda p: lib.vtrn_device_get_core_info(device, 3, p))):
        value = larger(cls)
        assert call(ctypes.cast(ctypes.pointer(value), ctypes.POINTER(cls))) == Status.SUCCESS
        assert value.known.struct_size == ctypes.sizeof(value)
        assert bytes(value.newer) == b"\xab" * 64
    assert larger(DeviceInfoStruct).known.core_count == 0
    value = larger(DeviceInfoStruct)
    lib.vtrn_device_get_info(device, ctypes.cast(ctypes.pointer(value), ctypes.POINTER(DeviceInfoStruct)))
    assert (value.known.core_count, value.known.name) == (8, b"Trainium2")


def test_larger_options_struct_is_accepted():
    value = larger(RuntimeOptionsStruct)
    value.known.topology = b"trn2:3"
    handle = RuntimeHandle()
    assert lib.vtrn_runtime_create(ctypes.cast(ctypes.pointer(value), ctypes.POINTER(RuntimeOptionsStruct)),
                                   byref(handle)) == Status.SUCCESS
    try:
        count = ctypes.c_uint32()
        assert lib.vtrn_device_count(handle, byref(count)) == Status.SUCCESS
        assert count.value == 3
    finally:
        lib.vtrn_runtime_destroy(handle)


# -- destroy ---------------------------------------------------------------------------------------

def test_double_destroy():
    handle = RuntimeHandle()
    assert lib.vtrn_runtime_create(None, byref(handle)) == Status.SUCCESS
    assert lib.vtrn_runtime_destroy(handle) == Status.SUCCESS
    message = raw_failure(Status.ERROR_INVALID_HANDLE, lambda: lib.vtrn_runtime_destroy(handle))
    assert message == f"vtrn_runtime_destroy: vtrn_runtime_t {handle.value:#x} {STALE_RUNTIME}"


def test_destroy_garbage_and_foreign(runtime):
    message = raw_failure(Status.ERROR_INVALID_HANDLE, lambda: lib.vtrn_runtime_destroy(RuntimeHandle(0x1234)))
    assert message == "vtrn_runtime_destroy: 0x1234 is not a vtrn handle (garbage, uninitialized, or a pointer)"
    device = runtime.device(0).handle.value
    message = raw_failure(Status.ERROR_INVALID_HANDLE, lambda: lib.vtrn_runtime_destroy(RuntimeHandle(device)))
    assert message == f"vtrn_runtime_destroy: {device:#x} is a vtrn_device_t, not a vtrn_runtime_t"
    assert runtime.info.device_count == 2  # unharmed


def test_destroy_null_is_a_no_op():
    assert lib.vtrn_runtime_destroy(None) == Status.SUCCESS
    assert lib.vtrn_runtime_destroy(RuntimeHandle()) == Status.SUCCESS


def test_close_after_raw_destroy_raises_once(runtime):
    assert lib.vtrn_runtime_destroy(runtime.handle) == Status.SUCCESS
    with pytest.raises(vtrn.InvalidHandleError) as caught:
        runtime.close()
    assert caught.value.message == f"vtrn_runtime_destroy: vtrn_runtime_t {runtime.handle.value:#x} {STALE_RUNTIME}"
    runtime.close()  # closed now: nothing more to do


# -- out-parameters are left untouched on failure -------------------------------------------------

def test_out_parameters_untouched_on_failure(runtime):
    device = DeviceHandle(0x5555)
    assert lib.vtrn_device_get(runtime.handle, 2, byref(device)) == Status.ERROR_NOT_FOUND
    assert device.value == 0x5555
    handle = RuntimeHandle(0x6666)
    options = RuntimeOptionsStruct.init(topology=b"trn3")
    assert lib.vtrn_runtime_create(byref(options), byref(handle)) == Status.ERROR_INVALID_ARGUMENT
    assert handle.value == 0x6666
    info = CoreInfoStruct.init(index=99, pe_clock_hz=7)
    assert lib.vtrn_device_get_core_info(runtime.device(0).handle, 2, byref(info)) == Status.ERROR_NOT_FOUND
    assert (info.index, info.pe_clock_hz) == (99, 7)


# -- index errors through the Python objects --------------------------------------------------------

def test_device_index_out_of_range(runtime):
    with pytest.raises(vtrn.NotFoundError) as caught:
        runtime.device(2)
    assert caught.value.status_name == "VTRN_ERROR_NOT_FOUND"
    assert caught.value.message == 'vtrn_device_get: device 2 does not exist: the topology "trn1,trn2" has 2 devices (0-1)'
    with pytest.raises(vtrn.NotFoundError) as caught:
        runtime.device(0xFFFF_FFFF)
    assert "device 4294967295 does not exist" in caught.value.message and "has 2 devices" in caught.value.message


def test_device_index_out_of_range_single_device():
    with vtrn.Runtime(topology="trn2") as runtime, pytest.raises(vtrn.NotFoundError) as caught:
        runtime.device(1)
    assert caught.value.message == 'vtrn_device_get: device 1 does not exist: the topology "trn2" has 1 device (only device 0)'


def test_core_index_out_of_range(runtime):
    with pytest.raises(vtrn.NotFoundError) as caught:
        runtime.device(0).core_info(2)
    assert caught.value.message == "vtrn_device_get_core_info: device 0 has 2 cores (0-1); core 2 requested"
    with pytest.raises(vtrn.NotFoundError) as caught:
        runtime.device(1).core_info(8)
    assert caught.value.message == "vtrn_device_get_core_info: device 1 has 8 cores (0-7); core 8 requested"


@pytest.mark.parametrize("index", [-1, 1 << 32])
def test_indexes_that_do_not_fit_uint32_are_refused_in_python(runtime, index):
    # ctypes would wrap them silently (-1 -> 4294967295, 2**32 -> 0).
    with pytest.raises(ValueError) as caught:
        runtime.device(index)
    assert str(caught.value) == f"device index {index} is out of range: it must be 0 to 4294967295 (a uint32_t)"
    with pytest.raises(ValueError) as caught:
        runtime.device(0).core_info(index)
    assert str(caught.value) == f"core index {index} is out of range: it must be 0 to 4294967295 (a uint32_t)"
