"""Runtimes and devices: the Python objects over vtrn_runtime_t and vtrn_device_t, and the
methods that make host buffers, device memory and DMA queues (the objects are in ``memory``),
programs and kernels (in ``kernel``).

    with vtrn.Runtime(topology="trn1,trn2") as runtime:
        for device in runtime.devices:
            print(device.info.name, device.info.core_count)

Every call goes to the C library, which validates handles itself: after ``Runtime.close()`` the
runtime, its devices and everything made from them raise ``InvalidHandleError`` with the
library's message.
"""

import ctypes
import weakref
from dataclasses import dataclass
from typing import Any

import numpy
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ._library import (
    DEVICE_RESET_FLAGS,
    ENGINE_FLAGS,
    CoreHolderStruct,
    FAULT_ANY,
    FAULT_FLAGS,
    FAULT_HOST,
    FAULT_KINDS,
    CoreInfoStruct,
    DeviceErrorCountersStruct,
    DeviceHandle,
    DeviceInfoStruct,
    HandleCountsStruct,
    FaultStruct,
    RuntimeHandle,
    RuntimeInfoStruct,
    RuntimeOptionsStruct,
    lib,
    unsigned,
)
from ._lifecycle import Closable
from .errors import check
from . import _library
from . import kernel as _kernel
from . import memory as _memory

# vtrn_log_level_t and vtrn_architecture_t values, by their position / value.
LOG_LEVELS = ("default", "error", "warning", "info", "debug", "trace")
ARCHITECTURES = {1: "trn1", 2: "trn2"}

# vtrn_engine_flags_t bits, as CoreInfo.engines spells them (the compute engines; DMA is not one).
ENGINES = {bit: name for name, bit in ENGINE_FLAGS.items() if name != "dma"}


def version() -> tuple[int, int, int]:
    """The loaded library's version as (major, minor, patch) (``vtrn.__version__`` is the package's)."""
    packed: int = lib.vtrn_version()
    return packed >> 16, (packed >> 8) & 0xFF, packed & 0xFF


def library_path() -> str:
    """The path of the libvtrn.so this package loaded (``vtrn._library`` says where it looks)."""
    return _library.path


@dataclass(frozen=True)
class HandleCounts:
    """vtrn_handle_counts_t: the process's live handles per kind (every runtime's, C's and Python's
    alike), for leak checks; ``orphaned_host_bytes`` is the address space kept by host buffers a
    runtime's destruction orphaned."""

    runtimes: int
    devices: int
    host_buffers: int
    device_memory: int
    dma_queues: int
    programs: int
    kernels: int
    fences: int
    total: int
    orphaned_host_bytes: int
    comms: int = 0


def handle_counts() -> "HandleCounts":
    """vtrn_get_handle_counts: a snapshot of the process's live handles per kind."""
    raw = HandleCountsStruct.init()
    check(lib.vtrn_get_handle_counts(ctypes.byref(raw)))
    return HandleCounts(**{field[0]: getattr(raw, field[0]) for field in HandleCountsStruct._fields_ if field[0] != "struct_size"})


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _uint32(value: int, what: str) -> int:
    # ctypes wraps out-of-range integers silently (-1 would become device 4294967295, 2**32 device 0).
    return unsigned(value, "uint32_t", what)


@dataclass(frozen=True)
class RuntimeInfo:
    """vtrn_runtime_info_t: the configuration in force."""

    device_count: int
    core_count: int
    visible_core_count: int
    log_level: str
    exec_timeout_ns: int  # vtrn.WAIT_FOREVER when VTRN_EXEC_TIMEOUT_MS is 0 (no timeout)
    topology: str  # canonical form, e.g. "trn1:2,trn2@node1" or "trn1.32xlarge"
    instance_type: str | None = None  # the EC2 instance type the topology names, e.g. "trn1.32xlarge"; None for a device list


@dataclass(frozen=True)
class DeviceInfo:
    """vtrn_device_info_t."""

    index: int
    architecture: str  # "trn1" or "trn2"
    name: str
    core_count: int
    first_core: int
    hbm_bytes: int
    hbm_used_bytes: int
    hbm_bandwidth: int  # bytes per second
    numa_node: int
    pci_vendor_id: int
    pci_device_id: int
    bus_address: str
    uuid: str
    dma_engines_per_core: int
    queues_per_dma_engine: int
    sbuf_bytes_per_core: int
    psum_bytes_per_core: int
    semaphores_per_core: int
    visible_core_count: int
    # The device's NeuronLinks in this topology (README "Topology and NeuronLink"). AWS publishes
    # per-device aggregates only; the per-link figure is vtrn's even split over the chip's ports.
    interconnect: str  # "NeuronLink-v2" (trn1) or "NeuronLink-v3" (trn2)
    link_count: int  # devices of the runtime it is linked to: len(Device.links)
    links_per_device: int  # NeuronLink ports of the chip: 4
    link_bandwidth: int  # bytes per second of one link (96 GiB/s trn1, 192 GiB/s trn1n.32xlarge, 256 GB/s trn2)
    device_link_bandwidth: int  # bytes per second, the published per-device aggregate
    hop_latency_ns: int  # latency of one hop to a neighbour: 1500


@dataclass(frozen=True)
class CoreInfo:
    """vtrn_core_info_t: one NeuronCore."""

    device_index: int
    index: int
    global_index: int
    visible: bool
    engines: frozenset[str]  # of "pe", "act", "dve", "pool"
    sbuf_partitions: int
    sbuf_bytes_per_partition: int
    psum_bytes_per_partition: int
    psum_banks: int
    semaphores: int
    dma_engines: int
    queues_per_dma_engine: int
    pe_clock_hz: int
    act_clock_hz: int
    dve_clock_hz: int
    pool_clock_hz: int


@dataclass(frozen=True)
class CoreHolder:
    """vtrn_core_holder_t: who holds a core (``Device.core_holder``), a runtime of this process or
    of another one (see "Core ownership" in include/vtrn.h)."""

    pid: int | None  # the holding process (os.getpid() when it is this one); None when its lock file names no live process
    command: str  # its command line, arguments separated by spaces ("" when unknown)
    runtime: int | None  # the holding runtime's number in its process ("runtime 3" in messages); None when unknown
    this_process: bool


@dataclass(frozen=True)
class ErrorCounters:
    """vtrn_device_error_counters_t: the device's state and error counters (the Neuron driver's
    sysfs names in comments). Shared by every runtime of the process that has the device."""

    lost: bool  # until Device.reset
    armed_faults: int
    dma_aborts: int  # hw_dma_abort_error
    hbm_uncorrectable_errors: int  # hw_hbm_ue_error, mem_ecc_uncorrected
    execution_timeouts: int  # timeout
    hangs: int
    device_losses: int
    resets: int  # reset_req_count
    faults_injected: int


def _fault_index(value: int | str | None, what: str, allow_host: bool = False) -> int:
    """A core, engine or queue of vtrn_fault_t: None is VTRN_FAULT_ANY, "host" VTRN_FAULT_HOST."""
    if value is None or value == "any":
        return FAULT_ANY
    if allow_host and value == "host":
        return FAULT_HOST
    if isinstance(value, str):
        accepted = "a number, None (any) or \"host\"" if allow_host else "a number or None (any)"
        raise ValueError(f"{what} {value!r} is not {accepted}")
    value = int(value)
    if not 0 <= value < 2**31:
        raise ValueError(f"{what} {value} is out of range: a number from 0, or None for any")
    return value


def _log_level_value(level: str | int | None) -> int:
    if level is None:
        return 0
    if isinstance(level, str):
        try:
            return LOG_LEVELS.index(level.lower())
        except ValueError:
            raise ValueError(f"log_level {level!r} is not one of {', '.join(LOG_LEVELS)}") from None
    return int(level)  # a vtrn_log_level_t number; the library checks it


class Runtime(Closable):
    """A vtrn runtime: the virtual devices of one topology (vtrn_runtime_create).

    Arguments left None come from the environment (VTRN_TOPOLOGY, VTRN_VISIBLE_CORES,
    VTRN_LOG_LEVEL), else the defaults. The cores it claims are recorded for the whole host in
    VTRN_LOCK_DIR (InvalidArgumentError names a directory that cannot be used). ``log_level`` is a name ("warning") or a
    vtrn_log_level_t number. Close it with ``close()`` or a ``with`` block.
    """

    def __init__(self, topology: str | None = None, visible_cores: str | None = None,
                 log_level: str | int | None = None) -> None:
        self._closed = True  # until created, so that __del__ and close() do nothing
        # to refuse closing under a live numpy view
        self._host_buffers: weakref.WeakSet[_memory.HostBuffer] = weakref.WeakSet()
        options = RuntimeOptionsStruct.init(
            topology=None if topology is None else topology.encode(),
            visible_cores=None if visible_cores is None else visible_cores.encode(),
            log_level=_log_level_value(log_level),
        )
        handle = RuntimeHandle()
        check(lib.vtrn_runtime_create(ctypes.byref(options), ctypes.byref(handle)))
        self._handle = handle
        self._closed = False

    @property
    def handle(self) -> RuntimeHandle:
        """The vtrn_runtime_t, for calling the C functions directly."""
        return self._handle

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called (the runtime is destroyed)."""
        return self._closed

    def close(self) -> None:
        """Destroys the runtime and everything made from it (devices, host buffers, device memory,
        DMA queues, after waiting for submitted transfers). Calling it again does nothing.
        BufferError when a numpy view of one of its host buffers is alive: the memory under it
        would be unmapped."""
        if self._closed:
            return
        viewed = [buffer for buffer in self._host_buffers if not buffer.closed and buffer.has_views()]
        if viewed:
            raise BufferError(f"cannot close the runtime: {len(viewed)} of its host buffers have numpy views alive, "
                              "which would point to unmapped memory; delete them (copy what you keep) first")
        self._closed = True
        check(lib.vtrn_runtime_destroy(self._handle))

    def __repr__(self) -> str:
        return f"<vtrn.Runtime {'closed' if self._closed else 'open'} handle={self._handle.value:#x}>"

    @property
    def info(self) -> RuntimeInfo:
        """The configuration in force, as a RuntimeInfo."""
        raw = RuntimeInfoStruct.init()
        check(lib.vtrn_runtime_get_info(self._handle, ctypes.byref(raw)))
        return RuntimeInfo(
            device_count=raw.device_count,
            core_count=raw.core_count,
            visible_core_count=raw.visible_core_count,
            log_level=LOG_LEVELS[raw.log_level] if raw.log_level < len(LOG_LEVELS) else str(raw.log_level),
            exec_timeout_ns=raw.exec_timeout_ns,
            topology=_text(raw.topology),
            instance_type=_text(raw.instance_type) or None,
        )

    @property
    def device_count(self) -> int:
        """The number of devices of the topology (vtrn_device_count)."""
        count = ctypes.c_uint32()
        check(lib.vtrn_device_count(self._handle, ctypes.byref(count)))
        return count.value

    def device(self, index: int) -> "Device":
        """The device at ``index``; NotFoundError past the last one."""
        handle = DeviceHandle()
        check(lib.vtrn_device_get(self._handle, _uint32(index, "device index"), ctypes.byref(handle)))
        return Device(self, handle, index)

    @property
    def devices(self) -> "list[Device]":
        """Every device, in index order."""
        return [self.device(index) for index in range(self.device_count)]

    def host_buffer(self, bytes: int, placement: str = "device_local", device: "int | Device" = 0,
                    numa_node: int | None = None, huge_pages: bool = False, locked: bool = False) -> _memory.HostBuffer:
        """A HostBuffer of ``bytes`` bytes for DMA (vtrn_host_buffer_create), its pages placed:
        "device_local" on the NUMA node of ``device`` (an index or a Device), "node" on
        ``numa_node``, "interleave" round robin over the online nodes, "any" where first written.
        ``huge_pages`` asks for transparent huge pages (info.huge_pages says if granted),
        ``locked`` pins the pages (mlock)."""
        return _memory.HostBuffer.create(self, bytes, placement, device, numa_node, huge_pages, locked)

    def register(self, array: NDArray[Any]) -> _memory.HostBuffer:
        """A HostBuffer over the memory of a numpy array, without a copy (vtrn_host_buffer_register).
        The buffer keeps the array alive. ValueError for an array that is not contiguous or is
        read-only (DMA may write to it)."""
        return _memory.HostBuffer.register(self, array)

    def program(self) -> _kernel.Program:
        """A new, empty Program (vtrn_program_create): declare parameters, place tiles, append
        instructions, then ``Device.load`` it."""
        return _kernel.Program(self)


class Device:
    """A virtual Trainium device of a runtime (vtrn_device_t). Keeps its runtime alive."""

    def __init__(self, runtime: Runtime, handle: DeviceHandle, index: int) -> None:
        self.runtime = runtime
        self._handle = handle
        self.index = index

    @property
    def handle(self) -> DeviceHandle:
        """The vtrn_device_t, for calling the C functions directly."""
        return self._handle

    def __repr__(self) -> str:
        return f"<vtrn.Device {self.index} handle={self._handle.value or 0:#x}>"

    @property
    def info(self) -> DeviceInfo:
        """A DeviceInfo; hbm_used_bytes is a snapshot."""
        raw = DeviceInfoStruct.init()
        check(lib.vtrn_device_get_info(self._handle, ctypes.byref(raw)))
        fields = {field[0]: getattr(raw, field[0]) for field in DeviceInfoStruct._fields_[1:]}
        fields["architecture"] = ARCHITECTURES.get(raw.architecture, f"unknown ({raw.architecture})")
        for name in ("name", "bus_address", "uuid", "interconnect"):
            fields[name] = _text(fields[name])
        return DeviceInfo(**fields)

    @property
    def links(self) -> list[int]:
        """The indices of the devices this one has a NeuronLink to, in the driver's order
        (vtrn_device_get_links): on a 16-device instance type its torus neighbours north, west,
        south, east (device 0 of a trn1.32xlarge: [12, 3, 4, 1]); on a device list its neighbours
        on the ring of the devices of its architecture (previous, next)."""
        count = ctypes.c_uint32()
        check(lib.vtrn_device_get_links(self._handle, None, ctypes.byref(count)))
        devices = (ctypes.c_uint32 * count.value)()
        check(lib.vtrn_device_get_links(self._handle, devices, ctypes.byref(count)))
        return list(devices[:count.value])

    def core_info(self, core: int) -> CoreInfo:
        """A CoreInfo for core ``core`` of this device (0 .. core_count-1); NotFoundError past it."""
        raw = CoreInfoStruct.init()
        check(lib.vtrn_device_get_core_info(self._handle, _uint32(core, "core index"), ctypes.byref(raw)))
        fields = {field[0]: getattr(raw, field[0]) for field in CoreInfoStruct._fields_[1:]}
        fields["visible"] = bool(raw.visible)
        fields["engines"] = frozenset(name for bit, name in ENGINES.items() if raw.engines & bit)
        return CoreInfo(**fields)

    def cores(self) -> list[CoreInfo]:
        """CoreInfo of every core of the device."""
        return [self.core_info(core) for core in range(self.info.core_count)]

    def core_holder(self, core: int) -> CoreHolder | None:
        """Who holds core ``core`` of this device, as a CoreHolder, or None when it is free
        (vtrn_device_get_core_holder). Claims are the host's: the holder may be a runtime of this
        process or of another one, which then raises BusyError naming it; asking never takes the
        core. NotFoundError past the last core."""
        raw = CoreHolderStruct.init()
        check(lib.vtrn_device_get_core_holder(self._handle, _uint32(core, "core index"), ctypes.byref(raw)))
        if not raw.held:
            return None
        return CoreHolder(pid=None if raw.pid < 0 else raw.pid, command=_text(raw.command),
                          runtime=raw.runtime or None, this_process=bool(raw.this_process))

    # -- device memory and DMA (the objects are in memory.py) --

    def allocate(self, bytes: int, alignment: int = 0) -> _memory.DeviceMemory:
        """A DeviceMemory block of ``bytes`` bytes of HBM (vtrn_device_memory_alloc), aligned to
        ``alignment`` (a power of two up to 1 GiB; 0 for the default, 64).
        OutOfDeviceMemoryError with the library's usage report when it does not fit."""
        return _memory.DeviceMemory.allocate(self, bytes, alignment)

    def memory_usage(self) -> _memory.MemoryUsage:
        """A MemoryUsage snapshot of the device's HBM (shared by every runtime of the process)."""
        return _memory.memory_usage(self)

    def dma_queue(self, core: int = 0, engine: int = 0, queue: int = 0, ring_entries: int = 4096) -> _memory.DmaQueue:
        """Opens DMA queue ``queue`` of DMA engine ``engine`` of NeuronCore ``core`` as a DmaQueue
        (vtrn_dma_queue_create); the first queue on a core claims it for this runtime until the
        runtime is closed. BusyError when another runtime holds the core, in this process or
        another one (the message names its pid and command line)."""
        return _memory.DmaQueue.open(self, core, engine, queue, ring_entries)

    def memcpy(self, dst: "_memory.MemoryReference", src: "_memory.MemoryReference", bytes: int) -> None:
        """Copies ``bytes`` bytes between memory references (a HostBuffer, a DeviceMemory, or a
        (one of them, offset) tuple) and returns when done (vtrn_memcpy)."""
        _memory.memcpy(self, dst, src, bytes)

    def to_device(self, array: ArrayLike, alignment: int = 0) -> _memory.DeviceMemory:
        """A new DeviceMemory holding the bytes of ``array`` (any array-like; in C order)."""
        return _memory.to_device(self, array, alignment)

    def load(self, program: _kernel.Program, core: int = 0) -> _kernel.Kernel:
        """Validates ``program`` for core ``core`` of this device and loads it as a Kernel
        (vtrn_kernel_load); the first kernel or DMA queue on a core claims it for this runtime.
        InvalidProgramError names the first instruction that breaks a rule (and claims nothing)."""
        return _kernel.Kernel(self, core, program)

    # -- faults, resets and error counters --

    def inject_fault(self, kind: str, core: int | str | None = None, engine: int | str | None = None,
                     queue: int | None = None, after: int = 0, address: int = 0, bytes: int = 0,
                     sticky: bool = False) -> None:
        """Arms a fault on the device (vtrn_device_inject_fault); see include/vtrn.h and the README.

        ``kind``: "dma_abort" (a descriptor error: the DMA sequence, or the collective whose CC ring
        it hits, fails with DmaFaultError),
        "dma_hang" (a descriptor that never completes: DeviceTimeoutError after
        VTRN_EXEC_TIMEOUT_MS), "hbm_ue" (reads of HBM [address, address + bytes) fail with
        HardwareError), "engine_hang" (an instruction that never finishes: its fence raises
        DeviceTimeoutError) or "device_loss" (every call that needs the device raises
        DeviceLostError until ``reset``). ``core``: a core, "host" (the DMA kinds: vtrn_memcpy's
        engines) or None for any; ``engine``: a DMA engine number (the DMA kinds) or "pe", "act",
        "dve", "pool", "dma" (engine_hang), None for any; ``queue``: a queue number or None.
        ``after`` events (descriptors or instructions) pass first. ``sticky``: every later event
        fails too, until a reset; else the fault fires once."""
        kind = kind.replace("-", "_") if isinstance(kind, str) else kind  # VTRN_FAULTS spells them with hyphens
        if kind not in FAULT_KINDS or kind == "none":
            raise ValueError(f"fault kind {kind!r} is not one of {', '.join(k for k in FAULT_KINDS if k != 'none')}")
        if kind == "engine_hang" and isinstance(engine, str) and engine != "any":
            if engine not in ENGINE_FLAGS:
                raise ValueError(f"engine {engine!r} is not one of {', '.join(ENGINE_FLAGS)} or None (any)")
            engine = ENGINE_FLAGS[engine]
        fault = FaultStruct.init(
            kind=FAULT_KINDS[kind], flags=FAULT_FLAGS["sticky"] if sticky else 0,
            core=_fault_index(core, "core", allow_host=kind in ("dma_abort", "dma_hang")),
            engine=_fault_index(engine, "engine"), queue=_fault_index(queue, "queue"),
            after=unsigned(after, "uint64_t", "after"), address=unsigned(address, "uint64_t", "address"),
            bytes=unsigned(bytes, "uint64_t", "bytes"))
        check(lib.vtrn_device_inject_fault(self._handle, ctypes.byref(fault)))

    def reset(self, clear_counters: bool = False) -> None:
        """Resets the device (vtrn_device_reset): work in flight fails with DeviceResetError,
        faults are disarmed, a lost device comes back, queues and cores return clean; memory and
        handles stay. ``clear_counters`` also sets every error counter to 0."""
        check(lib.vtrn_device_reset(self._handle, DEVICE_RESET_FLAGS["clear_counters"] if clear_counters else 0))

    @property
    def error_counters(self) -> ErrorCounters:
        """An ErrorCounters snapshot (vtrn_device_get_error_counters); works on a lost device."""
        raw = DeviceErrorCountersStruct.init()
        check(lib.vtrn_device_get_error_counters(self._handle, ctypes.byref(raw)))
        fields = {field[0]: getattr(raw, field[0]) for field in DeviceErrorCountersStruct._fields_[1:]}
        fields["lost"] = bool(raw.lost)
        return ErrorCounters(**fields)

    def from_device(self, memory: _memory.DeviceMemory, dtype: DTypeLike = numpy.uint8,
                    shape: int | tuple[int, ...] | None = None, offset: int = 0) -> NDArray[Any]:
        """A new numpy array of ``dtype`` and ``shape`` read from ``memory`` starting ``offset``
        bytes in; shape None reads the whole block from ``offset`` on."""
        return _memory.from_device(self, memory, dtype, shape, offset)
