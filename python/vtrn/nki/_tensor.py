"""NKI's tensors and tiles as the kernel sees them: a view of a buffer with numpy-like indexing,
assignment and arithmetic. Operators are the nl functions of the same meaning."""

import numbers
from typing import Any, NoReturn

import numpy

from ._core import IndirectView, Op, View, current, fail, numpy_dtype


class Tensor:
    """An NKI tensor (in HBM) or tile (in SBUF or PSUM). ``shape``, ``dtype`` (a numpy dtype,
    equal to nl.float32 and friends), ``buffer`` (nl.sbuf, nl.psum, nl.shared_hbm...), indexing
    with ints, slices, nl.ds and nl.arange expressions, assignment into tiles, and operators."""
    __slots__ = ("_view", "__weakref__")

    def __init__(self, view: "View | IndirectView") -> None:
        self._view = view

    def _direct(self, api: str) -> View:
        """The tensor's view; NKIUnsupportedError for a tensor indexed by a tile, which only a DMA
        takes (a gather or scatter), as it is."""
        if isinstance(self._view, IndirectView):
            from ._core import unsupported
            unsupported(api, "indexing, reshaping or transposing a tensor indexed by a tile (it is an indirect "
                             "DMA's operand, as it is)")
        return self._view

    # -- description --

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape, the partition dimension first for a tile."""
        return tuple(self._view.shape)

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self._view.shape)

    @property
    def dtype(self) -> numpy.dtype[Any]:
        """The element type as a numpy dtype (ml_dtypes' for bf16 and fp8), equal to nl.float32 and friends."""
        return numpy_dtype(self._view.buffer.dtype)

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return self.dtype.itemsize

    @property
    def buffer(self) -> Any:
        """Where it lives: nl.sbuf, nl.psum, or nl.hbm / nl.shared_hbm / nl.private_hbm for a tensor."""
        from . import language
        buffer = self._view.buffer
        if buffer.space == "hbm":
            return {"input": language.hbm, "output": language.shared_hbm,
                    "scratch": language.private_hbm}.get(buffer.kind or "", language.hbm)
        return language.sbuf if buffer.space == "sbuf" else language.psum

    @property
    def name(self) -> str | None:
        """The name given to nl.ndarray (a kernel argument's for an input), or None."""
        name: str | None = self._view.buffer.name
        return name

    def __len__(self) -> int:
        return int(self._view.shape[0])

    def __repr__(self) -> str:
        buffer = self._view.buffer
        return f"<nki {buffer.space} tensor {list(self.shape)} {self.dtype.name}{' ' + buffer.name if buffer.name else ''}>"

    def __bool__(self) -> NoReturn:
        fail("a tensor has no truth value while a kernel is traced (data is not known until it runs); "
             "use masks, nl.where or nisa.affine_select for data-dependent choices")

    def __array__(self, *args: Any, **kwargs: Any) -> NoReturn:
        fail("a kernel tensor cannot become a numpy array while the kernel is traced: its data exists only "
             "when the kernel runs; return it from the kernel to read it")

    def __iter__(self) -> NoReturn:
        fail("iterating over a tensor is not supported; loop with nl.affine_range over indices instead")

    # -- views --

    def __getitem__(self, key: Any) -> "Tensor":
        return Tensor(self._direct("indexing").index(key, "indexing"))

    def reshape(self, shape: Any) -> "Tensor":
        """The same elements with another shape (a contiguous HBM tensor only), as numpy's reshape."""
        shape = tuple(shape) if not isinstance(shape, numbers.Integral) else (shape,)
        return Tensor(self._direct("reshape").reshape(shape, "reshape"))

    def broadcast_to(self, shape: Any) -> "Tensor":
        """nl.broadcast_to(self, shape): a [1, n] tile repeated over partitions, or size-1 free axes repeated."""
        from . import language
        result: Tensor = language.broadcast_to(self, shape)
        return result

    def expand_dims(self, axis: int) -> "Tensor":
        """A view with a new dimension of size 1 at ``axis`` (not before a tile's partition dimension)."""
        view = self._direct("expand_dims")
        axis = axis % (len(view.shape) + 1)
        if axis == 0 and view.buffer.space != "hbm":
            fail("cannot add a dimension before a tile's partition dimension", "expand_dims")
        shape = view.shape[:axis] + (1,) + view.shape[axis:]
        strides = view.strides[:axis] + (0,) + view.strides[axis:]
        vars_ = view.vars[:axis] + (None,) + view.vars[axis:]
        paxis = view.paxis if view.paxis is None or view.paxis < axis else view.paxis + 1
        return Tensor(View(view.buffer, shape, strides, view.offset, view.partition, paxis, vars_, view.checks,
                           view.ranges))

    def astype(self, dtype: Any) -> "Tensor":
        """nl.copy(self, dtype=dtype): a new tile of ``dtype``."""
        from . import language
        result: Tensor = language.copy(self, dtype=dtype)
        return result

    def ap(self, pattern: Any, offset: int = 0, **kwargs: Any) -> NoReturn:
        """An explicit access pattern (NKI 0.2): not supported by vtrn.nki yet."""
        from ._core import unsupported
        unsupported("tensor.ap", "explicit access patterns")

    @property
    def T(self) -> "Tensor":
        """An HBM tensor's axes reversed (a transposed, strided view for DMA)."""
        view = self._direct(".T")
        if view.buffer.space != "hbm":
            fail("a tile's partition dimension cannot trade places with a free dimension in a view; "
                 "transpose it with nl.transpose or nisa.nc_transpose", ".T")
        return Tensor(View(view.buffer, view.shape[::-1], view.strides[::-1], view.offset, 0, None,
                           view.vars[::-1]))

    # -- assignment --

    def __setitem__(self, key: Any, value: Any) -> None:
        target = self._direct("assignment").index(key, "assignment")
        assign(target, value, "assignment")

    # -- operators: the nl functions --

    def _binary(self, other: Any, op: str, reverse: bool = False) -> "Tensor":
        from . import language
        return language._binary(f"operator {op}", other, self, op) if reverse else \
            language._binary(f"operator {op}", self, other, op)

    def __add__(self, other: Any) -> "Tensor":
        return self._binary(other, "add")

    def __radd__(self, other: Any) -> "Tensor":
        return self._binary(other, "add", True)

    def __sub__(self, other: Any) -> "Tensor":
        return self._binary(other, "subtract")

    def __rsub__(self, other: Any) -> "Tensor":
        return self._binary(other, "subtract", True)

    def __mul__(self, other: Any) -> "Tensor":
        return self._binary(other, "multiply")

    def __rmul__(self, other: Any) -> "Tensor":
        return self._binary(other, "multiply", True)

    def __truediv__(self, other: Any) -> "Tensor":
        return self._binary(other, "divide")

    def __rtruediv__(self, other: Any) -> "Tensor":
        return self._binary(other, "divide", True)

    def __pow__(self, other: Any) -> "Tensor":
        return self._binary(other, "pow")

    def __rpow__(self, other: Any) -> "Tensor":
        return self._binary(other, "pow", True)

    def __and__(self, other: Any) -> "Tensor":
        return self._binary(other, "bitwise_and")

    def __or__(self, other: Any) -> "Tensor":
        return self._binary(other, "bitwise_or")

    def __xor__(self, other: Any) -> "Tensor":
        return self._binary(other, "bitwise_xor")

    def __lshift__(self, other: Any) -> "Tensor":
        return self._binary(other, "shift_left")

    def __rshift__(self, other: Any) -> "Tensor":
        return self._binary(other, "shift_right")

    def __lt__(self, other: Any) -> "Tensor":
        return self._binary(other, "less")

    def __le__(self, other: Any) -> "Tensor":
        return self._binary(other, "less_equal")

    def __gt__(self, other: Any) -> "Tensor":
        return self._binary(other, "greater")

    def __ge__(self, other: Any) -> "Tensor":
        return self._binary(other, "greater_equal")

    def __eq__(self, other: Any) -> Any:
        if isinstance(other, (Tensor, numbers.Number)):
            return self._binary(other, "equal")
        return NotImplemented

    def __ne__(self, other: Any) -> Any:
        if isinstance(other, (Tensor, numbers.Number)):
            return self._binary(other, "not_equal")
        return NotImplemented

    __hash__ = object.__hash__

    def __neg__(self) -> "Tensor":
        from . import language
        return language.negative(self)

    def __abs__(self) -> "Tensor":
        from . import language
        return language.abs(self)

    def _inplace(self, other: Any, op: str) -> "Tensor":
        from . import language
        language._in_place(self._direct(f"operator {op}="), other, op, f"operator {op}=")
        return self

    def __iadd__(self, other: Any) -> "Tensor":
        return self._inplace(other, "add")

    def __isub__(self, other: Any) -> "Tensor":
        return self._inplace(other, "subtract")

    def __imul__(self, other: Any) -> "Tensor":
        return self._inplace(other, "multiply")

    def __itruediv__(self, other: Any) -> "Tensor":
        return self._inplace(other, "divide")


def fresh(value: Tensor) -> Op | None:
    """Whether ``value`` is the whole, untouched result of the trace's last op: that op may then
    write straight into wherever the value is assigned."""
    view = value._view
    buffer = view.buffer
    if buffer.space == "hbm" or buffer.first is None or buffer.first != buffer.last:
        return None
    trace = current("assignment")
    if not trace.ops or trace.ops[-1].index != buffer.first:
        return None
    op = trace.ops[-1]
    if not op.writes or op.writes[0].buffer is not buffer or any(r.buffer is buffer for r in op.reads):
        return None
    if any(w.buffer is buffer for w in op.writes[1:]):
        return None
    return op


def squeeze_equal(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether two shapes are equal once their dimensions of size 1 are dropped."""
    return tuple(s for s in a if s != 1) == tuple(s for s in b if s != 1)


def retarget(value: Any, op: Any, target: Any) -> None:
    """Makes ``op`` write ``target`` instead of the temporary ``value`` stands for."""
    old = op.writes[0]
    whole = View.whole(old.buffer)
    if old.shape != whole.shape:
        # The op writes part of its temporary (a mask): write the same part of the target.
        boxes = _boxes(old, whole)
        if target.shape != whole.shape:
            mapping = [axis for axis, size in enumerate(target.shape) if size != 1]
            sources = [axis for axis, size in enumerate(whole.shape) if size != 1]
            boxes = {mapping[sources.index(axis)]: box for axis, box in boxes.items() if axis in sources}
        target = target.restrict(boxes)
    op.writes[0] = target
    if target.buffer.space == "psum":
        target.buffer.group = target.byte_box() if op.kind == "matmul" else None
        if target.buffer.zeroing is not None:
            target.buffer.zeroing[1].append(target.byte_box())
    old.buffer.first = old.buffer.last = None
    if target.buffer.space != "hbm":
        if target.buffer.first is None:
            target.buffer.first = op.index
        target.buffer.last = max(target.buffer.last or 0, op.index)
    value._view = target


def _boxes(part: Any, whole: Any) -> Any:
    """{axis: (low, high)} of a sub-box ``part`` of a contiguous view ``whole`` of one buffer."""
    boxes = {}
    delta = part.offset - whole.offset
    for axis, (size, stride) in enumerate(zip(whole.shape, whole.strides)):
        if axis == whole.paxis:
            low = part.partition - whole.partition
        else:
            low = (delta // stride) % size if stride else 0
        if part.shape[axis] != size or low:
            boxes[axis] = (low, low + part.shape[axis])
    return boxes


def assign(target: Any, value: Any, api: str) -> None:
    """``target_view = value``: a tensor (an op's fresh result lands in place; anything else is
    copied), or a number (memset)."""
    from . import language
    if isinstance(value, Tensor):
        view = value._view
        if isinstance(view, View) and view.same_place(target):
            return
        op = fresh(value)
        if op is not None and op.kind == "transpose" and op.engine == "pe" and target.buffer.space == "psum" and \
                target.buffer.dtype != op.args["src"].buffer.dtype and squeeze_equal(view.shape, target.shape):
            # A PE transpose into a tile of another dtype (bf16 into fp32 PSUM) is the matmul by an
            # identity that the PE's transpose is: stationary.T @ I.
            language._transpose_as_matmul(op, target, api)
            value._view = target
            return
        if op is None and view.buffer.space != "hbm" and view.buffer.first is None:
            return   # the value was never computed (its operation's mask kept nothing): nothing lands
        if op is not None and squeeze_equal(view.shape, target.shape):
            # Compute engines write SBUF and PSUM; only DMA writes HBM and DMA never reaches PSUM.
            # The PE writes only PSUM (a matmul only fp32).
            space = target.buffer.space
            if op.kind == "dma_copy":
                allowed = space != "psum"
            elif op.engine == "pe":
                allowed = space == "psum" and (op.kind != "matmul" or target.buffer.dtype == "fp32")
            elif op.engine == "pool":
                allowed = space == "sbuf"   # GpSimd cannot reach PSUM
            else:
                allowed = space != "hbm"
            if allowed:
                retarget(value, op, target)
                return
        language._copy_into(target, value._direct(api), api)
        return
    if isinstance(value, numbers.Number):
        language._memset_view(target, value, api)
        return
    if isinstance(value, language.LoopReduce):
        source = language._onchip(value.x, "nl.loop_reduce", "x")
        target_tile = language._onchip(Tensor(target), "nl.loop_reduce", "the assigned tile")
        if language._free_size(source) == 1 and language._free_size(target_tile) != 1:
            source = language._broadcast_to(source, target_tile.shape, "nl.loop_reduce")
        dst, a, b = language._mask_views(value.mask, [target_tile, target_tile, source], "nl.loop_reduce")
        language._record("dve", "tensor_tensor", [dst], [a, b], "nl.loop_reduce", a=a, b=b, op=value.op)
        return
    fail(f"cannot assign a {type(value).__name__} to a tensor; assign a tile or a number", api)
