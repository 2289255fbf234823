"""Host buffers, device memory (HBM) and DMA queues: the Python objects over vtrn_host_buffer_t,
vtrn_device_memory_t and vtrn_dma_queue_t. Runtime and Device make them:

    with vtrn.Runtime() as runtime:
        device = runtime.device(0)
        data = numpy.arange(1 << 20, dtype=numpy.float32)
        with device.to_device(data) as memory:                        # numpy -> HBM
            back = device.from_device(memory, numpy.float32, data.shape)  # HBM -> numpy

        with runtime.host_buffer(data.nbytes) as staging, device.allocate(data.nbytes) as hbm, \\
                device.dma_queue(core=0, engine=0, queue=0) as queue:
            staging.numpy(numpy.float32)[:] = data                    # a view, no copy
            queue.enqueue([(hbm, staging, data.nbytes)])
            queue.wait(queue.submit())

A *memory reference* says where a copy starts: a HostBuffer or a DeviceMemory (offset 0), or a
``(HostBuffer | DeviceMemory, offset)`` tuple. ``Device.memcpy`` and ``DmaQueue.enqueue`` take them.

Lifetimes. Every object keeps its runtime alive; ``close()`` (or a ``with`` block, or garbage
collection) destroys it, and does nothing once the runtime is closed (the runtime released it).
A numpy view of a host buffer keeps the buffer alive, and the buffer refuses to close (BufferError)
while such a view exists, since closing unmaps the memory under it. A registered buffer keeps its
numpy array alive, and a DmaQueue keeps the objects its transfers name until they complete: the
library keeps its own buffers mapped for in-flight transfers, but the memory of a registered
buffer is the array's, which only Python keeps alive.
"""

from __future__ import annotations

import ctypes
import operator
import threading
import weakref
from collections.abc import Iterable
from ctypes import byref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

import numpy
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ._library import (
    WAIT_FOREVER,
    DeviceMemoryHandle,
    DeviceMemoryInfoStruct,
    DmaQueueHandle,
    DmaQueueInfoStruct,
    DmaQueueOptionsStruct,
    DmaTransferStruct,
    HostBufferHandle,
    HostBufferInfoStruct,
    HostBufferOptionsStruct,
    MemoryRefStruct,
    MemoryUsageStruct,
    device_ref,
    host_ref,
    lib,
    unsigned,
)
from ._lifecycle import Closable
from .errors import Status, check

if TYPE_CHECKING:
    from .runtime import Device, Runtime

# vtrn_numa_placement_t values, by position.
PLACEMENTS = ("device_local", "node", "interleave", "any")

# vtrn_host_buffer_flags_t bits, as HostBufferInfo.flags spells them.
HOST_BUFFER_FLAGS = {1 << 0: "huge_pages", 1 << 1: "locked"}
_HUGE_PAGES, _LOCKED = 1 << 0, 1 << 1


@dataclass(frozen=True)
class HostBufferInfo:
    """vtrn_host_buffer_info_t: what was asked for, and what the system granted."""

    address: int  # the first byte; page aligned unless registered
    bytes: int
    placement: str  # one of PLACEMENTS; "any" for registered memory
    requested_node: int | None  # the node the placement named, or None (interleave, any)
    flags: frozenset[str]  # of "huge_pages", "locked": as asked for
    huge_pages: bool  # asked for and granted
    locked: bool  # pinned with mlock
    registered: bool  # the memory is the caller's (Runtime.register)
    note: str  # why a flag had no effect, else ""


@dataclass(frozen=True)
class DeviceMemoryInfo:
    """vtrn_device_memory_info_t: one block of HBM."""

    device_index: int
    address: int  # offset in the device's HBM address space
    bytes: int
    alignment: int


@dataclass(frozen=True)
class MemoryUsage:
    """vtrn_memory_usage_t: a device's HBM usage, shared by every runtime of the process."""

    total_bytes: int
    used_bytes: int
    free_bytes: int
    largest_free_block: int
    tensor_bytes: int
    kernel_bytes: int
    allocation_count: int
    resident_bytes: int


@dataclass(frozen=True)
class DmaQueueInfo:
    """vtrn_dma_queue_info_t: a queue and its counters."""

    device_index: int
    core: int
    engine: int
    queue: int
    ring_entries: int
    free_entries: int
    submitted_sequence: int
    completed_sequence: int
    descriptors_completed: int
    bytes_completed: int


def _fields(raw: ctypes.Structure, cls: type[ctypes.Structure]) -> dict[str, Any]:
    """The fields of a ctypes info struct after struct_size, as a dict."""
    return {field[0]: getattr(raw, field[0]) for field in cls._fields_[1:]}


# The handle class of a _Resource (HostBufferHandle, DeviceMemoryHandle, DmaQueueHandle).
HandleT = TypeVar("HandleT", bound=ctypes.c_void_p)


class _Resource(Closable, Generic[HandleT]):
    """What HostBuffer, DeviceMemory and DmaQueue share: a handle that a runtime owns, close()
    through the C destroy function, a context manager, and a __del__ safe at interpreter shutdown."""

    _destroy = ""  # the name of the C function that destroys the handle

    def __init__(self, runtime: Runtime, handle: HandleT) -> None:
        self._closed = True  # until fully made, so that __del__ does nothing
        self.runtime = runtime
        self._handle = handle

    @property
    def handle(self) -> HandleT:
        """The C handle, for calling the C functions directly."""
        return self._handle

    @property
    def closed(self) -> bool:
        """True once closed, or once its runtime closed (which released it)."""
        return self._closed or self.runtime.closed

    def close(self) -> None:
        """Destroys the object; calling it again does nothing, nor does it after the runtime closed."""
        if self._closed:
            return
        released = self.runtime.closed  # destroying the runtime released everything it owned
        if not released:
            self._check_closable()
        self._closed = True
        try:
            if not released:
                check(getattr(lib, self._destroy)(self._handle))
        finally:
            self._released()

    def _check_closable(self) -> None:
        """Raises when closing now would be unsafe."""

    def _released(self) -> None:
        """Drops what the object kept for the library's sake."""

    def __repr__(self) -> str:
        return f"<vtrn.{type(self).__name__} {'closed' if self.closed else 'open'} handle={self._handle.value or 0:#x}>"


# -- memory references ---------------------------------------------------------------------------

def memory_reference(reference: MemoryReference, what: str = "reference") -> tuple[MemoryRefStruct, HostBuffer | DeviceMemory]:
    """(vtrn_memory_ref_t, object) for a HostBuffer, a DeviceMemory, or a (one of them, offset) tuple."""
    offset = 0
    if isinstance(reference, tuple):
        if len(reference) != 2:
            raise TypeError(f"{what} is a tuple of {len(reference)}; a memory reference tuple is (memory, offset)")
        reference, offset = reference
    offset = unsigned(offset, "uint64_t", f"{what} offset")
    if isinstance(reference, HostBuffer):
        return host_ref(reference.handle, offset), reference
    if isinstance(reference, DeviceMemory):
        return device_ref(reference.handle, offset), reference
    raise TypeError(f"{what} is a {type(reference).__name__}; a memory reference is a HostBuffer, a DeviceMemory, "
                    "or a (HostBuffer | DeviceMemory, offset) tuple")


# -- host buffers ------------------------------------------------------------------------------------

class _MappedMemory:
    """A window of a host buffer's memory as numpy sees it (the base of every view it gives):
    it keeps the buffer alive, and the buffer counts it to refuse closing under a live view."""

    def __init__(self, buffer: HostBuffer, address: int, size: int) -> None:
        self.buffer = buffer
        self.__array_interface__ = {"shape": (size,), "typestr": "|u1", "data": (address, False), "version": 3}


class HostBuffer(_Resource[HostBufferHandle]):
    """Host memory that DMA can use (vtrn_host_buffer_t): made by ``Runtime.host_buffer`` with a
    NUMA placement, or by ``Runtime.register`` over a numpy array's memory."""

    _destroy = "vtrn_host_buffer_destroy"

    def __init__(self, runtime: Runtime, handle: HostBufferHandle, array: NDArray[Any] | None = None) -> None:
        super().__init__(runtime, handle)
        # The registered array: its memory is the buffer's, so it lives as long as this object
        # (and a DmaQueue keeps this object while its transfers use it).
        self._array = array
        self._views: weakref.WeakSet[_MappedMemory] = weakref.WeakSet()
        data, size = ctypes.c_void_p(), ctypes.c_size_t()
        status = lib.vtrn_host_buffer_map(handle, byref(data), byref(size))
        if status != Status.SUCCESS:
            lib.vtrn_host_buffer_destroy(handle)
            check(status)
        self.address: int = data.value or 0
        self.bytes: int = size.value
        self._closed = False
        runtime._host_buffers.add(self)

    @property
    def registered(self) -> bool:
        """Whether the memory is a numpy array's (``Runtime.register``)."""
        return self._array is not None

    def has_views(self) -> bool:
        """Whether a numpy view of this buffer's memory is alive (a registered buffer's memory is
        its array's, and outlives the buffer, so it has none to worry about)."""
        return self._array is None and len(self._views) > 0

    def _check_closable(self) -> None:
        if self.has_views():
            raise BufferError(f"cannot close the {self.bytes}-byte host buffer: {len(self._views)} numpy view(s) of its "
                              "memory are alive and would point to unmapped memory; delete them (copy what you keep) first")

    def numpy(self, dtype: DTypeLike = numpy.uint8, shape: int | Iterable[int] | None = None,
              offset: int = 0) -> NDArray[Any]:
        """A numpy array over the buffer's memory (no copy) of ``dtype``, starting ``offset`` bytes
        in: ``shape`` elements, or all the bytes from ``offset`` on when shape is None. The array
        keeps the buffer alive; the buffer cannot be closed while the array lives."""
        data = ctypes.c_void_p()
        check(lib.vtrn_host_buffer_map(self._handle, byref(data), None))  # the library checks the handle
        element = numpy.dtype(dtype)
        offset = unsigned(offset, "uint64_t", "offset")
        if offset > self.bytes:
            raise ValueError(f"offset {offset} is past the end of the {self.bytes}-byte host buffer")
        if shape is None:
            available = self.bytes - offset
            if available % element.itemsize:
                raise ValueError(f"the {available} bytes from offset {offset} are not a whole number of {element} "
                                 f"({element.itemsize} bytes each); pass a shape")
            shape = (available // element.itemsize,)
        dimensions = tuple(int(dimension) for dimension in shape) if isinstance(shape, Iterable) else (int(shape),)
        if any(dimension < 0 for dimension in dimensions):
            raise ValueError(f"shape {dimensions} has a negative dimension")
        size = element.itemsize
        for dimension in dimensions:
            size *= dimension
        if offset + size > self.bytes:
            raise ValueError(f"a {dimensions} array of {element} at offset {offset} needs {size} bytes; "
                             f"the host buffer has {self.bytes}")
        window = _MappedMemory(self, (data.value or 0) + offset, size)
        self._views.add(window)
        return numpy.asarray(window).view(element).reshape(dimensions)

    @property
    def numa_node(self) -> int | None:
        """The NUMA node holding every resident page, or None (spread over several, or none resident)."""
        node = ctypes.c_int32()
        check(lib.vtrn_host_buffer_numa_node(self._handle, byref(node)))
        return None if node.value < 0 else node.value

    def node_pages(self) -> list[int]:
        """Resident pages per NUMA node: element i is the count on node i (highest node + 1 elements)."""
        count = ctypes.c_uint32()
        check(lib.vtrn_host_buffer_node_pages(self._handle, None, byref(count)))
        pages = (ctypes.c_uint64 * count.value)()
        check(lib.vtrn_host_buffer_node_pages(self._handle, pages, byref(count)))
        return list(pages[:count.value])

    @property
    def info(self) -> HostBufferInfo:
        """A HostBufferInfo."""
        raw = HostBufferInfoStruct.init()
        check(lib.vtrn_host_buffer_get_info(self._handle, byref(raw)))
        return HostBufferInfo(
            address=raw.data or 0,
            bytes=raw.bytes,
            placement=PLACEMENTS[raw.placement] if raw.placement < len(PLACEMENTS) else str(raw.placement),
            requested_node=None if raw.requested_node < 0 else raw.requested_node,
            flags=frozenset(name for bit, name in HOST_BUFFER_FLAGS.items() if raw.flags & bit),
            huge_pages=bool(raw.huge_pages),
            locked=bool(raw.locked),
            registered=bool(raw.registered),
            note=raw.note.decode("utf-8", "replace"),
        )

    @classmethod
    def create(cls, runtime: Runtime, bytes: int, placement: str = "device_local", device: int | Device = 0,
               numa_node: int | None = None, huge_pages: bool = False, locked: bool = False) -> HostBuffer:
        """Runtime.host_buffer: see there."""
        if placement not in PLACEMENTS:
            raise ValueError(f"placement {placement!r} is not one of {', '.join(PLACEMENTS)}")
        if numa_node is not None and placement != "node":
            raise ValueError(f"numa_node is {numa_node}, but placement is {placement!r}: "
                             "a node is only used with placement='node'")
        index: int = getattr(device, "index") if hasattr(device, "index") else device  # a Device or its index
        options = HostBufferOptionsStruct.init(
            placement=PLACEMENTS.index(placement),
            device=unsigned(index, "uint32_t", "device index"),
            numa_node=-1 if numa_node is None else _int32(numa_node, "numa_node"),
            flags=(_HUGE_PAGES if huge_pages else 0) | (_LOCKED if locked else 0),
        )
        handle = HostBufferHandle()
        check(lib.vtrn_host_buffer_create(runtime.handle, unsigned(bytes, "size_t", "bytes"), byref(options),
                                          byref(handle)))
        return cls(runtime, handle)

    @classmethod
    def register(cls, runtime: Runtime, array: NDArray[Any], writable: bool = True) -> HostBuffer:
        """Runtime.register: see there. ``writable=False`` lets the package register memory that
        DMA only reads (Device.to_device)."""
        if not isinstance(array, numpy.ndarray):
            raise TypeError(f"register takes a numpy array, not a {type(array).__name__}")
        if not (array.flags.c_contiguous or array.flags.f_contiguous):
            raise ValueError(f"the array (shape {array.shape}, strides {array.strides}) is not contiguous: DMA needs one "
                             "block of memory; register numpy.ascontiguousarray(array), a copy, instead")
        if writable and not array.flags.writeable:
            raise ValueError("the array is read-only, and DMA may write to a registered buffer; "
                             "register a writable array (array.copy())")
        handle = HostBufferHandle()
        check(lib.vtrn_host_buffer_register(runtime.handle, array.ctypes.data, array.nbytes, byref(handle)))
        return cls(runtime, handle, array)


def _int32(value: int, what: str) -> int:
    value = operator.index(value)
    if not -(1 << 31) <= value < (1 << 31):
        raise ValueError(f"{what} {value} is out of range: it must fit an int32_t")
    return value


# -- device memory -------------------------------------------------------------------------------------

class DeviceMemory(_Resource[DeviceMemoryHandle]):
    """A block of a device's HBM (vtrn_device_memory_t), from ``Device.allocate``."""

    _destroy = "vtrn_device_memory_free"

    def __init__(self, device: Device, handle: DeviceMemoryHandle) -> None:
        super().__init__(device.runtime, handle)
        self.device = device
        raw = DeviceMemoryInfoStruct.init()
        status = lib.vtrn_device_memory_get_info(handle, byref(raw))
        if status != Status.SUCCESS:
            lib.vtrn_device_memory_free(handle)
            check(status)
        self.address: int = raw.address
        self.bytes: int = raw.bytes
        self.alignment: int = raw.alignment
        self._closed = False

    def free(self) -> None:
        """Returns the block to the device (vtrn_device_memory_free); the same as close()."""
        self.close()

    @property
    def info(self) -> DeviceMemoryInfo:
        """A DeviceMemoryInfo."""
        raw = DeviceMemoryInfoStruct.init()
        check(lib.vtrn_device_memory_get_info(self._handle, byref(raw)))
        return DeviceMemoryInfo(**{name: value for name, value in _fields(raw, DeviceMemoryInfoStruct).items()
                                   if name != "reserved"})

    @classmethod
    def allocate(cls, device: Device, bytes: int, alignment: int = 0) -> DeviceMemory:
        """Device.allocate: see there."""
        handle = DeviceMemoryHandle()
        check(lib.vtrn_device_memory_alloc(device.handle, unsigned(bytes, "uint64_t", "bytes"),
                                           unsigned(alignment, "uint64_t", "alignment"), byref(handle)))
        return cls(device, handle)


# Where a copy starts: a HostBuffer or a DeviceMemory (offset 0), or one of them and an offset.
MemoryReference: TypeAlias = "HostBuffer | DeviceMemory | tuple[HostBuffer | DeviceMemory, int]"


def memory_usage(device: Device) -> MemoryUsage:
    """Device.memory_usage: see there."""
    raw = MemoryUsageStruct.init()
    check(lib.vtrn_device_get_memory_usage(device.handle, byref(raw)))
    return MemoryUsage(**_fields(raw, MemoryUsageStruct))


def memcpy(device: Device, destination: MemoryReference, source: MemoryReference, bytes: int) -> None:
    """Device.memcpy: see there."""
    destination_ref, _ = memory_reference(destination, "dst")
    source_ref, _ = memory_reference(source, "src")
    check(lib.vtrn_memcpy(device.handle, destination_ref, source_ref, unsigned(bytes, "uint64_t", "bytes")))


def to_device(device: Device, array: ArrayLike, alignment: int = 0) -> DeviceMemory:
    """Device.to_device: see there."""
    source = numpy.ascontiguousarray(array)  # a copy only when the array is not C-ordered already
    memory = DeviceMemory.allocate(device, source.nbytes, alignment)
    try:
        with HostBuffer.register(device.runtime, source, writable=False) as staging:
            memcpy(device, memory, staging, source.nbytes)
    except BaseException:
        memory.free()
        raise
    return memory


def from_device(device: Device, memory: DeviceMemory, dtype: DTypeLike = numpy.uint8,
                shape: int | tuple[int, ...] | None = None, offset: int = 0) -> NDArray[Any]:
    """Device.from_device: see there."""
    element = numpy.dtype(dtype)
    if shape is None:
        if offset > memory.bytes:
            raise ValueError(f"offset {offset} is past the end of the {memory.bytes}-byte device memory block")
        available = memory.bytes - offset
        if available % element.itemsize:
            raise ValueError(f"the {available} bytes from offset {offset} are not a whole number of {element} "
                             f"({element.itemsize} bytes each); pass a shape")
        shape = (available // element.itemsize,)
    result = numpy.empty(shape, element)
    if result.nbytes:  # vtrn_memcpy refuses 0 bytes; there is nothing to copy
        with HostBuffer.register(device.runtime, result) as staging:
            memcpy(device, staging, (memory, offset), result.nbytes)
    return result


# -- DMA queues --------------------------------------------------------------------------------------

class DmaQueue(_Resource[DmaQueueHandle]):
    """One hardware DMA queue of a NeuronCore (vtrn_dma_queue_t), from ``Device.dma_queue``:
    ``enqueue`` writes descriptors, ``submit`` rings the doorbell, ``wait`` waits for a sequence.
    """

    _destroy = "vtrn_dma_queue_destroy"

    def __init__(self, device: Device, handle: DmaQueueHandle) -> None:
        super().__init__(device.runtime, handle)
        self.device = device
        # What the transfers of this queue name, kept until they complete: [objects] enqueued and
        # not submitted, and (sequence, [objects]) submitted. The lock guards both.
        self._lock = threading.Lock()
        self._enqueued: list[HostBuffer | DeviceMemory] = []
        self._in_flight: list[tuple[int, list[HostBuffer | DeviceMemory]]] = []
        self._closed = False

    def enqueue(self, transfers: Iterable[tuple[MemoryReference, MemoryReference, int]]) -> None:
        """Checks and enqueues transfers, each ``(dst, src, bytes)`` with dst and src memory
        references: all of them, or none when one is wrong (the error names "transfer N").
        Nothing moves until submit()."""
        listed = list(transfers)
        batch = (DmaTransferStruct * len(listed))()
        named: list[HostBuffer | DeviceMemory] = []
        for index, transfer in enumerate(listed):
            try:
                destination, source, size = transfer
            except (TypeError, ValueError):
                raise TypeError(f"transfer {index} is {transfer!r}; a transfer is (dst, src, bytes)") from None
            batch[index].dst, destination_owner = memory_reference(destination, f"transfer {index}: dst")
            batch[index].src, source_owner = memory_reference(source, f"transfer {index}: src")
            batch[index].bytes = unsigned(size, "uint64_t", f"transfer {index}: bytes")
            named += (destination_owner, source_owner)
        count = unsigned(len(listed), "uint32_t", "the number of transfers")
        with self._lock:
            check(lib.vtrn_dma_queue_enqueue(self._handle, batch, count))
            self._enqueued += named

    def submit(self) -> int:
        """Rings the doorbell; returns the sequence that completes when everything enqueued so
        far has (the previous one when nothing new was enqueued; 0 before the first)."""
        sequence = ctypes.c_uint64()
        with self._lock:
            check(lib.vtrn_dma_queue_submit(self._handle, byref(sequence)))
            if self._enqueued:
                self._in_flight.append((sequence.value, self._enqueued))
                self._enqueued = []
        return sequence.value

    def wait(self, sequence: int, timeout_ns: int | None = None) -> bool:
        """Waits for ``sequence``: True when it has completed; False when ``timeout_ns`` is 0 and
        it has not (a poll). None waits forever; another timeout that expires raises
        DeviceTimeoutError."""
        timeout = WAIT_FOREVER if timeout_ns is None else unsigned(timeout_ns, "uint64_t", "timeout_ns")
        status = check(lib.vtrn_dma_queue_wait(self._handle, unsigned(sequence, "uint64_t", "sequence"), timeout))
        if status == Status.SUCCESS:
            self._completed_up_to(sequence)
            return True
        return False

    @property
    def completed(self) -> int:
        """The last sequence completed (every earlier one has too); 0 before any."""
        sequence = ctypes.c_uint64()
        check(lib.vtrn_dma_queue_completed(self._handle, byref(sequence)))
        self._completed_up_to(sequence.value)
        return sequence.value

    @property
    def info(self) -> DmaQueueInfo:
        """A DmaQueueInfo."""
        raw = DmaQueueInfoStruct.init()
        check(lib.vtrn_dma_queue_get_info(self._handle, byref(raw)))
        self._completed_up_to(raw.completed_sequence)
        return DmaQueueInfo(**_fields(raw, DmaQueueInfoStruct))

    def _completed_up_to(self, sequence: int) -> None:
        with self._lock:
            self._in_flight = [entry for entry in self._in_flight if entry[0] > sequence]

    def _released(self) -> None:
        # Destroying the queue waited for its submitted transfers and dropped the others.
        with self._lock:
            self._enqueued, self._in_flight = [], []

    @classmethod
    def open(cls, device: Device, core: int = 0, engine: int = 0, queue: int = 0, ring_entries: int = 4096) -> DmaQueue:
        """Device.dma_queue: see there."""
        options = DmaQueueOptionsStruct.init(core=unsigned(core, "uint32_t", "core"),
                                             engine=unsigned(engine, "uint32_t", "engine"),
                                             queue=unsigned(queue, "uint32_t", "queue"),
                                             ring_entries=unsigned(ring_entries, "uint32_t", "ring_entries"))
        handle = DmaQueueHandle()
        check(lib.vtrn_dma_queue_create(device.handle, byref(options), byref(handle)))
        return cls(device, handle)
