"""nki.isa (``import nki.isa as nisa``) for vtrn: one function per NeuronCore instruction, each
recorded as the vtrn instruction of the same meaning on the engine NKI runs it on.

Both of NKI's calling conventions work: the one that returns a new tile
(``res = nisa.nc_matmul(stationary, moving)``) and the one that writes a given tile
(``nisa.nc_matmul(dst, stationary, moving)`` or ``dst=``), told apart by the arguments.
"""

import math
import numbers
from typing import Any, NoReturn

from .._library import ALU_OPS
from . import _core
from . import language as nl
from ._core import (
    GEMM_MOVING_FMAX,
    GEMM_STATIONARY_FMAX,
    PMAX,
    Index,
    Mask,
    current,
    fail,
    unsupported,
    vtrn_dtype,
)
from ._tensor import Tensor, assign


class engine:
    """nki.isa.engine: which engine runs an instruction (``unknown`` lets vtrn choose as NKI does)."""
    unknown = "unknown"
    tensor = "pe"
    vector = "dve"
    scalar = "act"
    activation = "act"
    gpsimd = "pool"
    sync = "sp"


# The legacy module-level names of the engines.
tensor_engine = engine.tensor
vector_engine = engine.vector
scalar_engine = engine.scalar
gpsimd_engine = engine.gpsimd
unknown_engine = engine.unknown
dma_engine = "dma"


class matmul_perf_mode:
    """nki.isa.matmul_perf_mode: double_row (trn2, fp8) runs two rows per PE pass."""
    none = "none"
    double_row = "double_row"
    double_row_gen3 = "double_row_gen3"


class reduce_cmd:
    """nki.isa.reduce_cmd for activation's reduction register."""
    idle = "idle"
    reset = "reset"
    reduce = "reduce"
    reset_reduce = "reset_reduce"
    load_reduce = "load_reduce"


class oob_mode:
    """nisa.oob_mode: what an indirect DMA does with an index outside the table (``dma_copy(oob_mode=)``)."""

    error = "error"
    skip = "skip"


class dge_mode:
    """nisa.dge_mode: the DMA descriptor generation mode; accepted and ignored (vtrn has one DMA model)."""

    unknown = "unknown"
    none = "none"
    swdge = "swdge"
    hwdge = "hwdge"


class nc_version:
    """nisa.nc_version: NeuronCore generations (gen2 = trn1, gen3 = trn2), for ``nisa.get_nc_version()``."""

    gen2 = 2
    gen3 = 3


def get_nc_version() -> Any:
    """The NeuronCore generation of the device the kernel is traced for (trn1: gen2, trn2: gen3)."""
    trace = current("nisa.get_nc_version")
    return nc_version.gen3 if trace.target["name"] == "trn2" else nc_version.gen2


def _op_name(op: Any, api: str, what: str = "op") -> Any:
    """The vtrn ALU op of an NKI operator (nl.add, nl.maximum, numpy.add...)."""
    name = getattr(op, "_alu", None)
    if name is None:
        name = getattr(op, "__name__", None)
        if name is not None:
            name = nl._ALU_NAMES.get(name, name)
    if name is None or name not in ALU_OPS:
        if name in nl._ALU_NAMES.values() or name in ("logical_and", "logical_or", "logical_xor"):
            unsupported(api, f"the operator {name} is not in vtrn's instruction set yet")
        fail(f"{what} {op!r} is not an ALU operator (nl.add, nl.subtract, nl.multiply, nl.maximum, ...)", api)
    return name


def _activation_name(op: Any, api: str) -> Any:
    name = getattr(op, "_activation", None) or getattr(op, "__name__", None)
    if name is None:
        fail(f"op {op!r} is not an activation function (nl.exp, nl.tanh, nl.copy...)", api)
    if name == "copy":
        return "copy"
    return nl._activation_function(name, api)


def _engine(value: Any, allowed: Any, default: Any, api: str) -> Any:
    if value is None or value == engine.unknown:
        return default
    if value not in allowed:
        names = {"pe": "tensor", "dve": "vector", "act": "scalar", "pool": "gpsimd"}
        fail(f"engine {names.get(value, value)} cannot run this instruction (it runs on "
             f"{', '.join(names[e] for e in allowed)})", api)
    return value


def _leading_dst(args: Any, dst: Any) -> Any:
    """NKI 0.2's convention for functions whose first argument is otherwise not a tile: a tile
    first is the destination. Returns (dst, the other positional arguments)."""
    args = list(args)
    if dst is None and args and isinstance(args[0], Tensor):
        dst = args.pop(0)
    return dst, args


def _finish(dst: Any, result: Tensor, api: str) -> Tensor:
    """The dst= convention: the result lands in dst."""
    if dst is None:
        return result
    if not isinstance(dst, Tensor):
        fail(f"dst is a {type(dst).__name__}; it is a tile", api)
    assign(dst._view, result, api)
    return dst


# -- the tensor engine --------------------------------------------------------------------------------

def nc_matmul(*positional: Any, is_stationary_onezero: Any = False, is_moving_onezero: Any = False,
              is_transpose: Any = False, tile_position: Any = (),
              tile_size: Any = (), mask: Any = None, dst: Any = None, accumulate: Any = None, perf_mode: Any = None,
              **kwargs: Any) -> Any:
    """stationary[K, M].T @ moving[K, N] on the tensor engine: a new fp32 PSUM tile [M, N]
    (or into ``dst``; ``accumulate=True`` adds to it). K <= 128, M <= 128, N <= 512."""
    api = "nisa.nc_matmul"
    args = list(positional)
    if dst is None and len(args) == 3:
        dst = args.pop(0)
    stationary = args[0] if args else kwargs.pop("stationary")
    moving = args[1] if len(args) > 1 else kwargs.pop("moving")
    # is_transpose: the PE transposes stationary by multiplying it with moving, an identity the
    # kernel supplies; that is exactly the matmul stationary.T @ moving, so it runs as one.
    if perf_mode not in (None, "none", matmul_perf_mode.none):
        if perf_mode not in (matmul_perf_mode.double_row, matmul_perf_mode.double_row_gen3):
            fail(f"perf_mode {perf_mode!r} is not none or double_row", api)
        if get_nc_version() < nc_version.gen3:
            fail("perf_mode double_row needs a NeuronCore-v3 (trn2); this kernel is traced for trn1", api)
        for operand, what in ((stationary, "stationary"), (moving, "moving")):
            if not isinstance(operand, Tensor) or not operand._view.buffer.dtype.startswith("fp8"):
                fail(f"perf_mode double_row takes float8 operands; {what} is "
                     f"{getattr(operand, 'dtype', type(operand).__name__)}", api)
    if dst is not None and accumulate is None:
        # NKI 0.2+: the first matmul into a PSUM tile overwrites it, the next ones accumulate, until
        # something reads it.
        group = dst._view.buffer.group
        accumulate = group is not None and _core.overlap(group, dst._view.byte_box())
    result = _nc_matmul(api, stationary, moving, mask=mask, tile_position=tile_position, tile_size=tile_size)
    if dst is not None and accumulate:
        nl._in_place(dst._view, result, "add", api)
        return dst
    return _finish(dst, result, api)


def _nc_matmul(api: str, stationary: Any, moving: Any, mask: Any = None, tile_position: Any = (),
               tile_size: Any = ()) -> Tensor:
    s = nl._onchip(stationary, api, "stationary")
    m = nl._onchip(moving, api, "moving")
    # The tensor engine reads SBUF: an operand in PSUM (a transpose's result) goes through SBUF,
    # copied by the scalar engine, as NKI's compiler stages it.
    if s.buffer.space == "psum":
        s = nl.copy(Tensor(s), dtype=_core.numpy_dtype(s.buffer.dtype))._view
    if m.buffer.space == "psum":
        m = nl.copy(Tensor(m), dtype=_core.numpy_dtype(m.buffer.dtype))._view
    k, mm, n = s.shape[0], nl._free_size(s), nl._free_size(m)
    if m.shape[0] != k:
        fail(f"stationary has {k} partitions (K) but moving has {m.shape[0]}; both hold the contraction "
             f"dimension K on their partitions", api)
    if k > PMAX:
        fail(f"the contraction dimension K is {k}; at most {PMAX}", api)
    if mm > GEMM_STATIONARY_FMAX:
        fail(f"stationary has free size {mm}; at most {GEMM_STATIONARY_FMAX} (nl.tile_size.gemm_stationary_fmax)",
             api)
    if n > GEMM_MOVING_FMAX:
        fail(f"moving has free size {n}; at most {GEMM_MOVING_FMAX} (nl.tile_size.gemm_moving_fmax)", api)
    types = {s.buffer.dtype, m.buffer.dtype}
    if "fp32" in types and len(types) > 1:
        fail(f"stationary is {_core._VTRN_TO_NUMPY[s.buffer.dtype]} and moving is "
             f"{_core._VTRN_TO_NUMPY[m.buffer.dtype]}: a matmul with a float32 input takes float32 for both", api)
    if tile_position or tile_size:
        _check_tiling(api, tile_position, tile_size, k, mm)
    tile = nl._new("psum", (mm, n), "fp32", api)
    dst = tile._view
    if mask is not None:
        dst, s, m = _masked_matmul(mask, dst, s, m, api)
        if nl._empty([dst]):
            return tile
    nl._record("pe", "matmul", [dst], [s, m], api, stationary=s, moving=m, accumulate=False)
    return tile


def _masked_matmul(mask: Any, dst: Any, stationary: Any, moving: Any, api: str) -> Any:
    """A mask over a matmul's [M, N] result cuts stationary's free axis (M) and moving's (N)."""
    (cut,) = nl._mask_views(mask, [dst], api)
    if cut.shape == dst.shape:
        return dst, stationary, moving
    boxes = _core_boxes(cut, dst)
    m_box = boxes.get(0, (0, dst.shape[0]))
    n_box = boxes.get(1, (0, dst.shape[1]))
    if m_box[1] <= m_box[0] or n_box[1] <= n_box[0]:
        return cut, stationary, moving
    s = stationary.index((slice(None), slice(*m_box)), api) if len(stationary.shape) == 2 else stationary
    m = moving.index((slice(None), slice(*n_box)), api) if len(moving.shape) == 2 else moving
    return cut, s, m


def _core_boxes(part: Any, whole: Any) -> Any:
    from ._tensor import _boxes
    return _boxes(part, whole)


def _check_tiling(api: str, position: Any, size: Any, k: Any, m: Any) -> None:
    """tile_position/tile_size: the PE array split in row and column tiles of 32, 64 or 128."""
    if len(position) != 2 or len(size) != 2:
        fail("tile_position and tile_size are (row, column) pairs, given together", api)
    for value in tuple(position) + tuple(size):
        if not isinstance(value, numbers.Integral) or value < 0:
            fail(f"tile_position {position} / tile_size {size}: non-negative ints", api)
    if size[0] not in (32, 64, 128) or size[1] not in (32, 64, 128):
        fail(f"tile_size {tuple(size)}: each of row and column is 32, 64 or 128", api)
    if position[0] % size[0] or position[1] % size[1] or position[0] + size[0] > 128 or position[1] + size[1] > 128:
        fail(f"tile_position {tuple(position)} with tile_size {tuple(size)} is not a tile of the 128 x 128 array",
             api)
    if k > size[0] or m > size[1]:
        fail(f"K={k}, M={m} do not fit tile_size {tuple(size)} (K <= rows, M <= columns)", api)


def nc_transpose(*positional: Any, mask: Any = None, dtype: Any = None, engine: str = engine.unknown, dst: Any = None,
                 **kwargs: Any) -> Tensor:
    """A 2-D transpose [P, F] -> [F, P]: on the tensor engine into PSUM (up to 128 x 128), or on
    the vector engine into SBUF (up to 32 x 32). ``engine.unknown`` picks the vector engine for
    tiles that fit it, as NKI does."""
    api = "nisa.nc_transpose"
    args = list(positional)
    if dst is None and len(args) == 2:
        dst = args.pop(0)
    data = args[0] if args else kwargs.pop("data")
    view = nl._onchip(data, api, "data")
    p, f = (view.shape + (1,))[:2] if len(view.shape) < 2 else view.shape[:2]
    small = p <= 32 and f <= 32
    chosen = _engine(engine, ("pe", "dve"), "dve" if small and _has_vector_transpose() else "pe", api)
    if chosen == "dve" and not _has_vector_transpose():
        unsupported(api, "transposes on the vector engine (this libvtrn has only the tensor engine's)")
    return _finish(dst, nl._transpose(api, view, chosen, dtype), api)


def _has_vector_transpose() -> Any:
    from .._library import lib
    return hasattr(lib, "vtrn_program_transpose_on") and "vtrn_program_transpose_on" not in \
        getattr(lib, "missing_functions", ())


# -- the scalar engine --------------------------------------------------------------------------------

def activation(*args: Any, bias: Any = None, scale: Any = 1.0, reduce_op: Any = None, reduce_res: Any = None,
               reduce_cmd: Any = reduce_cmd.idle, mask: Any = None,
               dtype: Any = None, dst: Any = None, **kwargs: Any) -> Tensor:
    """op(data * scale + bias) on the scalar engine; ``scale`` a number or a [P, 1] tile, ``bias`` a
    [P, 1] tile. With ``reduce_op=nl.add`` and ``reduce_res`` (a [P, 1] tile), the free-axis sum
    of the results lands there too."""
    api = "nisa.activation"
    dst, args = _leading_dst(args, dst)
    op = args[0] if args else kwargs.pop("op")
    data = args[1] if len(args) > 1 else kwargs.pop("data")
    function = _activation_name(op, api)
    out = None
    if reduce_op is not None or reduce_res is not None:
        if reduce_op is None or reduce_res is None:
            fail("reduce_op and reduce_res are given together", api)
        if _op_name(reduce_op, api, "reduce_op") != "add":
            unsupported(api, "reduce_op other than nl.add")
        view = nl._onchip(data, api, "data")
        out = nl._column(reduce_res, api, "reduce_res", view.shape[0])
    if bias is not None and isinstance(bias, numbers.Number):
        unsupported(api, "a number as bias (give a [P, 1] tile)")
    result = nl._activate(api, function, data, dtype=dtype, scale=scale, bias=bias, reduce_out=out, mask=mask)
    return _finish(dst, result, api)


def activation_reduce(*args: Any, reduce_op: Any = None, reduce_res: Any = None, bias: Any = None, scale: Any = 1.0,
                      mask: Any = None, dtype: Any = None, **kwargs: Any) -> Tensor:
    """activation with its free-axis reduction into ``reduce_res``."""
    if reduce_op is None or reduce_res is None:
        fail("needs reduce_op and reduce_res", "nisa.activation_reduce")
    return activation(*args, bias=bias, scale=scale, reduce_op=reduce_op, reduce_res=reduce_res, mask=mask,
                      dtype=dtype, **kwargs)


# -- the vector engine --------------------------------------------------------------------------------

def tensor_tensor(*positional: Any, op: Any = None, dtype: Any = None, mask: Any = None, engine: str = engine.unknown,
                  dst: Any = None, **kwargs: Any) -> Tensor:
    """data1 op data2 element by element (vector engine, or gpsimd when asked)."""
    api = "nisa.tensor_tensor"
    args = list(positional)
    if dst is None and len(args) >= 3 and isinstance(args[2], Tensor):
        dst = args.pop(0)
    data1 = args[0] if args else kwargs.pop("data1")
    data2 = args[1] if len(args) > 1 else kwargs.pop("data2")
    if op is None:
        op = args[2] if len(args) > 2 else fail("op is missing", api)
    chosen = _engine(engine, ("dve", "pool"), "dve", api)
    if chosen == "pool":
        chosen = "dve"  # vtrn's TENSOR_TENSOR runs on the vector engine
    return _finish(dst, nl._binary(api, data1, data2, _op_name(op, api), dtype=dtype, mask=mask, engine=chosen), api)


def tensor_scalar(*positional: Any, op0: Any = None, operand0: Any = None, reverse0: Any = False, op1: Any = None,
                  operand1: Any = None, reverse1: Any = False,
                  dtype: Any = None, mask: Any = None, engine: str = engine.unknown, dst: Any = None,
                  **kwargs: Any) -> Tensor:
    """(data op0 operand0) op1 operand1, each operand a number or a [P, 1] tile broadcast along
    the free dimensions; ``reverse`` swaps an operation's sides. Vector, scalar or gpsimd engine."""
    api = "nisa.tensor_scalar"
    args = list(positional)
    if dst is None and len(args) >= 2 and isinstance(args[1], Tensor):
        dst = args.pop(0)
    names = ["data", "op0", "operand0", "reverse0", "op1", "operand1", "reverse1"]
    values = dict(zip(names, args))
    data = values.get("data", kwargs.pop("data", None))
    op0 = values.get("op0", op0)
    operand0 = values.get("operand0", operand0)
    reverse0 = values.get("reverse0", reverse0)
    op1 = values.get("op1", op1)
    operand1 = values.get("operand1", operand1)
    reverse1 = values.get("reverse1", reverse1)
    view = nl._onchip(data, api, "data")
    chosen = _engine(engine, ("dve", "act", "pool"), "dve", api)
    if op0 is None or operand0 is None:
        fail("op0 and operand0 are required", api)
    x0 = _operand(operand0, api, "operand0", view.shape[0], _op_name(op0, api, "op0"))
    x1 = None
    name1 = None
    if op1 is not None:
        if operand1 is None:
            fail("op1 needs operand1", api)
        name1 = _op_name(op1, api, "op1")
        x1 = _operand(operand1, api, "operand1", view.shape[0], name1)
    out_dtype = nl._dtype_or(dtype, view.buffer.dtype, api)
    tile = nl._new("sbuf", view.shape, out_dtype, api)
    dst_view, src = nl._mask_views(mask, [tile._view, view], api)
    if mask is not None:
        x0 = x0 if isinstance(x0, (int, float)) else nl._mask_views(mask, [tile._view, x0], api)[1]
        x1 = x1 if x1 is None or isinstance(x1, (int, float)) else nl._mask_views(mask, [tile._view, x1], api)[1]
    reads = [src] + [x for x in (x0, x1) if x is not None and not isinstance(x, (int, float))]
    if not nl._empty([dst_view]):
        nl._record(chosen, "tensor_scalar", [dst_view], reads, api, src=src, op0=_op_name(op0, api, "op0"), x0=x0,
                   op1=name1, x1=x1, reverse=(1 if reverse0 else 0) | (2 if reverse1 else 0))
    return _finish(dst, tile, api)


def _operand(value: Any, api: str, what: str, partitions: Any, op: Any = None) -> Any:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Number):
        return nl._immediate(op, value)
    return nl._column(value, api, what, partitions)


def scalar_tensor_tensor(*positional: Any, data: Any = None, op0: Any = None, operand0: Any = None, op1: Any = None,
                         operand1: Any = None, reverse0: Any = False,
                         reverse1: Any = False, dtype: Any = None, mask: Any = None, engine: str = engine.unknown,
                         dst: Any = None, **kwargs: Any) -> Tensor:
    """(data op0 operand0) op1 operand1 with operand0 a number or [P, 1] tile and operand1 a tile:
    a tensor_scalar then a tensor_tensor (vector engine)."""
    api = "nisa.scalar_tensor_tensor"
    args = list(positional)
    if dst is None and len(args) >= 1 and data is not None:
        dst = args.pop(0)
    names = ["data", "op0", "operand0", "op1", "operand1"]
    values = dict(zip(names, args))
    data = values.get("data", data)
    op0, operand0 = values.get("op0", op0), values.get("operand0", operand0)
    op1, operand1 = values.get("op1", op1), values.get("operand1", operand1)
    first = tensor_scalar(data, op0, operand0, reverse0=reverse0, dtype="float32", mask=mask)
    if reverse1:
        result = nl._binary(api, operand1, first, _op_name(op1, api, "op1"), dtype=dtype, mask=mask)
    else:
        result = nl._binary(api, first, operand1, _op_name(op1, api, "op1"), dtype=dtype, mask=mask)
    return _finish(dst, result, api)


def tensor_reduce(*args: Any, axis: Any = None, negate: Any = False, keepdims: bool = False, dtype: Any = None,
                  mask: Any = None, dst: Any = None, **kwargs: Any) -> Tensor:
    """op over the free axes ``axis`` of data (vector engine): add, max, min, multiply, and the
    bitwise and logical reductions."""
    api = "nisa.tensor_reduce"
    dst, args = _leading_dst(args, dst)
    op = args[0] if args else kwargs.pop("op")
    data = args[1] if len(args) > 1 else kwargs.pop("data")
    if axis is None:
        axis = args[2] if len(args) > 2 else fail("axis is required", api)
    name = _op_name(op, api)
    return _finish(dst, nl._reduce(api, name, data, axis, dtype, keepdims, mask, negate=negate), api)


def tensor_copy(*positional: Any, mask: Any = None, dtype: Any = None, engine: str = engine.unknown, dst: Any = None,
                **kwargs: Any) -> Tensor:
    """A copy of a tile (vector, scalar or gpsimd engine): bit exact when the dtypes match."""
    api = "nisa.tensor_copy"
    args = list(positional)
    if dst is None and len(args) == 2:
        dst = args.pop(0)
    src = args[0] if args else kwargs.pop("src")
    view = nl._onchip(src, api, "src")
    chosen = _engine(engine, ("dve", "act", "pool"), "dve", api)
    tile = nl._new("sbuf", view.shape, nl._dtype_or(dtype, view.buffer.dtype, api), api)
    dst_view, src_view = nl._mask_views(mask, [tile._view, view], api)
    if not nl._empty([dst_view]):
        nl._record(chosen, "tensor_copy", [dst_view], [src_view], api, src=src_view)
    return _finish(dst, tile, api)


def memset(*args: Any, value: Any = None, dtype: Any = None, mask: Any = None, engine: str = engine.unknown,
           dst: Any = None, **kwargs: Any) -> Any:
    """A new tile of ``shape`` filled with ``value`` (vector or gpsimd engine)."""
    api = "nisa.memset"
    dst, args = _leading_dst(args, dst)
    if dst is not None:
        value = args[0] if args else value
        view = nl._onchip(dst, api, "dst")
        (view,) = nl._mask_views(mask, [view], api)
        nl._memset_view(view, value, api, _engine(engine, ("dve", "pool"), "dve", api))
        return dst
    shape = args[0] if args else kwargs.pop("shape")
    value = args[1] if len(args) > 1 else value
    dtype = args[2] if len(args) > 2 else dtype
    if value is None or dtype is None:
        fail("shape, value and dtype are required", api)
    shape, partition_axis = nl._shape(shape, api)
    tile = nl._new("sbuf", shape, vtrn_dtype(dtype, api), api, partition_axis)
    (view,) = nl._mask_views(mask, [tile._view], api)
    nl._memset_view(view, value, api, _engine(engine, ("dve", "pool"), "dve", api))
    return tile


def _affine(expression: Any, shape: Any, api: str) -> Any:
    """(steps per free axis in shape order, offset, channel multiplier) of an index expression over
    a tile of ``shape``: the partition axis's variable gives the multiplier."""
    if isinstance(expression, numbers.Integral):
        return [0] * (len(shape) - 1), int(expression), 0
    if not isinstance(expression, Index):
        fail(f"expr is a {type(expression).__name__}; it is an affine expression of nl.arange indices", api)
    ndim = len(shape)
    steps = [0] * (ndim - 1)
    multiplier = 0
    for var, coefficient in expression.terms.items():
        if coefficient == 0:
            continue
        axis = ndim - 1 - expression.axes[var]
        if not 0 <= axis < ndim or shape[axis] != var.extent:
            fail(f"an index of size {var.extent} does not fit the tile shape {list(shape)}", api)
        if axis == 0:
            multiplier += coefficient
        else:
            steps[axis - 1] += coefficient
    return steps, expression.const, multiplier


def iota(*args: Any, dtype: Any = None, mask: Any = None, dst: Any = None, **kwargs: Any) -> Tensor:
    """A tile whose elements are an affine expression of their indices, e.g.
    nisa.iota(i_p * 512 + i_f, dtype=nl.int32) (gpsimd engine)."""
    api = "nisa.iota"
    dst, args = _leading_dst(args, dst)
    expression = args[0] if args else kwargs.pop("expr")
    if dtype is None:
        dtype = args[1] if len(args) > 1 else (dst.dtype if dst is not None else fail("dtype is required", api))
    if isinstance(expression, Index):
        shape = expression.shape
    elif dst is not None:
        shape = dst.shape
    else:
        fail("expr is an expression of nl.arange indices (its shape is the tile's)", api)
    if len(shape) < 2:
        shape = shape + (1,)
    steps, offset, multiplier = _affine(expression, shape, api)
    tile = nl._new("sbuf", shape, vtrn_dtype(dtype, api), api)
    (view,) = nl._mask_views(mask, [tile._view], api)
    nl._record("pool", "iota", [view], [], api, steps=steps, offset=offset, channel_multiplier=multiplier)
    return _finish(dst, tile, api)


def affine_select(*args: Any, pred: Any = None, on_true_tile: Any = None, on_false_value: Any = None,
                  dtype: Any = None, mask: Any = None, dst: Any = None,
                  **kwargs: Any) -> Tensor:
    """on_true_tile where the affine predicate of the element's indices holds, else
    on_false_value (causal masks), on the gpsimd engine."""
    api = "nisa.affine_select"
    dst, args = _leading_dst(args, dst)
    values = dict(zip(["pred", "on_true_tile", "on_false_value"], args))
    pred = values.get("pred", pred)
    on_true_tile = values.get("on_true_tile", on_true_tile)
    on_false_value = values.get("on_false_value", on_false_value)
    if not isinstance(pred, Mask) or len(pred.conditions) != 1:
        fail("pred is one affine comparison of nl.arange indices, e.g. (i_q - i_k >= 0)", api)
    if on_false_value is None or not isinstance(on_false_value, numbers.Number):
        fail("on_false_value is a number", api)
    view = nl._onchip(on_true_tile, api, "on_true_tile")
    expression, op = pred.conditions[0]
    compare = {"<": "less", "<=": "less_equal", ">": "greater", ">=": "greater_equal", "==": "equal",
               "!=": "not_equal"}[op]
    steps, offset, multiplier = _affine(expression, view.shape if len(view.shape) > 1 else view.shape + (1,), api)
    tile = nl._new("sbuf", view.shape, nl._dtype_or(dtype, view.buffer.dtype, api), api)
    dst_view, src = nl._mask_views(mask, [tile._view, view], api)
    nl._record("pool", "affine_select", [dst_view], [src], api, steps=steps, offset=offset,
               channel_multiplier=multiplier, cmp=compare, on_true=src,
            on_false=float(on_false_value))  # type: ignore[arg-type]  # a Number is a real here
    return _finish(dst, tile, api)


# -- DMA ----------------------------------------------------------------------------------------------

def dma_copy(*args: Any, dst: Any = None, src: Any = None, mask: Any = None, dst_rmw_op: Any = None,
             oob_mode: Any = oob_mode.error,
             dge_mode: Any = dge_mode.unknown, **kwargs: Any) -> Any:
    """dst = src through a DMA engine: HBM <-> SBUF, SBUF <-> SBUF, HBM <-> HBM."""
    api = "nisa.dma_copy"
    values = dict(zip(["dst", "src"], args))
    dst = values.get("dst", dst)
    src = values.get("src", src)
    if not isinstance(dst, Tensor) or not isinstance(src, Tensor):
        fail("dst and src are tensors", api)
    rmw = None
    if dst_rmw_op is not None:
        rmw = _op_name(dst_rmw_op, api, "dst_rmw_op")
        if rmw != "add":
            fail(f"dst_rmw_op {rmw} is not supported: NKI's DMA accumulates with nl.add only", api)
    if oob_mode not in (None, "error", 0, "skip", 1):
        fail(f"oob_mode {oob_mode!r} is not nisa.oob_mode.error or .skip", api)
    target, source = dst._view, src._view
    if isinstance(target, _core.IndirectView) or isinstance(source, _core.IndirectView):
        side = "src" if isinstance(source, _core.IndirectView) else "dst"
        target, source = nl._mask_views(mask, [target, source], api) if mask is not None else (target, source)
        nl._record_indirect(api, target, source, side, rmw, "skip" if oob_mode in ("skip", 1) else "error")
        return dst
    for view, what in ((target, "dst"), (source, "src")):
        if view.buffer.space == "psum":
            fail(f"{what} is in PSUM; the DMA engines do not reach PSUM", api)
    if math.prod(target.shape) != math.prod(source.shape):
        fail(f"dst has shape {list(target.shape)} and src {list(source.shape)}: DMA moves equal element counts", api)
    target, source = nl._mask_views(mask, [target, source], api) if mask is not None else (target, source)
    reads = [source, target] if rmw else [source]     # an accumulating DMA reads dst too
    nl._record("dma", "dma_copy", [target], reads, api, src=source, rmw=rmw)
    return dst


def _not_yet(name: str, detail: Any = "") -> Any:
    def function(*args: Any, **kwargs: Any) -> NoReturn:
        unsupported(f"nisa.{name}", detail)
    function.__name__ = name
    function.__doc__ = f"nisa.{name}: not supported by vtrn.nki yet (raises NKIUnsupportedError)."
    return function


def tensor_partition_reduce(*args: Any, mask: Any = None, dtype: Any = None, dst: Any = None, **kwargs: Any) -> Tensor:
    """op over the partitions of data [P, F] into [1, F]: add as a matmul by a ones vector on the
    tensor engine; max and min by transposing 128-column blocks on the PE, reducing their free
    axis on the vector engine and transposing back."""
    api = "nisa.tensor_partition_reduce"
    dst, args = _leading_dst(args, dst)
    op = args[0] if args else kwargs.pop("op")
    data = args[1] if len(args) > 1 else kwargs.pop("data")
    name = _op_name(op, api)
    view = nl._onchip(data, api, "data")
    if len(view.shape) != 2:
        unsupported(api, "data with more than one free dimension")
    partitions, free = view.shape
    out_dtype = nl._dtype_or(dtype, view.buffer.dtype, api)
    result = nl._new("sbuf", (1, free), out_dtype, api)
    if name == "add":
        source = view
        if view.buffer.space != "sbuf" or not _core.is_float(view.buffer.dtype):
            source = nl._new("sbuf", view.shape, "fp32", api)._view
            nl._record("act", "activate", [source], [view], api, function="copy", src=view, scale=1.0)
        ones_dtype = "fp32" if source.buffer.dtype == "fp32" else "bf16"
        if source.buffer.dtype not in ("fp32", "bf16"):
            staged = nl._new("sbuf", view.shape, "bf16", api)._view
            nl._record("act", "activate", [staged], [source], api, function="copy", src=source, scale=1.0)
            source = staged
        ones = nl._new("sbuf", (partitions, 1), ones_dtype, api)._view
        nl._record("dve", "memset", [ones], [], api, value=1.0)
        for start in range(0, free, GEMM_MOVING_FMAX):
            width = min(GEMM_MOVING_FMAX, free - start)
            moving = source.index((slice(None), slice(start, start + width)), api)
            total = nl._new("psum", (1, width), "fp32", api)._view
            nl._record("pe", "matmul", [total], [ones, moving], api, stationary=ones, moving=moving, accumulate=False)
            target = result._direct(api).index((slice(None), slice(start, start + width)), api)
            nl._record("act", "activate", [target], [total], api, function="copy", src=total, scale=1.0)
    elif name in ("max", "min"):
        for start in range(0, free, PMAX):
            width = min(PMAX, free - start)
            block = view.index((slice(None), slice(start, start + width)), api)
            flipped = nl._transpose(api, block, "pe")                       # [width, P] in PSUM
            column = nl._reduce(api, name, flipped, 1, "fp32", True, None)     # [width, 1]
            back = nl._transpose(api, column._direct(api), "pe")                    # [1, width] in PSUM
            target = result._direct(api).index((slice(None), slice(start, start + width)), api)
            nl._record("act", "activate", [target], [back._view], api, function="copy", src=back._view, scale=1.0)
    else:
        unsupported(api, f"the operator {name} (add, max and min are supported)")
    return _finish(dst, result, api)


def reciprocal(*positional: Any, dtype: Any = None, mask: Any = None, dst: Any = None, **kwargs: Any) -> Tensor:
    """1 / data, element by element (vector engine)."""
    api = "nisa.reciprocal"
    args = list(positional)
    if dst is None and len(args) == 2:
        dst = args.pop(0)
    data = args[0] if args else kwargs.pop("data")
    return _finish(dst, nl._scalar_op(api, data, "reciprocal", 0.0, dtype, mask), api)


def dma_transpose(*positional: Any, axes: Any = None, mask: Any = None, dtype: Any = None, dst: Any = None,
                  **kwargs: Any) -> Tensor:
    """A 2-D HBM tensor read transposed into SBUF by the DMA engine: tile[j, i] = src[i, j]."""
    api = "nisa.dma_transpose"
    args = list(positional)
    if dst is None and len(args) == 2:
        dst = args.pop(0)
    src = args[0] if args else kwargs.pop("src")
    if not isinstance(src, Tensor) or src._view.buffer.space != "hbm" or len(src.shape) != 2:
        unsupported(api, "sources other than a 2-D HBM tensor")
    if axes not in (None, (1, 0), [1, 0]):
        unsupported(api, f"axes {axes!r} (a 2-D transpose, axes=(1, 0))")
    return _finish(dst, nl.load(src.T, mask=mask, dtype=dtype), api)


def tensor_tensor_scan(*positional: Any, initial: Any = None, op0: Any = None, op1: Any = None, reverse0: Any = False,
                       reverse1: Any = False, dtype: Any = None,
                       mask: Any = None, dst: Any = None, **kwargs: Any) -> Tensor:
    """A scan along the free dimension of [P, F] tiles: r[:, 0] = op1(op0(data0[:, 0], initial),
    data1[:, 0]) and r[:, i] = op1(op0(data0[:, i], r[:, i - 1]), data1[:, i]). vtrn's vector
    engine has no scan instruction: it runs as two instructions per column, so its estimated
    time is that of the columns one by one."""
    api = "nisa.tensor_tensor_scan"
    args = list(positional)
    # NKI 0.2 puts dst first: (dst, data0, data1[, initial, op0, ...]); the tutorials' form is
    # (data0, data1[, initial, op0, ...]). A third tile is data1 when initial came by keyword, or
    # when the fourth argument is not an operator.
    if dst is None and len(args) >= 3 and isinstance(args[2], Tensor) and \
            (initial is not None or len(args) >= 4 and not callable(args[3])):
        dst = args.pop(0)
    values = dict(zip(["data0", "data1", "initial", "op0", "op1", "reverse0", "reverse1"], args))
    data0, data1 = values.get("data0", kwargs.pop("data0", None)), values.get("data1", kwargs.pop("data1", None))
    initial = values.get("initial", initial)
    op0, op1 = values.get("op0", op0), values.get("op1", op1)
    reverse0, reverse1 = values.get("reverse0", reverse0), values.get("reverse1", reverse1)
    if mask is not None:
        unsupported(api, "mask= on a scan")
    a, b = nl._onchip(data0, api, "data0"), nl._onchip(data1, api, "data1")
    if len(a.shape) != 2 or a.shape != b.shape:
        fail(f"data0 {list(a.shape)} and data1 {list(b.shape)} are [P, F] tiles of one shape", api)
    name0, name1 = _op_name(op0, api, "op0"), _op_name(op1, api, "op1")
    partitions, columns = a.shape
    out_dtype = nl._dtype_or(dtype, _core.promote(a.buffer.dtype, b.buffer.dtype), api)
    result = nl._new("sbuf", a.shape, out_dtype, api)
    if isinstance(initial, Tensor):
        previous = nl._column(initial, api, "initial", partitions)
    elif isinstance(initial, numbers.Number):
        previous = float(initial)  # type: ignore[arg-type]  # a Number is a real here (NKI's scalars)
    else:
        fail("initial is a number or a [P, 1] tile", api)
    for column in range(columns):
        target = result._direct(api).index((slice(None), slice(column, column + 1)), api)
        x0 = a.index((slice(None), slice(column, column + 1)), api)
        x1 = b.index((slice(None), slice(column, column + 1)), api)
        # op0(data0, previous), data0 on the left unless reverse0
        if isinstance(previous, float):
            nl._record("dve", "tensor_scalar", [target], [x0], api, src=x0, op0=name0, x0=previous,
                       reverse=1 if reverse0 else 0)
        else:
            left, right = (previous, x0) if reverse0 else (x0, previous)
            nl._record("dve", "tensor_tensor", [target], [left, right], api, a=left, b=right, op=name0)
        left, right = (x1, target) if reverse1 else (target, x1)
        nl._record("dve", "tensor_tensor", [target], [left, right], api, a=left, b=right, op=name1)
        previous = target
    return _finish(dst, result, api)


for _name in ("tensor_scalar_reduce", "tensor_copy_predicated",
              "range_select", "select_reduce", "bn_stats", "bn_aggr", "local_gather", "nc_n_gather",
              "dma_compute", "max8", "nc_find_index8", "nc_match_replace8", "nc_stream_shuffle", "dropout", "rng",
              "rand2", "sendrecv", "core_barrier", "nc_matmul_mx", "quantize_mx", "exponential",
              "tensor_scalar_cumulative", "sequence_bounds", "nonzero_with_count", "register_alloc",
              "register_load", "register_move", "register_store", "rand_set_state", "rand_get_state",
              "set_rng_seed"):
    globals()[_name] = _not_yet(_name)
del _name


def __getattr__(name: str) -> NoReturn:
    """Names of NKI's module that vtrn.nki does not have yet raise NKIUnsupportedAttribute."""
    if name.startswith("__"):
        raise AttributeError(name)
    raise _core.NKIUnsupportedAttribute(f"nisa.{name}")
