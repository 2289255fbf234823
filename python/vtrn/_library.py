"""Finding, loading and declaring libvtrn.so: the only file that knows the C ABI's types.

The library is the first of these that exists (``candidate_paths`` lists them):

1. ``$VTRN_LIBRARY``, a path to the .so; when it is set, nothing else is tried;
2. the build folders of the repository this package lies in, when it runs from a checkout
   (``.build/release`` and ``.build/debug``; the most recently built wins when both exist);
3. an installed library (``Scripts/install PREFIX``): ``sys.prefix/lib/libvtrn.so.MAJOR`` (a
   virtual environment or the interpreter's own prefix), then ``libvtrn.so.MAJOR`` as the dynamic
   loader finds it by name (LD_LIBRARY_PATH, ld.so.cache, /lib, /usr/lib), then
   ``/usr/local/lib/libvtrn.so.MAJOR`` (installed there but ldconfig not run since).

Its major version must equal ``VTRN_VERSION_MAJOR``. A function of the header that the library
does not export (a build older than the header) is listed in ``missing_functions`` and raises
LibraryError when called. ``path`` is the file loaded.

Everything of include/vtrn.h that Python needs is mirrored here: fixed-width types, one typed
pointer class per handle kind, the structs field for field, and the argument and result types of
every function, in the one table ``FUNCTIONS``. The rest of the package calls ``lib.vtrn_*``.
"""

import ctypes
import operator
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, Self
from ctypes import (
    POINTER,
    c_char,
    c_char_p,
    c_float,
    c_int32,
    c_int64,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)

from ._version import __version__

# The header this package was written against (include/vtrn.h, VTRN_VERSION_*).
VTRN_VERSION_MAJOR, VTRN_VERSION_MINOR, VTRN_VERSION_PATCH = (int(part) for part in __version__.split("."))

# Timeouts are in nanoseconds; this one waits forever (and is what "no timeout" reads as).
WAIT_FOREVER = 0xFFFF_FFFF_FFFF_FFFF

_REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Whether this package runs from a checkout of the repository (python/vtrn beside Package.swift),
# whose build folders then hold the library; an installed package has no repository.
_IN_CHECKOUT = os.path.isfile(os.path.join(_REPOSITORY, "Package.swift"))


class LibraryError(ImportError):
    """libvtrn.so is missing, cannot be loaded, or is not the version this package expects."""


# -- C types -----------------------------------------------------------------------------------

# C enums of the header are 32 bits wide (each has a _FORCE32 member); Swift imports them as UInt32.
vtrn_status_t = c_uint32
vtrn_architecture_t = c_uint32
vtrn_log_level_t = c_uint32
vtrn_numa_placement_t = c_uint32
vtrn_engine_flags_t = c_uint32
vtrn_dtype_t = c_uint32
vtrn_memory_space_t = c_uint32
vtrn_alu_op_t = c_uint32
vtrn_activation_t = c_uint32
vtrn_dma_indirect_t = c_uint32
vtrn_dma_oob_mode_t = c_uint32
vtrn_semaphore_op_t = c_uint32
vtrn_fault_kind_t = c_uint32
vtrn_collective_t = c_uint32

# Limits of DMA (VTRN_DMA_* macros).
DMA_MAX_DESCRIPTOR_BYTES = 65536
DMA_MIN_RING_ENTRIES = 32
DMA_MAX_RING_ENTRIES = (1 << 24) - 16


class RuntimeHandle(ctypes.c_void_p):
    """vtrn_runtime_t: a token, never dereferenced."""


class DeviceHandle(ctypes.c_void_p):
    """vtrn_device_t: a token, never dereferenced. Owned by its runtime."""


class HostBufferHandle(ctypes.c_void_p):
    """vtrn_host_buffer_t: host memory that DMA can use."""


class DeviceMemoryHandle(ctypes.c_void_p):
    """vtrn_device_memory_t: a block of a device's HBM."""


class DmaQueueHandle(ctypes.c_void_p):
    """vtrn_dma_queue_t: one DMA queue of one DMA engine of one NeuronCore."""


class ProgramHandle(ctypes.c_void_p):
    """vtrn_program_t: a program being built."""


class KernelHandle(ctypes.c_void_p):
    """vtrn_kernel_t: a program validated and loaded on one core."""


class FenceHandle(ctypes.c_void_p):
    """vtrn_fence_t: one execution of a kernel."""


class CommHandle(ctypes.c_void_p):
    """vtrn_comm_t: a communicator, a replica group of cores that run collectives together."""


# -- Enums of the instruction set, by the name that follows the C prefix, lower case ----------
# (VTRN_DTYPE_FP8_E4M3 is DTYPES["fp8_e4m3"]; a test checks every table against the header.)

ENGINE_FLAGS = {"pe": 1 << 0, "act": 1 << 1, "dve": 1 << 2, "pool": 1 << 3, "dma": 1 << 4, "cc": 1 << 5}  # vtrn_engine_flags_t
DTYPES = {"fp32": 1, "bf16": 2, "fp16": 3, "fp8_e4m3": 4, "fp8_e5m2": 5, "int32": 6, "int8": 7, "uint8": 8}  # vtrn_dtype_t
DTYPE_SIZES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8_e4m3": 1, "fp8_e5m2": 1, "int32": 4, "int8": 1, "uint8": 1}
MEMORY_SPACES = {"sbuf": 1, "psum": 2, "hbm": 3}  # vtrn_memory_space_t (VTRN_MEMORY_*)
ALU_OPS = {name: value for value, name in enumerate((  # vtrn_alu_op_t (VTRN_ALU_*)
    "add", "subtract", "multiply", "max", "min",
    "equal", "not_equal", "greater", "greater_equal", "less", "less_equal",
    "pow", "abs", "reciprocal", "rsqrt", "divide",
    "bitwise_and", "bitwise_or", "bitwise_xor", "shift_left", "shift_right",
    "bypass", "logical_and", "logical_or", "logical_xor", "logical_not", "invert"), start=1)}
ACTIVATIONS = {name: value for value, name in enumerate((  # vtrn_activation_t (VTRN_ACT_*)
    "copy", "exp", "log", "tanh", "sigmoid", "relu", "gelu", "gelu_tanh", "silu", "square", "sqrt", "rsqrt",
    "reciprocal", "abs", "sign", "erf", "erf_dx", "sin", "arctan", "softplus", "mish", "gelu_dx", "silu_dx",
    "gelu_apprx_sigmoid", "gelu_apprx_sigmoid_dx"), start=1)}
# NKI's spellings where they differ from the header's (nki.language.gelu_apprx_tanh, maximum, ...).
ACTIVATION_ALIASES = {"gelu_apprx_tanh": "gelu_tanh"}
ALU_ALIASES = {"maximum": "max", "minimum": "min", "power": "pow", "left_shift": "shift_left",
               "right_shift": "shift_right"}
SEMAPHORE_OPS = {"add": 1, "set": 2}  # vtrn_semaphore_op_t (VTRN_SEMAPHORE_*)
SCALAR_KINDS = {"immediate": 0, "tile": 1, "int32": 2}  # vtrn_scalar_kind_t (VTRN_SCALAR_*)
DMA_INDIRECT = {"none": 0, "src": 1, "dst": 2}  # vtrn_dma_indirect_t (VTRN_DMA_INDIRECT_*)
DMA_OOB_MODES = {"error": 0, "skip": 1}  # vtrn_dma_oob_mode_t (VTRN_DMA_OOB_*)
FAULT_KINDS = {"none": 0, "dma_abort": 1, "dma_hang": 2, "hbm_ue": 3, "engine_hang": 4,  # vtrn_fault_kind_t (VTRN_FAULT_*)
               "device_loss": 5}
FAULT_FLAGS = {"sticky": 1 << 0}  # vtrn_fault_flags_t (VTRN_FAULT_*)
DEVICE_RESET_FLAGS = {"clear_counters": 1 << 0}  # vtrn_device_reset_flags_t (VTRN_DEVICE_RESET_*)
COLLECTIVES = {"all_reduce": 1, "all_gather": 2, "reduce_scatter": 3, "all_to_all": 4,  # vtrn_collective_t
               "broadcast": 5, "send": 6, "recv": 7, "permute": 8}
FAULT_ANY = -1  # VTRN_FAULT_ANY: any core, engine or queue
FAULT_HOST = -2  # VTRN_FAULT_HOST: the host DMA engines (vtrn_memcpy's), as a DMA fault's core


class _VersionedStruct(ctypes.Structure):
    """A struct that begins with ``size_t struct_size``, as the header's option and info structs do."""

    # Fields the header's _INIT macro sets to something other than zero.
    _init_defaults_: dict[str, Any] = {}

    @classmethod
    def init(cls, **fields: Any) -> Self:
        """The struct as its _INIT macro makes it: struct_size set, defaults, then ``fields``."""
        value = cls(struct_size=ctypes.sizeof(cls), **cls._init_defaults_)
        for name, field in fields.items():
            setattr(value, name, field)
        return value


class RuntimeOptionsStruct(_VersionedStruct):
    """vtrn_runtime_options_t (VTRN_RUNTIME_OPTIONS_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("topology", c_char_p),
        ("visible_cores", c_char_p),
        ("log_level", vtrn_log_level_t),
    ]


class RuntimeInfoStruct(_VersionedStruct):
    """vtrn_runtime_info_t (VTRN_RUNTIME_INFO_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("device_count", c_uint32),
        ("core_count", c_uint32),
        ("visible_core_count", c_uint32),
        ("log_level", vtrn_log_level_t),
        ("exec_timeout_ns", c_uint64),
        ("topology", c_char * 256),
        ("instance_type", c_char * 32),
    ]


class DeviceInfoStruct(_VersionedStruct):
    """vtrn_device_info_t (VTRN_DEVICE_INFO_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("index", c_uint32),
        ("architecture", vtrn_architecture_t),
        ("name", c_char * 64),
        ("core_count", c_uint32),
        ("first_core", c_uint32),
        ("hbm_bytes", c_uint64),
        ("hbm_used_bytes", c_uint64),
        ("hbm_bandwidth", c_uint64),
        ("numa_node", c_int32),
        ("pci_vendor_id", c_uint16),
        ("pci_device_id", c_uint16),
        ("bus_address", c_char * 32),
        ("uuid", c_char * 40),
        ("dma_engines_per_core", c_uint32),
        ("queues_per_dma_engine", c_uint32),
        ("sbuf_bytes_per_core", c_uint64),
        ("psum_bytes_per_core", c_uint64),
        ("semaphores_per_core", c_uint32),
        ("visible_core_count", c_uint32),
        ("interconnect", c_char * 32),
        ("link_count", c_uint32),
        ("links_per_device", c_uint32),
        ("link_bandwidth", c_uint64),
        ("device_link_bandwidth", c_uint64),
        ("hop_latency_ns", c_uint64),
    ]
    _init_defaults_ = {"architecture": 1}  # VTRN_ARCH_TRN1


class CoreInfoStruct(_VersionedStruct):
    """vtrn_core_info_t (VTRN_CORE_INFO_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("device_index", c_uint32),
        ("index", c_uint32),
        ("global_index", c_uint32),
        ("visible", c_uint32),
        ("engines", c_uint32),
        ("sbuf_partitions", c_uint32),
        ("sbuf_bytes_per_partition", c_uint32),
        ("psum_bytes_per_partition", c_uint32),
        ("psum_banks", c_uint32),
        ("semaphores", c_uint32),
        ("dma_engines", c_uint32),
        ("queues_per_dma_engine", c_uint32),
        ("pe_clock_hz", c_uint64),
        ("act_clock_hz", c_uint64),
        ("dve_clock_hz", c_uint64),
        ("pool_clock_hz", c_uint64),
    ]


class CoreHolderStruct(_VersionedStruct):
    """vtrn_core_holder_t (VTRN_CORE_HOLDER_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("held", c_uint32),
        ("pid", c_int32),
        ("runtime", c_uint32),
        ("this_process", c_uint32),
        ("command", c_char * 256),
    ]


class HostBufferOptionsStruct(_VersionedStruct):
    """vtrn_host_buffer_options_t (VTRN_HOST_BUFFER_OPTIONS_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("placement", vtrn_numa_placement_t),
        ("device", c_uint32),
        ("numa_node", c_int32),
        ("flags", c_uint32),
    ]
    _init_defaults_ = {"numa_node": -1}


class HostBufferInfoStruct(_VersionedStruct):
    """vtrn_host_buffer_info_t (VTRN_HOST_BUFFER_INFO_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("data", c_void_p),
        ("bytes", c_size_t),
        ("placement", vtrn_numa_placement_t),
        ("requested_node", c_int32),
        ("flags", c_uint32),
        ("huge_pages", c_uint32),
        ("locked", c_uint32),
        ("registered", c_uint32),
        ("note", c_char * 160),
    ]


class DeviceMemoryInfoStruct(_VersionedStruct):
    """vtrn_device_memory_info_t (VTRN_DEVICE_MEMORY_INFO_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("device_index", c_uint32),
        ("reserved", c_uint32),
        ("address", c_uint64),
        ("bytes", c_uint64),
        ("alignment", c_uint64),
    ]


class MemoryUsageStruct(_VersionedStruct):
    """vtrn_memory_usage_t (VTRN_MEMORY_USAGE_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("total_bytes", c_uint64),
        ("used_bytes", c_uint64),
        ("free_bytes", c_uint64),
        ("largest_free_block", c_uint64),
        ("tensor_bytes", c_uint64),
        ("kernel_bytes", c_uint64),
        ("allocation_count", c_uint64),
        ("resident_bytes", c_uint64),
    ]


class DmaQueueOptionsStruct(_VersionedStruct):
    """vtrn_dma_queue_options_t (VTRN_DMA_QUEUE_OPTIONS_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("core", c_uint32),
        ("engine", c_uint32),
        ("queue", c_uint32),
        ("ring_entries", c_uint32),
    ]
    _init_defaults_ = {"ring_entries": 4096}


class DmaQueueInfoStruct(_VersionedStruct):
    """vtrn_dma_queue_info_t (VTRN_DMA_QUEUE_INFO_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("device_index", c_uint32),
        ("core", c_uint32),
        ("engine", c_uint32),
        ("queue", c_uint32),
        ("ring_entries", c_uint32),
        ("free_entries", c_uint32),
        ("submitted_sequence", c_uint64),
        ("completed_sequence", c_uint64),
        ("descriptors_completed", c_uint64),
        ("bytes_completed", c_uint64),
    ]


class MemoryRefStruct(ctypes.Structure):
    """vtrn_memory_ref_t: a host buffer or device memory handle, plus a byte offset."""

    _fields_ = [
        ("memory", c_void_p),
        ("offset", c_uint64),
    ]


class DmaTransferStruct(ctypes.Structure):
    """vtrn_dma_transfer_t: copy ``bytes`` bytes from ``src`` to ``dst``."""

    _fields_ = [
        ("dst", MemoryRefStruct),
        ("src", MemoryRefStruct),
        ("bytes", c_uint64),
    ]


class AccessStruct(ctypes.Structure):
    """vtrn_access_t: an instruction operand, up to 4 free dimensions over SBUF, PSUM or a
    parameter. size[0]/stride[0] is the innermost (fastest) dimension."""

    _fields_ = [
        ("space", vtrn_memory_space_t),
        ("dtype", vtrn_dtype_t),
        ("start_partition", c_uint32),
        ("partitions", c_uint32),
        ("offset", c_uint64),
        ("parameter", c_uint32),
        ("dims", c_uint32),
        ("size", c_uint32 * 4),
        ("stride", c_int64 * 4),
        ("partition_stride", c_int64),
    ]


class ScalarStruct(ctypes.Structure):
    """vtrn_scalar_t: an immediate (is_tile 0), a [P,1] tile (is_tile 1), or an int32 immediate
    whose bits are value's bytes (is_tile 2; ``int32`` makes one)."""

    _fields_ = [
        ("is_tile", c_uint32),
        ("value", c_float),
        ("tile", AccessStruct),
    ]

    @classmethod
    def int32(cls, value: int) -> Self:
        """vtrn_scalar_int32 (static inline in the header): the int32's bits stored into ``value``
        as bits (through a Python float, an int32 that reads as a signalling NaN would be quieted)."""
        tile = AccessStruct(space=MEMORY_SPACES["sbuf"], dtype=DTYPES["int32"], start_partition=0, partitions=1, offset=0,
                            parameter=0, dims=1, size=(1, 1, 1, 1), stride=(1, 0, 0, 0), partition_stride=0)
        scalar = cls(is_tile=SCALAR_KINDS["int32"], value=0.0, tile=tile)
        c_int32.from_buffer(scalar, cls.value.offset).value = value
        return scalar


class SyncStruct(ctypes.Structure):
    """vtrn_sync_t: wait before an instruction, signal after it (-1: none). ``none()`` is
    VTRN_SYNC_NONE."""

    _fields_ = [
        ("wait_semaphore", c_int32),
        ("wait_value", c_uint32),
        ("signal_semaphore", c_int32),
        ("signal_op", vtrn_semaphore_op_t),
        ("signal_value", c_uint32),
    ]

    @classmethod
    def none(cls) -> Self:
        """VTRN_SYNC_NONE."""
        return cls(-1, 0, -1, SEMAPHORE_OPS["add"], 0)


class BindingStruct(ctypes.Structure):
    """vtrn_binding_t: a kernel parameter bound to device memory for one execution."""

    _fields_ = [
        ("name", c_char_p),
        ("memory", DeviceMemoryHandle),
        ("offset", c_uint64),
    ]


class DmaCopyOptionsStruct(_VersionedStruct):
    """vtrn_dma_copy_options_t (VTRN_DMA_COPY_OPTIONS_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("dst_rmw_op", vtrn_alu_op_t),
        ("indirect", vtrn_dma_indirect_t),
        ("index", POINTER(AccessStruct)),
        ("oob_mode", vtrn_dma_oob_mode_t),
    ]
    _init_defaults_ = {"dst_rmw_op": ALU_OPS["bypass"]}


class ExecutionInfoStruct(_VersionedStruct):
    """vtrn_execution_info_t (VTRN_EXECUTION_INFO_INIT). Arrays are per engine: PE, ACT, DVE, POOL, DMA;
    the CC engine (collectives) has fields of its own, appended."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("status", vtrn_status_t),
        ("reserved", c_uint32),
        ("wall_ns", c_uint64),
        ("queued_ns", c_uint64),
        ("device_ns", c_uint64),
        ("device_cycles", c_uint64),
        ("instructions", c_uint64 * 5),
        ("engine_busy_ns", c_uint64 * 5),
        ("cc_instructions", c_uint64),
        ("cc_busy_ns", c_uint64),
    ]


class HandleCountsStruct(_VersionedStruct):
    """vtrn_handle_counts_t (VTRN_HANDLE_COUNTS_INIT): the process's live handles per kind."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("runtimes", c_uint64),
        ("devices", c_uint64),
        ("host_buffers", c_uint64),
        ("device_memory", c_uint64),
        ("dma_queues", c_uint64),
        ("programs", c_uint64),
        ("kernels", c_uint64),
        ("fences", c_uint64),
        ("total", c_uint64),
        ("orphaned_host_bytes", c_uint64),
        ("comms", c_uint64),
    ]


class FaultStruct(_VersionedStruct):
    """vtrn_fault_t (VTRN_FAULT_INIT): a fault for vtrn_device_inject_fault."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("kind", vtrn_fault_kind_t),
        ("flags", c_uint32),
        ("core", c_int32),
        ("engine", c_int32),
        ("queue", c_int32),
        ("reserved", c_uint32),
        ("after", c_uint64),
        ("address", c_uint64),
        ("bytes", c_uint64),
    ]
    _init_defaults_ = {"core": FAULT_ANY, "engine": FAULT_ANY, "queue": FAULT_ANY}


class DeviceErrorCountersStruct(_VersionedStruct):
    """vtrn_device_error_counters_t (VTRN_DEVICE_ERROR_COUNTERS_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("lost", c_uint32),
        ("armed_faults", c_uint32),
        ("dma_aborts", c_uint64),
        ("hbm_uncorrectable_errors", c_uint64),
        ("execution_timeouts", c_uint64),
        ("hangs", c_uint64),
        ("device_losses", c_uint64),
        ("resets", c_uint64),
        ("faults_injected", c_uint64),
    ]


class CommMemberStruct(ctypes.Structure):
    """vtrn_comm_member_t: one rank of a communicator, a core of a device."""

    _fields_ = [
        ("device", DeviceHandle),
        ("core", c_uint32),
        ("reserved", c_uint32),
    ]


class CommInfoStruct(_VersionedStruct):
    """vtrn_comm_info_t (VTRN_COMM_INFO_INIT)."""

    _fields_ = [
        ("struct_size", c_size_t),
        ("ranks", c_uint32),
        ("first_local_rank", c_uint32),
        ("collectives_completed", c_uint64),
        ("local_ranks", c_uint32),
        ("process", c_uint32),
        ("processes", c_uint32),
        ("reserved", c_uint32),
    ]


# The largest value of each unsigned C type that Python passes in.
UNSIGNED_MAXIMUM = {"uint32_t": 0xFFFF_FFFF, "uint64_t": 0xFFFF_FFFF_FFFF_FFFF, "size_t": (1 << (8 * ctypes.sizeof(c_size_t))) - 1}


def unsigned(value: int, c_type: str, what: str) -> int:
    """``value`` as an int that fits the unsigned C type named ``c_type`` ("uint32_t", "uint64_t",
    "size_t"), else ValueError: ctypes would wrap it silently (-1 would become 4294967295)."""
    value = operator.index(value)
    maximum = UNSIGNED_MAXIMUM[c_type]
    if not 0 <= value <= maximum:
        raise ValueError(f"{what} {value} is out of range: it must be 0 to {maximum} (a {c_type})")
    return value


def host_ref(buffer: HostBufferHandle, offset: int = 0) -> MemoryRefStruct:
    """vtrn_host_ref (static inline in the header): ``offset`` bytes into a HostBufferHandle."""
    if not isinstance(buffer, HostBufferHandle):
        raise TypeError(f"host_ref needs a HostBufferHandle, not {type(buffer).__name__}")
    return MemoryRefStruct(buffer.value, offset)


def device_ref(memory: DeviceMemoryHandle, offset: int = 0) -> MemoryRefStruct:
    """vtrn_device_ref (static inline in the header): ``offset`` bytes into a DeviceMemoryHandle."""
    if not isinstance(memory, DeviceMemoryHandle):
        raise TypeError(f"device_ref needs a DeviceMemoryHandle, not {type(memory).__name__}")
    return MemoryRefStruct(memory.value, offset)


# -- Functions: every declaration of include/vtrn.h, in its order ------------------------------

# (name, result type, argument types): ctypes types (restype None would be void).
FUNCTIONS: list[tuple[str, type[Any] | None, list[type[Any]]]] = [
    # version and errors
    ("vtrn_version", c_uint32, []),
    ("vtrn_status_string", c_char_p, [vtrn_status_t]),
    ("vtrn_last_error", c_char_p, []),
    ("vtrn_get_handle_counts", vtrn_status_t, [POINTER(HandleCountsStruct)]),
    # runtime
    ("vtrn_runtime_create", vtrn_status_t, [POINTER(RuntimeOptionsStruct), POINTER(RuntimeHandle)]),
    ("vtrn_runtime_destroy", vtrn_status_t, [RuntimeHandle]),
    ("vtrn_runtime_get_info", vtrn_status_t, [RuntimeHandle, POINTER(RuntimeInfoStruct)]),
    # devices
    ("vtrn_device_count", vtrn_status_t, [RuntimeHandle, POINTER(c_uint32)]),
    ("vtrn_device_get", vtrn_status_t, [RuntimeHandle, c_uint32, POINTER(DeviceHandle)]),
    ("vtrn_device_get_info", vtrn_status_t, [DeviceHandle, POINTER(DeviceInfoStruct)]),
    ("vtrn_device_get_links", vtrn_status_t, [DeviceHandle, POINTER(c_uint32), POINTER(c_uint32)]),
    ("vtrn_device_get_core_info", vtrn_status_t, [DeviceHandle, c_uint32, POINTER(CoreInfoStruct)]),
    ("vtrn_device_get_core_holder", vtrn_status_t, [DeviceHandle, c_uint32, POINTER(CoreHolderStruct)]),
    # host buffers
    ("vtrn_host_buffer_create", vtrn_status_t,
     [RuntimeHandle, c_size_t, POINTER(HostBufferOptionsStruct), POINTER(HostBufferHandle)]),
    ("vtrn_host_buffer_register", vtrn_status_t, [RuntimeHandle, c_void_p, c_size_t, POINTER(HostBufferHandle)]),
    ("vtrn_host_buffer_map", vtrn_status_t, [HostBufferHandle, POINTER(c_void_p), POINTER(c_size_t)]),
    ("vtrn_host_buffer_numa_node", vtrn_status_t, [HostBufferHandle, POINTER(c_int32)]),
    ("vtrn_host_buffer_node_pages", vtrn_status_t, [HostBufferHandle, POINTER(c_uint64), POINTER(c_uint32)]),
    ("vtrn_host_buffer_get_info", vtrn_status_t, [HostBufferHandle, POINTER(HostBufferInfoStruct)]),
    ("vtrn_host_buffer_destroy", vtrn_status_t, [HostBufferHandle]),
    # device memory (HBM)
    ("vtrn_device_memory_alloc", vtrn_status_t, [DeviceHandle, c_uint64, c_uint64, POINTER(DeviceMemoryHandle)]),
    ("vtrn_device_memory_free", vtrn_status_t, [DeviceMemoryHandle]),
    ("vtrn_device_memory_get_info", vtrn_status_t, [DeviceMemoryHandle, POINTER(DeviceMemoryInfoStruct)]),
    ("vtrn_device_get_memory_usage", vtrn_status_t, [DeviceHandle, POINTER(MemoryUsageStruct)]),
    # DMA queues
    ("vtrn_dma_queue_create", vtrn_status_t, [DeviceHandle, POINTER(DmaQueueOptionsStruct), POINTER(DmaQueueHandle)]),
    ("vtrn_dma_queue_enqueue", vtrn_status_t, [DmaQueueHandle, POINTER(DmaTransferStruct), c_uint32]),
    ("vtrn_dma_queue_submit", vtrn_status_t, [DmaQueueHandle, POINTER(c_uint64)]),
    ("vtrn_dma_queue_wait", vtrn_status_t, [DmaQueueHandle, c_uint64, c_uint64]),
    ("vtrn_dma_queue_completed", vtrn_status_t, [DmaQueueHandle, POINTER(c_uint64)]),
    ("vtrn_dma_queue_get_info", vtrn_status_t, [DmaQueueHandle, POINTER(DmaQueueInfoStruct)]),
    ("vtrn_dma_queue_destroy", vtrn_status_t, [DmaQueueHandle]),
    ("vtrn_memcpy", vtrn_status_t, [DeviceHandle, MemoryRefStruct, MemoryRefStruct, c_uint64]),
    # programs
    ("vtrn_program_create", vtrn_status_t, [RuntimeHandle, POINTER(ProgramHandle)]),
    ("vtrn_program_destroy", vtrn_status_t, [ProgramHandle]),
    ("vtrn_program_add_parameter", vtrn_status_t, [ProgramHandle, c_char_p, c_uint64, POINTER(c_uint32)]),
    ("vtrn_program_instruction_count", vtrn_status_t, [ProgramHandle, POINTER(c_uint32)]),
    ("vtrn_program_dma_copy", vtrn_status_t, [ProgramHandle, AccessStruct, AccessStruct, POINTER(SyncStruct)]),
    ("vtrn_program_dma_copy_ex", vtrn_status_t,
     [ProgramHandle, AccessStruct, AccessStruct, POINTER(DmaCopyOptionsStruct), POINTER(SyncStruct)]),
    ("vtrn_program_matmul", vtrn_status_t,
     [ProgramHandle, AccessStruct, AccessStruct, AccessStruct, c_uint32, POINTER(SyncStruct)]),
    ("vtrn_program_transpose", vtrn_status_t, [ProgramHandle, AccessStruct, AccessStruct, POINTER(SyncStruct)]),
    ("vtrn_program_transpose_on", vtrn_status_t,
     [ProgramHandle, vtrn_engine_flags_t, AccessStruct, AccessStruct, POINTER(SyncStruct)]),
    ("vtrn_program_activate", vtrn_status_t,
     [ProgramHandle, AccessStruct, vtrn_activation_t, AccessStruct, POINTER(ScalarStruct), POINTER(AccessStruct),
      POINTER(AccessStruct), POINTER(SyncStruct)]),
    ("vtrn_program_tensor_tensor", vtrn_status_t,
     [ProgramHandle, AccessStruct, AccessStruct, AccessStruct, vtrn_alu_op_t, POINTER(SyncStruct)]),
    ("vtrn_program_tensor_scalar", vtrn_status_t,
     [ProgramHandle, vtrn_engine_flags_t, AccessStruct, AccessStruct, vtrn_alu_op_t, POINTER(ScalarStruct),
      vtrn_alu_op_t, POINTER(ScalarStruct), c_uint32, POINTER(SyncStruct)]),
    ("vtrn_program_tensor_reduce", vtrn_status_t,
     [ProgramHandle, AccessStruct, AccessStruct, vtrn_alu_op_t, c_uint32, POINTER(SyncStruct)]),
    ("vtrn_program_tensor_copy", vtrn_status_t,
     [ProgramHandle, vtrn_engine_flags_t, AccessStruct, AccessStruct, POINTER(SyncStruct)]),
    ("vtrn_program_memset", vtrn_status_t,
     [ProgramHandle, vtrn_engine_flags_t, AccessStruct, c_float, POINTER(SyncStruct)]),
    ("vtrn_program_iota", vtrn_status_t,
     [ProgramHandle, AccessStruct, POINTER(c_int32), c_int32, c_int32, POINTER(SyncStruct)]),
    ("vtrn_program_affine_select", vtrn_status_t,
     [ProgramHandle, AccessStruct, POINTER(c_int32), c_int32, c_int32, vtrn_alu_op_t, AccessStruct, c_float,
      POINTER(SyncStruct)]),
    ("vtrn_program_sem_signal", vtrn_status_t,
     [ProgramHandle, vtrn_engine_flags_t, c_uint32, vtrn_semaphore_op_t, c_uint32]),
    ("vtrn_program_sem_wait", vtrn_status_t, [ProgramHandle, vtrn_engine_flags_t, c_uint32, c_uint32]),
    # kernels and executions
    ("vtrn_kernel_load", vtrn_status_t, [DeviceHandle, c_uint32, ProgramHandle, POINTER(KernelHandle)]),
    ("vtrn_kernel_unload", vtrn_status_t, [KernelHandle]),
    ("vtrn_kernel_execute", vtrn_status_t, [KernelHandle, POINTER(BindingStruct), c_uint32, POINTER(FenceHandle)]),
    ("vtrn_fence_wait", vtrn_status_t, [FenceHandle, c_uint64]),
    ("vtrn_fence_status", vtrn_status_t, [FenceHandle, POINTER(vtrn_status_t)]),
    ("vtrn_fence_get_info", vtrn_status_t, [FenceHandle, POINTER(ExecutionInfoStruct)]),
    ("vtrn_fence_destroy", vtrn_status_t, [FenceHandle]),
    # faults, resets and error counters
    ("vtrn_device_inject_fault", vtrn_status_t, [DeviceHandle, POINTER(FaultStruct)]),
    ("vtrn_device_reset", vtrn_status_t, [DeviceHandle, c_uint32]),
    ("vtrn_device_get_error_counters", vtrn_status_t, [DeviceHandle, POINTER(DeviceErrorCountersStruct)]),
    # collectives
    ("vtrn_comm_create", vtrn_status_t, [RuntimeHandle, POINTER(CommMemberStruct), c_uint32, POINTER(CommHandle)]),
    ("vtrn_comm_create_mpi", vtrn_status_t, [RuntimeHandle, POINTER(CommMemberStruct), c_uint32, POINTER(CommHandle)]),
    ("vtrn_comm_destroy", vtrn_status_t, [CommHandle]),
    ("vtrn_comm_get_info", vtrn_status_t, [CommHandle, POINTER(CommInfoStruct)]),
    ("vtrn_comm_rank", vtrn_status_t, [CommHandle, DeviceHandle, c_uint32, POINTER(c_uint32)]),
    ("vtrn_comm_collective", vtrn_status_t,
     [CommHandle, c_uint32, vtrn_collective_t, MemoryRefStruct, MemoryRefStruct, c_uint64, vtrn_dtype_t, vtrn_alu_op_t, c_uint32,
      POINTER(FenceHandle)]),
    ("vtrn_all_reduce", vtrn_status_t,
     [CommHandle, c_uint32, MemoryRefStruct, MemoryRefStruct, c_uint64, vtrn_dtype_t, vtrn_alu_op_t, POINTER(FenceHandle)]),
    ("vtrn_all_gather", vtrn_status_t,
     [CommHandle, c_uint32, MemoryRefStruct, MemoryRefStruct, c_uint64, vtrn_dtype_t, POINTER(FenceHandle)]),
    ("vtrn_reduce_scatter", vtrn_status_t,
     [CommHandle, c_uint32, MemoryRefStruct, MemoryRefStruct, c_uint64, vtrn_dtype_t, vtrn_alu_op_t, POINTER(FenceHandle)]),
    ("vtrn_all_to_all", vtrn_status_t,
     [CommHandle, c_uint32, MemoryRefStruct, MemoryRefStruct, c_uint64, vtrn_dtype_t, POINTER(FenceHandle)]),
    ("vtrn_broadcast", vtrn_status_t,
     [CommHandle, c_uint32, MemoryRefStruct, MemoryRefStruct, c_uint64, vtrn_dtype_t, c_uint32, POINTER(FenceHandle)]),
    ("vtrn_send", vtrn_status_t, [CommHandle, c_uint32, MemoryRefStruct, c_uint64, vtrn_dtype_t, c_uint32, POINTER(FenceHandle)]),
    ("vtrn_recv", vtrn_status_t, [CommHandle, c_uint32, MemoryRefStruct, c_uint64, vtrn_dtype_t, c_uint32, POINTER(FenceHandle)]),
    ("vtrn_collective_permute", vtrn_status_t,
     [CommHandle, c_uint32, MemoryRefStruct, MemoryRefStruct, c_uint64, vtrn_dtype_t, POINTER(c_int32), POINTER(FenceHandle)]),
    ("vtrn_program_collective", vtrn_status_t,
     [ProgramHandle, CommHandle, vtrn_collective_t, AccessStruct, AccessStruct, vtrn_alu_op_t, c_uint32, POINTER(SyncStruct)]),
    ("vtrn_program_collective_permute", vtrn_status_t,
     [ProgramHandle, CommHandle, AccessStruct, AccessStruct, POINTER(c_int32), POINTER(SyncStruct)]),
]


# -- Loading -----------------------------------------------------------------------------------

# The file name programs load at run time: Scripts/install gives the library this SONAME.
SONAME = f"libvtrn.so.{VTRN_VERSION_MAJOR}"
# The candidate that is a name for the dynamic loader to search, not a path.
_BY_NAME = f"{SONAME} (the dynamic loader's search: LD_LIBRARY_PATH, ld.so.cache, /lib, /usr/lib)"


def candidate_paths() -> list[str]:
    """Where the library may be, in the order tried: ``$VTRN_LIBRARY`` alone if it is set, else the
    repository's builds (the most recently built first), then the installed places (see the
    module's documentation). One entry is not a path but the SONAME for the dynamic loader to find."""
    explicit = os.environ.get("VTRN_LIBRARY")
    if explicit:
        return [explicit]
    installed = [os.path.join(sys.prefix, "lib", SONAME), _BY_NAME, os.path.join("/usr/local/lib", SONAME)]
    if not _IN_CHECKOUT:
        return installed
    builds = [os.path.join(_REPOSITORY, ".build", kind, "libvtrn.so") for kind in ("release", "debug")]
    existing = [path for path in builds if os.path.isfile(path)]
    # Prefer the most recently built; keep the others after it (and the missing ones for messages).
    existing.sort(key=os.path.getmtime, reverse=True)
    return existing + [path for path in builds if path not in existing] + installed


def _find_and_open() -> tuple[str, ctypes.CDLL]:
    """The first candidate that exists, opened: (its path, the ctypes library)."""
    paths = candidate_paths()
    for path in paths:
        if path == _BY_NAME:
            try:
                library = ctypes.CDLL(SONAME)
            except OSError:
                continue  # not found by name; a file that exists but fails to load is reported below
            return _loaded_file(library) or SONAME, library
        if os.path.isfile(path):
            try:
                return path, ctypes.CDLL(path)
            except OSError as error:
                raise LibraryError(f"cannot load {path}: {error}") from error
    if os.environ.get("VTRN_LIBRARY"):
        raise LibraryError(f"VTRN_LIBRARY={paths[0]!r}: no such file; point it at a built libvtrn.so "
                           "or unset it to use the repository's build")
    tried = "\n".join(f"  {path}" for path in paths)
    remedy = (f"build it with `swift build` in {_REPOSITORY}" if _IN_CHECKOUT
              else "install it with the vtrn repository's Scripts/install")
    raise LibraryError(f"libvtrn.so not found; tried:\n{tried}\n{remedy} (or set VTRN_LIBRARY to the path of a libvtrn.so)")


class _DlInfo(ctypes.Structure):
    """Dl_info of <dlfcn.h>, which dladdr fills."""

    _fields_ = [("dli_fname", c_char_p), ("dli_fbase", c_void_p), ("dli_sname", c_char_p), ("dli_saddr", c_void_p)]


def _loaded_file(library: ctypes.CDLL) -> str | None:
    """The path of the file the loader opened for ``library`` (loaded by name), or None: glibc's
    dladdr on one of its functions."""
    try:
        dladdr = ctypes.CDLL(None).dladdr
        function = library.vtrn_version
    except AttributeError:
        return None
    dladdr.argtypes, dladdr.restype = [c_void_p, POINTER(_DlInfo)], c_int32
    info = _DlInfo()
    if not dladdr(ctypes.cast(function, c_void_p), ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.abspath(os.fsdecode(info.dli_fname))


# Functions of FUNCTIONS that the loaded library does not export (calling them raises LibraryError).
missing_functions: list[str] = []


def _declare(path: str, library: ctypes.CDLL) -> ctypes.CDLL:
    """Checks the version of ``library`` (loaded from ``path``) and declares every function of
    FUNCTIONS on it; returns it."""
    try:
        version_function = library.vtrn_version
    except AttributeError:
        raise LibraryError(f"{path} is not libvtrn: it has no vtrn_version") from None
    version_function.argtypes, version_function.restype = [], c_uint32
    version: int = version_function()
    version_text = f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}"
    if version >> 16 != VTRN_VERSION_MAJOR:
        raise LibraryError(f"{path} is libvtrn {version_text}; this package needs major version {VTRN_VERSION_MAJOR} "
                           f"(it was written for {VTRN_VERSION_MAJOR}.{VTRN_VERSION_MINOR}.{VTRN_VERSION_PATCH}); "
                           "rebuild the library or use the package of its version")
    for name, restype, argtypes in FUNCTIONS:
        try:
            function = getattr(library, name)
        except AttributeError:
            # A library built before the header grew (same major version): everything else works,
            # and calling this function says what to do.
            setattr(library, name, _missing_function(name, path, version_text))
            missing_functions.append(name)
            continue
        function.restype, function.argtypes = restype, argtypes
    return library


def _missing_function(name: str, path: str, version_text: str) -> Callable[..., NoReturn]:
    """What stands for function ``name`` when the library lacks it: it raises LibraryError."""

    def missing(*arguments: object) -> NoReturn:
        raise LibraryError(f"{path} (libvtrn {version_text}) does not export {name}, which include/vtrn.h "
                           "declares: the library is older than the header; rebuild it with `swift build`")
    missing.__name__ = name
    return missing


path, lib = _find_and_open()
lib = _declare(path, lib)
