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

import ctypes
import math
import numbers
import operator
from ctypes import byref
from dataclasses import dataclass

import numpy

from ._library import (
    ACTIVATION_ALIASES,
    ACTIVATIONS,
    ALU_ALIASES,
    ALU_OPS,
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

try:
    import ml_dtypes
except ImportError:  # bf16 and fp8 tiles still work; only numpy arrays of them need ml_dtypes
    ml_dtypes = None

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

def _enum_value(value, table, what, aliases=None):
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


def dtype_name(dtype):
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


def numpy_dtype(dtype):
    """The numpy dtype that holds a vtrn dtype (ml_dtypes.bfloat16 for "bf16", ...)."""
    name = _NUMPY_NAMES[dtype_name(dtype)]
    if name in ("bfloat16", "float8_e4m3", "float8_e5m2"):
        if ml_dtypes is None:
            raise ImportError(f"numpy arrays of {dtype_name(dtype)} need the ml_dtypes package (pip install ml_dtypes)")
        return numpy.dtype(getattr(ml_dtypes, name))
    return numpy.dtype(name)


def _size(value, what):
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

    def __init__(self, space, dtype, shape, strides=None, offset=0, start_partition=0, parameter=0, name=None):
        if space not in MEMORY_SPACES:
            raise InvalidArgumentError(f"space {space!r} is not one of {', '.join(MEMORY_SPACES)}")
        self.space = space
        self.dtype = dtype_name(dtype)
        self.shape = tuple(_size(size, "size") for size in shape)
        if not self.shape:
            raise ValueError("an access pattern has at least one axis")
        if strides is None:  # contiguous, C order
            strides, step = [], 1
            for size in reversed(self.shape[1:] if space != "hbm" else self.shape):
                strides.insert(0, step)
                step *= size
            if space != "hbm":
                strides.insert(0, None)
        self.strides = tuple(strides)
        if len(self.strides) != len(self.shape):
            raise ValueError(f"shape {self.shape} and strides {self.strides} differ in length")
        self.offset = operator.index(offset)
        self.start_partition = operator.index(start_partition)
        self.parameter = operator.index(parameter)
        self.name = name  # the parameter's name, or None: for repr

    @property
    def itemsize(self):
        return DTYPE_SIZES[self.dtype]

    @property
    def partitions(self):
        """The partitions an instruction sees: the first axis (HBM: 1 for a one-axis view)."""
        return self.shape[0] if len(self.shape) > 1 or self.space != "hbm" else 1

    @property
    def free_shape(self):
        """The free axes, in numpy order."""
        return self.shape[1:] if len(self.shape) > 1 or self.space != "hbm" else self.shape

    def _replace(self, shape, strides, offset=None, start_partition=None):
        return AccessPattern(self.space, self.dtype, shape, strides, self.offset if offset is None else offset,
                             self.start_partition if start_partition is None else start_partition, self.parameter,
                             self.name)

    def __getitem__(self, key):
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
        shape, strides = [], []
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
                    offset += first * stride * self.itemsize
                shape.append(count)
                strides.append(None if partition_axis else stride * step)
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
                offset += index * stride * self.itemsize
        if not shape:  # every axis of an HBM view indexed: one element
            shape, strides = [1], [1]
        return self._replace(shape, strides, offset, start)

    @property
    def T(self):
        """The axes reversed (HBM only): a transposed, strided read or write for DMA_COPY."""
        if self.space != "hbm":
            raise ValueError(f"an {self.space.upper()} tile's partition axis cannot trade places with a free axis in an "
                             "access pattern; use Program.transpose (the PE) to transpose a tile")
        return self._replace(self.shape[::-1], self.strides[::-1])

    def broadcast_to(self, shape):
        """The view repeated along new leading axes or axes of size 1, with stride 0 (numpy's
        rules). SBUF and PSUM views cannot broadcast their partition axis."""
        shape = tuple(_size(size, "size") for size in shape)
        if len(shape) < len(self.shape):
            raise ValueError(f"cannot broadcast shape {self.shape} to the shorter {shape}")
        extra = len(shape) - len(self.shape)
        old_shape = (1,) * extra + self.shape
        old_strides = (0,) * extra + self.strides
        strides = []
        for axis, (new, old, stride) in enumerate(zip(shape, old_shape, old_strides)):
            if new != old and old != 1:
                raise ValueError(f"cannot broadcast shape {self.shape} to {shape}")
            if axis == 0 and self.space != "hbm":
                if new != old or extra:
                    raise ValueError(f"an {self.space.upper()} view cannot broadcast its partition axis")
                strides.append(None)
            else:
                strides.append(0 if new != old else stride)
        return self._replace(shape, strides)

    def free_axes(self):
        """(size, stride) of each free axis as vtrn_access_t counts them: the fastest first, and
        one axis of size 1 when the view has none left."""
        count = len(self.free_shape)
        if count == 0:
            return [(1, 1)]
        return list(zip(reversed(self.shape[-count:]), reversed(self.strides[-count:])))

    def struct(self):
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

    def __repr__(self):
        if self.space == "hbm":
            where = f"HBM {self.name or f'parameter {self.parameter}'}"
        else:
            where = f"{self.space.upper()}[{self.start_partition}:{self.start_partition + self.shape[0]}]"
        return (f"<vtrn.AccessPattern {where} +{self.offset} {self.dtype} shape={self.shape} "
                f"strides={self.strides}>")


def _operand(value, what):
    if not isinstance(value, AccessPattern):
        raise TypeError(f"{what} is a {type(value).__name__}; an operand is an AccessPattern (a tile, a parameter "
                        "or a view of one)")
    return value.struct()


def _scalar(value, what, integers=False):
    """A vtrn_scalar_t: a number, or a [P,1] AccessPattern. With ``integers``, a Python or numpy
    integer becomes an exact int32 immediate (VTRN_SCALAR_INT32): -2^31 to 2^32 - 1, taken as 32
    bits (0xffffffff is -1); otherwise every number is passed as fp32."""
    if isinstance(value, AccessPattern):
        return ScalarStruct(is_tile=SCALAR_KINDS["tile"], value=0.0, tile=value.struct())
    if isinstance(value, bool) or not isinstance(value, (int, float, numpy.integer, numpy.floating)):
        raise TypeError(f"{what} is a {type(value).__name__}; it is a number or a [P,1] AccessPattern")
    if integers and isinstance(value, (int, numpy.integer)):
        value = int(value)
        if not -(1 << 31) <= value < (1 << 32):
            raise ValueError(f"{what} {value} is out of range: an integer immediate is 32 bits (-2^31 to 2^32 - 1)")
        return ScalarStruct.int32(value - (1 << 32) if value >= (1 << 31) else value)
    return ScalarStruct(is_tile=SCALAR_KINDS["immediate"], value=float(value))


def _semaphore_pair(pair, what):
    try:
        semaphore, value = pair
    except (TypeError, ValueError):
        raise TypeError(f"{what} is {pair!r}; it is a (semaphore, value) pair") from None
    semaphore = operator.index(semaphore)
    if not 0 <= semaphore < (1 << 31):
        raise ValueError(f"{what}: semaphore {semaphore} is out of range (0 to 2^31 - 1; the core has 0-255)")
    return semaphore, unsigned(value, "uint32_t", f"{what}: value")


def _sync(wait, signal, signal_set):
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
        sync.signal_semaphore, sync.signal_value = _semaphore_pair(signal if signal is not None else signal_set, what)
        sync.signal_op = SEMAPHORE_OPS["add" if signal is not None else "set"]
    return byref(sync)


# -- programs ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Parameter:
    """A kernel parameter: an HBM tensor that each execution binds to device memory."""

    name: str
    index: int
    shape: tuple
    dtype: str  # a vtrn dtype name, "fp32", "bf16", ...
    bytes: int


class Program(_Resource):
    """A program being built (vtrn_program_t), from ``Runtime.program()``. Instruction methods
    append one instruction each; see the module's documentation for operands and semaphores.
    Not to be built from several threads at once."""

    _destroy = "vtrn_program_destroy"

    def __init__(self, runtime):
        handle = ProgramHandle()
        check(lib.vtrn_program_create(runtime.handle, byref(handle)))
        super().__init__(runtime, handle)
        self.parameters = {}  # name -> Parameter, in declaration order
        self._next = {"sbuf": 0, "psum": 0}  # the bump allocators: next free byte of every partition
        self._closed = False

    # -- data --

    def parameter(self, name, shape, dtype="float32"):
        """Declares kernel parameter ``name`` (1-63 bytes, unique), a C-ordered HBM tensor of
        ``shape`` and ``dtype``; returns it as an AccessPattern."""
        if not isinstance(name, str):
            raise TypeError(f"the parameter name is a {type(name).__name__}, not a str")
        shape = (_size(shape, "size"),) if numpy.ndim(shape) == 0 else tuple(_size(size, "size") for size in shape)
        dtype = dtype_name(dtype)
        size = math.prod(shape) * DTYPE_SIZES[dtype]
        index = ctypes.c_uint32()
        check(lib.vtrn_program_add_parameter(self._handle, name.encode(), unsigned(size, "uint64_t", "bytes"),
                                             byref(index)))
        self.parameters[name] = Parameter(name, index.value, shape, dtype, size)
        return AccessPattern("hbm", dtype, shape, parameter=index.value, name=name)

    def sbuf(self, shape, dtype="float32", partition=0, offset=None):
        """A tile of SBUF: ``shape`` is (partitions, free...), from partition ``partition``, at byte
        ``offset`` of each partition (None: the next free one)."""
        return self._tile("sbuf", shape, dtype, partition, offset)

    def psum(self, shape, dtype="float32", partition=0, offset=None):
        """A tile of PSUM, as ``sbuf``; placed inside one 2 KiB bank when it fits one."""
        return self._tile("psum", shape, dtype, partition, offset)

    def _tile(self, space, shape, dtype, partition, offset):
        shape = tuple(_size(size, "size") for size in shape)
        if len(shape) < 2:
            raise ValueError(f"a tile's shape is (partitions, free...), at least 2 axes; {shape} given")
        dtype = dtype_name(dtype)
        size = math.prod(shape[1:]) * DTYPE_SIZES[dtype]
        if offset is None:
            offset = -(-self._next[space] // TILE_ALIGNMENT) * TILE_ALIGNMENT
            if space == "psum":
                bank_end = (offset // PSUM_BANK_BYTES + 1) * PSUM_BANK_BYTES
                if size > PSUM_BANK_BYTES or offset + size > bank_end:
                    offset = -(-offset // PSUM_BANK_BYTES) * PSUM_BANK_BYTES
        offset = _size(offset, "offset")
        self._next[space] = max(self._next[space], offset + size)
        return AccessPattern(space, dtype, shape, offset=offset, start_partition=_size(partition, "partition"))

    @property
    def instruction_count(self):
        count = ctypes.c_uint32()
        check(lib.vtrn_program_instruction_count(self._handle, byref(count)))
        return count.value

    # -- instructions --

    def dma_copy(self, dst, src, *, dst_rmw_op=None, wait=None, signal=None, signal_set=None):
        """DMA_COPY (DMA): dst = src element by element in flat (partition-major) order (HBM<->SBUF,
        SBUF<->SBUF, HBM<->HBM, whose rows are not limited to 128); a dtype change goes through
        fp32. ``dst_rmw_op="add"`` (NKI's dst_rmw_op) accumulates instead: dst = dst + src, through
        fp32."""
        if dst_rmw_op is None:
            check(lib.vtrn_program_dma_copy(self._handle, _operand(dst, "dst"), _operand(src, "src"),
                                            _sync(wait, signal, signal_set)))
            return
        options = DmaCopyOptionsStruct.init(dst_rmw_op=_enum_value(dst_rmw_op, ALU_OPS, "dst_rmw_op", ALU_ALIASES))
        check(lib.vtrn_program_dma_copy_ex(self._handle, _operand(dst, "dst"), _operand(src, "src"), byref(options),
                                           _sync(wait, signal, signal_set)))

    def matmul(self, dst, stationary, moving, accumulate=False, *, wait=None, signal=None, signal_set=None):
        """MATMUL (PE): dst[M,N] (fp32 PSUM) = (accumulate ? dst : 0) + stationary[K,M]^T . moving[K,N]."""
        check(lib.vtrn_program_matmul(self._handle, _operand(dst, "dst"), _operand(stationary, "stationary"),
                                      _operand(moving, "moving"), 1 if accumulate else 0,
                                      _sync(wait, signal, signal_set)))

    def transpose(self, dst, src, engine="pe", *, wait=None, signal=None, signal_set=None):
        """TRANSPOSE: dst[F,P] = src[P,F], bit exact. On the PE (``engine="pe"``) up to 128 x 128,
        src in SBUF, dst in PSUM; on DVE (``engine="dve"``) up to 32 x 32, SBUF or PSUM either side."""
        check(lib.vtrn_program_transpose_on(self._handle, _enum_value(engine, ENGINE_FLAGS, "engine"),
                                            _operand(dst, "dst"), _operand(src, "src"), _sync(wait, signal, signal_set)))

    def activate(self, dst, function, src, scale=1.0, bias=None, accumulate_out=None, *, wait=None, signal=None,
                 signal_set=None):
        """ACTIVATE (ACT): dst = function(src * scale + bias); ``scale`` a number or a [P,1] tile,
        ``bias`` a [P,1] tile or None, ``accumulate_out`` a [P,1] tile that receives each
        partition's sum of the results, or None."""
        function = _enum_value(function, ACTIVATIONS, "activation", ACTIVATION_ALIASES)
        scale = _scalar(scale, "scale")
        bias = None if bias is None else byref(_operand(bias, "bias"))
        accumulate_out = None if accumulate_out is None else byref(_operand(accumulate_out, "accumulate_out"))
        check(lib.vtrn_program_activate(self._handle, _operand(dst, "dst"), function, _operand(src, "src"), byref(scale),
                                        bias, accumulate_out, _sync(wait, signal, signal_set)))

    def tensor_tensor(self, dst, a, b, op, *, wait=None, signal=None, signal_set=None):
        """TENSOR_TENSOR (DVE): dst = a op b, element by element."""
        op = _enum_value(op, ALU_OPS, "ALU op", ALU_ALIASES)
        check(lib.vtrn_program_tensor_tensor(self._handle, _operand(dst, "dst"), _operand(a, "a"), _operand(b, "b"), op,
                                             _sync(wait, signal, signal_set)))

    def tensor_scalar(self, dst, src, op0, x0, op1=None, x1=None, reverse=0, engine="dve", *, wait=None, signal=None,
                      signal_set=None):
        """TENSOR_SCALAR (DVE, ACT or POOL): dst = (src op0 x0) op1 x1; x a number or a [P,1]
        tile; op1 None skips the second stage. Bit 0 of ``reverse`` makes the first stage
        x0 op0 src, bit 1 the second x1 op1 (...). An integer x is an exact 32-bit immediate
        (what the bitvec ops need; arithmetic ops see its nearest fp32), a float x an fp32 one."""
        engine = _enum_value(engine, ENGINE_FLAGS, "engine")
        op0 = _enum_value(op0, ALU_OPS, "ALU op", ALU_ALIASES)
        op1 = ALU_OPS["bypass"] if op1 is None else _enum_value(op1, ALU_OPS, "ALU op", ALU_ALIASES)
        x0 = _scalar(x0, "x0", integers=True)
        x1 = None if x1 is None else byref(_scalar(x1, "x1", integers=True))
        check(lib.vtrn_program_tensor_scalar(self._handle, engine, _operand(dst, "dst"), _operand(src, "src"), op0,
                                             byref(x0), op1, x1, unsigned(reverse, "uint32_t", "reverse"),
                                             _sync(wait, signal, signal_set)))

    def tensor_reduce(self, dst, src, op, negate=False, *, wait=None, signal=None, signal_set=None):
        """TENSOR_REDUCE (DVE): op over each partition's elements, negated when ``negate``
        (arithmetic ops only). dst is [P,1], or keeps leading axes: with src's free elements in
        the order of its shape (the last axis fastest), dst's k elements per partition each
        reduce one of k consecutive groups, so ``dst`` of shape (P, A) reduces the last axis of
        a (P, A, B) src; reduce other axes by passing a view that puts them last. op: add, max,
        min, multiply, logical_and/or/xor, or bitwise_and/or/xor (integer tiles)."""
        op = _enum_value(op, ALU_OPS, "ALU op", ALU_ALIASES)
        check(lib.vtrn_program_tensor_reduce(self._handle, _operand(dst, "dst"), _operand(src, "src"), op,
                                             1 if negate else 0, _sync(wait, signal, signal_set)))

    def tensor_copy(self, dst, src, engine="dve", *, wait=None, signal=None, signal_set=None):
        """TENSOR_COPY (DVE, ACT or POOL): dst = src; bit exact when the dtypes match."""
        engine = _enum_value(engine, ENGINE_FLAGS, "engine")
        check(lib.vtrn_program_tensor_copy(self._handle, engine, _operand(dst, "dst"), _operand(src, "src"),
                                           _sync(wait, signal, signal_set)))

    def memset(self, dst, value, engine="dve", *, wait=None, signal=None, signal_set=None):
        """MEMSET (DVE or POOL): every element of dst = value (rounded to dst's dtype)."""
        engine = _enum_value(engine, ENGINE_FLAGS, "engine")
        check(lib.vtrn_program_memset(self._handle, engine, _operand(dst, "dst"), float(value),
                                      _sync(wait, signal, signal_set)))

    def iota(self, dst, steps, offset=0, channel_multiplier=0, *, wait=None, signal=None, signal_set=None):
        """IOTA (POOL): dst[p, i...] = offset + p * channel_multiplier + sum(steps[d] * i_d) in
        int32; ``steps`` has one value per free axis of dst, in the order of its shape."""
        access = _operand(dst, "dst")
        check(lib.vtrn_program_iota(self._handle, access, self._steps(steps, dst, "iota"), _int32(offset, "offset"),
                                    _int32(channel_multiplier, "channel_multiplier"), _sync(wait, signal, signal_set)))

    def affine_select(self, dst, steps, offset, channel_multiplier, cmp, on_true, on_false, *, wait=None, signal=None,
                      signal_set=None):
        """AFFINE_SELECT (POOL): with v = offset + p * channel_multiplier + sum(steps[d] * i_d),
        dst = on_true where (v cmp 0), else the number ``on_false`` (causal masks)."""
        access = _operand(dst, "dst")
        cmp = _enum_value(cmp, ALU_OPS, "ALU op", ALU_ALIASES)
        check(lib.vtrn_program_affine_select(self._handle, access, self._steps(steps, dst, "affine_select"),
                                             _int32(offset, "offset"), _int32(channel_multiplier, "channel_multiplier"),
                                             cmp, _operand(on_true, "on_true"), float(on_false),
                                             _sync(wait, signal, signal_set)))

    def sem_signal(self, engine, semaphore, value, op="add"):
        """SEM_SIGNAL (any engine): semaphore += value ("add") or = value ("set"), in the engine's order."""
        check(lib.vtrn_program_sem_signal(self._handle, _enum_value(engine, ENGINE_FLAGS, "engine"),
                                          unsigned(semaphore, "uint32_t", "semaphore"),
                                          _enum_value(op, SEMAPHORE_OPS, "semaphore op"),
                                          unsigned(value, "uint32_t", "value")))

    def sem_wait(self, engine, semaphore, value):
        """SEM_WAIT (any engine): the engine's stream waits until the semaphore is at least ``value``."""
        check(lib.vtrn_program_sem_wait(self._handle, _enum_value(engine, ENGINE_FLAGS, "engine"),
                                        unsigned(semaphore, "uint32_t", "semaphore"), unsigned(value, "uint32_t", "value")))

    @staticmethod
    def _steps(steps, dst, what):
        # The library reads one step per free dimension of dst, so the count is Python's to check.
        steps = [_int32(step, "step") for step in steps]
        dimensions = len(dst.free_axes())
        if len(steps) != dimensions:
            raise InvalidArgumentError(f"{what}: steps has {len(steps)} values but dst has {dimensions} free "
                                       f"dimensions (shape {dst.shape})")
        return (ctypes.c_int32 * len(steps))(*reversed(steps))



# -- kernels and executions ----------------------------------------------------------------------

class Kernel(_Resource):
    """A program validated and loaded on one core (vtrn_kernel_t), from ``Device.load``.
    ``close()`` (or ``unload()``) unloads it after its queued executions finish."""

    _destroy = "vtrn_kernel_unload"

    def __init__(self, device, core, program):
        handle = KernelHandle()
        check(lib.vtrn_kernel_load(device.handle, unsigned(core, "uint32_t", "core"), program.handle, byref(handle)))
        super().__init__(device.runtime, handle)
        self.device = device
        self.core = core
        self.parameters = dict(program.parameters)  # the program may be destroyed now
        self._closed = False

    def unload(self):
        """The same as close()."""
        self.close()

    def execute(self, **bindings):
        """Queues one execution with every parameter bound (see the module's documentation for
        what a binding may be) and returns its Fence at once."""
        structs = (BindingStruct * max(1, len(bindings)))()
        names, memories, owned = [], {}, []
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

    def _memory(self, name, value, owned):
        """(DeviceMemory, offset) for one binding; memory this call allocates goes into ``owned``."""
        parameter = self.parameters.get(name)
        if isinstance(value, DeviceMemory):
            return value, 0
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], DeviceMemory):
            return value
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
    instructions: dict  # executed per engine: {"pe": ..., "act": ..., "dve": ..., "pool": ..., "dma": ...}
    engine_busy_ns: dict  # estimated busy time per engine, the same keys


class Fence(_Resource):
    """One execution of a kernel (vtrn_fence_t), from ``Kernel.execute``. Closing it releases the
    handle and frees the memory ``execute`` allocated; the execution goes on if it runs."""

    _destroy = "vtrn_fence_destroy"

    def __init__(self, kernel, handle, memories, owned):
        super().__init__(kernel.runtime, handle)
        self.kernel = kernel
        self._memories = memories  # name -> (DeviceMemory, offset)
        self._owned = owned
        self._closed = False

    def wait(self, timeout_ns=None):
        """Waits for the execution: True once it succeeded; False when ``timeout_ns`` is 0 and it
        has not finished (a poll). Raises its failure (DeadlockError, DeviceTimeoutError,
        OutOfBoundsError...), or DeviceTimeoutError when a finite wait runs out. None waits forever."""
        timeout = WAIT_FOREVER if timeout_ns is None else unsigned(timeout_ns, "uint64_t", "timeout_ns")
        return check(lib.vtrn_fence_wait(self._handle, timeout)) == Status.SUCCESS

    @property
    def status(self):
        """The execution's status now: Status.NOT_READY while queued or running."""
        status = ctypes.c_uint32()
        check(lib.vtrn_fence_status(self._handle, byref(status)))
        return Status(status.value)

    @property
    def info(self):
        """An ExecutionInfo."""
        raw = ExecutionInfoStruct.init()
        check(lib.vtrn_fence_get_info(self._handle, byref(raw)))
        return ExecutionInfo(status=Status(raw.status), wall_ns=raw.wall_ns, queued_ns=raw.queued_ns,
                             device_ns=raw.device_ns, device_cycles=raw.device_cycles,
                             instructions=dict(zip(ENGINE_ORDER, raw.instructions)),
                             engine_busy_ns=dict(zip(ENGINE_ORDER, raw.engine_busy_ns)))

    def memory(self, name):
        """The (DeviceMemory, offset) bound to parameter ``name``."""
        return self._memories[name]

    def result(self, name):
        """Waits for the execution (raising its failure), then reads parameter ``name`` from its
        memory as a numpy array of the parameter's shape and dtype."""
        parameter = self.kernel.parameters[name]
        memory, offset = self._memories[name]
        self.wait()
        return self.kernel.device.from_device(memory, numpy_dtype(parameter.dtype), parameter.shape, offset)

    def _released(self):
        owned, self._owned = self._owned, []
        for memory in owned:
            memory.free()
