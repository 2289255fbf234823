"""vtrn: the Python host of vtrn, a virtual AWS Trainium device and its runtime (ctypes only).

    import vtrn

    with vtrn.Runtime(topology="trn1,trn2") as runtime:
        for device in runtime.devices:
            info = device.info
            print(info.index, info.architecture, info.core_count, info.uuid)

Files: ``_library`` finds and declares libvtrn.so (set VTRN_LIBRARY to choose one), ``errors``
holds the status codes and one exception class per error, ``runtime`` the Runtime and Device
objects. ``vtrn._library.lib`` is the raw ctypes library, for calls this package does not wrap.
"""

from ._library import VTRN_VERSION_MAJOR, VTRN_VERSION_MINOR, VTRN_VERSION_PATCH, WAIT_FOREVER, LibraryError
from .errors import (
    BusyError,
    DeadlockError,
    DeviceTimeoutError,
    DmaFaultError,
    HardwareError,
    InternalError,
    InvalidArgumentError,
    InvalidHandleError,
    InvalidProgramError,
    NotFoundError,
    OutOfBoundsError,
    OutOfDeviceMemoryError,
    OutOfHostMemoryError,
    QueueFullError,
    Status,
    UnsupportedError,
    VtrnError,
    last_error,
    status_string,
)
from .runtime import CoreInfo, Device, DeviceInfo, Runtime, RuntimeInfo, version

__all__ = [
    "VTRN_VERSION_MAJOR", "VTRN_VERSION_MINOR", "VTRN_VERSION_PATCH", "WAIT_FOREVER", "LibraryError",
    "Status", "VtrnError", "InvalidArgumentError", "InvalidHandleError", "NotFoundError", "OutOfBoundsError",
    "OutOfHostMemoryError", "OutOfDeviceMemoryError", "BusyError", "DeviceTimeoutError", "QueueFullError",
    "UnsupportedError", "InvalidProgramError", "DmaFaultError", "HardwareError", "DeadlockError",
    "InternalError", "last_error", "status_string",
    "Runtime", "RuntimeInfo", "Device", "DeviceInfo", "CoreInfo", "version",
]
