"""Kernels: programs for a NeuronCore built the way NKI reads, loaded on a core and executed.

    with vtrn.Runtime() as runtime:
        device = runtime.device(0)
        program = runtime.program()
        x = program.parameter("x", shape=(128, 512), dtype="float32")   # HBM tensors
        y = program.parameter("y", shape=(128, 512), dtype="float32")
        tile = program.sbuf((128, 512), "float32")                      # SBUF tile
        program.dma_copy(tile, x, signal=(0, 1))                        # DMA engine; semaphore 0 += 1
        program.activate(tile, "exp", tile, wait=(0, 1), signal=(0, 2)) # ACT engine
        program.dma_copy(y, tile, wait=(0, 2))
        with device.load(program, core=0) as kernel:
            fence = kernel.execute(x=numpy.ones((128, 512), numpy.float32), y=None)
            print(fence.result("y"), fence.info.device_ns)

Operands are ``AccessPattern`` objects: tiles from ``Program.sbuf``/``Program.psum``, HBM tensors
from ``Program.parameter``, and numpy-like views of them (``tile[0:64, 0:128]``,
``a[k0:k0 + 128, m0:m0 + 128]``, ``a.T`` for a transposed, strided HBM read,
``w.broadcast_to((128, n))`` for a stride-0 read). The first axis is the partition axis; the rest
are free axes, in numpy order (the last is the fastest), at most 4 of them.

Engines run their instruction streams in parallel; an instruction that needs another engine's
result must wait for it. Every instruction method takes ``wait=(semaphore, value)`` (start once
the semaphore is at least ``value``) and ``signal=(semaphore, value)`` (add ``value`` when done)
or ``signal_set=(semaphore, value)`` (set it). Semaphores are the core's 0-255, zero at the start
of each execution. ``sem_signal`` and ``sem_wait`` are the standalone forms.

What is checked where. The builder checks what Python must know (types, names, shapes it needs
to compute offsets); names are the header's in lower case (``ALU_OPS``, ``ACTIVATIONS``), NKI's
where it has them, and NKI's other spellings are accepted too (``gelu_apprx_tanh``, ``maximum``,
``minimum``, ``power``, ``left_shift``, ``right_shift``); an unknown name of an engine, dtype, ALU
op, activation or semaphore op raises ``InvalidArgumentError`` (a number is passed to the C library as it is, which refuses
unknown values the same way). Everything else (partition rules, bounds, shapes, dtypes,
semaphore numbers) is the C library's to validate when ``Device.load`` loads the program, with
``InvalidProgramError`` naming the instruction, its operand and the rule.

Tiles are placed by a bump allocator: each ``sbuf``/``psum`` call takes the next byte offset of
every partition (64-byte aligned) unless ``offset`` is given; a PSUM tile of at most 2 KiB per
partition never crosses a bank, a larger one starts on a bank. There is no freeing: reuse tiles.
The library checks at load that every tile fits the core's SBUF and PSUM.

Executions. ``Kernel.execute(name=value, ...)`` binds every parameter: a numpy array is copied
(converted to the parameter's dtype) into new device memory, ``None`` gets new uninitialised
device memory (for outputs), a ``DeviceMemory`` or ``(DeviceMemory, offset)`` is bound as it is.
``Fence.result(name)`` waits and reads a parameter back as a numpy array of its shape and dtype
(bf16 and fp8 as ml_dtypes types). Memory the fence allocated is freed when the fence closes.
"""

from __future__ import annotations

import ctypes
import math
import numbers
import operator
from collections.abc import Iterable
from ctypes import byref
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy
from numpy.typing import DTypeLike, NDArray

from ._library import (
    ACTIVATION_ALIASES,
    ACTIVATIONS,
    ALU_ALIASES,
    ALU_OPS,
    COLLECTIVES,
    DMA_INDIRECT,
    DMA_OOB_MODES,
    DTYPE_SIZES,
    DTYPES,
    ENGINE_FLAGS,
    MEMORY_SPACES,
    SCALAR_KINDS,
    SEMAPHORE_OPS,
    WAIT_FOREVER,
    AccessStruct,
    BindingStruct,
    DmaCopyOptionsStruct,
    ExecutionInfoStruct,
    FenceHandle,
    KernelHandle,
    ProgramHandle,
    ScalarStruct,
    SyncStruct,
    lib,
    unsigned,
)
from .errors import InvalidArgumentError, Status, check
from .memory import DeviceMemory, _int32, _Resource

if TYPE_CHECKING:
    from .collectives import Communicator
    from .runtime import Device, Runtime

ml_dtypes: ModuleType | None
try:
    import ml_dtypes
except ImportError:  # bf16 and fp8 tiles still work; only numpy arrays of them need ml_dtypes
    ml_dtypes = None

# A semaphore and a value: ``wait=(semaphore, value)``, ``signal=``, ``signal_set=``; None for none.
Sync: TypeAlias = "tuple[int, int] | None"
# An enum value by its name ("exp", "add", "dve") or its C number.
EnumValue: TypeAlias = "str | int"
# An immediate number or a [P,1] tile.
ScalarValue: TypeAlias = "float | int | numpy.integer[Any] | numpy.floating[Any] | AccessPattern"
# What ``Kernel.execute`` binds to a parameter.
Binding: TypeAlias = "NDArray[Any] | DeviceMemory | tuple[DeviceMemory, int] | None"

# The engines in the order of vtrn_execution_info_t's per-engine arrays.
ENGINE_ORDER = ("pe", "act", "dve", "pool", "dma")

# Spellings of dtypes besides the library's own (DTYPES): numpy's and ml_dtypes' names.
_DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float8_e4m3": "fp8_e4m3",
                  "float8_e5m2": "fp8_e5m2"}
# The numpy dtype of each vtrn dtype, by name (ml_dtypes for bf16 and fp8).
_NUMPY_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp8_e4m3": "float8_e4m3",
                "fp8_e5m2": "float8_e5m2", "int32": "int32", "int8": "int8", "uint8": "uint8"}

# Tiles start at multiples of this many bytes; PSUM banks are this large.
TILE_ALIGNMENT = 64
PSUM_BANK_BYTES = 2048


# -- names of enum values ----------------------------------------------------------------------

def _enum_value(value: EnumValue, table: dict[str, int], what: str, aliases: dict[str, str] | None = None) -> int:
    """The C value of ``value``: a name of ``table`` (or of ``aliases``, NKI's other spellings), or
    a number passed on as it is (the library refuses unknown numbers with its own message)."""
    if isinstance(value, str):
        name = value.lower()
        try:
            return table[(aliases or {}).get(name, name)]
        except KeyError:
            raise InvalidArgumentError(f"{what} {value!r} is not one of {', '.join(table)}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} is a {type(value).__name__}; give its name ({', '.join(table)})")
    return unsigned(value, "uint32_t", what)


def dtype_name(dtype: DTypeLike) -> str:
    """The library's name of a dtype ("fp32", "bf16", "fp8_e4m3", ...) given that name, numpy's
    or ml_dtypes' name ("float32", "bfloat16", "float8_e4m3"), or a numpy dtype.
    InvalidArgumentError for anything else (ml_dtypes.float8_e4m3fn, max 448, is not Trainium's
    fp8_e4m3, max 240)."""
    if isinstance(dtype, str):
        name = dtype.lower()
    else:
        try:
            name = numpy.dtype(dtype).name
        except TypeError:
            raise TypeError(f"dtype {dtype!r} is neither a name nor a numpy dtype") from None
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise InvalidArgumentError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)} "
                                   f"(or numpy's {', '.join(_NUMPY_NAMES.values())})")
    return name


def numpy_dtype(dtype: DTypeLike) -> numpy.dtype[Any]:
    """The numpy dtype that holds a vtrn dtype (ml_dtypes.bfloat16 for "bf16", ...)."""
    name = _NUMPY_NAMES[dtype_name(dtype)]
    if name in ("bfloat16", "float8_e4m3", "float8_e5m2"):
        if ml_dtypes is None:
            raise ImportError(f"numpy arrays of {dtype_name(dtype)} need the ml_dtypes package (pip install ml_dtypes)")
        narrow: numpy.dtype[Any] = numpy.dtype(getattr(ml_dtypes, name))
        return narrow
    return numpy.dtype(name)


def _size(value: int, what: str) -> int:
    value = operator.index(value)
    if value < 0:
        raise ValueError(f"{what} {value} is negative")
    return value


# -- operands ------------------------------------------------------------------------------------

class AccessPattern:
    """An instruction operand (vtrn_access_t): a tile of SBUF or PSUM, an HBM tensor, or a view of
    one. ``shape`` is (partitions, free...) in numpy order; ``strides`` are in elements, the first
    being the partition stride of an HBM view (SBUF and PSUM partitions are always consecutive,
    and their first stride is None). ``offset`` is in bytes: into each partition (SBUF, PSUM) or
    into the parameter (HBM).

    Made by Program.sbuf, Program.psum and Program.parameter, and by indexing those. The
    constructor takes any combination, for patterns the helpers do not make; the library
    validates them at load."""

    def __init__(self, space: str, dtype: DTypeLike, shape: Iterable[int], strides: Iterable[int | None] | None = None,
                 offset: int = 0, start_partition: int = 0, parameter: int = 0, name: str | None = None) -> None:
        if space not in MEMORY_SPACES:
            raise InvalidArgumentError(f"space {space!r} is not one of {', '.join(MEMORY_SPACES)}")
        self.space = space
        self.dtype = dtype_name(dtype)
        self.shape = tuple(_size(size, "size") for size in shape)
        if not self.shape:
            raise ValueError("an access pattern has at least one axis")
        if strides is None:  # contiguous, C order
            contiguous: list[int | None] = []
            step = 1
            for size in reversed(self.shape[1:] if space != "hbm" else self.shape):
                contiguous.insert(0, step)
                step *= size
            if space != "hbm":
                contiguous.insert(0, None)
            strides = contiguous
        # In elements; the partition axis of SBUF and PSUM has None.
        self.strides: tuple[int | None, ...] = tuple(strides)
        if len(self.strides) != len(self.shape):
            raise ValueError(f"shape {self.shape} and strides {self.strides} differ in length")
        self.offset = operator.index(offset)
        self.start_partition = operator.index(start_partition)
        self.parameter = operator.index(parameter)
        self.name = name  # the parameter's name, or None: for repr

    @property
    def itemsize(self) -> int:
        """Bytes per element of ``dtype``."""
        return DTYPE_SIZES[self.dtype]

    @property
    def partitions(self) -> int:
        """The partitions an instruction sees: the first axis (HBM: 1 for a one-axis view)."""
        return self.shape[0] if len(self.shape) > 1 or self.space != "hbm" else 1

    @property
    def free_shape(self) -> tuple[int, ...]:
        """The free axes, in numpy order."""
        return self.shape[1:] if len(self.shape) > 1 or self.space != "hbm" else self.shape

    def _replace(self, shape: Iterable[int], strides: Iterable[int | None], offset: int | None = None,
                 start_partition: int | None = None) -> AccessPattern:
        return AccessPattern(self.space, self.dtype, shape, strides, self.offset if offset is None else offset,
                             self.start_partition if start_partition is None else start_partition, self.parameter,
                             self.name)

    def __getitem__(self, key: Any) -> AccessPattern:
        """A view: integers pick one index (an HBM axis disappears; an SBUF/PSUM partition axis
        keeps one partition), slices may step (free axes and HBM axes only) and reverse."""
        key = key if isinstance(key, tuple) else (key,)
        if sum(item is Ellipsis for item in key) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if Ellipsis in key:
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (len(self.shape) - len(key) + 1) + key[at + 1:]
        if len(key) > len(self.shape):
            raise IndexError(f"too many indices: the view has {len(self.shape)} axes, {len(key)} given")
        key = key + (slice(None),) * (len(self.shape) - len(key))
        shape: list[int] = []
        strides: list[int | None] = []
        offset, start = self.offset, self.start_partition
        for axis, (item, size, stride) in enumerate(zip(key, self.shape, self.strides)):
            partition_axis = axis == 0 and self.space != "hbm"
            if isinstance(item, slice):
                first, stop, step = item.indices(size)
                count = len(range(first, stop, step))
                if partition_axis:
                    if step != 1:
                        raise IndexError(f"the partition axis of {self.space.upper()} takes slices of step 1, not {step}")
                    start += first
                else:
                    offset += first * _stride(stride) * self.itemsize
                shape.append(count)
                strides.append(None if partition_axis else _stride(stride) * step)
                continue
            try:
                index = operator.index(item)
            except TypeError:
                raise IndexError(f"index {item!r} is not an integer, a slice or '...'") from None
            if not -size <= index < size:
                raise IndexError(f"index {index} is out of range for axis {axis} of size {size}")
            index %= size
            if partition_axis:
                start += index
                shape.append(1)
                strides.append(None)
            else:
                offset += index * _stride(stride) * self.itemsize
        if not shape:  # every axis of an HBM view indexed: one element
            shape, strides = [1], [1]
        return self._replace(shape, strides, offset, start)

    @property
    def T(self) -> AccessPattern:
        """The axes reversed (HBM only): a transposed, strided read or write for DMA_COPY."""
        if self.space != "hbm":
            raise ValueError(f"an {self.space.upper()} tile's partition axis cannot trade places with a free axis in an "
                             "access pattern; use Program.transpose (the PE) to transpose a tile")
        return self._replace(self.shape[::-1], self.strides[::-1])

    def broadcast_to(self, shape: Iterable[int]) -> AccessPattern:
        """The view repeated along new leading axes or axes of size 1, with stride 0 (numpy's
        rules). SBUF and PSUM views cannot broadcast their partition axis."""
        target = tuple(_size(size, "size") for size in shape)
        if len(target) < len(self.shape):
            raise ValueError(f"cannot broadcast shape {self.shape} to the shorter {target}")
        extra = len(target) - len(self.shape)
        old_shape = (1,) * extra + self.shape
        old_strides: tuple[int | None, ...] = (0,) * extra + self.strides
        strides: list[int | None] = []
        for axis, (new, old, stride) in enumerate(zip(target, old_shape, old_strides)):
            if new != old and old != 1:
                raise ValueError(f"cannot broadcast shape {self.shape} to {target}")
            if axis == 0 and self.space != "hbm":
                if new != old or extra:
                    raise ValueError(f"an {self.space.upper()} view cannot broadcast its partition axis")
                strides.append(None)
            else:
                strides.append(0 if new != old else stride)
        return self._replace(target, strides)

    def free_axes(self) -> list[tuple[int, int]]:
        """(size, stride) of each free axis as vtrn_access_t counts them: the fastest first, and
        one axis of size 1 when the view has none left."""
        count = len(self.free_shape)
        if count == 0:
            return [(1, 1)]
        return [(size, _stride(stride)) for size, stride in zip(reversed(self.shape[-count:]),
                                                                  reversed(self.strides[-count:]))]

    def struct(self) -> AccessStruct:
        """The vtrn_access_t of this view."""
        axes = self.free_axes()
        if len(axes) > 4:
            raise ValueError(f"the view has {len(axes)} free axes (shape {self.shape}); an access pattern has at most 4")
        access = AccessStruct(space=MEMORY_SPACES[self.space], dtype=DTYPES[self.dtype],
                              start_partition=unsigned(self.start_partition, "uint32_t", "start partition"),
                              partitions=unsigned(self.partitions, "uint32_t", "partitions"),
                              offset=unsigned(self.offset, "uint64_t", "offset"),
                              parameter=unsigned(self.parameter, "uint32_t", "parameter"),
                              dims=len(axes))
        for dimension, (size, stride) in enumerate(axes):
            access.size[dimension] = unsigned(size, "uint32_t", "size")
            access.stride[dimension] = stride
        for dimension in range(len(axes), 4):
            access.size[dimension] = 1
        if self.space == "hbm" and len(self.shape) > 1:
            access.partition_stride = self.strides[0]
        return access

    def __repr__(self) -> str:
        if self.space == "hbm":
            where = f"HBM {self.name or f'parameter {self.parameter}'}"
        else:
            where = f"{self.space.upper()}[{self.start_partition}:{self.start_partition + self.shape[0]}]"
        return (f"<vtrn.AccessPattern {where} +{self.offset} {self.dtype} shape={self.shape} "
                f"strides={self.strides}>")


def _stride(stride: int | None) -> int:
    """A free axis's stride (only the partition axis of SBUF and PSUM has None)."""
    assert stride is not None, "a free axis has a stride"
    return stride


def _operand(value: AccessPattern | None, what: str) -> AccessStruct:
    if not isinstance(value, AccessPattern):
        raise TypeError(f"{what} is a {type(value).__name__}; an operand is an AccessPattern (a tile, a parameter "
                        "or a view of one)")
    return value.struct()


def _scalar(value: ScalarValue, what: str, integers: bool = False) -> ScalarStruct:
    """A vtrn_scalar_t: a number, or a [P,1] AccessPattern. With ``integers``, a Python or numpy
    integer becomes an exact int32 immediate (VTRN_SCALAR_INT32): -2^31 to 2^32 - 1, taken as 32
    bits (0xffffffff is -1); otherwise every number is passed as fp32."""
    if isinstance(value, AccessPattern):
        return ScalarStruct(is_tile=SCALAR_KINDS["tile"], value=0.0, tile=value.struct())
    if isinstance(value, bool) or not isinstance(value, (int, float, numpy.integer, numpy.floating)):
        raise TypeError(f"{what} is a {type(value).__name__}; it is a number or a [P,1] AccessPattern")
    if integers and isinstance(value, (int, numpy.integer)):
        number = int(value)
        if not -(1 << 31) <= number < (1 << 32):
            raise ValueError(f"{what} {number} is out of range: an integer immediate is 32 bits (-2^31 to 2^32 - 1)")
        return ScalarStruct.int32(number - (1 << 32) if number >= (1 << 31) else number)
    return ScalarStruct(is_tile=SCALAR_KINDS["immediate"], value=float(value))


def _semaphore_pair(pair: tuple[int, int], what: str) -> tuple[int, int]:
    try:
        semaphore, value = pair
    except (TypeError, ValueError):
        raise TypeError(f"{what} is {pair!r}; it is a (semaphore, value) pair") from None
    semaphore = operator.index(semaphore)
    if not 0 <= semaphore < (1 << 31):
        raise ValueError(f"{what}: semaphore {semaphore} is out of range (0 to 2^31 - 1; the core has 0-255)")
    return semaphore, unsigned(value, "uint32_t", f"{what}: value")


def _sync(wait: Sync, signal: Sync, signal_set: Sync) -> ctypes._CArgObject | None:
    """A pointer to a vtrn_sync_t, or None for no semaphore work."""
    if wait is None and signal is None and signal_set is None:
        return None
    if signal is not None and signal_set is not None:
        raise ValueError("give signal (add) or signal_set (set), not both")
    sync = SyncStruct.none()
    if wait is not None:
        sync.wait_semaphore, sync.wait_value = _semaphore_pair(wait, "wait")
    if signal is not None or signal_set is not None:
        what = "signal" if signal is not None else "signal_set"
        pair = signal if signal is not None else signal_set
        assert pair is not None
        sync.signal_semaphore, sync.signal_value = _semaphore_pair(pair, what)
        sync.signal_op = SEMAPHORE_OPS["add" if signal is not None else "set"]
    return byref(sync)


# -- programs ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Parameter:
    """A kernel parameter: an HBM tensor that each execution binds to device memory."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str  # a vtrn dtype name, "fp32", "bf16", ...
    bytes: int


class Program(_Resource[ProgramHandle]):
    """A program being built (vtrn_program_t), from ``Runtime.program()``. Instruction methods
    append one instruction each; see the module's documentation for operands and semaphores.
    Not to be built from several threads at once."""

    _destroy = "vtrn_program_destroy"

    def __init__(self, runtime: Runtime) -> None:
        handle = ProgramHandle()
        check(lib.vtrn_program_create(runtime.handle, byref(handle)))
        super().__init__(runtime, handle)
        self.parameters: dict[str, Parameter] = {}  # name -> Parameter, in declaration order
        self._next = {"sbuf": 0, "psum": 0}  # the bump allocators: next free byte of every partition
        self._closed = False

    # -- data --

    def parameter(self, name: str, shape: int | Iterable[int], dtype: DTypeLike = "float32") -> AccessPattern:
        """Declares kernel parameter ``name`` (1-63 bytes, unique), a C-ordered HBM tensor of
        ``shape`` and ``dtype``; returns it as an AccessPattern."""
        if not isinstance(name, str):
            raise TypeError(f"the parameter name is a {type(name).__name__}, not a str")
        sizes = tuple(_size(size, "size") for size in shape) if isinstance(shape, Iterable) else (_size(shape, "size"),)
        element = dtype_name(dtype)
        size = math.prod(sizes) * DTYPE_SIZES[element]
        index = ctypes.c_uint32()
        check(lib.vtrn_program_add_parameter(self._handle, name.encode(), unsigned(size, "uint64_t", "bytes"),
                                             byref(index)))
        self.parameters[name] = Parameter(name, index.value, sizes, element, size)
        return AccessPattern("hbm", element, sizes, parameter=index.value, name=name)

    def sbuf(self, shape: Iterable[int], dtype: DTypeLike = "float32", partition: int = 0,
             offset: int | None = None) -> AccessPattern:
        """A tile of SBUF: ``shape`` is (partitions, free...), from partition ``partition``, at byte
        ``offset`` of each partition (None: the next free one)."""
        return self._tile("sbuf", shape, dtype, partition, offset)

    def psum(self, shape: Iterable[int], dtype: DTypeLike = "float32", partition: int = 0,
             offset: int | None = None) -> AccessPattern:
        """A tile of PSUM, as ``sbuf``; placed inside one 2 KiB bank when it fits one."""
        return self._tile("psum", shape, dtype, partition, offset)

    def _tile(self, space: str, shape: Iterable[int], dtype: DTypeLike, partition: int,
              offset: int | None) -> AccessPattern:
        sizes = tuple(_size(size, "size") for size in shape)
        if len(sizes) < 2:
            raise ValueError(f"a tile's shape is (partitions, free...), at least 2 axes; {sizes} given")
        element = dtype_name(dtype)
        size = math.prod(sizes[1:]) * DTYPE_SIZES[element]
        if offset is None:
            offset = -(-self._next[space] // TILE_ALIGNMENT) * TILE_ALIGNMENT
            if space == "psum":
                bank_end = (offset // PSUM_BANK_BYTES + 1) * PSUM_BANK_BYTES
                if size > PSUM_BANK_BYTES or offset + size > bank_end:
                    offset = -(-offset // PSUM_BANK_BYTES) * PSUM_BANK_BYTES
        offset = _size(offset, "offset")
        self._next[space] = max(self._next[space], offset + size)
        return AccessPattern(space, element, sizes, offset=offset, start_partition=_size(partition, "partition"))

    @property
    def instruction_count(self) -> int:
        """The instructions appended so far."""
        count = ctypes.c_uint32()
        check(lib.vtrn_program_instruction_count(self._handle, byref(count)))
        return count.value

    # -- instructions --

    def dma_copy(self, dst: AccessPattern, src: AccessPattern, *, dst_rmw_op: EnumValue | None = None,
                 src_index: AccessPattern | None = None, dst_index: AccessPattern | None = None,
                 oob_mode: EnumValue = "error", wait: Sync = None, signal: Sync = None, signal_set: Sync = None) -> None:
        """DMA_COPY (DMA): dst = src element by element in flat (partition-major) order (HBM<->SBUF,
        SBUF<->SBUF, HBM<->HBM, whose rows are not limited to 128); a dtype change goes through
        fp32. ``dst_rmw_op="add"`` (NKI's dst_rmw_op) accumulates instead: dst = dst + src, through
        fp32.

        Indirect addressing (NKI's ``vector_offset``): ``src_index`` gathers, dst[p] = src[index[p]];
        ``dst_index`` scatters, dst[index[p]] = src[p]. The index is a [P,1] integer SBUF tile, P
        the other operand's partitions; the indexed operand is an HBM tensor whose first axis is its
        rows. ``oob_mode`` "error" fails the execution on an index outside the rows, "skip" skips
        that row."""
        if src_index is not None and dst_index is not None:
            raise ValueError("give src_index (a gather) or dst_index (a scatter), not both")
        if dst_rmw_op is None and src_index is None and dst_index is None:
            check(lib.vtrn_program_dma_copy(self._handle, _operand(dst, "dst"), _operand(src, "src"),
                                            _sync(wait, signal, signal_set)))
            return
        options = DmaCopyOptionsStruct.init(oob_mode=_enum_value(oob_mode, DMA_OOB_MODES, "oob_mode"))
        if dst_rmw_op is not None:
            options.dst_rmw_op = _enum_value(dst_rmw_op, ALU_OPS, "dst_rmw_op", ALU_ALIASES)
        index = None
        if src_index is not None or dst_index is not None:
            options.indirect = DMA_INDIRECT["src" if src_index is not None else "dst"]
            index = _operand(src_index if src_index is not None else dst_index, "index")
            options.index = ctypes.pointer(index)  # `index` lives until the call returns
        check(lib.vtrn_program_dma_copy_ex(self._handle, _operand(dst, "dst"), _operand(src, "src"), byref(options),
                                           _sync(wait, signal, signal_set)))

    def matmul(self, dst: AccessPattern, stationary: AccessPattern, moving: AccessPattern, accumulate: bool = False, *,
               wait: Sync = None, signal: Sync = None, signal_set: Sync = None) -> None:
        """MATMUL (PE): dst[M,N] (fp32 PSUM) = (accumulate ? dst : 0) + stationary[K,M]^T . moving[K,N]."""
        check(lib.vtrn_program_matmul(self._handle, _operand(dst, "dst"), _operand(stationary, "stationary"),
                                      _operand(moving, "moving"), 1 if accumulate else 0,
                                      _sync(wait, signal, signal_set)))

    def transpose(self, dst: AccessPattern, src: AccessPattern, engine: EnumValue = "pe", *, wait: Sync = None,
                  signal: Sync = None, signal_set: Sync = None) -> None:
        """TRANSPOSE: dst[F,P] = src[P,F], bit exact. On the PE (``engine="pe"``) up to 128 x 128,
        src in SBUF, dst in PSUM; on DVE (``engine="dve"``) up to 32 x 32, SBUF or PSUM either side."""
        check(lib.vtrn_program_transpose_on(self._handle, _enum_value(engine, ENGINE_FLAGS, "engine"),
                                            _operand(dst, "dst"), _operand(src, "src"), _sync(wait, signal, signal_set)))

    def activate(self, dst: AccessPattern, function: EnumValue, src: AccessPattern, scale: ScalarValue = 1.0,
                 bias: AccessPattern | None = None, accumulate_out: AccessPattern | None = None, *, wait: Sync = None,
                 signal: Sync = None, signal_set: Sync = None) -> None:
        """ACTIVATE (ACT): dst = function(src * scale + bias); ``scale`` a number or a [P,1] tile,
        ``bias`` a [P,1] tile or None, ``accumulate_out`` a [P,1] tile that receives each
        partition's sum of the results, or None."""
        code = _enum_value(function, ACTIVATIONS, "activation", ACTIVATION_ALIASES)
        scale_struct = _scalar(scale, "scale")
        bias_ref = None if bias is None else byref(_operand(bias, "bias"))
        accumulate_ref = None if accumulate_out is None else byref(_operand(accumulate_out, "accumulate_out"))
        check(lib.vtrn_program_activate(self._handle, _operand(dst, "dst"), code, _operand(src, "src"), byref(scale_struct),
                                        bias_ref, accumulate_ref, _sync(wait, signal, signal_set)))

    def tensor_tensor(self, dst: AccessPattern, a: AccessPattern, b: AccessPattern, op: EnumValue, *, wait: Sync = None,
                      signal: Sync = None, signal_set: Sync = None) -> None:
        """TENSOR_TENSOR (DVE): dst = a op b, element by element."""
        code = _enum_value(op, ALU_OPS, "ALU op", ALU_ALIASES)
        check(lib.vtrn_program_tensor_tensor(self._handle, _operand(dst, "dst"), _operand(a, "a"), _operand(b, "b"), code,
                                             _sync(wait, signal, signal_set)))

    def tensor_scalar(self, dst: AccessPattern, src: AccessPattern, op0: EnumValue, x0: ScalarValue,
                      op1: EnumValue | None = None, x1: ScalarValue | None = None, reverse: int = 0,
                      engine: EnumValue = "dve", *, wait: Sync = None, signal: Sync = None,
                      signal_set: Sync = None) -> None:
        """TENSOR_SCALAR (DVE, ACT or POOL): dst = (src op0 x0) op1 x1; x a number or a [P,1]
        tile; op1 None skips the second stage. Bit 0 of ``reverse`` makes the first stage
        x0 op0 src, bit 1 the second x1 op1 (...). An integer x is an exact 32-bit immediate
        (what the bitvec ops need; arithmetic ops see its nearest fp32), a float x an fp32 one."""
        engine_code = _enum_value(engine, ENGINE_FLAGS, "engine")
        op0_code = _enum_value(op0, ALU_OPS, "ALU op", ALU_ALIASES)
        op1_code = ALU_OPS["bypass"] if op1 is None else _enum_value(op1, ALU_OPS, "ALU op", ALU_ALIASES)
        x0_struct = _scalar(x0, "x0", integers=True)
        x1_ref = None if x1 is None else byref(_scalar(x1, "x1", integers=True))
        check(lib.vtrn_program_tensor_scalar(self._handle, engine_code, _operand(dst, "dst"), _operand(src, "src"),
                                             op0_code, byref(x0_struct), op1_code, x1_ref,
                                             unsigned(reverse, "uint32_t", "reverse"), _sync(wait, signal, signal_set)))

    def tensor_reduce(self, dst: AccessPattern, src: AccessPattern, op: EnumValue, negate: bool = False, *,
                      wait: Sync = None, signal: Sync = None, signal_set: Sync = None) -> None:
        """TENSOR_REDUCE (DVE): op over each partition's elements, negated when ``negate``
        (arithmetic ops only). dst is [P,1], or keeps leading axes: with src's free elements in
        the order of its shape (the last axis fastest), dst's k elements per partition each
        reduce one of k consecutive groups, so ``dst`` of shape (P, A) reduces the last axis of
        a (P, A, B) src; reduce other axes by passing a view that puts them last. op: add, max,
        min, multiply, logical_and/or/xor, or bitwise_and/or/xor (integer tiles)."""
        code = _enum_value(op, ALU_OPS, "ALU op", ALU_ALIASES)
        check(lib.vtrn_program_tensor_reduce(self._handle, _operand(dst, "dst"), _operand(src, "src"), code,
                                             1 if negate else 0, _sync(wait, signal, signal_set)))

    def tensor_copy(self, dst: AccessPattern, src: AccessPattern, engine: EnumValue = "dve", *, wait: Sync = None,
                    signal: Sync = None, signal_set: Sync = None) -> None:
        """TENSOR_COPY (DVE, ACT or POOL): dst = src; bit exact when the dtypes match."""
        code = _enum_value(engine, ENGINE_FLAGS, "engine")
        check(lib.vtrn_program_tensor_copy(self._handle, code, _operand(dst, "dst"), _operand(src, "src"),
                                           _sync(wait, signal, signal_set)))

    def memset(self, dst: AccessPattern, value: float, engine: EnumValue = "dve", *, wait: Sync = None,
               signal: Sync = None, signal_set: Sync = None) -> None:
        """MEMSET (DVE or POOL): every element of dst = value (rounded to dst's dtype)."""
        code = _enum_value(engine, ENGINE_FLAGS, "engine")
        check(lib.vtrn_program_memset(self._handle, code, _operand(dst, "dst"), float(value),
                                      _sync(wait, signal, signal_set)))

    def iota(self, dst: AccessPattern, steps: Iterable[int], offset: int = 0, channel_multiplier: int = 0, *,
             wait: Sync = None, signal: Sync = None, signal_set: Sync = None) -> None:
        """IOTA (POOL): dst[p, i...] = offset + p * channel_multiplier + sum(steps[d] * i_d) in
        int32; ``steps`` has one value per free axis of dst, in the order of its shape."""
        access = _operand(dst, "dst")
        check(lib.vtrn_program_iota(self._handle, access, self._steps(steps, dst, "iota"), _int32(offset, "offset"),
                                    _int32(channel_multiplier, "channel_multiplier"), _sync(wait, signal, signal_set)))

    def affine_select(self, dst: AccessPattern, steps: Iterable[int], offset: int, channel_multiplier: int,
                      cmp: EnumValue, on_true: AccessPattern, on_false: float, *, wait: Sync = None,
                      signal: Sync = None, signal_set: Sync = None) -> None:
        """AFFINE_SELECT (POOL): with v = offset + p * channel_multiplier + sum(steps[d] * i_d),
        dst = on_true where (v cmp 0), else the number ``on_false`` (causal masks)."""
        access = _operand(dst, "dst")
        code = _enum_value(cmp, ALU_OPS, "ALU op", ALU_ALIASES)
        check(lib.vtrn_program_affine_select(self._handle, access, self._steps(steps, dst, "affine_select"),
                                             _int32(offset, "offset"), _int32(channel_multiplier, "channel_multiplier"),
                                             code, _operand(on_true, "on_true"), float(on_false),
                                             _sync(wait, signal, signal_set)))

    def sem_signal(self, engine: EnumValue, semaphore: int, value: int, op: EnumValue = "add") -> None:
        """SEM_SIGNAL (any engine): semaphore += value ("add") or = value ("set"), in the engine's order."""
        check(lib.vtrn_program_sem_signal(self._handle, _enum_value(engine, ENGINE_FLAGS, "engine"),
                                          unsigned(semaphore, "uint32_t", "semaphore"),
                                          _enum_value(op, SEMAPHORE_OPS, "semaphore op"),
                                          unsigned(value, "uint32_t", "value")))

    def sem_wait(self, engine: EnumValue, semaphore: int, value: int) -> None:
        """SEM_WAIT (any engine): the engine's stream waits until the semaphore is at least ``value``."""
        check(lib.vtrn_program_sem_wait(self._handle, _enum_value(engine, ENGINE_FLAGS, "engine"),
                                        unsigned(semaphore, "uint32_t", "semaphore"), unsigned(value, "uint32_t", "value")))

    def collective(self, kind: EnumValue, comm: Communicator, dst: AccessPattern | None, src: AccessPattern | None,
                   op: EnumValue = "add", peer: int = 0, *, wait: Sync = None, signal: Sync = None,
                   signal_set: Sync = None) -> None:
        """A collective on the CC engine (vtrn_program_collective): ``kind`` is "all_reduce",
        "all_gather", "reduce_scatter", "all_to_all", "broadcast" (``peer`` the root), "send" or
        "recv" (``peer`` the other rank; a send has no dst, a receive no src). Every rank of
        ``comm`` runs the matching instruction; the kernel's core must be one of them (checked at
        load). Operands are HBM parameters or SBUF tiles, their elements taken partition by partition."""
        code = _enum_value(kind, COLLECTIVES, "kind")
        check(lib.vtrn_program_collective(self._handle, comm.handle, code,
                                          _operand(dst, "dst") if dst is not None else AccessStruct(),
                                          _operand(src, "src") if src is not None else AccessStruct(),
                                          _enum_value(op, ALU_OPS, "op", ALU_ALIASES), unsigned(peer, "uint32_t", "peer"),
                                          _sync(wait, signal, signal_set)))

    def all_reduce(self, comm: Communicator, dst: AccessPattern, src: AccessPattern, op: EnumValue = "add", *,
                   wait: Sync = None, signal: Sync = None, signal_set: Sync = None) -> None:
        """ALL_REDUCE on the CC engine: dst = the reduction with ``op`` (add, max, min) of every rank's src."""
        self.collective("all_reduce", comm, dst, src, op, wait=wait, signal=signal, signal_set=signal_set)

    def all_gather(self, comm: Communicator, dst: AccessPattern, src: AccessPattern, *, wait: Sync = None,
                   signal: Sync = None, signal_set: Sync = None) -> None:
        """ALL_GATHER on the CC engine: dst (ranks times src's elements) = every rank's src in rank order."""
        self.collective("all_gather", comm, dst, src, wait=wait, signal=signal, signal_set=signal_set)

    def reduce_scatter(self, comm: Communicator, dst: AccessPattern, src: AccessPattern, op: EnumValue = "add", *,
                       wait: Sync = None, signal: Sync = None, signal_set: Sync = None) -> None:
        """REDUCE_SCATTER on the CC engine: dst = this rank's chunk of the reduction of every rank's src."""
        self.collective("reduce_scatter", comm, dst, src, op, wait=wait, signal=signal, signal_set=signal_set)

    def all_to_all(self, comm: Communicator, dst: AccessPattern, src: AccessPattern, *, wait: Sync = None,
                   signal: Sync = None, signal_set: Sync = None) -> None:
        """ALL_TO_ALL on the CC engine: chunk j of src goes to rank j, whose chunk for this rank it is."""
        self.collective("all_to_all", comm, dst, src, wait=wait, signal=signal, signal_set=signal_set)

    def collective_permute(self, comm: Communicator, dst: AccessPattern, src: AccessPattern, targets: Iterable[int], *,
                           wait: Sync = None, signal: Sync = None, signal_set: Sync = None) -> None:
        """COLLECTIVE_PERMUTE on the CC engine (vtrn_program_collective_permute): rank r sends src to
        ``targets[r]`` (-1: none) and receives into dst from the rank that targets it."""
        values = [operator.index(target) for target in targets]
        array = (ctypes.c_int32 * max(1, len(values)))(*values)
        check(lib.vtrn_program_collective_permute(self._handle, comm.handle, _operand(dst, "dst"), _operand(src, "src"),
                                                  array, _sync(wait, signal, signal_set)))

    @staticmethod
    def _steps(steps: Iterable[int], dst: AccessPattern, what: str) -> ctypes.Array[ctypes.c_int32]:
        # The library reads one step per free dimension of dst, so the count is Python's to check.
        values = [_int32(step, "step") for step in steps]
        dimensions = len(dst.free_axes())
        if len(values) != dimensions:
            raise InvalidArgumentError(f"{what}: steps has {len(values)} values but dst has {dimensions} free "
                                       f"dimensions (shape {dst.shape})")
        return (ctypes.c_int32 * len(values))(*reversed(values))



# -- kernels and executions ----------------------------------------------------------------------

class Kernel(_Resource[KernelHandle]):
    """A program validated and loaded on one core (vtrn_kernel_t), from ``Device.load``.
    ``close()`` (or ``unload()``) unloads it after its queued executions finish."""

    _destroy = "vtrn_kernel_unload"

    def __init__(self, device: Device, core: int, program: Program) -> None:
        handle = KernelHandle()
        check(lib.vtrn_kernel_load(device.handle, unsigned(core, "uint32_t", "core"), program.handle, byref(handle)))
        super().__init__(device.runtime, handle)
        self.device = device
        self.core = core
        self.parameters = dict(program.parameters)  # the program may be destroyed now
        self._closed = False

    def unload(self) -> None:
        """The same as close()."""
        self.close()

    def execute(self, **bindings: Binding) -> Fence:
        """Queues one execution with every parameter bound (see the module's documentation for
        what a binding may be) and returns its Fence at once."""
        structs = (BindingStruct * max(1, len(bindings)))()
        names: list[bytes] = []
        memories: dict[str, tuple[DeviceMemory, int]] = {}
        owned: list[DeviceMemory] = []
        try:
            for index, (name, value) in enumerate(bindings.items()):
                memory, offset = self._memory(name, value, owned)
                names.append(name.encode())
                structs[index] = BindingStruct(names[-1], memory.handle, unsigned(offset, "uint64_t", f"{name} offset"))
                memories[name] = (memory, offset)
            handle = FenceHandle()
            check(lib.vtrn_kernel_execute(self._handle, structs, len(bindings), byref(handle)))
        except BaseException:
            for memory in owned:
                memory.free()
            raise
        return Fence(self, handle, memories, owned)

    def _memory(self, name: str, value: Binding, owned: list[DeviceMemory]) -> tuple[DeviceMemory, int]:
        """(DeviceMemory, offset) for one binding; memory this call allocates goes into ``owned``."""
        parameter = self.parameters.get(name)
        if isinstance(value, DeviceMemory):
            return value, 0
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], DeviceMemory):
            return value[0], value[1]
        if value is None:
            # A name the kernel lacks gets a byte, so that the library names the problem.
            owned.append(self.device.allocate(parameter.bytes if parameter else 1))
            return owned[-1], 0
        if isinstance(value, numpy.ndarray):
            if parameter is not None:
                if value.size != math.prod(parameter.shape):
                    raise ValueError(f"parameter {name!r} is {parameter.shape} of {parameter.dtype}; the array has "
                                     f"shape {value.shape} ({value.size} elements)")
                value = value.astype(numpy_dtype(parameter.dtype), copy=False)
            owned.append(self.device.to_device(value))
            return owned[-1], 0
        raise TypeError(f"{name} is a {type(value).__name__}; bind a numpy array, None (new memory), a DeviceMemory "
                        "or a (DeviceMemory, offset) tuple")


@dataclass(frozen=True)
class ExecutionInfo:
    """vtrn_execution_info_t: an execution's timings and counters (final once it has finished)."""

    status: Status
    wall_ns: int  # host time from start to end
    queued_ns: int  # host time from execute to start
    device_ns: int  # estimated device time: the latest engine's end
    device_cycles: int  # device_ns in cycles of the PE clock
    instructions: dict[str, int]  # executed per engine: {"pe": ..., "act": ..., "dve": ..., "pool": ..., "dma": ..., "cc": ...}
    engine_busy_ns: dict[str, int]  # estimated busy time per engine, the same keys (cc: collectives, waits included)


def execution_info(raw: ExecutionInfoStruct) -> ExecutionInfo:
    """An ExecutionInfo of the struct vtrn_fence_get_info filled."""
    return ExecutionInfo(status=Status(raw.status), wall_ns=raw.wall_ns, queued_ns=raw.queued_ns,
                         device_ns=raw.device_ns, device_cycles=raw.device_cycles,
                         instructions={**dict(zip(ENGINE_ORDER, raw.instructions)), "cc": raw.cc_instructions},
                         engine_busy_ns={**dict(zip(ENGINE_ORDER, raw.engine_busy_ns)), "cc": raw.cc_busy_ns})


class Fence(_Resource[FenceHandle]):
    """One execution of a kernel (vtrn_fence_t), from ``Kernel.execute``. Closing it releases the
    handle and frees the memory ``execute`` allocated; the execution goes on if it runs."""

    _destroy = "vtrn_fence_destroy"

    def __init__(self, kernel: Kernel, handle: FenceHandle, memories: dict[str, tuple[DeviceMemory, int]],
                 owned: list[DeviceMemory]) -> None:
        super().__init__(kernel.runtime, handle)
        self.kernel = kernel
        self._memories = memories  # name -> (DeviceMemory, offset)
        self._owned = owned
        self._closed = False

    def wait(self, timeout_ns: int | None = None) -> bool:
        """Waits for the execution: True once it succeeded; False when ``timeout_ns`` is 0 and it
        has not finished (a poll). Raises its failure (DeadlockError, DeviceTimeoutError,
        OutOfBoundsError...), or DeviceTimeoutError when a finite wait runs out. None waits forever."""
        timeout = WAIT_FOREVER if timeout_ns is None else unsigned(timeout_ns, "uint64_t", "timeout_ns")
        return check(lib.vtrn_fence_wait(self._handle, timeout)) == Status.SUCCESS

    @property
    def status(self) -> Status:
        """The execution's status now: Status.NOT_READY while queued or running."""
        status = ctypes.c_uint32()
        check(lib.vtrn_fence_status(self._handle, byref(status)))
        return Status(status.value)

    @property
    def info(self) -> ExecutionInfo:
        """An ExecutionInfo."""
        raw = ExecutionInfoStruct.init()
        check(lib.vtrn_fence_get_info(self._handle, byref(raw)))
        return execution_info(raw)

    def memory(self, name: str) -> tuple[DeviceMemory, int]:
        """The (DeviceMemory, offset) bound to parameter ``name``."""
        return self._memories[name]

    def result(self, name: str) -> NDArray[Any]:
        """Waits for the execution (raising its failure), then reads parameter ``name`` from its
        memory as a numpy array of the parameter's shape and dtype."""
        parameter = self.kernel.parameters[name]
        memory, offset = self._memories[name]
        self.wait()
        return self.kernel.device.from_device(memory, numpy_dtype(parameter.dtype), parameter.shape, offset)

    def _released(self) -> None:
        owned, self._owned = self._owned, []
        for memory in owned:
            memory.free()
