"""vtrn's status codes and the exceptions that carry them.

``Status`` is the one table of vtrn_status_t values (a test checks it against include/vtrn.h).
Each error status has its own exception class, all subclasses of ``VtrnError``; ``check`` turns
a status returned by a C call into the matching exception, with the library's own message.
``NOT_READY`` is not an error: polling calls get it back as a value.
"""

import enum

from ._library import lib


class Status(enum.IntEnum):
    """vtrn_status_t: the name is the C name without its ``VTRN_`` prefix."""

    SUCCESS = 0
    NOT_READY = 1
    ERROR_INVALID_ARGUMENT = 2
    ERROR_INVALID_HANDLE = 3
    ERROR_NOT_FOUND = 4
    ERROR_OUT_OF_BOUNDS = 5
    ERROR_OUT_OF_HOST_MEMORY = 6
    ERROR_OUT_OF_DEVICE_MEMORY = 7
    ERROR_BUSY = 8
    ERROR_TIMEOUT = 9
    ERROR_QUEUE_FULL = 10
    ERROR_UNSUPPORTED = 11
    ERROR_INVALID_PROGRAM = 12
    ERROR_DMA_FAULT = 13
    ERROR_HARDWARE = 14
    ERROR_DEADLOCK = 15
    ERROR_INTERNAL = 16
    ERROR_RESET = 17
    ERROR_DEVICE_LOST = 18

    @property
    def c_name(self) -> str:
        """The name in include/vtrn.h, e.g. "VTRN_ERROR_INVALID_HANDLE"."""
        return "VTRN_" + self.name


def status_string(status: int) -> str:
    """The library's fixed description of a status ("invalid handle"; "unknown status" otherwise)."""
    text: bytes = lib.vtrn_status_string(int(status) & 0xFFFF_FFFF)
    return text.decode("utf-8", "replace")


def last_error() -> str:
    """This thread's message for its most recent failed vtrn call ("" if none failed)."""
    text: bytes = lib.vtrn_last_error()
    return text.decode("utf-8", "replace")


class VtrnError(Exception):
    """A vtrn call failed. ``status`` is the vtrn_status_t, ``message`` the library's message."""

    status: int | None = None  # set by each subclass; an unknown status gets a plain VtrnError

    def __init__(self, message: str, status: int | None = None) -> None:
        if status is not None:
            self.status = int(status)
        self.message = message
        super().__init__(message)

    @property
    def status_name(self) -> str:
        """The C name of ``status`` ("VTRN_ERROR_BUSY"), or "unknown status N"."""
        if self.status is not None:
            try:
                return Status(self.status).c_name
            except ValueError:
                pass
        return f"unknown status {self.status}"

    def __str__(self) -> str:
        return f"{self.status_name}: {self.message}"


class InvalidArgumentError(VtrnError):
    """An argument is wrong: NULL out-pointer, bad index, bad struct_size, bad option value."""

    status = Status.ERROR_INVALID_ARGUMENT


class InvalidHandleError(VtrnError):
    """The handle is destroyed, stale (its runtime was destroyed), of another kind, or garbage."""

    status = Status.ERROR_INVALID_HANDLE


class NotFoundError(VtrnError):
    """The thing named (a device, a core, a kernel parameter, a file) does not exist."""

    status = Status.ERROR_NOT_FOUND


class OutOfBoundsError(VtrnError):
    """An offset plus a size runs past the end of a buffer, memory block, SBUF or PSUM."""

    status = Status.ERROR_OUT_OF_BOUNDS


class OutOfHostMemoryError(VtrnError):
    """The host could not provide memory (allocation, mlock, NUMA placement)."""

    status = Status.ERROR_OUT_OF_HOST_MEMORY


class OutOfDeviceMemoryError(VtrnError):
    """The device's HBM has no free block large enough."""

    status = Status.ERROR_OUT_OF_DEVICE_MEMORY


class BusyError(VtrnError):
    """The resource (a core, a DMA queue) is held by someone else."""

    status = Status.ERROR_BUSY


class DeviceTimeoutError(VtrnError):
    """A wait or an execution did not finish in time (VTRN_ERROR_TIMEOUT)."""

    status = Status.ERROR_TIMEOUT


class QueueFullError(VtrnError):
    """A ring or command queue has no room for what was asked; nothing was enqueued."""

    status = Status.ERROR_QUEUE_FULL


class UnsupportedError(VtrnError):
    """The request is understood but not supported by this device or build."""

    status = Status.ERROR_UNSUPPORTED


class InvalidProgramError(VtrnError):
    """A program broke an instruction-set rule; found when the kernel is loaded."""

    status = Status.ERROR_INVALID_PROGRAM


class DmaFaultError(VtrnError):
    """A DMA transfer failed at run time (bad descriptor, injected fault)."""

    status = Status.ERROR_DMA_FAULT


class HardwareError(VtrnError):
    """The virtual hardware reported an error (uncorrectable error, injected fault)."""

    status = Status.ERROR_HARDWARE


class DeadlockError(VtrnError):
    """Every unfinished engine waits on a semaphore that nothing pending can raise."""

    status = Status.ERROR_DEADLOCK


class InternalError(VtrnError):
    """A bug in vtrn itself; the message says where. Please report it."""

    status = Status.ERROR_INTERNAL


class DeviceResetError(VtrnError):
    """The work was in flight when its device was reset (Device.reset); it did not complete."""

    status = Status.ERROR_RESET


class DeviceLostError(VtrnError):
    """The device is lost: the call needs it, or the work was in flight when it was lost.
    Device.reset brings it back."""

    status = Status.ERROR_DEVICE_LOST


# status -> its exception class.
ERROR_CLASSES: dict[int | None, type[VtrnError]] = {cls.status: cls for cls in VtrnError.__subclasses__()}


def check(status: int) -> Status:
    """Returns ``status`` if it is SUCCESS or NOT_READY, else raises its exception.

    Call it right after the C call, on the same thread: the message is that thread's last error.
    """
    if status in (Status.SUCCESS, Status.NOT_READY):
        return Status(status)
    message = last_error()
    cls = ERROR_CLASSES.get(status)
    if cls is None:
        raise VtrnError(message, status)
    raise cls(message)
