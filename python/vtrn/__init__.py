"""vtrn: the Python host of vtrn, a virtual AWS Trainium device and its runtime (ctypes and numpy, no compiled extension).

    import vtrn

    with vtrn.Runtime(topology="trn1,trn2") as runtime:
        for device in runtime.devices:
            info = device.info
            print(info.index, info.architecture, info.core_count, info.uuid)

``vtrn.__version__`` is the package's version (that of the header it was written for),
``vtrn.version()`` the loaded library's and ``vtrn.library_path()`` its file.

Files: ``_library`` finds and declares libvtrn.so (set VTRN_LIBRARY to choose one), ``errors``
holds the status codes and one exception class per error, ``runtime`` the Runtime and Device
objects, ``memory`` host buffers, device memory and DMA queues, ``kernel`` programs built the
way NKI reads, kernels and their executions, and ``vtrn.nki`` (imported on its own) runs
kernels written in NKI, unmodified. ``vtrn._library.lib`` is the raw ctypes library, for calls
this package does not wrap.
"""

from ._version import __version__
from ._library import (
    DMA_MAX_DESCRIPTOR_BYTES,
    DMA_MAX_RING_ENTRIES,
    DMA_MIN_RING_ENTRIES,
    FAULT_KINDS,
    VTRN_VERSION_MAJOR,
    VTRN_VERSION_MINOR,
    VTRN_VERSION_PATCH,
    WAIT_FOREVER,
    LibraryError,
)
from .errors import (
    BusyError,
    DeadlockError,
    DeviceLostError,
    DeviceResetError,
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
from .memory import (
    PLACEMENTS,
    DeviceMemory,
    DeviceMemoryInfo,
    DmaQueue,
    DmaQueueInfo,
    HostBuffer,
    HostBufferInfo,
    MemoryUsage,
)
from .kernel import AccessPattern, ExecutionInfo, Fence, Kernel, Parameter, Program, dtype_name, numpy_dtype
from .collectives import CollectiveFence, CommInfo, Communicator
from .runtime import (CoreHolder, CoreInfo, Device, DeviceInfo, ErrorCounters, HandleCounts, Runtime,
                      RuntimeInfo, handle_counts, library_path, version)

__all__ = [
    "__version__", "VTRN_VERSION_MAJOR", "VTRN_VERSION_MINOR", "VTRN_VERSION_PATCH", "WAIT_FOREVER", "LibraryError",
    "DMA_MAX_DESCRIPTOR_BYTES", "DMA_MIN_RING_ENTRIES", "DMA_MAX_RING_ENTRIES",
    "Status", "VtrnError", "InvalidArgumentError", "InvalidHandleError", "NotFoundError", "OutOfBoundsError",
    "OutOfHostMemoryError", "OutOfDeviceMemoryError", "BusyError", "DeviceTimeoutError", "QueueFullError",
    "UnsupportedError", "InvalidProgramError", "DmaFaultError", "HardwareError", "DeadlockError",
    "InternalError", "DeviceResetError", "DeviceLostError", "last_error", "status_string",
    "Communicator", "CommInfo", "CollectiveFence",
    "Runtime", "RuntimeInfo", "Device", "DeviceInfo", "CoreInfo", "CoreHolder", "ErrorCounters", "FAULT_KINDS", "version",
    "library_path",
    "HandleCounts", "handle_counts",
    "PLACEMENTS", "HostBuffer", "HostBufferInfo", "DeviceMemory", "DeviceMemoryInfo", "MemoryUsage",
    "DmaQueue", "DmaQueueInfo",
    "Program", "Parameter", "AccessPattern", "Kernel", "Fence", "ExecutionInfo", "dtype_name", "numpy_dtype",
]
