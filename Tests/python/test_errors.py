"""Statuses, status strings, the last-error message and check()."""

import ctypes
import threading

import pytest

import vtrn
from vtrn import errors
from vtrn._library import DeviceHandle, RuntimeHandle, lib

STATUS_STRINGS = {
    0: "success", 1: "not ready", 2: "invalid argument", 3: "invalid handle", 4: "not found",
    5: "out of bounds", 6: "out of host memory", 7: "out of device memory", 8: "busy", 9: "timeout",
    10: "queue full", 11: "unsupported", 12: "invalid program", 13: "DMA fault", 14: "hardware error",
    15: "deadlock", 16: "internal error in vtrn", 17: "device reset", 18: "device lost",
}


def provoke(message_fragment="0x1234"):
    """A failed call, so that this thread's last error is known."""
    count = ctypes.c_uint32()
    assert lib.vtrn_device_count(RuntimeHandle(0x1234), ctypes.byref(count)) == errors.Status.ERROR_INVALID_HANDLE
    return vtrn.last_error()


@pytest.mark.parametrize("status,text", sorted(STATUS_STRINGS.items()))
def test_status_string(status, text):
    assert vtrn.status_string(status) == text
    assert vtrn.status_string(errors.Status(status)) == text


@pytest.mark.parametrize("status", [19, 1000, 0x7FFFFFFF, -1])
def test_status_string_unknown(status):
    assert vtrn.status_string(status) == "unknown status"


def test_check_success_and_not_ready_return():
    assert errors.check(0) is errors.Status.SUCCESS
    assert errors.check(1) is errors.Status.NOT_READY


@pytest.mark.parametrize("status", sorted(errors.ERROR_CLASSES))
def test_check_raises_the_class_of_each_status_with_the_last_error(status):
    message = provoke()
    with pytest.raises(errors.ERROR_CLASSES[status]) as caught:
        errors.check(status)
    error = caught.value
    assert isinstance(error, vtrn.VtrnError)
    assert error.status == status and isinstance(error.status, int)
    assert error.status_name == "VTRN_" + errors.Status(status).name
    assert error.message == message == "vtrn_device_count: 0x1234 is not a vtrn handle (garbage, uninitialized, or a pointer)"
    assert str(error) == f"{error.status_name}: {message}"


def test_check_unknown_status_gives_base_class():
    message = provoke()
    with pytest.raises(vtrn.VtrnError) as caught:
        errors.check(99)
    assert type(caught.value) is vtrn.VtrnError
    assert caught.value.status == 99
    assert caught.value.status_name == "unknown status 99"
    assert caught.value.message == message


def test_error_class_names():
    names = {status.c_name: cls.__name__ for status, cls in errors.ERROR_CLASSES.items()}
    assert names == {
        "VTRN_ERROR_INVALID_ARGUMENT": "InvalidArgumentError",
        "VTRN_ERROR_INVALID_HANDLE": "InvalidHandleError",
        "VTRN_ERROR_NOT_FOUND": "NotFoundError",
        "VTRN_ERROR_OUT_OF_BOUNDS": "OutOfBoundsError",
        "VTRN_ERROR_OUT_OF_HOST_MEMORY": "OutOfHostMemoryError",
        "VTRN_ERROR_OUT_OF_DEVICE_MEMORY": "OutOfDeviceMemoryError",
        "VTRN_ERROR_BUSY": "BusyError",
        "VTRN_ERROR_TIMEOUT": "DeviceTimeoutError",
        "VTRN_ERROR_QUEUE_FULL": "QueueFullError",
        "VTRN_ERROR_UNSUPPORTED": "UnsupportedError",
        "VTRN_ERROR_INVALID_PROGRAM": "InvalidProgramError",
        "VTRN_ERROR_DMA_FAULT": "DmaFaultError",
        "VTRN_ERROR_HARDWARE": "HardwareError",
        "VTRN_ERROR_DEADLOCK": "DeadlockError",
        "VTRN_ERROR_INTERNAL": "InternalError",
        "VTRN_ERROR_RESET": "DeviceResetError",
        "VTRN_ERROR_DEVICE_LOST": "DeviceLostError",
    }


def test_last_error_is_empty_on_a_thread_that_never_failed():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(vtrn.last_error()))
    thread.start()
    thread.join()
    assert seen == [""]


def test_successful_calls_leave_last_error_alone():
    message = provoke()
    with vtrn.Runtime(topology="trn1") as runtime:
        assert runtime.info.device_count == 1
        runtime.device(0).info
    assert lib.vtrn_runtime_destroy(None) == 0
    assert vtrn.last_error() == message


def test_last_error_names_the_failing_function():
    device = DeviceHandle(0x1234)
    info = vtrn._library.DeviceInfoStruct.init()
    assert lib.vtrn_device_get_info(device, ctypes.byref(info)) == errors.Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error().startswith("vtrn_device_get_info: ")
