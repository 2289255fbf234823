"""An eager numpy interpretation of a recorded kernel, one operation at a time, the way NKI's own
simulator works: the peer `vtrn bench nki` measures vtrn's execution against. It computes in fp32
and rounds to each result's dtype, like the engines, but has no engines, no time and no overlap.
"""

import math
from typing import Any

import numpy

from ._core import numpy_dtype

_ERF = numpy.vectorize(math.erf, otypes=[numpy.float32])


class _Memory:
    """A numpy array per buffer; views as numpy strided views of them."""

    def __init__(self, inputs: Any) -> None:
        self.arrays: dict[Any, Any] = {}
        self.inputs = inputs    # parameter name -> numpy array

    def array(self, buffer: Any) -> Any:
        found = self.arrays.get(buffer)
        if found is None:
            dtype = numpy_dtype(buffer.dtype)
            if buffer.space == "hbm":
                if buffer.name in self.inputs:
                    found = numpy.ascontiguousarray(self.inputs[buffer.name], dtype=dtype).reshape(-1).copy()
                else:
                    found = numpy.zeros(math.prod(buffer.shape), dtype)
            else:
                per_partition = buffer.bytes_per_partition // dtype.itemsize
                found = numpy.full((buffer.partitions, max(1, per_partition)), numpy.nan, numpy.float32).astype(dtype)
            self.arrays[buffer] = found
        return found

    def view(self, view: Any) -> Any:
        base = self.array(view.buffer)
        size = base.itemsize
        if view.buffer.space == "hbm":
            start = view.offset
            strides = [stride * size for stride in view.strides]
        else:
            per_partition = base.shape[1]
            start = view.partition * per_partition + view.offset
            strides = [stride * size * (per_partition if axis == view.paxis else 1)
                       for axis, stride in enumerate(view.strides)]
        flat = base.reshape(-1)
        return numpy.lib.stride_tricks.as_strided(flat[start:], shape=view.shape, strides=strides)


def _alu(op: Any, a: Any, b: Any) -> Any:
    if op == "add":
        return a + b
    if op == "subtract":
        return a - b
    if op == "multiply":
        return a * b
    if op == "divide":
        return a / b
    if op == "max":
        return numpy.maximum(a, b)
    if op == "min":
        return numpy.minimum(a, b)
    if op == "pow":
        return numpy.power(a, b)
    if op == "bypass":
        return a
    comparisons = {"equal": numpy.equal, "not_equal": numpy.not_equal, "greater": numpy.greater,
                   "greater_equal": numpy.greater_equal, "less": numpy.less, "less_equal": numpy.less_equal}
    if op in comparisons:
        return comparisons[op](a, b).astype(numpy.float32)
    if op == "abs":
        return numpy.abs(a)
    if op == "reciprocal":
        return 1 / a
    if op == "rsqrt":
        return 1 / numpy.sqrt(a)
    raise NotImplementedError(f"the eager interpreter has no ALU op {op}")


def _activation(function: Any, x: Any) -> Any:
    with numpy.errstate(all="ignore"):
        if function == "copy":
            return x
        if function == "exp":
            return numpy.exp(x)
        if function == "log":
            return numpy.log(x)
        if function == "tanh":
            return numpy.tanh(x)
        if function == "sigmoid":
            return 1 / (1 + numpy.exp(-x))
        if function == "relu":
            return numpy.maximum(x, 0)
        if function == "gelu":
            return 0.5 * x * (1 + _ERF(x / numpy.float32(math.sqrt(2))))
        if function == "silu":
            return x / (1 + numpy.exp(-x))
        if function == "square":
            return x * x
        if function == "sqrt":
            return numpy.sqrt(x)
        if function == "rsqrt":
            return 1 / numpy.sqrt(x)
        if function == "reciprocal":
            return 1 / x
    raise NotImplementedError(f"the eager interpreter has no activation {function}")


def _f32(a: Any) -> Any:
    return numpy.asarray(a, dtype=numpy.float32)


def _store(memory: Any, view: Any, values: Any) -> None:
    target = memory.view(view)
    target[...] = numpy.asarray(values).reshape(target.shape).astype(target.dtype)


def _scalar(memory: Any, value: Any, partitions: Any) -> Any:
    if isinstance(value, (int, float)):
        return numpy.float32(value)
    return _f32(memory.view(value)).reshape(partitions, *([1] * 0), -1)[:, :1]


def run(trace: Any, inputs: Any) -> Any:
    """Executes ``trace``'s ops with numpy; returns {parameter name: array} of every HBM tensor."""
    memory = _Memory(inputs)
    for op in trace.ops:
        args = op.args
        kind = op.kind
        dst: Any = op.writes[0] if op.writes else None
        if kind == "dma_copy":
            values = memory.view(args["src"]).reshape(-1)
            if args.get("rmw") == "add":
                values = _f32(memory.view(dst)).reshape(-1) + _f32(values)
            _store(memory, dst, values)
        elif kind == "matmul":
            s = _f32(memory.view(args["stationary"]))
            m = _f32(memory.view(args["moving"]))
            product = s.reshape(s.shape[0], -1).T @ m.reshape(m.shape[0], -1)
            if args.get("accumulate"):
                product = product + _f32(memory.view(dst)).reshape(product.shape)
            _store(memory, dst, product)
        elif kind == "transpose":
            source = memory.view(args["src"])
            _store(memory, dst, source.reshape(source.shape[0], -1).T)
        elif kind == "activate":
            x = _f32(memory.view(args["src"]))
            partitions = x.shape[0]
            flat = x.reshape(partitions, -1)
            scale = _scalar(memory, args["scale"], partitions) if not isinstance(args["scale"], float) \
                else numpy.float32(args["scale"])
            bias = _scalar(memory, args["bias"], partitions) if args.get("bias") is not None else numpy.float32(0)
            result = _activation(args["function"], flat * scale + bias).astype(numpy.float32)
            _store(memory, dst, result)
            if args.get("accumulate_out") is not None:
                _store(memory, args["accumulate_out"], result.sum(axis=1, keepdims=True))
        elif kind == "tensor_tensor":
            a = _f32(memory.view(args["a"]))
            b = _f32(memory.view(args["b"]))
            _store(memory, dst, _alu(args["op"], a, b))
        elif kind == "tensor_scalar":
            x = _f32(memory.view(args["src"]))
            partitions = x.shape[0]
            flat = x.reshape(partitions, -1)
            x0 = _scalar(memory, args["x0"], partitions)
            value = _alu(args["op0"], x0, flat) if args.get("reverse", 0) & 1 else _alu(args["op0"], flat, x0)
            if args.get("op1") is not None:
                x1 = _scalar(memory, args["x1"], partitions)
                value = _alu(args["op1"], x1, value) if args.get("reverse", 0) & 2 else _alu(args["op1"], value, x1)
            _store(memory, dst, value)
        elif kind == "tensor_reduce":
            x = _f32(memory.view(args["src"]))
            partitions = x.shape[0]
            groups = max(1, math.prod(dst.shape) // max(1, dst.shape[0] if dst.paxis == 0 else 1))
            flat = x.reshape(partitions, groups, -1)
            reducer: Any = {"add": numpy.sum, "max": numpy.max, "min": numpy.min, "multiply": numpy.prod}[args["op"]]
            value = reducer(flat, axis=2)
            _store(memory, dst, -value if args.get("negate") else value)
        elif kind == "tensor_copy":
            _store(memory, dst, memory.view(args["src"]))
        elif kind == "memset":
            memory.view(dst)[...] = args["value"]
        elif kind == "iota" or kind == "affine_select":
            shape = dst.shape
            values = numpy.full(shape, args["offset"], numpy.int64)
            values += (numpy.arange(shape[0]) * args["channel_multiplier"]).reshape((-1,) + (1,) * (len(shape) - 1))
            for axis, step in enumerate(args["steps"], start=1):
                index = numpy.arange(shape[axis]).reshape((1,) * axis + (-1,) + (1,) * (len(shape) - axis - 1))
                values = values + step * index
            if kind == "iota":
                _store(memory, dst, values.astype(numpy.int32))
            else:
                keep = _alu(args["cmp"], values.astype(numpy.float32), numpy.float32(0)) != 0
                _store(memory, dst, numpy.where(keep, _f32(memory.view(args["on_true"])), args["on_false"]))
        else:
            raise NotImplementedError(f"the eager interpreter has no op {kind}")
    return {buffer.name: memory.array(buffer).reshape(buffer.shape) for buffer in trace.parameters}
