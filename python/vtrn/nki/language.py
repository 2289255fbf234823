"""nki.language (``import nki.language as nl``) for vtrn: tensors and tiles, loads and stores,
index expressions, loops, and the element-wise, reduction and matrix functions, each recorded as
vtrn instructions on the engine NKI gives it (ACT for activation functions, DVE for arithmetic
and reductions, PE for matmul and transpose, DMA for loads and stores).

A name NKI has and vtrn.nki does not yet raises NKIUnsupportedError naming it.
"""

import builtins
import math
import numbers
from collections.abc import Callable
from typing import Any, NoReturn

import numpy

from .._library import ACTIVATION_ALIASES, ACTIVATIONS, ALU_ALIASES, ALU_OPS
from . import _core
from ._core import (
    PMAX,
    Buffer,
    DynamicSlice,
    Index,
    IndexVar,
    Mask,
    Op,
    View,
    current,
    fail,
    promote,
    tfloat32,
    unsupported,
    vtrn_dtype,
)
from ._core import where as _where
from ._tensor import Tensor, fresh, retarget

# -- dtypes (numpy's and ml_dtypes' types, which compare equal to a tile's dtype) -------------------

float32 = numpy.float32
float16 = numpy.float16
int32 = numpy.int32
int8 = numpy.int8
uint8 = numpy.uint8
int16 = numpy.int16
uint16 = numpy.uint16
uint32 = numpy.uint32
bool_ = numpy.bool_
if _core.ml_dtypes is not None:
    bfloat16 = _core.ml_dtypes.bfloat16
    float8_e4m3 = _core.ml_dtypes.float8_e4m3
    float8_e5m2 = _core.ml_dtypes.float8_e5m2
else:  # names still resolve; arrays of them need ml_dtypes
    bfloat16, float8_e4m3, float8_e5m2 = "bf16", "fp8_e4m3", "fp8_e5m2"
tfloat32 = tfloat32


class fp32:
    """nl.fp32.min: the most negative finite fp32 (bit pattern 0xff7fffff)."""
    min = float(numpy.finfo(numpy.float32).min)
    max = float(numpy.finfo(numpy.float32).max)


class bfp16:
    """nl.bfp16.min: the most negative finite bfloat16 (bit pattern 0xff7f)."""
    min = -3.3895313892515355e38
    max = 3.3895313892515355e38


def finfo(dtype: Any) -> Any:
    """Machine limits of a float dtype (numpy's finfo; ml_dtypes' for bfloat16 and fp8)."""
    numpy_type = _core.numpy_dtype(vtrn_dtype(dtype, "nl.finfo"))
    if _core.ml_dtypes is not None and numpy_type.name in ("bfloat16", "float8_e4m3", "float8_e5m2"):
        return _core.ml_dtypes.finfo(numpy_type)
    return numpy.finfo(numpy_type)


# -- buffers -------------------------------------------------------------------------------------------

class _BufferKind:
    def __init__(self, name: str, space: Any) -> None:
        self.name = name
        self.space = space

    def __repr__(self) -> Any:
        return f"nl.{self.name}"

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        unsupported(f"nl.{self.name}(...)", "buffer objects with explicit placement")


sbuf = _BufferKind("sbuf", "sbuf")
psum = _BufferKind("psum", "psum")
hbm = _BufferKind("hbm", "hbm")
shared_hbm = _BufferKind("shared_hbm", "hbm")
private_hbm = _BufferKind("private_hbm", "hbm")


class par_dim:
    """nl.par_dim(n): marks the partition dimension of a tile that is not its first."""

    def __init__(self, size: Any) -> None:
        self.size = size

    def __repr__(self) -> Any:
        return f"par_dim({self.size})"


class tile_size:
    """NKI's tile limits (nl.tile_size)."""
    pmax = PMAX
    psum_fmax = 512
    gemm_stationary_fmax = 128
    gemm_moving_fmax = 512
    bn_stats_fmax = 512
    psum_min_align = 4
    sbuf_min_align = 1
    total_available_sbuf_size = 192 * 1024


# -- helpers -----------------------------------------------------------------------------------------

def _shape(shape: Any, api: str) -> Any:
    if isinstance(shape, (numbers.Integral, par_dim)):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        fail(f"shape {shape!r} is not a tuple of sizes", api)
    partition_axis = 0
    sizes = []
    for axis, size in enumerate(shape):
        if isinstance(size, par_dim):
            partition_axis = axis
            size = size.size
        if isinstance(size, bool) or not isinstance(size, (numbers.Integral, numpy.integer)) or size < 0:
            fail(f"shape {shape!r}: every size is a non-negative int", api)
        sizes.append(int(size))
    return tuple(sizes), partition_axis


def _new(space: str, shape: Any, dtype: Any, api: str, partition_axis: int = 0, name: str | None = None,
         kind: str | None = None) -> Tensor:
    """A new tensor: an HBM parameter or an on-chip tile."""
    trace = current(api)
    if space == "hbm":
        buffer = trace.hbm(shape, dtype, name, kind or "output", _where())
        return Tensor(View.whole(buffer))
    if not shape:
        fail("a tile has at least one dimension, the partition dimension", api)
    partitions = shape[partition_axis]
    if partitions > PMAX:
        fail(f"Size of partition dimension {partitions} exceeds architecture limitation of {PMAX}.", api)
    buffer = Buffer(space, shape, dtype, name, partition_axis, _where())
    block = Buffer(space, shape[partition_axis:], dtype) if partition_axis else buffer   # what is placed
    if space == "psum":
        per_partition = block.bytes_per_partition
        if per_partition > trace.target["psum_bytes"]:
            fail(f"PSUM tile shape {list(shape)} of {numpy.dtype(_core.numpy_dtype(dtype)).name} needs "
                 f"{per_partition} bytes per partition; PSUM has {trace.target['psum_bytes']} "
                 f"(8 banks of 2 KiB)", api)
    elif block.bytes_per_partition > trace.target["sbuf_bytes"]:
        fail(f"SBUF tile shape {list(shape)} needs {block.bytes_per_partition} bytes per partition; SBUF has "
             f"{trace.target['sbuf_bytes']}", api)
    return Tensor(View.whole(buffer))


def _record(engine: str, kind: Any, writes: Any, reads: Any, api: str, **args: Any) -> Any:
    """Records one instruction; nothing when a mask left it nothing to write (returns None)."""
    trace = current(api)
    if builtins.any(size == 0 for view in writes for size in view.shape):
        return None
    if engine == "pool" and builtins.any(view.buffer.space == "psum" for view in reads):
        # GpSimd cannot reach PSUM: the operand goes through SBUF first (ACT copies it), as NKI's
        # compiler stages it.
        staged_reads = []
        for view in reads:
            if view.buffer.space == "psum":
                staged = _new("sbuf", view.shape, view.buffer.dtype, api)._view
                _record("act", "activate", [staged], [view], api, function="copy", src=view, scale=1.0)
                args = {key: (staged if value is view else value) for key, value in args.items()}
                view = staged
            staged_reads.append(view)
        reads = staged_reads
    for view in writes:
        if view.checks:
            view.check_bounds(api)
    for view in reads:
        if view.checks:
            view.check_bounds(api)
        if view.buffer.group is not None:
            view.buffer.group = None  # reading PSUM ends its accumulation group
        if view.buffer.zeroing is not None:
            view.buffer.zeroing[1].append(view.byte_box())
    for view in writes:
        if view.buffer.space == "psum":
            view.buffer.group = view.byte_box() if kind == "matmul" else None
            if view.buffer.zeroing is not None and not args.get("zeroing"):
                view.buffer.zeroing[1].append(view.byte_box())
    return trace.add(Op(engine, kind, writes, reads, args, _where(), api))


def _onchip(value: Any, api: str, what: str = "input") -> Any:
    """The view of a tile operand, partition dimension first."""
    if isinstance(value, LoopReduce):
        unsupported("nl.loop_reduce", "its result used other than as the value of a tile assignment "
                                      "(tile[...] = nl.loop_reduce(...))")
    if not isinstance(value, Tensor):
        fail(f"{what} is a {type(value).__name__}; it is a tile (SBUF or PSUM)", api)
    view = value._view
    if view.buffer.space == "hbm":
        fail(f"{what} is in HBM ({view.buffer.name}); compute engines read SBUF and PSUM: nl.load it into SBUF "
             "first", api)
    assert isinstance(view, View), "a tile indexes an HBM tensor only"
    if view.paxis != 0:
        fail(f"{what} has shape {list(view.shape)} with its partition dimension at position {view.paxis}; "
             "the partition dimension of a tile operand comes first (index the block out, e.g. tiles[k])", api)
    if view.strides[0] != 1 and view.shape[0] > 1:
        fail(f"{what} takes every {view.strides[0]}th partition; tile operands cover consecutive partitions", api)
    return view


def _free_size(view: View) -> Any:
    return math.prod(view.shape[1:])


def _dtype_or(dtype: Any, default: Any, api: str) -> Any:
    return default if dtype is None else vtrn_dtype(dtype, api)


def _mask_views(mask: Any, views: Any, api: str) -> Any:
    """The views cut to what ``mask`` keeps (views share one shape: an op's output index space)."""
    if mask is None:
        return views
    if isinstance(mask, (bool, numpy.bool_)):   # a condition on loop variables alone
        mask = Mask([], not mask)
    if not isinstance(mask, Mask):
        fail(f"mask is a {type(mask).__name__}; a mask is a comparison of nl.arange indices, e.g. (i_p < n)", api)
    if mask.never:
        return [view.restrict({0: (0, 0)}) for view in views]
    ranges = mask.ranges()
    shape = views[0].shape
    boxes: dict[int, tuple[int, int]] = {}
    for var, (low, high) in ranges.items():
        axis = None
        for view in views:
            if var in view.vars:
                axis = view.vars.index(var)
                break
        if axis is None:
            # Positional: the variable's axis in its index space, counted from the right.
            for expression, _ in mask.conditions:
                if var in expression.axes:
                    axis = len(shape) - 1 - expression.axes[var]
                    break
        if axis is None or not 0 <= axis < len(shape):
            fail("mask uses an index that does not index this operation's tiles", api)
        if var.extent != shape[axis]:
            fail(f"mask index of size {var.extent} does not match dimension {axis} of size {shape[axis]}", api)
        low, high = builtins.max(low, boxes.get(axis, (0, shape[axis]))[0]), builtins.min(high, boxes.get(axis, (0, shape[axis]))[1])
        boxes[axis] = (low, builtins.max(low, high))
    out = []
    for view in views:
        if view.shape != shape:
            # An operand broadcast along an axis keeps its size-1 axes whole.
            own = {axis: box for axis, box in boxes.items() if axis < len(view.shape) and view.shape[axis] != 1}
            out.append(view.restrict(own))
        else:
            out.append(view.restrict(boxes))
    return out


def _empty(views: Any) -> Any:
    return builtins.any(size == 0 for size in views[0].shape)


# -- memory ------------------------------------------------------------------------------------------

def ndarray(shape: Any, dtype: Any, buffer: Any = sbuf, name: str = "", **kwargs: Any) -> Tensor:
    """A new tensor: in HBM (nl.shared_hbm: a kernel output; nl.hbm, nl.private_hbm), or a tile
    in SBUF or PSUM (uninitialised: it reads as NaN, as the simulator fills new memory)."""
    api = "nl.ndarray"
    shape, partition_axis = _shape(shape, api)
    dtype = vtrn_dtype(dtype, api)
    if buffer is None:
        buffer = sbuf
    if not isinstance(buffer, _BufferKind):
        fail(f"buffer {buffer!r} is not nl.sbuf, nl.psum, nl.hbm, nl.shared_hbm or nl.private_hbm", api)
    kind = {"shared_hbm": "output", "hbm": "output", "private_hbm": "scratch"}.get(buffer.name)
    tensor = _new(buffer.space, shape, dtype, api, partition_axis, name or None, kind)
    if buffer.space == "psum":
        # A new PSUM tile: the first matmul accumulated (+=) into a part of it starts its
        # accumulation group, so it overwrites, as on the chip.
        tensor._view.buffer.zeroing = (None, [])
    return tensor


def _filled(shape: Any, dtype: Any, buffer: Any, value: Any, api: str, name: str = "") -> Tensor:
    tensor = ndarray(shape, dtype, buffer=buffer, name=name)
    view = tensor._direct(api)
    if view.buffer.space == "hbm":
        fail("Creating HBM tensor with init value is not supported.", api)
    trace = current(api)
    before = len(trace.ops)
    _memset_views(view, value, api)
    if view.buffer.space == "psum" and value == 0:
        for op in trace.ops[before:]:
            op.args["zeroing"] = True
            op.writes[0].buffer.zeroing = (op, [])
    return tensor


def _memset_views(view: View, value: Any, api: str) -> None:
    """Fills a whole on-chip buffer, block by block when its partition dimension is not first."""
    buffer = view.buffer
    if not buffer.partition_axis:
        _memset_view(view, value, api)
        return
    blocks = [range(size) for axis, size in enumerate(buffer.shape) if axis < buffer.partition_axis]
    import itertools
    for block in itertools.product(*blocks):
        _memset_view(view.subview(block, api), value, api)


def zeros(shape: Any, dtype: Any, buffer: Any = sbuf, name: str = "", **kwargs: Any) -> Tensor:
    """A new tile of zeros (MEMSET on the vector engine)."""
    return _filled(shape, dtype, buffer, 0.0, "nl.zeros", name)


def ones(shape: Any, dtype: Any, buffer: Any = sbuf, name: str = "", **kwargs: Any) -> Tensor:
    """A new tile of ones (MEMSET on the vector engine)."""
    return _filled(shape, dtype, buffer, 1.0, "nl.ones", name)


def full(shape: Any, fill_value: Any, dtype: Any, buffer: Any = sbuf, name: str = "", **kwargs: Any) -> Tensor:
    """A new tile filled with ``fill_value`` (MEMSET on the vector engine)."""
    return _filled(shape, dtype, buffer, fill_value, "nl.full", name)


def zeros_like(a: Any, dtype: Any = None, buffer: Any = None, name: str = "", **kwargs: Any) -> Tensor:
    """A new tile of zeros shaped as ``a`` (its dtype and buffer unless given)."""
    return zeros(a.shape, a.dtype if dtype is None else dtype, buffer=buffer or a.buffer, name=name)


def ones_like(a: Any, dtype: Any = None, buffer: Any = None, name: str = "", **kwargs: Any) -> Tensor:
    """A new tile of ones shaped as ``a`` (its dtype and buffer unless given)."""
    return ones(a.shape, a.dtype if dtype is None else dtype, buffer=buffer or a.buffer, name=name)


def empty_like(a: Any, dtype: Any = None, buffer: Any = None, name: str = "", **kwargs: Any) -> Tensor:
    """A new, uninitialised tile shaped as ``a`` (its dtype and buffer unless given)."""
    return ndarray(a.shape, a.dtype if dtype is None else dtype, buffer=buffer or a.buffer, name=name)


def full_like(a: Any, fill_value: Any, dtype: Any = None, buffer: Any = None, name: str = "", **kwargs: Any) -> Tensor:
    """A new tile of ``fill_value`` shaped as ``a`` (its dtype and buffer unless given)."""
    return full(a.shape, fill_value, a.dtype if dtype is None else dtype, buffer=buffer or a.buffer, name=name)


def shared_constant(constant: Any, dtype: Any = None, **kwargs: Any) -> Tensor:
    """An HBM tensor holding ``constant`` (a numpy array, or the path of a .npy file)."""
    api = "nl.shared_constant"
    if isinstance(constant, str):
        constant = numpy.load(constant)
    if not isinstance(constant, numpy.ndarray):
        fail(f"constant is a {type(constant).__name__}; a numpy array or a .npy path", api)
    vtrn_name = _dtype_or(dtype, None, api) if dtype is not None else vtrn_dtype(constant.dtype, api)
    trace = current(api)
    buffer = trace.hbm(constant.shape, vtrn_name, "constant", "constant", _where())
    assert buffer.name is not None, "Trace.hbm names every tensor"
    trace.constants[buffer.name] = numpy.ascontiguousarray(constant, dtype=_core.numpy_dtype(vtrn_name))
    return Tensor(View.whole(buffer))


def shared_identity_matrix(n: Any, dtype: Any = uint8, **kwargs: Any) -> Tensor:
    """An [n, n] identity tile in SBUF (gpsimd: affine_select on the partition and column index)."""
    api = "nl.shared_identity_matrix"
    n = _core._int(n)
    if not 0 < n <= PMAX:
        fail(f"n is {n}; an identity tile has 1 to {PMAX} partitions", api)
    out_dtype = vtrn_dtype(dtype, api)
    ones = _filled((n, n), dtype, sbuf, 1.0, api)
    tile = _new("sbuf", (n, n), out_dtype, api)
    _record("pool", "affine_select", [tile._view], [ones._view], api, steps=[-1], offset=0, channel_multiplier=1,
            cmp="equal", on_true=ones._view, on_false=0.0)
    return tile


def _memset_view(view: View, value: Any, api: str, engine: str = "dve") -> None:
    if view.buffer.space == "hbm":
        unsupported(api, "filling HBM directly (fill a tile and nl.store it)")
    if view.paxis != 0:
        fail(f"cannot fill a view whose partition dimension is at position {view.paxis}", api)
    if _empty([view]):
        return
    _record(engine, "memset", [view], [], api, value=float(value))


def load(src: Any, mask: Any = None, dtype: Any = None, **kwargs: Any) -> Tensor:
    """Loads a tensor from HBM into a new SBUF tile of the same shape (DMA). The first dimension
    of the view becomes the partition dimension."""
    api = "nl.load"
    if not isinstance(src, Tensor):
        fail(f"src is a {type(src).__name__}; it is an HBM tensor (or a view of one)", api)
    view = src._view
    if isinstance(view, _core.IndirectView):
        tile = _new("sbuf", view.shape, _dtype_or(dtype, view.buffer.dtype, api), api)
        dst_m, src_m = _mask_views(mask, [tile._view, view], api)
        _record_indirect(api, dst_m, src_m, "src")
        return tile
    if view.buffer.space == "psum":
        fail("src is in PSUM; the DMA engines do not reach PSUM (copy it to SBUF with nl.copy)", api)
    shape = view.shape if len(view.shape) > 0 else (1,)
    out_dtype = _dtype_or(dtype, view.buffer.dtype, api)
    tile = _new("sbuf", shape, out_dtype, api)
    dst = tile._view.with_vars(view.vars)
    tile._view = dst
    dst_m, src_m = _mask_views(mask, [dst, view], api)
    if not _empty([dst_m]):
        _record("dma", "dma_copy", [dst_m], [src_m], api, src=src_m)
    return tile


def store(dst: Any, value: Any, mask: Any = None, **kwargs: Any) -> None:
    """Stores a tile into an HBM tensor (DMA). A PSUM tile goes through SBUF first."""
    api = "nl.store"
    if not isinstance(dst, Tensor):
        fail(f"dst is a {type(dst).__name__}; it is an HBM tensor (or a view of one)", api)
    target = dst._view
    if isinstance(target, _core.IndirectView):
        source = _onchip(value, api, "value")
        target_m, source_m = _mask_views(mask, [target, source], api) if mask is not None else (target, source)
        _record_indirect(api, target_m, source_m, "dst")
        return
    if target.buffer.space != "hbm":
        fail(f"dst is in {target.buffer.space.upper()}; nl.store writes HBM (assign tiles with [...] =)", api)
    if isinstance(value, numbers.Number):
        fail("value is a number; store a tile", api)
    source = _onchip(value, api, "value")
    if source.buffer.space == "psum":
        staged = _new("sbuf", source.shape, source.buffer.dtype, api)
        _record("act", "activate", [staged._view], [source], api, function="copy", src=source, scale=1.0)
        source = staged._view
    if math.prod(source.shape) != math.prod(target.shape):
        fail(f"value has shape {list(value.shape)} but dst has shape {list(target.shape)}", api)
    target_m, source_m = _mask_views(mask, [target, source.with_vars(target.vars) if source.shape == target.shape
                                            else source], api) if mask is not None else (target, source)
    if _empty([target_m]):
        return
    _record("dma", "dma_copy", [target_m], [source_m], api, src=source_m)


def atomic_rmw(dst: Any, value: Any, op: Any, mask: Any = None, **kwargs: Any) -> Any:
    """dst = op(dst, value) in HBM by an accumulating DMA (op nl.add, as NKI's DMA supports)."""
    api = "nl.atomic_rmw"
    from . import isa
    if not isinstance(dst, Tensor) or dst._view.buffer.space != "hbm":
        fail("dst is an HBM tensor (or a view of one)", api)
    source = _onchip(value, api, "value")
    if source.buffer.space == "psum":
        staged = _new("sbuf", source.shape, source.buffer.dtype, api)
        _record("act", "activate", [staged._view], [source], api, function="copy", src=source, scale=1.0)
        value = staged
    return isa.dma_copy(dst=dst, src=value, mask=mask, dst_rmw_op=op)


def _record_indirect(api: str, dst: Any, src: Any, side: Any, rmw: Any = None, oob_mode: Any = "error") -> None:
    """An indirect DMA: ``side`` ("src" gather, "dst" scatter) is an IndirectView."""
    indirect = src if side == "src" else dst
    other = dst if side == "src" else src
    if other.shape[0] != indirect.index.shape[0]:
        fail(f"the index tile has {indirect.index.shape[0]} partitions but the {('dst' if side == 'src' else 'src')} "
             f"tile has {other.shape[0]}", api)
    if side == "src":
        _record("dma", "dma_copy", [dst], [src.table, src.index], api, src=src.table, indirect="src",
                index=src.index, rmw=rmw, oob=oob_mode)
    else:
        reads = [src, dst.index] + ([dst.table] if rmw else [])
        _record("dma", "dma_copy", [dst.table], reads, api, src=src, indirect="dst", index=dst.index, rmw=rmw,
                oob=oob_mode)


def load_transpose2d(src: Any, mask: Any = None, dtype: Any = None, **kwargs: Any) -> Tensor:
    """Loads a 2-D HBM view transposed: tile[j, i] = src[i, j] (a strided DMA)."""
    api = "nl.load_transpose2d"
    if not isinstance(src, Tensor) or src._view.buffer.space != "hbm" or len(src.shape) != 2:
        fail("src is a 2-D HBM tensor view", api)
    return load(src.T, mask=mask, dtype=dtype)


def copy(src: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Tensor:
    """A new SBUF tile with src's values (PSUM to SBUF, dtype conversion), on the scalar engine."""
    api = "nl.copy"
    view = _onchip(src, api, "src")
    out_dtype = _dtype_or(dtype, view.buffer.dtype, api)
    tile = _new("sbuf", view.shape, out_dtype, api)
    dst, src_m = _mask_views(mask, [tile._view, view], api)
    if not _empty([dst]):
        _record("act", "activate", [dst], [src_m], api, function="copy", src=src_m, scale=1.0)
    return tile


def _copy_into(target: Any, view: View, api: str) -> None:
    """target = view, by whatever engine can."""
    if target.buffer.space == "hbm":
        if view.buffer.space == "psum":
            fail("cannot store a PSUM tile into HBM directly; nl.copy it to SBUF first", api)
        _record("dma", "dma_copy", [target], [view], api, src=view)
        return
    if view.buffer.space == "hbm":
        if target.buffer.space == "psum":
            fail("DMA cannot write PSUM; load into SBUF first", api)
        _record("dma", "dma_copy", [target], [view], api, src=view)
        return
    if target.paxis != 0 or view.paxis != 0:
        fail("tile assignment needs views whose partition dimension is first", api)
    if math.prod(target.shape) != math.prod(view.shape) or target.shape[0] != view.shape[0]:
        src = _broadcast_to(view, target.shape, api)
    else:
        src = view
    if _empty([target]):
        return
    _record("act", "activate", [target], [src], api, function="copy", src=src, scale=1.0)


def broadcast_to(src: Any, shape: Any, **kwargs: Any) -> Tensor:
    """src repeated along axes of size 1: free axes as a view (stride 0); the partition axis
    (1 -> P) by the tensor engine, which multiplies a ones vector [1, P] by the row (as NKI's
    compiler does it), into a new SBUF tile."""
    api = "nl.broadcast_to"
    view = _onchip(src, api, "src")
    shape = tuple(shape)
    if len(shape) == len(view.shape) and view.shape[0] == 1 and shape[0] > 1:
        view = _partition_broadcast(view, shape[0], api)
    return Tensor(_broadcast_to(view, shape, api))


def _partition_broadcast(view: View, partitions: Any, api: str) -> Any:
    """A new SBUF tile [partitions, F...] whose every partition is the one partition of ``view``."""
    if partitions > PMAX:
        fail(f"cannot broadcast to {partitions} partitions; at most {PMAX}", api)
    free = _free_size(view)
    dtype = view.buffer.dtype
    row = view
    if view.buffer.space != "sbuf" or not _core.is_float(dtype) or len(view.shape) > 2 and \
            builtins.any(s != 1 for s in view.shape[1:-1]):
        staged = _new("sbuf", (1, free), "fp32" if not _core.is_float(dtype) else dtype, api)
        flat = View(view.buffer, (1, free), (1, 1), view.offset, view.partition, 0) if len(view.shape) == 2 else None
        if flat is None:
            unsupported(api, "broadcasting a multi-dimensional row along partitions")
        _record("act", "activate", [staged._view], [flat], api, function="copy", src=flat, scale=1.0)
        row = staged._direct(api)
    elif len(view.shape) != 2:
        row = View(view.buffer, (1, free), (1, view.strides[-1]), view.offset, view.partition, 0)
    ones_dtype = "fp32" if row.buffer.dtype == "fp32" else "bf16"
    if row.buffer.dtype not in ("fp32", ones_dtype):
        staged = _new("sbuf", (1, free), "bf16", api)
        _record("act", "activate", [staged._view], [row], api, function="copy", src=row, scale=1.0)
        row = staged._direct(api)
    ones = _new("sbuf", (1, partitions), ones_dtype, api)
    _record("dve", "memset", [ones._view], [], api, value=1.0)
    out = _new("sbuf", (partitions,) + view.shape[1:], dtype, api)
    flat_out = View(out._view.buffer, (partitions, free), (1, 1), 0, 0, 0)
    for start in range(0, free, 512):
        width = builtins.min(512, free - start)
        moving = View(row.buffer, (1, width), row.strides, row.offset + start * row.strides[1], row.partition, 0)
        product = _new("psum", (partitions, width), "fp32", api)
        _record("pe", "matmul", [product._view], [ones._view, moving], api, stationary=ones._view, moving=moving,
                accumulate=False)
        target = View(flat_out.buffer, (partitions, width), (1, 1), start, 0, 0)
        _record("act", "activate", [target], [product._view], api, function="copy", src=product._view, scale=1.0)
    return out._view


def _broadcast_to(view: View, shape: Any, api: str) -> Any:
    if len(shape) < len(view.shape):
        fail(f"cannot broadcast shape {list(view.shape)} to {list(shape)}", api)
    if view.paxis == 0 and len(view.shape) < len(shape):
        # A tile's first dimension is its partition dimension: a lower-rank tile (a [P] result
        # of a reduction without keepdims) gains free dimensions at the end.
        extra = len(shape) - len(view.shape)
        view = View(view.buffer, view.shape + (1,) * extra, view.strides + (0,) * extra, view.offset,
                    view.partition, 0, tuple(view.vars) + (None,) * extra, view.checks, view.ranges)
    extra = len(shape) - len(view.shape)
    old_shape = (1,) * extra + view.shape
    old_strides = (0,) * extra + view.strides
    strides = []
    for axis, (new, old, stride) in enumerate(zip(shape, old_shape, old_strides)):
        if new != old and old != 1:
            fail(f"cannot broadcast shape {list(view.shape)} to {list(shape)}", api)
        if axis == 0 and new != old:
            fail(f"cannot broadcast along the partition dimension ({old} to {new} partitions): engines read "
                 "each partition from its own lane; replicate the data across partitions (e.g. with a "
                 "matmul by a ones vector or by loading it into each partition)", api)
        strides.append(0 if new != old else stride)
    vars_ = (None,) * extra + tuple(view.vars)
    return View(view.buffer, tuple(shape), tuple(strides), view.offset, view.partition, 0 if extra == 0 else extra,
                vars_) if extra else View(view.buffer, tuple(shape), tuple(strides), view.offset, view.partition,
                                          view.paxis, vars_)


# -- index expressions and loops ----------------------------------------------------------------------

def arange(*args: Any) -> Any:
    """nl.arange(stop) / nl.arange(start, stop[, step]): an index over a range, shaped with
    [:, None] (partition) or [None, :] (free)."""
    if len(args) == 1:
        start, stop, step = 0, args[0], 1
    elif len(args) in (2, 3):
        start, stop, step = args[0], args[1], args[2] if len(args) == 3 else 1
    else:
        fail(f"takes 1 to 3 arguments, {len(args)} given", "nl.arange")
    start, stop, step = (_core._int(v) for v in (start, stop, step))
    if step == 0:
        fail("step is 0", "nl.arange")
    var = IndexVar(len(range(start, stop, step)))
    return Index({var: step}, start, {var: 0}, 1)


class _Grid(tuple[Any, ...]):
    """nl.mgrid's result: unpacks as (i_p, i_f, ...), and names them .p, .x, .y, .z."""

    @property
    def p(self) -> Any:
        return self[0]

    @property
    def x(self) -> Any:
        return self[1]

    @property
    def y(self) -> Any:
        return self[2]

    @property
    def z(self) -> Any:
        return self[3]


class _MGrid:
    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        indices = []
        for position, item in enumerate(key):
            if not isinstance(item, slice):
                fail("takes slices, e.g. nl.mgrid[0:128, 0:512]", "nl.mgrid")
            start = 0 if item.start is None else item.start
            step = 1 if item.step is None else item.step
            var = IndexVar(len(range(start, item.stop, step)))
            indices.append(Index({var: step}, start, {var: len(key) - 1 - position}, len(key)))
        return _Grid(indices) if len(indices) > 1 else indices[0]


mgrid = _MGrid()


def ds(start: Any, size: Any) -> Any:
    """nl.ds(start, size): the slice start:start+size."""
    return DynamicSlice(start, size)


def affine_range(*args: Any, **kwargs: Any) -> Any:
    """A loop whose iterations NKI may reorder and overlap (no loop-carried dependency except PSUM
    accumulation). Unrolled; its iterations' tiles get separate places, so engines overlap them."""
    return range(*args)


def sequential_range(*args: Any, **kwargs: Any) -> Any:
    """A loop whose iterations run in order (loop-carried dependencies allowed). Unrolled."""
    return range(*args)


def static_range(*args: Any, **kwargs: Any) -> Any:
    """A loop unrolled at trace time."""
    return range(*args)


class _SpmdDim:
    """A launch-grid dimension: ``size`` instances, ``cores`` of them side by side on NeuronCores
    (nl.nc(n)); the rest run one after another on a core, as NKI runs SPMD instances."""

    def __init__(self, size: Any, cores: Any) -> None:
        self._nki_spmd = size
        self.cores = cores

    def __mul__(self, other: Any) -> Any:
        other = other if isinstance(other, _SpmdDim) else _SpmdDim(_core._int(other), 1)
        return _SpmdDim(self._nki_spmd * other._nki_spmd, self.cores * other.cores)

    __rmul__ = __mul__

    def __repr__(self) -> Any:
        return f"spmd_dim({self._nki_spmd}, cores={self.cores})"


def nc(count: Any) -> Any:
    """nl.nc(n): a grid dimension of n instances spread over n physical NeuronCores."""
    count = _core._int(count)
    if count < 1:
        fail(f"nl.nc({count}): at least 1 core", "nl.nc")
    return _SpmdDim(count, count)


def spmd_dim(*sizes: Any) -> Any:
    """nl.spmd_dim(a, b, ...): one grid dimension of a * b * ... instances (nl.nc parts on cores)."""
    result = _SpmdDim(1, 1)
    for size in sizes:
        result = result * size
    return result


def program_id(axis: Any = 0) -> Any:
    """This instance's index along ``axis`` of the launch grid (0 without a grid)."""
    trace = current("nl.program_id")
    axis = _core._int(axis)
    if not trace.grid:
        return 0
    if not 0 <= axis < len(trace.grid):
        fail(f"axis {axis} is out of range: the launch grid {list(trace.grid)} has {len(trace.grid)} dimensions",
             "nl.program_id")
    return trace.program_ids[axis]


def num_programs(axes: Any = 0) -> Any:
    """The launch grid's size along ``axes`` (1 without a grid)."""
    trace = current("nl.num_programs")
    if isinstance(axes, (tuple, list)):
        return math.prod(num_programs(axis) for axis in axes)
    axis = _core._int(axes)
    if not trace.grid:
        return 1
    if not 0 <= axis < len(trace.grid):
        fail(f"axis {axis} is out of range: the launch grid {list(trace.grid)} has {len(trace.grid)} dimensions",
             "nl.num_programs")
    return trace.grid[axis]


def program_ndim() -> Any:
    """The number of dimensions of the launch grid (0 for a kernel called without one)."""
    return len(current("nl.program_ndim").grid)


def static_cast(array: Any, dtype: Any) -> Any:
    """Host side: a numpy array converted to an NKI dtype (nl.bfloat16 and fp8 through ml_dtypes)."""
    return numpy.asarray(array).astype(_core.numpy_dtype(vtrn_dtype(dtype, "nl.static_cast")))


def device_print(prefix: Any, x: Any, **kwargs: Any) -> NoReturn:
    """Printing from the device: not supported by vtrn.nki yet (NKIUnsupportedError)."""
    unsupported("nl.device_print", "printing from the device")


def static_assert(condition: Any, message: Any = "") -> None:
    """NKIError naming the kernel line when ``condition`` is false while the kernel is traced."""
    if not condition:
        fail(f"static assertion failed{': ' + message if message else ''}", "nl.static_assert")


# -- element-wise functions --------------------------------------------------------------------------

# NKI's activation functions and the vtrn ACTIVATE function each becomes.
_ACTIVATION_NAMES = dict(ACTIVATION_ALIASES, identity="copy", absolute="abs")  # numpy's spellings too


def _activation_function(name: str, api: str) -> Any:
    return _instruction_name(name, _ACTIVATION_NAMES, ACTIVATIONS, "activation function", api)


def _instruction_name(name: str, aliases: Any, table: Any, what: str, api: str) -> Any:
    """vtrn's name for an NKI operator or activation function; NKIUnsupportedError when vtrn lacks it."""
    vtrn_name = aliases.get(name, name)
    if vtrn_name not in table:
        unsupported(api, f"the {what} {name} is not in vtrn's instruction set yet")
    return vtrn_name


def _unary_activation(name: str) -> Any:
    def function(x: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Any:
        api = f"nl.{name}"
        return _activate(api, _activation_function(name, api), x, dtype=dtype, mask=mask)
    function.__name__ = name
    function.__qualname__ = name
    function.__doc__ = f"nl.{name}(x): element-wise {name} on the scalar engine (ACTIVATE)."
    setattr(function, "_activation", name)
    return function


def _activate(api: str, function: Any, x: Any, dtype: Any = None, scale: Any = 1.0, bias: Any = None,
              reduce_out: Any = None, mask: Any = None) -> Tensor:
    view = _onchip(x, api, "x")
    out_dtype = _dtype_or(dtype, view.buffer.dtype, api)
    tile = _new("sbuf", view.shape, out_dtype, api)
    dst, src = _mask_views(mask, [tile._view, view], api)
    reads = [src]
    if isinstance(scale, Tensor):
        scale = _column(scale, api, "scale", view.shape[0])
        if mask is not None:
            scale = _mask_views(mask, [tile._view, scale], api)[1]
        reads.append(scale)
    elif not isinstance(scale, numbers.Number):
        fail(f"scale is a {type(scale).__name__}; a number or a [P, 1] tile", api)
    else:
        scale = float(scale)  # type: ignore[arg-type]  # a Number is a real here (NKI's scalars)
    if bias is not None:
        bias = _column(bias, api, "bias", view.shape[0])
        if mask is not None:
            bias = _mask_views(mask, [tile._view, bias], api)[1]
        reads.append(bias)
    writes = [dst]
    if reduce_out is not None:
        if mask is not None:
            reduce_out = _mask_views(mask, [tile._view, reduce_out], api)[1]
        writes.append(reduce_out)
    if not _empty([dst]):
        _record("act", "activate", writes, reads, api, function=function, src=src, scale=scale, bias=bias,
                accumulate_out=reduce_out)
    return tile


def _column(value: Any, api: str, what: str, partitions: Any) -> Any:
    if isinstance(value, numbers.Number):
        fail(f"{what} is a number here; it is a [P, 1] tile", api)
    view = _onchip(value, api, what)
    if _free_size(view) != 1:
        fail(f"{what} has shape {list(view.shape)}; it is a [P, 1] tile (one value per partition)", api)
    if view.shape[0] != partitions:
        fail(f"{what} has {view.shape[0]} partitions but the data has {partitions}", api)
    return view


for _name in ("exp", "log", "tanh", "sigmoid", "relu", "gelu", "gelu_apprx_tanh", "silu", "square", "sqrt",
              "rsqrt", "erf", "sin", "cos", "tan", "arctan", "softplus", "mish", "gelu_dx", "silu_dx", "erf_dx",
              "gelu_apprx_sigmoid", "gelu_apprx_sigmoid_dx", "sign", "exp2"):
    globals()[_name] = _unary_activation(_name)
del _name
# What the loop made, for type checkers (each is documented by its __doc__).
exp: Callable[..., Tensor]
log: Callable[..., Tensor]
tanh: Callable[..., Tensor]
sigmoid: Callable[..., Tensor]
relu: Callable[..., Tensor]
gelu: Callable[..., Tensor]
gelu_apprx_tanh: Callable[..., Tensor]
silu: Callable[..., Tensor]
square: Callable[..., Tensor]
sqrt: Callable[..., Tensor]
rsqrt: Callable[..., Tensor]
erf: Callable[..., Tensor]
sin: Callable[..., Tensor]
cos: Callable[..., Tensor]
tan: Callable[..., Tensor]
arctan: Callable[..., Tensor]
softplus: Callable[..., Tensor]
mish: Callable[..., Tensor]
gelu_dx: Callable[..., Tensor]
silu_dx: Callable[..., Tensor]
erf_dx: Callable[..., Tensor]
gelu_apprx_sigmoid: Callable[..., Tensor]
gelu_apprx_sigmoid_dx: Callable[..., Tensor]
sign: Callable[..., Tensor]
exp2: Callable[..., Tensor]


def reciprocal(x: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Tensor:
    """nl.reciprocal(x) = 1 / x (vector engine)."""
    return _scalar_op("nl.reciprocal", x, "reciprocal", 0.0, dtype, mask)


setattr(reciprocal, "_alu", "reciprocal")


def abs(x: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Tensor:  # noqa: A001 (NKI's name)
    """nl.abs(x) = |x| (vector engine)."""
    return _scalar_op("nl.abs", x, "abs", 0.0, dtype, mask)


setattr(abs, "_alu", "abs")
setattr(abs, "_activation", "abs")


def invert(x: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Tensor:
    """nl.invert(x) = ~x, bitwise, on integer tiles (vector engine)."""
    return _scalar_op("nl.invert", x, _alu("invert", "nl.invert"), 0, dtype, mask)


setattr(invert, "_alu", "invert")


def logical_not(x: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Tensor:
    """nl.logical_not(x): 1 where x is 0, else 0 (vector engine)."""
    return _scalar_op("nl.logical_not", x, _alu("logical_not", "nl.logical_not"), 0.0, dtype, mask)


setattr(logical_not, "_alu", "logical_not")


def _rounded(api: str, x: Any, mask: Any, direction: Any) -> Any:
    """floor (direction -1) or ceil (+1): round to the nearest integer through int32 (as the
    engines convert), then step back where that went past x."""
    view = _onchip(x, api, "x")
    nearest_int = _new("sbuf", view.shape, "int32", api)
    dst, src = _mask_views(mask, [nearest_int._view, view], api)
    _record("dve", "tensor_copy", [dst], [src], api, src=src)
    nearest = _new("sbuf", view.shape, "fp32", api)
    dst2, src2 = _mask_views(mask, [nearest._view, nearest_int._view], api)
    _record("dve", "tensor_copy", [dst2], [src2], api, src=src2)
    past = _binary(api, nearest, x, "greater" if direction < 0 else "less", dtype="float32", mask=mask)
    return _binary(api, nearest, past, "subtract" if direction < 0 else "add", dtype="float32", mask=mask)


def floor(x: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Any:
    """nl.floor(x): the largest integer <= x (vector engine, through int32: |x| < 2^31)."""
    result = _rounded("nl.floor", x, mask, -1)
    return result if dtype is None and x.dtype == numpy.float32 else copy(result, dtype=dtype or x.dtype, mask=mask)


def ceil(x: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Any:
    """nl.ceil(x): the smallest integer >= x (vector engine, through int32: |x| < 2^31)."""
    result = _rounded("nl.ceil", x, mask, +1)
    return result if dtype is None and x.dtype == numpy.float32 else copy(result, dtype=dtype or x.dtype, mask=mask)


def mod(x: Any, y: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Any:
    """nl.mod(x, y) = x - y * floor(x / y): the sign of the divisor, as Python's %."""
    api = "nl.mod"
    quotient = _binary(api, x, y, "divide", dtype="float32", mask=mask)
    whole = _rounded(api, quotient, mask, -1)
    product = _binary(api, whole, y, "multiply", dtype="float32", mask=mask)
    out_dtype = dtype or (x.dtype if isinstance(x, Tensor) else y.dtype)
    return _binary(api, x, product, "subtract", dtype=out_dtype, mask=mask)


def fmod(x: Any, y: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Any:
    """nl.fmod(x, y) = x - y * trunc(x / y): the sign of the dividend, as numpy.fmod."""
    api = "nl.fmod"
    quotient = _binary(api, x, y, "divide", dtype="float32", mask=mask)
    down = _rounded(api, quotient, mask, -1)
    up = _rounded(api, quotient, mask, +1)
    negative_ = _binary(api, quotient, 0.0, "less", dtype="float32", mask=mask)
    # trunc = floor + negative * (ceil - floor)
    step = _binary(api, up, down, "subtract", dtype="float32", mask=mask)
    whole = _binary(api, down, _binary(api, negative_, step, "multiply", dtype="float32", mask=mask), "add",
                    dtype="float32", mask=mask)
    product = _binary(api, whole, y, "multiply", dtype="float32", mask=mask)
    out_dtype = dtype or (x.dtype if isinstance(x, Tensor) else y.dtype)
    return _binary(api, x, product, "subtract", dtype=out_dtype, mask=mask)


class LoopReduce:
    """What nl.loop_reduce returns: assigned into a tile, it becomes tile = op(tile, x)."""

    def __init__(self, x: Any, op: Any, dtype: Any, mask: Any) -> None:
        self.x, self.op, self.dtype, self.mask = x, op, dtype, mask
        self.shape = x.shape


def loop_reduce(x: Any, op: Any, loop_indices: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Any:
    """nl.loop_reduce(x, op, loop_indices): assigned into a tile (``acc[...] = nl.loop_reduce(a,
    op=np.add, loop_indices=[k])``), the tile becomes op(tile, x), as NKI documents it (the
    destination is also an input). vtrn unrolls loops, so this is that tensor_tensor each time."""
    api = "nl.loop_reduce"
    _onchip(x, api, "x")
    from .isa import _op_name
    return LoopReduce(x, _op_name(op, api), dtype, mask)


def negative(x: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Tensor:
    """nl.negative(x) = -x (vector engine)."""
    return _scalar_op("nl.negative", x, "multiply", -1.0, dtype, mask)


_BITVEC = ("bitwise_and", "bitwise_or", "bitwise_xor", "shift_left", "shift_right", "invert")


def _immediate(op: Any, value: Any) -> Any:
    """An immediate operand: an exact int32 for the bitvec ops, else fp32."""
    if op in _BITVEC and isinstance(value, (numbers.Integral, numpy.integer)) and not isinstance(value, bool):
        return int(value)
    return float(value)


def _true_division(op: Any, dtype: Any, default: Any) -> Any:
    """x / y of integers is a float (true division, as numpy's), unless dtype says otherwise."""
    return "fp32" if op == "divide" and dtype is None and not _core.is_float(default) else default


def _scalar_op(api: str, x: Any, op: Any, operand: Any, dtype: Any, mask: Any, engine: str = "dve",
               reverse: Any = False) -> Tensor:
    view = _onchip(x, api, "x")
    out_dtype = _true_division(op, dtype, _dtype_or(dtype, view.buffer.dtype, api))
    tile = _new("sbuf", view.shape, out_dtype, api)
    dst, src = _mask_views(mask, [tile._view, view], api)
    if not _empty([dst]):
        _record(engine, "tensor_scalar", [dst], [src], api, src=src, op0=op, x0=_immediate(op, operand),
                reverse=1 if reverse else 0)
    return tile


# ALU ops by NKI's function names.
_ALU_NAMES = dict(ALU_ALIASES, amax="max", amin="min", sum="add", prod="multiply", true_divide="divide")


def _alu(name: str, api: str) -> Any:
    return _instruction_name(name, _ALU_NAMES, ALU_OPS, "operator", api)


def _binary_function(name: str) -> Any:
    def function(x: Any, y: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Any:
        return _binary(f"nl.{name}", x, y, _alu(name, f"nl.{name}"), dtype=dtype, mask=mask)
    function.__name__ = name
    function.__qualname__ = name
    function.__doc__ = f"nl.{name}(x, y): element-wise, a tile with a tile (same shape, or [P, 1] broadcast along " \
                       "the free dimensions) or a number, on the vector engine."
    setattr(function, "_alu", _ALU_NAMES.get(name, name))
    return function


for _name in ("add", "subtract", "multiply", "divide", "maximum", "minimum", "power", "equal", "not_equal",
              "greater", "greater_equal", "less", "less_equal", "bitwise_and", "bitwise_or", "bitwise_xor",
              "left_shift", "right_shift", "logical_and", "logical_or", "logical_xor"):
    globals()[_name] = _binary_function(_name)
del _name
# What the loop made, for type checkers (each is documented by its __doc__).
add: Callable[..., Tensor]
subtract: Callable[..., Tensor]
multiply: Callable[..., Tensor]
divide: Callable[..., Tensor]
maximum: Callable[..., Tensor]
minimum: Callable[..., Tensor]
power: Callable[..., Tensor]
equal: Callable[..., Tensor]
not_equal: Callable[..., Tensor]
greater: Callable[..., Tensor]
greater_equal: Callable[..., Tensor]
less: Callable[..., Tensor]
less_equal: Callable[..., Tensor]
bitwise_and: Callable[..., Tensor]
bitwise_or: Callable[..., Tensor]
bitwise_xor: Callable[..., Tensor]
left_shift: Callable[..., Tensor]
right_shift: Callable[..., Tensor]
logical_and: Callable[..., Tensor]
logical_or: Callable[..., Tensor]
logical_xor: Callable[..., Tensor]


def _binary(api: str, x: Any, y: Any, op: str, dtype: Any = None, mask: Any = None, engine: str = "dve") -> Tensor:
    """x op y: tensor_tensor for two tiles of one shape (free axes of size 1 broadcast with stride
    0), tensor_scalar for a number or a [P, 1] tile."""
    x_tile, y_tile = isinstance(x, Tensor), isinstance(y, Tensor)
    if not x_tile and not y_tile:
        fail("needs at least one tile operand", api)
    for value, what in ((x, "x"), (y, "y")):
        if not isinstance(value, (Tensor, numbers.Number)):
            fail(f"{what} is a {type(value).__name__}; it is a tile or a number", api)
    if not y_tile or not x_tile:
        tile, number, reverse = (x, y, False) if x_tile else (y, x, True)
        return _scalar_op(api, tile, op, number, dtype, mask, engine, reverse)
    a, b = _onchip(x, api, "x"), _onchip(y, api, "y")
    out_dtype = _true_division(op, dtype, _dtype_or(dtype, promote(a.buffer.dtype, b.buffer.dtype), api))
    if a.shape[0] != b.shape[0]:
        if 1 not in (a.shape[0], b.shape[0]):
            fail(f"number of partitions (dimension 0 size of a tile) mismatch in parameters (x{list(a.shape)}, "
                 f"y{list(b.shape)})", api)
        # numpy broadcasting along partitions: the tensor engine replicates the row.
        if a.shape[0] == 1:
            a = _partition_broadcast(a, b.shape[0], api)
        else:
            b = _partition_broadcast(b, a.shape[0], api)
    if _free_size(b) == 1 and _free_size(a) != 1:
        return _tile_scalar(api, a, b, op, out_dtype, mask, engine, reverse=False)
    if _free_size(a) == 1 and _free_size(b) != 1:
        return _tile_scalar(api, b, a, op, out_dtype, mask, engine, reverse=True)
    shape = _broadcast_shapes(a.shape + (1,) * (len(b.shape) - len(a.shape)),
                              b.shape + (1,) * (len(a.shape) - len(b.shape)), api)   # tiles: partition first
    a = _broadcast_to(a, shape, api) if a.shape != shape else a
    b = _broadcast_to(b, shape, api) if b.shape != shape else b
    if a.buffer.space == "psum" and b.buffer.space == "psum":
        fail("both inputs are in PSUM; the vector engine reads at most one input from PSUM (nl.copy one to SBUF)",
             api)
    tile = _new("sbuf", shape, out_dtype, api)
    dst, a, b = _mask_views(mask, [tile._view, a, b], api)
    if not _empty([dst]):
        _record(engine, "tensor_tensor", [dst], [a, b], api, a=a, b=b, op=op)
    return tile


def _broadcast_shapes(a: Any, b: Any, api: str) -> Any:
    if len(a) != len(b):
        size = builtins.max(len(a), len(b))
        a, b = (1,) * (size - len(a)) + a, (1,) * (size - len(b)) + b
    shape = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            fail(f"shapes {list(a)} and {list(b)} do not broadcast", api)
        shape.append(builtins.max(x, y))
    return tuple(shape)


def _tile_scalar(api: str, data: Any, column: Any, op: Any, out_dtype: Any, mask: Any, engine: str,
                 reverse: Any) -> Tensor:
    tile = _new("sbuf", data.shape, out_dtype, api)
    dst, src, column = _mask_views(mask, [tile._view, data, column], api)
    if not _empty([dst]):
        _record(engine, "tensor_scalar", [dst], [src, column], api, src=src, op0=op, x0=column,
                reverse=1 if reverse else 0)
    return tile


def _in_place(view: View, other: Any, op: Any, api: str) -> None:
    """view op= other, in place. A matmul result that was just made accumulates into PSUM."""
    if isinstance(other, Tensor):
        if other._view.buffer.space != "hbm" and other._view.buffer.first is None:
            return   # never computed (its operation's mask kept nothing): nothing to add
        op_record = fresh(other)
        if op_record is not None and op_record.kind == "matmul" and op == "add" and view.buffer.space == "psum" \
                and _core_shape(other._view.shape) == _core_shape(view.shape):
            box = view.byte_box()
            zeroing = view.buffer.zeroing
            if zeroing is not None and not builtins.any(_core.overlap(box, seen) for seen in zeroing[1]):
                op_record.args["overwrites_zeros"] = True   # onto nl.zeros or a new tile: overwrite
            else:
                op_record.args["accumulate"] = True
            retarget(other, op_record, view)    # records the box as touched
            return
    if view.buffer.space == "hbm":
        unsupported(api, "arithmetic on HBM tensors (load, compute, store)")
    target = _onchip(Tensor(view), api, "target")
    if isinstance(other, numbers.Number):
        _record("dve", "tensor_scalar", [target], [target], api, src=target, op0=op, x0=_immediate(op, other),
                reverse=0)
        return
    src = _onchip(other, api, "value")
    if _free_size(src) == 1 and _free_size(target) != 1:
        _record("dve", "tensor_scalar", [target], [target, src], api, src=target, op0=op, x0=src, reverse=0)
        return
    if src.shape != target.shape:
        src = _broadcast_to(src, target.shape, api) if len(src.shape) <= len(target.shape) else src
    _record("dve", "tensor_tensor", [target], [target, src], api, a=target, b=src, op=op)


def _core_shape(shape: Any) -> Any:
    return tuple(s for s in shape if s != 1)


# -- reductions ----------------------------------------------------------------------------------------

def _reduce(api: str, op: Any, x: Any, axis: Any, dtype: Any, keepdims: Any, mask: Any, negate: Any = False) -> Tensor:
    view = _onchip(x, api, "x")
    ndim = len(view.shape)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    try:
        axes = sorted({(_core._int(a) % ndim) for a in axes})
    except ZeroDivisionError:
        axes = []
    if 0 in axes:
        unsupported(api, "reducing along the partition dimension (axis 0); vtrn reduces free dimensions "
                         "(nisa.tensor_partition_reduce, or a matmul by a ones vector, reduce partitions)")
    if not axes:
        fail("axis names no dimension to reduce", api)
    kept = [a for a in range(1, ndim) if a not in axes]
    # Reduced axes innermost, so that the engine reduces consecutive runs.
    order = [0] + kept + axes
    src = View(view.buffer, tuple(view.shape[a] for a in order), tuple(view.strides[a] for a in order), view.offset,
               view.partition, 0, tuple(view.vars[a] for a in order))
    if keepdims:
        out_shape = tuple(1 if a in axes else view.shape[a] for a in range(ndim))
    else:
        out_shape = tuple(view.shape[a] for a in range(ndim) if a not in axes)
    out_dtype = _dtype_or(dtype, view.buffer.dtype, api)
    tile = _new("sbuf", out_shape, out_dtype, api)
    dst = tile._view
    if mask is not None:
        # The mask is over the input's index space: cut the input; the output keeps its kept axes' cut.
        (src,) = _mask_views(mask, [view], api)
        src = View(src.buffer, tuple(src.shape[a] for a in order), tuple(src.strides[a] for a in order), src.offset,
                   src.partition, 0, tuple(src.vars[a] for a in order))
        boxes = {}
        for position, a in enumerate([0] + kept):
            target_axis = a if keepdims else position
            if src.shape[position] != view.shape[a]:
                boxes[target_axis] = (0, src.shape[position])
        dst = dst.restrict(boxes)
    if not _empty([dst]) and not _empty([src]):
        _record("dve", "tensor_reduce", [dst], [src], api, src=src, op=op, negate=negate)
    return tile


def _reduction(name: str, op: Any) -> Any:
    def function(x: Any, axis: Any, dtype: Any = None, keepdims: bool = False, mask: Any = None, **kwargs: Any) -> Any:
        return _reduce(f"nl.{name}", op, x, axis, dtype, keepdims, mask)
    function.__name__ = name
    function.__qualname__ = name
    function.__doc__ = f"nl.{name}(x, axis, dtype=None, keepdims=False): reduces free axes (vector engine)."
    setattr(function, "_alu", op)
    return function


sum = _reduction("sum", "add")  # noqa: A001 (NKI's names)
max = _reduction("max", "max")  # noqa: A001
min = _reduction("min", "min")  # noqa: A001
prod = _reduction("prod", "multiply")


def mean(x: Any, axis: Any, dtype: Any = None, keepdims: bool = False, mask: Any = None, **kwargs: Any) -> Tensor:
    """nl.mean: the sum over ``axis`` times 1/n."""
    api = "nl.mean"
    total = _reduce(api, "add", x, axis, dtype, keepdims, mask)
    view = x._view
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    count = math.prod(view.shape[a % len(view.shape)] for a in axes)
    out = total._view
    _record("dve", "tensor_scalar", [out], [out], api, src=out, op0="multiply", x0=1.0 / count, reverse=0)
    return total


def var(x: Any, axis: Any, dtype: Any = None, keepdims: bool = False, mask: Any = None, **kwargs: Any) -> Tensor:
    """nl.var: the mean of squared deviations from the mean over ``axis`` (population variance)."""
    api = "nl.var"
    centre = mean(x, axis, dtype="float32", keepdims=True, mask=mask)
    deviation = _binary(api, x, centre, "subtract", dtype="float32", mask=mask)
    squared = _binary(api, deviation, deviation, "multiply", dtype="float32", mask=mask)
    return mean(squared, axis, dtype=dtype or x.dtype, keepdims=keepdims, mask=mask)


def all(x: Any, axis: Any, dtype: Any = None, keepdims: bool = False, mask: Any = None,
        **kwargs: Any) -> Tensor:  # noqa: A001
    """Logical AND over ``axis`` (the free axes) on the vector engine: 1.0 where every element is nonzero."""
    return _reduce("nl.all", _alu("logical_and", "nl.all"), x, axis, dtype, keepdims, mask)


def any(x: Any, axis: Any, dtype: Any = None, keepdims: bool = False, mask: Any = None,
        **kwargs: Any) -> Tensor:  # noqa: A001
    """Logical OR over ``axis`` (the free axes) on the vector engine: 1.0 where some element is nonzero."""
    return _reduce("nl.any", _alu("logical_or", "nl.any"), x, axis, dtype, keepdims, mask)


# -- matrices -------------------------------------------------------------------------------------------

def matmul(x: Any, y: Any, transpose_x: Any = False, mask: Any = None, **kwargs: Any) -> Any:
    """Logical OR over ``axis`` (the free axes) on the vector engine: 1.0 where some element is nonzero."""
    """Logical AND over ``axis`` (the free axes) on the vector engine: 1.0 where every element is nonzero."""
    """x @ y on the tensor engine into a new fp32 PSUM tile. With ``transpose_x`` x is already
    [K, M] (the stationary layout); otherwise x [M, K] is transposed first (on the PE, via PSUM)."""
    api = "nl.matmul"
    from . import isa
    if not transpose_x:
        x_view = _onchip(x, api, "x")
        transposed = _transpose(api, x_view, "pe")
        x = copy(transposed, dtype=x.dtype)
    return isa._nc_matmul(api, x, y, mask=mask)


def _identity(dtype: Any, size: Any, api: str) -> Any:
    """An identity tile [size, size] of ``dtype`` in SBUF, made once per kernel."""
    trace = current(api)
    cache = trace.__dict__.setdefault("identities", {})
    found = cache.get((dtype, size))
    if found is None:
        ones = _new("sbuf", (size, size), dtype, api)
        _record("dve", "memset", [ones._view], [], api, value=1.0)
        found = _new("sbuf", (size, size), dtype, api)._view
        _record("pool", "affine_select", [found], [ones._view], api, steps=[-1], offset=0, channel_multiplier=1,
                cmp="equal", on_true=ones._view, on_false=0.0)
        cache[(dtype, size)] = found
    return found


def _transpose_as_matmul(op: Any, target: Any, api: str) -> None:
    """Replaces the trace's last op, a PE transpose, by stationary.T @ identity into ``target``."""
    trace = current(api)
    assert trace.ops[-1] is op
    trace.ops.pop()
    source = op.args["src"]
    temporary = op.writes[0].buffer
    temporary.first = temporary.last = None
    if source.buffer.space != "sbuf":
        source = copy(Tensor(source), dtype=_core.numpy_dtype(source.buffer.dtype))._view
    if source.buffer.dtype not in ("fp32",) and not _core.is_float(source.buffer.dtype):
        fail("transposes an integer tile into a tile of another dtype; the PE multiplies floats", api)
    identity = _identity(source.buffer.dtype, source.shape[0], api)
    _record("pe", "matmul", [target], [source, identity], api, stationary=source, moving=identity, accumulate=False)


def transpose(x: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> Tensor:
    """The 2-D transpose of a tile, on the tensor engine, into PSUM."""
    api = "nl.transpose"
    view = _onchip(x, api, "x")
    return _transpose(api, view, "pe", dtype)


def _transpose(api: str, view: View, engine: str, dtype: Any = None) -> Tensor:
    if len(view.shape) != 2:
        fail(f"x has shape {list(view.shape)}; transpose takes a 2-D tile [P, F]", api)
    p, f = view.shape
    limit = PMAX if engine == "pe" else 32
    if f > limit or p > limit:
        fail(f"x has shape {[p, f]}; the {'tensor' if engine == 'pe' else 'vector'} engine transposes at most "
             f"{limit} x {limit}", api)
    out_dtype = _dtype_or(dtype, view.buffer.dtype, api)
    space = "psum" if engine == "pe" else "sbuf"
    tile = _new(space, (f, p), out_dtype, api)
    _record(engine, "transpose", [tile._view], [view], api, src=view)
    return tile


def softmax(x: Any, axis: Any, dtype: Any = None, compute_dtype: Any = None, mask: Any = None, **kwargs: Any) -> Any:
    """nl.softmax over the free axis ``axis`` (max, exp with a running sum, reciprocal, scale)."""
    api = "nl.softmax"
    view = _onchip(x, api, "x")
    if len(view.shape) != 2 or axis not in (1, -1):
        unsupported(api, "softmax of tiles other than [P, F] along axis 1")
    peak = _reduce(api, "max", x, 1, "fp32", True, None, negate=True)
    out_dtype = _dtype_or(dtype, view.buffer.dtype, api)
    total = _new("sbuf", (view.shape[0], 1), "fp32", api)
    exps = _activate(api, "exp", x, dtype="float32", bias=peak, reduce_out=total._view)
    inverse = reciprocal(total)
    return _binary(api, exps, inverse, "multiply", dtype=numpy.dtype(_core.numpy_dtype(out_dtype)))


def where(condition: Any, x: Any, y: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> NoReturn:
    """Data-dependent selection: not supported by vtrn.nki yet (nisa.affine_select selects by index)."""
    unsupported("nl.where", "data-dependent selection (nisa.affine_select selects by index)")


def dropout(x: Any, rate: Any, dtype: Any = None, mask: Any = None, **kwargs: Any) -> NoReturn:
    """Dropout needs random numbers: not supported by vtrn.nki yet."""
    unsupported("nl.dropout", "random numbers")


def rand(shape: Any, dtype: Any = float32, **kwargs: Any) -> NoReturn:
    """Random numbers: not supported by vtrn.nki yet."""
    unsupported("nl.rand", "random numbers")


def __getattr__(name: str) -> NoReturn:
    """Names of NKI's module that vtrn.nki does not have yet raise NKIUnsupportedAttribute."""
    if name.startswith("__"):
        raise AttributeError(name)
    raise _core.NKIUnsupportedAttribute(f"nl.{name}")
