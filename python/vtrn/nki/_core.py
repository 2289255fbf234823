"""The tracer's data: where a call came from, dtypes, index expressions, buffers and their views
(NKI's tensors and tiles), the recorded operations, and the trace that collects them.

A kernel runs once in Python to be recorded. Every value it handles is concrete except data:
loop variables are Python ints (loops unroll), ``nl.arange`` indices are affine expressions over
named index variables, and tensors are views (shape, element strides, offset) of buffers whose
addresses are decided after the whole kernel has been seen (see _lower).
"""

import math
import numbers
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from types import FrameType, ModuleType
from typing import Any, NoReturn, TypeAlias

import numpy

from .._library import DTYPE_SIZES

ml_dtypes: ModuleType | None
try:
    import ml_dtypes as ml_dtypes
except ImportError:  # only bf16/fp8 numpy arrays need it
    ml_dtypes = None

# (file, line) of a kernel's source.
Where: TypeAlias = tuple[str, int]
# What an index expression may not leave: (dimension, size, const, {var: coefficient}).
Check: TypeAlias = "tuple[int, int, int, dict[IndexVar, int]]"
# (first partition, end partition, first byte, end byte) of a view in its buffer.
Box: TypeAlias = tuple[int, int, int, int]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_VTRN_DIR = os.path.dirname(_PACKAGE_DIR)

PMAX = 128                  # partitions of SBUF and PSUM
PSUM_BANK_BYTES = 2048      # per partition
PSUM_BANKS = 8
GEMM_STATIONARY_FMAX = 128  # the stationary operand's free size (M)
GEMM_MOVING_FMAX = 512      # the moving operand's free size (N)


# -- errors, named by the kernel's file and line ----------------------------------------------------

class NKIError(Exception):
    """A kernel broke one of NKI's rules, or used what vtrn.nki does not support yet. The message
    begins with the kernel's file and line and names the NKI function."""

    def __init__(self, message: str, where: Where | None = None, api: str | None = None) -> None:
        self.file: str | None = where[0] if where else None
        self.line: int | None = where[1] if where else None
        self.api = api
        self.reason = message
        prefix = f"{os.path.basename(self.file)}:{self.line}: " if self.file else ""
        separator = " " if message.startswith("is ") else ": "
        super().__init__(f"{prefix}{api + separator if api else ''}{message}")


class NKIUnsupportedError(NKIError):
    """An NKI function, argument or form that vtrn.nki does not support yet."""


class NKIUnsupportedAttribute(NKIUnsupportedError, AttributeError):
    """A name of NKI's modules that vtrn.nki does not have yet."""

    def __init__(self, api: str) -> None:
        NKIUnsupportedError.__init__(self, "is not supported by vtrn.nki yet", where(), api)


_inside: dict[str, bool] = {}


def _inside_package(filename: str) -> bool:
    found = _inside.get(filename)
    if found is None:
        found = _inside[filename] = os.path.abspath(filename).startswith(_PACKAGE_DIR + os.sep)
    return found


def where() -> Where:
    """(file, line) of the innermost frame outside this package: the kernel's line."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and _inside_package(frame.f_code.co_filename):
        frame = frame.f_back
    if frame is None:
        return ("<unknown>", 0)
    return (frame.f_code.co_filename, frame.f_lineno)


def fail(message: str, api: str | None = None, cls: type[NKIError] = NKIError) -> NoReturn:
    """Raises ``cls`` (NKIError) with ``message``, at the kernel's line, naming NKI function ``api``."""
    raise cls(message, where(), api)


def unsupported(api: str, detail: str = "") -> NoReturn:
    """Raises NKIUnsupportedError: ``api`` is not supported by vtrn.nki yet (``detail`` says what)."""
    raise NKIUnsupportedError(f"is not supported by vtrn.nki yet{': ' + detail if detail else ''}", where(), api)


# -- dtypes ------------------------------------------------------------------------------------------

class _TFloat32:
    """nl.tfloat32: fp32 storage; the PE's reduced-precision mode is computed as fp32 here."""
    name = "tfloat32"

    def __repr__(self) -> str:
        return "tfloat32"


tfloat32 = _TFloat32()

_NUMPY_TO_VTRN = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float8_e4m3": "fp8_e4m3",
                  "float8_e5m2": "fp8_e5m2", "int32": "int32", "int8": "int8", "uint8": "uint8"}
_VTRN_TO_NUMPY = {value: key for key, value in _NUMPY_TO_VTRN.items()}
_UNSUPPORTED_DTYPES = ("float64", "int64", "uint64", "int16", "uint16", "uint32", "bool", "float8_e4m3fn",
                       "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e3m4", "float4_e2m1fn")


def vtrn_dtype(dtype: Any, api: str | None = None, what: str = "dtype") -> str:
    """vtrn's name of an NKI dtype: nl.float32, numpy dtypes and their names, ml_dtypes' bf16/fp8."""
    if dtype is tfloat32 or dtype == "tfloat32":
        return "fp32"
    if isinstance(dtype, str) and dtype in _VTRN_TO_NUMPY:
        return dtype
    try:
        name = numpy.dtype(dtype).name
    except TypeError:
        name = getattr(dtype, "__name__", str(dtype))
    if name in _NUMPY_TO_VTRN:
        return _NUMPY_TO_VTRN[name]
    if name in _UNSUPPORTED_DTYPES or name.startswith(("float", "int", "uint")):
        detail = ("ml_dtypes.float8_e4m3fn (max 448) is not Trainium's float8_e4m3 (max 240); use nl.float8_e4m3"
                  if name == "float8_e4m3fn" else "")
        raise NKIUnsupportedError(f"{what} {name} is not supported by vtrn (float32, bfloat16, float16, float8_e4m3, "
                                  f"float8_e5m2, int32, int8, uint8){'; ' + detail if detail else ''}", where(), api)
    raise NKIError(f"{what} {dtype!r} is not a dtype", where(), api)


def numpy_dtype(vtrn_name: str) -> numpy.dtype[Any]:
    """The numpy dtype of vtrn dtype ``vtrn_name`` (ml_dtypes' for bf16 and fp8)."""
    name = _VTRN_TO_NUMPY[vtrn_name]
    if name in ("bfloat16", "float8_e4m3", "float8_e5m2"):
        if ml_dtypes is None:
            raise ImportError(f"{name} arrays need the ml_dtypes package (pip install ml-dtypes)")
        narrow: numpy.dtype[Any] = numpy.dtype(getattr(ml_dtypes, name))
        return narrow
    return numpy.dtype(name)


def itemsize(vtrn_name: str) -> int:
    """Bytes per element of vtrn dtype ``vtrn_name``."""
    return DTYPE_SIZES[vtrn_name]


def is_float(vtrn_name: str) -> bool:
    """Whether vtrn dtype ``vtrn_name`` is a floating-point one."""
    return vtrn_name.startswith(("fp", "bf"))


def promote(a: str, b: str) -> str:
    """The dtype of a binary op's result, as NKI promotes: the wider float, floats over ints."""
    if a == b:
        return a
    rank = {"fp32": 5, "fp16": 4, "bf16": 4, "fp8_e4m3": 2, "fp8_e5m2": 2, "int32": 3, "int8": 1, "uint8": 1}
    if is_float(a) != is_float(b):
        return a if is_float(a) else b
    if {a, b} == {"fp16", "bf16"}:
        return "fp32"
    return a if rank[a] >= rank[b] else b


# -- index expressions: nl.arange, nl.mgrid, nl.ds --------------------------------------------------

class IndexVar:
    """One axis of an index space: ``extent`` values 0..extent-1."""
    __slots__ = ("extent", "number")
    _count = 0

    def __init__(self, extent: int) -> None:
        self.extent = extent
        IndexVar._count += 1
        self.number = IndexVar._count

    def __repr__(self) -> str:
        return f"i{self.number}[{self.extent}]"


class Index:
    """An affine expression over index variables, with numpy's broadcast shape: each variable
    sits on one axis, counted from the right (``nl.arange(8)[:, None]`` is axis 1 from the
    right of a 2-axis index). Arithmetic with ints keeps it affine; comparisons make masks."""
    __slots__ = ("terms", "const", "axes", "ndim")

    def __init__(self, terms: dict[IndexVar, int], const: int, axes: dict[IndexVar, int], ndim: int) -> None:
        self.terms = terms      # {IndexVar: coefficient}
        self.const = const
        self.axes = axes        # {IndexVar: axis from the right}
        self.ndim = ndim

    @staticmethod
    def of(var: IndexVar) -> "Index":
        """The index of one variable alone: ``var`` with coefficient 1 on axis 0."""
        return Index({var: 1}, 0, {var: 0}, 1)

    @property
    def shape(self) -> tuple[int, ...]:
        """The index's broadcast shape: each variable's extent on its axis, 1 elsewhere."""
        shape = [1] * self.ndim
        for var, axis in self.axes.items():
            shape[self.ndim - 1 - axis] = var.extent
        return tuple(shape)

    def __getitem__(self, key: Any) -> "Index":
        """``[:, None]`` and ``[None, :]``: place a 1-axis index on an axis of a larger space."""
        key = key if isinstance(key, tuple) else (key,)
        if self.ndim != 1 or sum(1 for item in key if item is not None) != 1 or \
                any(item is not None and item != slice(None) for item in key):
            if self.ndim == 1 and len(key) == 1 and isinstance(key[0], slice):
                return self._sliced(key[0])
            fail(f"an index is shaped with [:, None] or [None, :] (got {key!r})", "nl.arange")
        position = next(i for i, item in enumerate(key) if item is not None)
        ndim = len(key)
        axis = ndim - 1 - position
        return Index(dict(self.terms), self.const, {var: axis for var in self.axes}, ndim)

    def _sliced(self, item: slice) -> "Index":
        (var,) = self.axes
        start, stop, step = item.indices(var.extent)
        new = IndexVar(len(range(start, stop, step)))
        coefficient = self.terms.get(var, 0)
        return Index({new: coefficient * step}, self.const + coefficient * start, {new: 0}, 1)

    def _combine(self, other: "Index | int", sign: int) -> "Index":
        if isinstance(other, Index):
            terms = dict(self.terms)
            for var, coefficient in other.terms.items():
                terms[var] = terms.get(var, 0) + sign * coefficient
            axes = dict(self.axes)
            axes.update(other.axes)
            return Index(terms, self.const + sign * other.const, axes, max(self.ndim, other.ndim))
        value = _int(other)
        return Index(dict(self.terms), self.const + sign * value, self.axes, self.ndim)

    def __add__(self, other: "Index | int") -> "Index":
        return self._combine(other, 1)

    __radd__ = __add__

    def __sub__(self, other: "Index | int") -> "Index":
        return self._combine(other, -1)

    def __rsub__(self, other: "Index | int") -> "Index":
        return (-self)._combine(other, 1)

    def __neg__(self) -> "Index":
        return Index({var: -c for var, c in self.terms.items()}, -self.const, self.axes, self.ndim)

    def __mul__(self, other: int) -> "Index":
        value = _int(other)
        return Index({var: c * value for var, c in self.terms.items()}, self.const * value, self.axes, self.ndim)

    __rmul__ = __mul__

    def _compare(self, other: "Index | int", op: str) -> "Mask":
        return Mask([(self - other, op)])

    def __lt__(self, other: "Index | int") -> "Mask":
        return self._compare(other, "<")

    def __le__(self, other: "Index | int") -> "Mask":
        return self._compare(other, "<=")

    def __gt__(self, other: "Index | int") -> "Mask":
        return self._compare(other, ">")

    def __ge__(self, other: "Index | int") -> "Mask":
        return self._compare(other, ">=")

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> "Mask":  # type: ignore[override]  # NKI masks use == rarely; keep identity semantics for dict keys
        if isinstance(other, (Index, numbers.Integral)):
            return self._compare(other if isinstance(other, Index) else int(other), "==")
        return NotImplemented

    def __ne__(self, other: object) -> "Mask":  # type: ignore[override]  # a mask, as NKI's
        if isinstance(other, (Index, numbers.Integral)):
            return self._compare(other if isinstance(other, Index) else int(other), "!=")
        return NotImplemented

    def __repr__(self) -> str:
        terms = " + ".join(f"{c}*{v!r}" for v, c in self.terms.items())
        return f"<nki index {terms} + {self.const}>"


builtins_min, builtins_max = min, max


def _int(value: Any) -> int:
    if type(value).__name__ == "Tensor":
        unsupported("indexing", "indices taken from a tile's data (indirect, data-dependent DMA)")
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, numpy.integer)):
        fail(f"index arithmetic takes ints and indices, not {type(value).__name__} ({value!r})")
    return int(value)


class Mask:
    """A conjunction of affine comparisons ``expression op 0`` over index variables (``&`` joins)."""
    __slots__ = ("conditions", "never")

    def __init__(self, conditions: list[tuple[Index, str]], never: bool = False) -> None:
        self.conditions = conditions
        self.never = never      # a condition on loop variables alone was false: nothing runs

    def __and__(self, other: "Mask | bool | numpy.bool_") -> "Mask":
        if isinstance(other, (bool, numpy.bool_)):
            return self if other else Mask(self.conditions, True)
        if not isinstance(other, Mask):
            fail(f"a mask combines with & only with another mask or a bool, not {type(other).__name__}")
        return Mask(self.conditions + other.conditions, self.never or other.never)

    __rand__ = __and__

    def __or__(self, other: Any) -> NoReturn:
        unsupported("mask |", "only conjunctions (&) of comparisons are supported")

    def ranges(self) -> dict[IndexVar, tuple[int, int]]:
        """{IndexVar: (low, high)}: the values each variable keeps. Conditions of one variable
        narrow its range; others are NKIUnsupportedError (vtrn masks are boxes)."""
        ranges: dict[IndexVar, tuple[int, int]] = {}
        for expression, op in self.conditions:
            live = {var: c for var, c in expression.terms.items() if c != 0}
            if not live:
                holds = {"<": expression.const < 0, "<=": expression.const <= 0, ">": expression.const > 0,
                         ">=": expression.const >= 0, "==": expression.const == 0, "!=": expression.const != 0}[op]
                if not holds:
                    for var in expression.axes:
                        ranges[var] = (0, 0)
                continue
            if len(live) > 1:
                unsupported("mask", f"a condition over {len(live)} index variables at once "
                                    "(each comparison must involve one nl.arange index)")
            ((var, c),) = live.items()
            low, high = ranges.get(var, (0, var.extent))
            k = expression.const
            # c*v + k op 0
            if op in ("<", "<=", ">", ">="):
                if c < 0:
                    c, k = -c, -k
                    op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
                if op == "<":    # v < -k/c
                    high = min(high, -(k // c))
                elif op == "<=":
                    high = min(high, (-k) // c + 1)
                elif op == ">":
                    low = max(low, (-k) // c + 1)
                else:
                    low = max(low, -(k // c))
            elif op == "==":
                if k % c:
                    low, high = 0, 0
                else:
                    value = -k // c
                    low, high = max(low, value), min(high, value + 1)
            else:
                unsupported("mask", "!= conditions")
            ranges[var] = (max(0, low), max(max(0, low), min(var.extent, high)))
        return ranges


class DynamicSlice:
    """nl.ds(start, size)."""
    __slots__ = ("start", "size")

    def __init__(self, start: Any, size: Any) -> None:
        self.start, self.size = start, size


# -- buffers and views --------------------------------------------------------------------------------

class Buffer:
    """Storage: an HBM tensor (a kernel parameter) or an on-chip allocation in SBUF or PSUM.
    On chip, the axis ``partition_axis`` of ``shape`` spreads over partitions and the other axes
    are contiguous in each partition; ``offset`` (bytes) is given by the allocator."""
    __slots__ = ("space", "shape", "dtype", "name", "partition_axis", "where", "kind", "parameter", "offset",
                 "first", "last", "record", "predecessors", "number", "bank", "group", "zeroing", "blocks")
    _count = 0

    def __init__(self, space: str, shape: tuple[int, ...], dtype: str, name: str | None = None,
                 partition_axis: int = 0, where_: Where | None = None, kind: str | None = None) -> None:
        self.space = space          # "hbm", "sbuf" or "psum"
        self.shape = tuple(shape)
        self.dtype = dtype          # a vtrn dtype name
        Buffer._count += 1
        self.number = Buffer._count
        self.name = name
        self.partition_axis: int | None = partition_axis if space != "hbm" else None
        self.where = where_
        self.kind = kind            # HBM: "input", "output", "scratch"
        self.parameter: int | None = None  # HBM: the program's parameter index
        self.offset: int | None = None  # on chip: bytes into each partition
        self.first: int | None = None  # on chip: first and last operation that uses it
        self.last: int | None = None
        self.record: Any = None     # dependency bookkeeping (_lower)
        self.predecessors: Any = ()  # on chip: buffers that held its bytes before it
        self.bank: int | None = None
        self.group: Any = None      # PSUM: the box of an open matmul accumulation group, until read
        self.zeroing: Any = None    # PSUM: (memset op, [boxes touched since]) of nl.zeros
        # On chip with block dimensions: {block index: Buffer}, made on use.
        self.blocks: dict[tuple[int, ...], Buffer] | None = None

    @property
    def partitions(self) -> int | None:
        """The partitions an on-chip buffer spans (None for HBM)."""
        return self.shape[self.partition_axis] if self.partition_axis is not None else None

    @property
    def blocked(self) -> bool:
        """Whether the buffer has block dimensions (nl.par_dim not first): each block is a tile of
        its own, placed on its own by the allocator, as NKI's compiler treats blocks."""
        return self.space != "hbm" and (self.partition_axis or 0) > 0

    def block(self, index: tuple[int, ...]) -> "Buffer":
        """The tile of block ``index`` (a tuple of ints, one per block dimension)."""
        if self.blocks is None:
            self.blocks = {}
        found = self.blocks.get(index)
        if found is None:
            found = Buffer(self.space, self.shape[self.partition_axis:], self.dtype,
                           f"{self.name}{list(index)}" if self.name else None, 0, self.where)
            found.zeroing = (None, []) if self.zeroing is not None else None
            self.blocks[index] = found
        return found

    @property
    def bytes_per_partition(self) -> int:
        """Bytes each partition holds (every axis but the partition axis)."""
        free = math.prod(size for axis, size in enumerate(self.shape) if axis != self.partition_axis)
        return free * itemsize(self.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes of the whole buffer."""
        return math.prod(self.shape) * itemsize(self.dtype)

    def describe(self) -> str:
        """The buffer as messages name it ("HBM tensor 'x'", "SBUF tile [128, 512] float32")."""
        if self.space == "hbm":
            return f"HBM tensor {self.name!r}"
        return f"{self.space.upper()} tile {list(self.shape)} {_VTRN_TO_NUMPY[self.dtype]}"


class BlockSubset(Buffer):
    """The blocks of a blocked tile below a fixed leading block index (tiles[i] when tiles has
    more block dimensions): its blocks are the parent's."""
    __slots__ = ("parent", "prefix")

    def __init__(self, parent: Buffer, prefix: tuple[int, ...]) -> None:
        super().__init__(parent.space, parent.shape[len(prefix):], parent.dtype, parent.name,
                         (parent.partition_axis or 0) - len(prefix), parent.where)
        self.parent, self.prefix = parent, prefix
        self.zeroing = parent.zeroing

    def block(self, index: tuple[int, ...]) -> Buffer:
        """The parent's block at this subset's prefix followed by ``index``."""
        return self.parent.block(self.prefix + tuple(index))


class View:
    """A view of a buffer: ``shape``, per-axis ``strides`` in elements (on chip: the partition
    axis's stride counts partitions; ``paxis`` is its position, None once it is indexed away),
    and ``offset`` in elements (on chip: into each partition) plus ``partition`` (the first)."""
    __slots__ = ("buffer", "shape", "strides", "offset", "partition", "paxis", "vars", "checks", "ranges")

    def __init__(self, buffer: Buffer, shape: tuple[int, ...], strides: tuple[int, ...], offset: int,
                 partition: int, paxis: int | None, vars_: Iterable[IndexVar | None] | None = None,
                 checks: tuple[Check, ...] = (), ranges: dict[IndexVar, tuple[int, int]] | None = None) -> None:
        self.buffer = buffer
        self.shape = shape
        self.strides = strides
        self.offset = offset
        self.partition = partition
        self.paxis = paxis
        # The index variable behind each axis, for masks.
        self.vars: tuple[IndexVar | None, ...] = tuple(vars_) if vars_ else (None,) * len(shape)
        # Bounds of index expressions, checked when an operation uses the view (after its mask):
        # (dimension, size, const, {var: coefficient}); ranges: {var: (low, high)} a mask kept.
        self.checks = checks
        self.ranges = ranges or {}

    def check_bounds(self, api: str) -> None:
        """NKIError when an index expression, as far as the mask keeps it, leaves its dimension."""
        for dimension, size, const, terms in self.checks:
            low = high = const
            empty = False
            for var, c in terms.items():
                first, end = self.ranges.get(var, (0, var.extent))
                if end <= first:
                    empty = True
                    break
                a, b = c * first, c * (end - 1)
                low, high = low + builtins_min(a, b), high + builtins_max(a, b)
            if not empty and (low < 0 or high >= size):
                name = self.buffer.name or "tile"
                fail(f"Out-of-bound access for tensor `{name}` on dimension {dimension}: index range "
                     f"[{low}, {high}] exceed dimension size of {size} (cut it off with mask=)", api)

    @staticmethod
    def whole(buffer: Buffer) -> "View":
        """A view of all of ``buffer``, C-ordered (on chip, the partition axis strides by partitions)."""
        shape = buffer.shape
        strides = [0] * len(shape)
        step = 1
        for axis in reversed(range(len(shape))):
            if axis == buffer.partition_axis:
                strides[axis] = 1
                continue
            strides[axis] = step
            step *= shape[axis]
        return View(buffer, tuple(shape), tuple(strides), 0, 0, buffer.partition_axis)

    def same_place(self, other: "View | IndirectView") -> bool:
        """Whether ``other`` views exactly the same elements of the same buffer."""
        return isinstance(other, View) and (self.buffer is other.buffer and self.shape == other.shape and self.strides == other.strides
                and self.offset == other.offset and self.partition == other.partition and self.paxis == other.paxis)

    def with_vars(self, vars_: Iterable[IndexVar | None]) -> "View":
        """The same view with ``vars_`` as the index variables behind its axes (for masks)."""
        return View(self.buffer, self.shape, self.strides, self.offset, self.partition, self.paxis, tuple(vars_),
                    self.checks, self.ranges)

    def index(self, key: Any, api: str) -> "View | IndirectView":
        """The view ``key`` selects: ints, slices (steps allowed on free axes), nl.ds, Ellipsis,
        and nl.arange/mgrid index expressions (affine), as NKI indexes tensors and tiles."""
        key = key if isinstance(key, tuple) else (key,)
        if any(item is Ellipsis for item in key):
            at = next(i for i, item in enumerate(key) if item is Ellipsis)
            key = key[:at] + (slice(None),) * (len(self.shape) - len(key) + 1) + key[at + 1:]
        if self.buffer.blocked and self.paxis == self.buffer.partition_axis and self.shape == self.buffer.shape:
            # The whole of a tile with block dimensions: ints pick a block, a tile of its own.
            count = self.buffer.partition_axis or 0
            picks = key[:count]
            leading = 0
            while leading < len(picks) and isinstance(picks[leading], (numbers.Integral, numpy.integer)) and \
                    not isinstance(picks[leading], bool):
                leading += 1
            if 0 < leading < count and all(item == slice(None) for item in key[leading:]):
                # tiles[i] of a tile with several block dimensions: the blocks below i.
                index = tuple(int(item) % size for item, size in zip(picks[:leading], self.shape))
                return View.whole(BlockSubset(self.buffer, index))
            if len(picks) < count or not all(isinstance(item, (numbers.Integral, numpy.integer)) and
                                             not isinstance(item, bool) for item in picks):
                unsupported(api, "indexing the block dimensions of a tile other than with ints "
                                 f"(tiles[k, ...]); got {picks!r}")
            block_index: list[int] = []
            for axis, item in enumerate(picks):
                value = int(item)
                if not -self.shape[axis] <= value < self.shape[axis]:
                    fail(f"block index {value} is out of range for block dimension {axis} of size "
                         f"{self.shape[axis]}", api)
                block_index.append(value % self.shape[axis])
            tile = View.whole(self.buffer.block(tuple(block_index)))
            rest = key[count:]
            return tile.index(rest, api) if rest else tile
        if len(key) > len(self.shape) and self.paxis == 0 and self.buffer.space != "hbm":
            # A [P] tile (a reduction without keepdims, a column picked out) is a [P, 1] tile.
            extra = len(key) - len(self.shape)
            expanded = View(self.buffer, self.shape + (1,) * extra, self.strides + (0,) * extra, self.offset,
                            self.partition, 0, tuple(self.vars) + (None,) * extra, self.checks, self.ranges)
            return expanded.index(key, api)
        if len(key) > len(self.shape):
            fail(f"{len(key)} indices for a tensor of {len(self.shape)} dimensions (shape {list(self.shape)})", api)
        key = key + (slice(None),) * (len(self.shape) - len(key))
        tiles = [position for position, item in enumerate(key) if type(item).__name__ == "Tensor"]
        if tiles:
            return self._indirect(key, tiles, api)
        advanced = [item for item in key if isinstance(item, Index)]
        if advanced:
            return self._advanced(key, advanced, api)
        shape: list[int] = []
        strides: list[int] = []
        vars_: list[IndexVar | None] = []
        checks = list(self.checks)
        offset, partition, paxis = self.offset, self.partition, None
        for axis, (item, size, stride) in enumerate(zip(key, self.shape, self.strides)):
            is_partition = axis == self.paxis
            if isinstance(item, DynamicSlice):
                start, count = _int(item.start), _int(item.size)
                if start < 0 or count < 0 or start + count > size:
                    fail(f"nl.ds({start}, {count}) reaches past dimension {axis} of size {size}", api)
                item = slice(start, start + count)
            if isinstance(item, slice):
                for part in (item.start, item.stop, item.step):
                    if part is not None:
                        _int(part)
                start, stop, step = item.indices(size)
                count = len(range(start, stop, step))
                var = self.vars[axis]
                if item.stop is not None and item.stop > size and (item.step or 1) > 0 and \
                        (item.start is None or item.start >= 0):
                    # A slice past the end, as NKI kernels write for ragged edges: its size is
                    # what it says, and a mask must cut it before an operation uses it.
                    start = item.start or 0
                    count = len(range(start, int(item.stop), step))
                    var = IndexVar(count)
                    checks.append((axis, size, start, {var: step}))
                elif item.start is not None and item.start > size:
                    fail(f"slice {item.start}:{item.stop} starts past dimension {axis} of size {size} "
                         f"(tensor shape {list(self.shape)})", api)
                if is_partition:
                    if step != 1:
                        fail(f"the partition dimension takes slices of step 1, not {step}", api)
                    partition += start * stride
                    paxis = len(shape)
                else:
                    offset += start * stride
                shape.append(count)
                strides.append(stride * step)
                vars_.append(var)
                continue
            value = _int(item)
            if not -size <= value < size:
                fail(f"index {value} is out of range for dimension {axis} of size {size} "
                     f"(tensor shape {list(self.shape)})", api)
            value %= size
            if is_partition:
                partition += value * stride
                if self.buffer.space != "hbm":
                    # An on-chip tile keeps its partition dimension: one partition.
                    paxis = len(shape)
                    shape.append(1)
                    strides.append(stride)
                    vars_.append(None)
            else:
                offset += value * stride
        return View(self.buffer, tuple(shape), tuple(strides), offset, partition, paxis, vars_, tuple(checks),
                    dict(self.ranges))

    def subview(self, key: Any, api: str) -> "View":
        """``index`` with a key that holds no tile (so the result is a View, not an IndirectView)."""
        found = self.index(key, api)
        assert isinstance(found, View), f"{api}: the key {key!r} indexes by a tile"
        return found

    def _indirect(self, key: tuple[Any, ...], tiles: list[int], api: str) -> "IndirectView":
        """tensor[index_tile, ...]: rows picked by the values of an integer [P, 1] tile, for an
        indirect DMA (gather when loaded from, scatter when stored into)."""
        if self.buffer.space != "hbm" or len(tiles) != 1:
            unsupported(api, "indices from a tile's data other than one [P, 1] integer tile indexing one "
                             "dimension of a whole HBM tensor (an indirect DMA)")
        position = tiles[0]
        index = key[position]._view
        if index.buffer.space != "sbuf" or index.buffer.dtype not in ("int32", "int8", "uint8") or \
                index.paxis != 0 or math.prod(index.shape[1:]) != 1:
            fail(f"the index tile is {list(index.shape)} {index.buffer.dtype} in {index.buffer.space.upper()}; "
                 "an indirect DMA takes a [P, 1] tile of int32, int8 or uint8 in SBUF", api)
        # The table: the indexed dimension whole, first; the others as the key says.
        others = [item for item in key if isinstance(item, Index)]
        ndim = max([item.ndim for item in others] + [1])
        rows = IndexVar(self.shape[position])
        table_key = list(key)
        table_key[position] = Index({rows: 1}, 0, {rows: ndim - 1}, ndim) if others else slice(None)
        table = self.index(tuple(table_key), api)
        assert isinstance(table, View), "the table's key has no tile in it"
        if table.shape[0] != self.shape[position] or table.strides[0] != self.strides[position]:
            unsupported(api, "an indirect index on a dimension that does not come out first")
        return IndirectView(table, index)

    def _advanced(self, key: tuple[Any, ...], advanced: list[Index], api: str) -> "View":
        ndim = max(index.ndim for index in advanced)
        axes_of = {}
        for index in advanced:
            for var, axis in index.axes.items():
                axes_of[var] = ndim - 1 - axis
        # Output axes: the index space of the expressions, then the axes sliced alongside (numpy
        # puts advanced axes first when basic ones separate them; NKI kernels rarely mix them).
        out_shape = [1] * ndim
        for var, position in axes_of.items():
            if out_shape[position] not in (1, var.extent):
                fail(f"index expressions disagree on the size of axis {position} ({out_shape[position]} "
                     f"and {var.extent})", api)
            out_shape[position] = max(out_shape[position], var.extent)
        out_strides = [0] * ndim
        out_kind: list[str | None] = [None] * ndim      # "p" partition, "f" free
        out_vars: list[IndexVar | None] = [None] * ndim
        offset, partition = self.offset, self.partition
        extra_shape: list[int] = []
        extra_strides: list[int] = []
        extra_kind: list[str | None] = []
        extra_vars: list[IndexVar | None] = []
        checks = list(self.checks)
        for axis, (item, size, stride) in enumerate(zip(key, self.shape, self.strides)):
            kind = "p" if axis == self.paxis else "f"
            if isinstance(item, Index):
                low, high = item.const, item.const
                for var, c in item.terms.items():
                    if c == 0:
                        continue
                    position = axes_of[var]
                    if out_kind[position] not in (None, kind):
                        unsupported("indexing", "an index variable that moves along both the partition "
                                                "dimension and a free dimension")
                    out_kind[position] = kind
                    out_strides[position] += c * stride
                    out_vars[position] = var
                    span = c * (var.extent - 1)
                    low, high = (low + span, high) if span < 0 else (low, high + span)
                if low < 0 or high >= size:
                    checks.append((axis, size, item.const, {v: c for v, c in item.terms.items() if c}))
                if kind == "p":
                    partition += item.const * stride
                else:
                    offset += item.const * stride
                continue
            if isinstance(item, DynamicSlice):
                item = slice(_int(item.start), _int(item.start) + _int(item.size))
            if isinstance(item, slice):
                start, stop, step = item.indices(size)
                if kind == "p":
                    partition += start * stride
                else:
                    offset += start * stride
                extra_shape.append(len(range(start, stop, step)))
                extra_strides.append(stride * step)
                extra_kind.append(kind)
                extra_vars.append(None)
                continue
            value = _int(item)
            if not -size <= value < size:
                fail(f"index {value} is out of range for dimension {axis} of size {size}", api)
            value %= size
            if kind == "p":
                partition += value * stride
            else:
                offset += value * stride
        shape = tuple(out_shape) + tuple(extra_shape)
        strides = tuple(out_strides) + tuple(extra_strides)
        kinds = out_kind + extra_kind
        vars_ = out_vars + extra_vars
        paxis = kinds.index("p") if "p" in kinds else None
        if self.paxis is not None and paxis is None and self.buffer.space != "hbm":
            # The partition was indexed by a constant expression: keep one partition in front.
            shape, strides, vars_, paxis = (1,) + shape, (1,) + strides, [None, *vars_], 0
        return View(self.buffer, shape, strides, offset, partition, paxis, vars_, tuple(checks), dict(self.ranges))

    def restrict(self, boxes: dict[int, tuple[int, int]]) -> "View":
        """The view cut to ``boxes``: {axis: (low, high)}."""
        shape, offset, partition = list(self.shape), self.offset, self.partition
        ranges = dict(self.ranges)
        for axis, (low, high) in boxes.items():
            var = self.vars[axis]
            if var is not None:
                first, _ = ranges.get(var, (0, var.extent))
                ranges[var] = (first + low, first + high)
            shape[axis] = high - low
            if axis == self.paxis:
                partition += low * self.strides[axis]
            else:
                offset += low * self.strides[axis]
        return View(self.buffer, tuple(shape), self.strides, offset, partition, self.paxis, self.vars, self.checks,
                    ranges)

    def reshape(self, shape: tuple[int, ...], api: str) -> "View":
        """A contiguous view with another shape (HBM tensors; on chip, the free axes)."""
        size = math.prod(self.shape)
        if math.prod(shape) != size:
            fail(f"cannot reshape {list(self.shape)} ({size} elements) to {list(shape)}", api)
        if self.buffer.space != "hbm":
            unsupported("reshape", "reshaping an on-chip tile")
        contiguous = View.whole(Buffer("hbm", self.shape, self.buffer.dtype))
        if self.strides != contiguous.strides:
            unsupported("reshape", "reshaping a strided (sliced or transposed) view of an HBM tensor")
        strides: list[int] = []
        step = 1
        for size_ in reversed(shape):
            strides.insert(0, step)
            step *= size_
        return View(self.buffer, tuple(shape), tuple(strides), self.offset, 0, None)

    def byte_box(self) -> Box:
        """(first partition, end partition, first byte, end byte) the view touches in its buffer."""
        size = itemsize(self.buffer.dtype)
        low = high = self.offset
        p_low = p_high = self.partition
        for axis, (extent, stride) in enumerate(zip(self.shape, self.strides)):
            if extent == 0:
                return (0, 0, 0, 0)
            span = (extent - 1) * stride
            if axis == self.paxis:
                p_low, p_high = (p_low + span, p_high) if span < 0 else (p_low, p_high + span)
            else:
                low, high = (low + span, high) if span < 0 else (low, high + span)
        return (p_low, p_high + 1, low * size, (high + 1) * size)


def overlap(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Whether two (p0, p1, b0, b1, ...) boxes share a byte."""
    return bool(a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3])


def contains(outer: Sequence[Any], inner: Sequence[Any]) -> bool:
    """Whether box ``inner`` lies within box ``outer`` (extra fields after the four are ignored)."""
    return bool(outer[0] <= inner[0] and inner[1] <= outer[1] and outer[2] <= inner[2] and inner[3] <= outer[3])


class IndirectView:
    """An HBM table whose rows an index tile picks: ``shape`` is (index partitions, row shape)."""
    __slots__ = ("table", "index", "buffer", "shape", "vars", "checks")

    def __init__(self, table: View, index: View) -> None:
        self.table, self.index = table, index
        self.buffer = table.buffer
        self.shape = (index.shape[0],) + table.shape[1:]
        self.vars = (index.vars[0],) + tuple(table.vars[1:])
        self.checks: tuple[Check, ...] = ()

    def restrict(self, boxes: dict[int, tuple[int, int]]) -> "IndirectView":
        """A mask cuts the index tile's partitions (and the rows' free axes)."""
        index_boxes = {0: boxes[0]} if 0 in boxes else {}
        table_boxes = {axis: box for axis, box in boxes.items() if axis != 0}
        return IndirectView(self.table.restrict(table_boxes), self.index.restrict(index_boxes))

    def with_vars(self, vars_: Iterable[IndexVar | None]) -> "IndirectView":
        """The same view: an indirect view keeps the index tile's variables."""
        return self


# -- recorded operations ---------------------------------------------------------------------------

class Op:
    """One instruction of the recorded kernel: its engine, the vtrn builder it becomes, the views
    it writes and reads, the rest of its arguments, and the kernel line that made it."""
    __slots__ = ("engine", "kind", "writes", "reads", "args", "where", "api", "index")

    def __init__(self, engine: str, kind: str, writes: list[Any], reads: list[Any], args: dict[str, Any],
                 where_: Where, api: str) -> None:
        self.engine = engine    # "pe", "act", "dve", "pool", "dma"
        self.kind = kind        # "dma_copy", "matmul", "transpose", "activate", ...
        self.writes = writes    # [View]
        self.reads = reads      # [View]
        self.args = args        # dict
        self.where = where_
        self.api = api          # the NKI function, for messages
        self.index: int = -1  # its position in the trace, once added


class Trace:
    """What one run of a kernel function recorded."""

    def __init__(self, target: dict[str, Any], program_ids: tuple[int, ...] = (), grid: tuple[int, ...] = ()) -> None:
        self.target = target            # a preset description: {"name", "sbuf_bytes", ...}
        self.ops: list[Op] = []
        self.parameters: list[Buffer] = []  # HBM buffers in parameter order
        self.program_ids = program_ids
        self.grid = grid
        self.names: set[str] = set()
        self.constants: dict[str, Any] = {}  # parameter name -> numpy array (nl.shared_constant)

    def add(self, op: Op) -> Op:
        """Appends ``op``, numbers it, and notes the first and last use of each on-chip buffer it touches."""
        op.index = len(self.ops)
        self.ops.append(op)
        for view in op.writes:
            self._touch(view.buffer, op.index)
        for view in op.reads:
            self._touch(view.buffer, op.index)
        return op

    @staticmethod
    def _touch(buffer: Buffer, index: int) -> None:
        if buffer.space == "hbm":
            return
        if buffer.first is None:
            buffer.first = index
        buffer.last = index

    def finish(self) -> None:
        """Drops the memsets of nl.zeros in PSUM that matmuls overwrite before anything reads the
        zeros (NKI's compiler turns such a first matmul into an overwrite: on the chip,
        accumulating onto a memset is undefined), then renumbers the ops."""
        dead: set[int] = set()
        for op in self.ops:
            if op.kind == "memset" and op.args.get("zeroing"):
                buffer = op.writes[0].buffer
                covered: list[Any] = []
                needed = False
                for later in self.ops[op.index + 1:]:
                    for view in later.reads:
                        if view.buffer is buffer and not any(contains(box, view.byte_box()) for box in covered):
                            needed = True
                    for view in later.writes:
                        if view.buffer is buffer:
                            if later.kind == "matmul" and later.args.get("overwrites_zeros"):
                                covered.append(view.byte_box())
                            elif not any(contains(box, view.byte_box()) for box in covered):
                                needed = True
                    if needed:
                        break
                if not needed:
                    dead.add(op.index)
        if not dead:
            return
        self.ops = [op for op in self.ops if op.index not in dead]
        for buffer in {view.buffer for op in self.ops for view in op.writes + op.reads}:
            buffer.first = buffer.last = None
        for index, op in enumerate(self.ops):
            op.index = index
            for view in op.writes + op.reads:
                self._touch(view.buffer, index)

    def hbm(self, shape: tuple[int, ...], dtype: str, name: str | None, kind: str, where_: Where | None) -> Buffer:
        """A new HBM buffer, the next kernel parameter, under a name unique in the trace."""
        base = name or f"{kind}{len(self.parameters)}"
        name, number = base, 1
        while name in self.names:
            number += 1
            name = f"{base}_{number}"
        self.names.add(name)
        buffer = Buffer("hbm", shape, dtype, name, where_=where_, kind=kind)
        buffer.parameter = len(self.parameters)
        self.parameters.append(buffer)
        return buffer


_state = threading.local()


def current(api: str) -> Trace:
    """The trace being recorded on this thread; NKIError outside a kernel."""
    trace: Trace | None = getattr(_state, "trace", None)
    if trace is None:
        fail("Calling NKI API outside of NKI kernels is not supported. (Run the kernel with "
             "nki.simulate_kernel(kernel, *arrays), or call the @nki.jit kernel with numpy arrays.)", api)
    return trace


def set_current(trace: Trace | None) -> Trace | None:
    """Makes ``trace`` the one recorded on this thread (None: none); returns the previous one."""
    previous: Trace | None = getattr(_state, "trace", None)
    _state.trace = trace
    return previous


class RankContext:
    """While a multi-rank launch traces rank ``rank`` of ``world_size``: its communicator for a
    rank-list (made on first use, shared by the ranks of the list)."""

    def __init__(self, rank: int, world_size: int, communicator: Any) -> None:
        self.rank = rank
        self.world_size = world_size
        self.communicator = communicator   # (rank list tuple) -> vtrn.Communicator


def rank_context(api: str) -> RankContext:
    """The multi-rank launch tracing this thread's kernel; NKIError when the kernel runs alone."""
    context: RankContext | None = getattr(_state, "rank", None)
    if context is None:
        current(api)
        fail("collectives need the kernel to run on several ranks: launch it with nki.multi_rank_simulate(kernel, "
             "world_size=N, per_rank_inputs=[...]) (or nki.multi_rank_execute)", api)
    return context


def set_rank_context(context: RankContext | None) -> RankContext | None:
    """Makes ``context`` the launch this thread traces for (None: none); returns the previous one."""
    previous: RankContext | None = getattr(_state, "rank", None)
    _state.rank = context
    return previous
