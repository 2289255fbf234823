"""Kernels: tracing a kernel function into a vtrn program, caching it, and running it on a
virtual NeuronCore with numpy arrays bound to HBM."""

import atexit
import inspect
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy

from .. import errors as _errors
from ..memory import HostBuffer
from ..runtime import Runtime
from . import _core, _lower
from ._core import NKIError, Trace, View, numpy_dtype, vtrn_dtype
from ._tensor import Tensor

if TYPE_CHECKING:
    import vtrn

_ENGINE_NAMES = {"pe": "tensor (PE)", "act": "scalar (ACT)", "dve": "vector (DVE)", "pool": "gpsimd (POOL)",
                 "dma": "DMA", "cc": "CC"}


@dataclass
class Report:
    """What one simulated run cost, on the device's virtual timeline and on the host."""
    kernel: str
    target: str                      # "trn1" or "trn2"
    device_ns: float                 # estimated device time (a grid: the busiest core's instances in turn)
    instructions: dict[str, int]     # engine -> instructions executed (all instances)
    busy_ns: dict[str, float]        # engine -> estimated busy time (all instances)
    utilisation: dict[str, float]    # engine -> busy time / (device time x cores used)
    instances: int = 1
    cores: int = 1
    wall_ns: int = 0                 # host time of the call's device work: binding, executions, reading back
    execution_ns: int = 0            # host time the cores spent executing (sum over instances)
    trace_ms: float = 0.0            # host time tracing the kernel (0 when cached)
    load_ms: float = 0.0             # host time allocating, scheduling, emitting and loading (0 when cached)
    cached: bool = False
    trace_file: str | None = None
    program_instructions: int = 0    # instructions of the loaded program(s), semaphore waits included

    def __str__(self) -> str:
        lines = [f"{self.kernel} on {self.target}: estimated device time {self.device_ns / 1000:.3f} us"
                 f" ({self.instances} instance{'s' if self.instances != 1 else ''} on {self.cores} "
                 f"core{'s' if self.cores != 1 else ''}); host: trace {self.trace_ms:.1f} ms, load "
                 f"{self.load_ms:.1f} ms{' (cached)' if self.cached else ''}, run {self.wall_ns / 1e6:.2f} ms"]
        lines.append(f"  {'engine':<14} {'instructions':>12} {'busy us':>10} {'utilisation':>11}")
        engines = _lower.ENGINES + (("cc",) if self.instructions.get("cc") else ())   # CC: kernels with collectives
        for engine in engines:
            lines.append(f"  {_ENGINE_NAMES[engine]:<14} {self.instructions.get(engine, 0):>12} "
                         f"{self.busy_ns.get(engine, 0) / 1000:>10.3f} {self.utilisation.get(engine, 0) * 100:>10.1f}%")
        if self.trace_file:
            lines.append(f"  trace: {self.trace_file}")
        return "\n".join(lines)


# -- kernels -------------------------------------------------------------------------------------------

class JitKernel:
    """A kernel function under @nki.jit. Calling it with numpy arrays runs it on vtrn and returns
    what the kernel returns, as numpy arrays; ``kernel[grid](...)`` launches a grid of instances."""

    def __init__(self, func: Callable[..., Any], mode: str = "auto", platform_target: str | None = None,
                 **options: Any) -> None:
        if not callable(func):
            raise TypeError(f"nki.jit decorates a function, not a {type(func).__name__}")
        self.func = func
        self.mode = mode
        self.platform_target = platform_target
        self.options = options
        self.__name__ = getattr(func, "__name__", "kernel")
        self.__qualname__ = getattr(func, "__qualname__", self.__name__)
        self.__doc__ = getattr(func, "__doc__", None)
        self.__wrapped__ = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(_core._state, "trace", None) is not None:
            # Called from inside a kernel being traced (a sub-kernel, @nki.jit(mode="trace")):
            # its operations belong to the caller's kernel.
            return self.func(*args, **kwargs)
        return run(self, ((), 1), args, kwargs)[0]

    def __getitem__(self, grid: Any) -> "Launch":
        return Launch(self, grid)

    def __repr__(self) -> str:
        return f"<nki.jit kernel {self.__name__}>"


class Launch:
    """``kernel[grid]``: a kernel with a launch grid of SPMD instances."""

    def __init__(self, kernel: JitKernel, grid: Any) -> None:
        grid = grid if isinstance(grid, tuple) else (grid,)
        sizes: list[int] = []
        cores = 1
        for size in grid:
            if hasattr(size, "_nki_spmd"):
                cores *= size.cores
                size = size._nki_spmd
            if isinstance(size, bool) or not isinstance(size, (int, numpy.integer)) or size < 1:
                raise NKIError(f"launch grid {grid!r}: each dimension is a positive int (or nl.nc / nl.spmd_dim)",
                               _core.where(), "kernel[grid]")
            sizes.append(int(size))
        self.kernel = kernel
        self.grid = (tuple(sizes), cores)
        self.__name__ = kernel.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return run(self.kernel, self.grid, args, kwargs)[0]


# A launch grid: (sizes of its dimensions, cores they are spread over).
Grid: TypeAlias = tuple[tuple[int, ...], int]


def as_kernel(kernel: Any) -> tuple[JitKernel, Grid]:
    """(JitKernel, grid) of what simulate_kernel and friends are given; a grid is (sizes, cores)."""
    if isinstance(kernel, Launch):
        return kernel.kernel, kernel.grid
    if isinstance(kernel, JitKernel):
        return kernel, ((), 1)
    if callable(kernel):
        return JitKernel(getattr(kernel, "__wrapped__", kernel) if not isinstance(kernel, type) else kernel), ((), 1)
    raise TypeError(f"expected an NKI kernel (an @nki.jit function), got {type(kernel).__name__}")


# -- devices --------------------------------------------------------------------------------------------

class _Context:
    """A runtime and device to run kernels on, with the loaded kernels cached."""

    def __init__(self, topology: str | None = None, trace_path: str | None = None,
                 device: "vtrn.Device | None" = None) -> None:
        self.owned = device is None
        if device is None:
            previous = os.environ.get("VTRN_TRACE")
            try:
                if trace_path is not None:
                    os.environ["VTRN_TRACE"] = trace_path
                self.runtime = Runtime(topology=topology)
            finally:
                if trace_path is not None:
                    if previous is None:
                        os.environ.pop("VTRN_TRACE", None)
                    else:
                        os.environ["VTRN_TRACE"] = previous
            device = self.runtime.device(0)
        else:
            self.runtime = device.runtime
        self.device = device
        info = self.device.info
        cores = [core for core in self.device.cores() if core.visible]
        if not cores:
            raise NKIError(f"device 0 ({info.architecture}) has no visible core to run kernels on "
                           "(VTRN_VISIBLE_CORES)", None, "nki")
        self.cores = [core.index for core in cores]
        self.target = {
            "name": info.architecture,
            "partitions": cores[0].sbuf_partitions,
            "sbuf_bytes": cores[0].sbuf_bytes_per_partition,
            "psum_bytes": cores[0].psum_bytes_per_partition,
        }
        self.cache: dict[Any, Any] = {}
        self.lock = threading.Lock()
        # Device memory kept between runs, by size: fresh HBM costs a page fault per page on its
        # first write, which made copying a run's inputs in several times slower than memcpy.
        self.pool: "dict[int, list[vtrn.DeviceMemory]]" = {}
        self.pooled_bytes = 0

    POOL_LIMIT = 1 << 30

    def take(self, nbytes: int) -> "vtrn.DeviceMemory":
        with self.lock:
            spare = self.pool.get(nbytes)
            if spare:
                self.pooled_bytes -= nbytes
                return spare.pop()
        return self.device.allocate(nbytes)

    def give_back(self, memory: "vtrn.DeviceMemory") -> None:
        with self.lock:
            if self.pooled_bytes + memory.bytes <= self.POOL_LIMIT and not memory.closed:
                self.pool.setdefault(memory.bytes, []).append(memory)
                self.pooled_bytes += memory.bytes
                return
        memory.free()

    def close(self) -> None:
        for compiled in self.cache.values():
            compiled.kernel.close()
        self.cache.clear()
        for spares in self.pool.values():
            for memory in spares:
                memory.free()
        self.pool.clear()
        self.pooled_bytes = 0
        if self.owned:
            self.runtime.close()


_contexts: "dict[str | None, _Context]" = {}
_contexts_lock = threading.Lock()


def context(topology: str | None = None) -> "_Context":
    """The context kernels of ``topology`` run in (its device, cores, compiled-kernel cache and
    pooled device memory; None: VTRN_TOPOLOGY's first device), made on first use; the device
    given to ``use_device`` wins."""
    with _contexts_lock:
        chosen = _contexts.get("device")
        if chosen is not None and not chosen.runtime.closed:
            return chosen
        found = _contexts.get(topology)
        if found is None or found.runtime.closed:
            found = _contexts[topology] = _Context(topology)
        return found


def use_device(device: "vtrn.Device | None") -> None:
    """Runs kernels of every target on ``device`` (a vtrn.Device of your runtime) from now on,
    instead of a runtime of vtrn.nki's own; None goes back to vtrn.nki's own."""
    with _contexts_lock:
        previous = _contexts.pop("device", None)
        if previous is not None:
            previous.close()
        if device is not None:
            _contexts["device"] = _Context(device=device)


def close() -> None:
    """Unloads vtrn.nki's kernels and closes the runtime it opened (releasing its cores); the next
    kernel run opens a new one. Called at exit."""
    _close_all()


@atexit.register
def _close_all() -> None:
    with _contexts_lock:
        for found in _contexts.values():
            try:
                found.close()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
        _contexts.clear()


def _topology(kernel: Any) -> Any:
    target = kernel.platform_target or kernel.options.get("target")
    if target is None:
        return None
    target = str(target).lower()
    if target not in ("trn1", "trn2"):
        raise NKIError(f"platform_target {target!r}: vtrn simulates trn1 and trn2", None, "nki.jit")
    return target


# -- compiling ------------------------------------------------------------------------------------------

@dataclass
class Compiled:
    """A traced, scheduled and loaded instance of a kernel."""
    kernel: Any                        # vtrn.Kernel
    parameters: list[Any]              # [(name, shape, dtype, kind)]
    inputs: dict[Any, str]             # argument key -> parameter name
    constants: dict[str, Any]          # parameter name -> numpy array (nl.shared_constant)
    outputs: object                    # the return structure, parameter names in place of tensors
    written_inputs: list[str]          # input parameter names the kernel writes
    origin: list[Any]                  # program instruction index -> op
    instruction_count: int
    trace_ms: float
    load_ms: float


def _signature(value: Any) -> Any:
    if isinstance(value, numpy.ndarray):
        return ("array", value.shape, value.dtype.str)
    if isinstance(value, (bool, int, float, str, type(None))):
        return ("value", type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return ("seq", tuple(_signature(item) for item in value))
    if isinstance(value, type) or hasattr(value, "dtype") and not isinstance(value, Tensor):
        return ("object", repr(value))
    return ("id", id(value))


def _bind_arguments(func: Any, args: Any, kwargs: Any) -> Any:
    """[(key, name, value)] for the kernel's arguments, in order."""
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except TypeError as error:
        raise NKIError(f"{error}", (func.__code__.co_filename, func.__code__.co_firstlineno), func.__name__) from None
    except ValueError:
        return [(f"arg{i}", f"arg{i}", value) for i, value in enumerate(args)] + \
               [(name, name, value) for name, value in kwargs.items()]
    items = []
    for name, value in bound.arguments.items():
        parameter = bound.signature.parameters[name]
        if parameter.kind == parameter.VAR_POSITIONAL:
            items += [(f"{name}{i}", f"{name}{i}", item) for i, item in enumerate(value)]
        elif parameter.kind == parameter.VAR_KEYWORD:
            items += [(key, key, item) for key, item in value.items()]
        else:
            items.append((name, name, value))
    return items


def _trace(kernel: Any, grid: Any, ids: Any, items: Any, target: Any) -> Any:
    trace = Trace(target, ids, grid)
    call_args = {}
    inputs = {}
    for key, name, value in items:
        if isinstance(value, numpy.ndarray):
            dtype = vtrn_dtype(value.dtype, kernel.__name__, f"argument {name!r}")
            buffer = trace.hbm(tuple(value.shape), dtype, name, "input", None)
            inputs[key] = buffer.name
            call_args[key] = Tensor(View.whole(buffer))
        else:
            call_args[key] = value
    previous = _core.set_current(trace)
    try:
        signature = inspect.signature(kernel.func)
        keywords = {}
        for key, name, value in items:
            keywords[key] = call_args[key]
        args, kwargs = _rebuild(signature, keywords)
        result = kernel.func(*args, **kwargs)
    finally:
        _core.set_current(previous)
    return trace, inputs, result


def _rebuild(signature: Any, values: Any) -> Any:
    """Positional and keyword arguments for the kernel from per-name values."""
    args, kwargs = [], {}
    parameters = signature.parameters
    positional = True   # until a parameter was left to its default: after that, by keyword
    for name, parameter in parameters.items():
        if parameter.kind == parameter.VAR_POSITIONAL:
            index = 0
            while positional and f"{name}{index}" in values:
                args.append(values.pop(f"{name}{index}"))
                index += 1
        elif parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD) and name in values \
                and positional:
            args.append(values.pop(name))
        elif name in values:
            kwargs[name] = values.pop(name)
        elif parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            positional = False
    kwargs.update(values)
    return args, kwargs


def _outputs(result: Any, kernel: Any) -> Any:
    """The return value with parameter names in place of HBM tensors."""
    if result is None:
        return None
    if isinstance(result, Tensor):
        buffer = result._view.buffer
        if buffer.space != "hbm":
            raise NKIError(f"the kernel returns a {buffer.space.upper()} tile; kernels return HBM tensors "
                           "(nl.ndarray(..., buffer=nl.shared_hbm), written with nl.store)",
                           (kernel.func.__code__.co_filename, kernel.func.__code__.co_firstlineno), kernel.__name__)
        if not View.whole(buffer).same_place(result._view):
            raise NKIError("the kernel returns a view of an HBM tensor; return the whole tensor", None, kernel.__name__)
        return buffer.name
    if isinstance(result, (tuple, list)):
        return type(result)(_outputs(item, kernel) for item in result)
    if isinstance(result, dict):
        return {key: _outputs(value, kernel) for key, value in result.items()}
    raise NKIError(f"the kernel returns a {type(result).__name__}; kernels return HBM tensors (or None)", None,
                   kernel.__name__)


def _compile(ctx: Any, kernel: Any, grid: Any, ids: Any, items: Any, core: Any) -> Any:
    started = time.perf_counter()
    trace, inputs, result = _trace(kernel, grid, ids, items, ctx.target)
    outputs = _outputs(result, kernel)
    trace.finish()
    traced = time.perf_counter()
    _lower.allocate(trace)
    plan = _lower.schedule(trace)
    program = ctx.runtime.program()
    try:
        for buffer in trace.parameters:
            program.parameter(buffer.name, buffer.shape if buffer.shape else (1,), buffer.dtype)
            assert program.parameters[buffer.name].index == buffer.parameter
        origin = _lower.emit(program.handle, trace, plan)
        try:
            loaded = ctx.device.load(program, core=core)
        except _errors.VtrnError as error:
            raise _located(error, origin) from None
        count = program.instruction_count
    finally:
        program.close()
    written = set()
    for op in trace.ops:
        for view in op.writes:
            if view.buffer.space == "hbm":
                written.add(view.buffer.name)
    parameters = [(b.name, b.shape, b.dtype, b.kind) for b in trace.parameters]
    written_inputs = [b.name for b in trace.parameters if b.kind == "input" and b.name in written]
    loaded_at = time.perf_counter()
    return Compiled(loaded, parameters, inputs, trace.constants, outputs, written_inputs, origin, count,
                    (traced - started) * 1000, (loaded_at - traced) * 1000)


def _located(error: Any, origin: Any) -> Any:
    """An NKIError at the kernel line behind the instruction a vtrn error names."""
    message = getattr(error, "message", str(error))
    found = re.search(r"instruction (\d+)", message)
    if found and int(found.group(1)) < len(origin):
        op = origin[int(found.group(1))]
        return NKIError(f"{message} (vtrn {type(error).__name__})", op.where, op.api)
    return NKIError(f"{message} (vtrn {type(error).__name__})", None, None)


# -- running -------------------------------------------------------------------------------------------

_last = threading.local()


def run(kernel: JitKernel, grid: Grid, args: tuple[Any, ...], kwargs: dict[str, Any],
        trace_path: str | None = None) -> tuple[Any, Report]:
    """Runs a kernel (all instances of its grid) on numpy arrays: (outputs, Report)."""
    topology = _topology(kernel)
    if trace_path is not None:
        # A trace is written by a runtime of its own (VTRN_TRACE), which needs the cores the
        # shared runtime holds: that one closes (its cache with it) and reopens on the next run.
        with _contexts_lock:
            shared = _contexts.pop(topology, None)
        if shared is not None:
            shared.close()
        ctx = _Context(topology, trace_path)
    else:
        ctx = context(topology)
    try:
        outputs, report = _run(ctx, kernel, grid, args, kwargs)
    finally:
        if trace_path is not None:
            ctx.close()
    if trace_path is not None:
        report.trace_file = trace_path
        _annotate_trace(trace_path, getattr(report, "_origins"), getattr(report, "_placement"))
    _last.report = report
    return outputs, report


def last_report() -> Report | None:
    """The Report of the last kernel run on this thread (None before one)."""
    report: Report | None = getattr(_last, "report", None)
    return report


def _run(ctx: Any, kernel: Any, grid: Any, args: Any, kwargs: Any) -> Any:
    grid, spread = grid
    items = _bind_arguments(kernel.func, args, kwargs)
    signature = tuple((key, _signature(value)) for key, _, value in items)
    instances = list(itertools.product(*(range(size) for size in grid))) if grid else [()]
    # As NKI runs a grid: instances one after another on a NeuronCore; nl.nc(n) dimensions
    # spread them over n cores (as many as the device has visible).
    cores = ctx.cores[:max(1, min(spread, len(ctx.cores)))]
    compiled = []
    placement = []
    cached = True
    for number, ids in enumerate(instances):
        core = cores[number % len(cores)]
        placement.append(core)
        key = (kernel.func, grid, ids, signature, core)
        with ctx.lock:
            found = ctx.cache.get(key)
        if found is None or found.kernel.closed:
            cached = False
            found = _compile(ctx, kernel, grid, ids, items, core)
            if not any(kind == "id" for _, (kind, *_) in signature):
                with ctx.lock:
                    ctx.cache[key] = found
        compiled.append(found)
    values = {key: value for key, _, value in items}
    memories: dict[str, Any] = {}
    owned: list[Any] = []
    fences = []
    started = time.perf_counter_ns()
    try:
        for instance in compiled:
            bindings = {}
            for name, shape, dtype, kind in instance.parameters:
                memory = memories.get(name) if kind != "scratch" else None
                if memory is None:
                    memory = _parameter_memory(ctx, instance, values, name, shape, dtype)
                    owned.append(memory)
                    if kind != "scratch":
                        memories[name] = memory
                bindings[name] = memory
            fences.append((instance, instance.kernel.execute(**bindings)))
        infos = []
        for instance, fence in fences:
            try:
                fence.wait()
            except _errors.VtrnError as error:
                raise _located(error, instance.origin) from None
            infos.append(fence.info)
            fence.close()
        wall = time.perf_counter_ns() - started
        results = {}
        first = compiled[0]
        for name, shape, dtype, kind in first.parameters:
            if kind == "output" or name in first.written_inputs:
                results[name] = ctx.device.from_device(memories[name], numpy_dtype(dtype), shape)
    finally:
        # Memory goes back to the pool only once no execution can still use it.
        settled = True
        for _, fence in fences:
            if not fence.closed:
                try:
                    fence.wait()
                except _errors.VtrnError:
                    pass
                except BaseException:   # interrupted: let the memory go with its leases instead
                    settled = False
                fence.close()
        for memory in owned:
            if settled:
                ctx.give_back(memory)
            else:
                memory.free()
    # Arrays the kernel wrote in place (outputs passed as arguments) get the results.
    for key, name in first.inputs.items():
        if name in first.written_inputs:
            target = values[key]
            if target.flags.writeable:
                target[...] = results[name].astype(target.dtype, copy=False)
    outputs = _fill(first.outputs, results)
    report = _report(kernel, ctx, compiled, infos, wall, cached, placement)
    return outputs, report


def _parameter_memory(ctx: Any, instance: Any, values: dict[str, Any], name: str, shape: Any, dtype: str) -> Any:
    """Device memory for a parameter of a compiled instance: an input argument's or a constant's
    array copied in, else room for an output or scratch buffer."""
    argument = next((key for key, value in instance.inputs.items() if value == name), None)
    if argument is None and name not in instance.constants:
        return ctx.take(max(1, int(numpy.prod(shape, dtype=numpy.int64)) * numpy_dtype(dtype).itemsize))
    array = instance.constants[name] if argument is None else numpy.ascontiguousarray(values[argument], dtype=numpy_dtype(dtype))
    memory = ctx.take(max(1, array.nbytes))
    if array.nbytes:
        with HostBuffer.register(ctx.runtime, array, writable=False) as staging:
            ctx.device.memcpy(memory, staging, array.nbytes)
    return memory


def _fill(structure: Any, results: Any) -> Any:
    if structure is None:
        return None
    if isinstance(structure, str):
        return results[structure]
    if isinstance(structure, (tuple, list)):
        return type(structure)(_fill(item, results) for item in structure)
    return {key: _fill(value, results) for key, value in structure.items()}


def _report(kernel: Any, ctx: Any, compiled: Any, infos: Any, wall: Any, cached: Any, placement: Any) -> Any:
    per_core: dict[int, Any] = {}
    # The CC engine's counts only for kernels with collectives, so other reports keep their keys.
    engines = _lower.ENGINES + (("cc",) if any(info.instructions["cc"] for info in infos) else ())
    instructions = dict.fromkeys(engines, 0)
    busy = dict.fromkeys(engines, 0.0)
    for number, info in enumerate(infos):
        core = placement[number]
        per_core[core] = per_core.get(core, 0) + info.device_ns
        for engine in engines:
            instructions[engine] += info.instructions[engine]
            busy[engine] += info.engine_busy_ns[engine]
    device_ns = max(per_core.values()) if per_core else 0
    cores = len(per_core)
    utilisation = {engine: (busy[engine] / (device_ns * cores) if device_ns else 0.0) for engine in engines}
    report = Report(kernel=kernel.__name__, target=ctx.target["name"], device_ns=device_ns,
                    instructions=instructions, busy_ns=busy, utilisation=utilisation, instances=len(infos),
                    cores=cores, wall_ns=wall, execution_ns=sum(info.wall_ns for info in infos), trace_ms=0.0 if cached else sum(c.trace_ms for c in compiled),
                    load_ms=0.0 if cached else sum(c.load_ms for c in compiled), cached=cached,
                    program_instructions=sum(c.instruction_count for c in compiled))
    setattr(report, "_origins", [c.origin for c in compiled])
    setattr(report, "_placement", placement)
    return report


def _annotate_trace(path: Any, origins: Any, placement: Any) -> None:
    """Adds each instruction's NKI call and kernel line to the trace's instruction events. The
    tracer writes each execution's event followed by its instructions; a core runs its
    instances in the order they were queued, so the n-th execution on a core is its n-th instance."""
    try:
        with open(path) as file:
            data = json.load(file)
    except (OSError, ValueError):
        return
    queues: dict[Any, Any] = {}
    for origin, core in zip(origins, placement):
        queues.setdefault(core, []).append(origin)
    origin = None
    for event in data.get("traceEvents", []):
        if event.get("name") == "execution" and event.get("cat") == "host":
            queue = queues.get(event.get("tid", 0) // 8)
            origin = queue.pop(0) if queue else None
            continue
        args = event.get("args")
        if origin is None or event.get("cat") != "instruction" or not args or "instruction" not in args:
            continue
        index = args["instruction"]
        if index < len(origin):
            op = origin[index]
            args["nki"] = op.api
            args["line"] = f"{os.path.basename(op.where[0])}:{op.where[1]}"
    with open(path, "w") as file:
        json.dump(data, file)


# -- several ranks (nki.collectives) ------------------------------------------------------------------

CORES_PER_DEVICE = {"trn1": 2, "trn2": 8}


def _per_rank(world_size: int, per_rank_inputs: Any) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    api = "nki.multi_rank_simulate"
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise NKIError(f"world_size {world_size!r} is not a positive int", None, api)
    if isinstance(per_rank_inputs, dict):
        if sorted(per_rank_inputs) != list(range(world_size)):
            raise NKIError(f"per_rank_inputs has keys {sorted(per_rank_inputs)}; it needs one for each rank 0-{world_size - 1}",
                           None, api)
        pairs = [per_rank_inputs[rank] for rank in range(world_size)]
    else:
        pairs = list(per_rank_inputs)
        if len(pairs) != world_size:
            raise NKIError(f"per_rank_inputs has {len(pairs)} entries for world_size {world_size}", None, api)
    result = []
    for rank, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[1], dict)):
            raise NKIError(f"per_rank_inputs[{rank}] is not an (args, kwargs) pair", None, api)
        result.append((tuple(pair[0]), dict(pair[1])))
    return result


def multi_rank_run(kernel: Any, world_size: int, per_rank_inputs: Any) -> list[Any]:
    """Runs ``kernel`` on ``world_size`` ranks at once, rank r on core r % C of device r // C of a
    runtime of its own (C: the platform's cores per device), with its own (args, kwargs); returns
    each rank's outputs. nki.collectives in the kernel become CC-engine instructions on
    communicators of the ranks of each rank-list. ``last_report()`` covers every rank."""
    jit, grid = as_kernel(kernel)
    if grid[0]:
        raise NKIError("a multi-rank launch runs one instance per rank: launch the kernel without a grid", None,
                       "nki.multi_rank_simulate")
    inputs = _per_rank(world_size, per_rank_inputs)
    target = _topology(jit) or "trn2"
    # The launch's runtime claims cores of devices 0.. : the shared context's runtime, which holds
    # device 0's, closes first (and opens again on the next single-rank run), as for a trace.
    close()
    per_device = CORES_PER_DEVICE[target]
    runtime = Runtime(topology=f"{target}:{-(-world_size // per_device)}")
    contexts: dict[int, _Context] = {}     # by device index
    communicators: dict[tuple[int, ...], Any] = {}
    compiled: list[Any] = []
    try:
        from ..collectives import Communicator
        members = [(runtime.device(rank // per_device), rank % per_device) for rank in range(world_size)]

        def communicator(ranks: tuple[int, ...]) -> Any:
            if ranks not in communicators:
                communicators[ranks] = Communicator(runtime, [members[rank] for rank in ranks])
            return communicators[ranks]

        bound: list[tuple[Any, Any, Any]] = []
        for rank, (args, kwargs) in enumerate(inputs):
            device, core = members[rank]
            ctx = contexts.get(device.index)
            if ctx is None:
                ctx = contexts[device.index] = _Context(device=device)
            items = _bind_arguments(jit.func, args, kwargs)
            signature = tuple((key, _signature(value)) for key, _, value in items)
            if bound and signature != bound[0][2]:
                raise NKIError(f"rank {rank}'s arguments differ from rank 0's in shape, dtype or a static value: every "
                               "rank runs the same kernel specialization", None, "nki.multi_rank_simulate")
            previous = _core.set_rank_context(_core.RankContext(rank, world_size, communicator))
            try:
                compiled.append(_compile(ctx, jit, (), (), items, core))
            finally:
                _core.set_rank_context(previous)
            bound.append((ctx, items, signature))
        return _run_ranks(jit, compiled, bound)
    finally:
        for instance in compiled:
            instance.kernel.close()
        for comm in communicators.values():
            comm.close()
        for ctx in contexts.values():
            ctx.close()
        runtime.close()


def _run_ranks(kernel: Any, compiled: list[Any], bound: list[Any]) -> list[Any]:
    fences: list[Any] = []
    owned: list[tuple[Any, Any]] = []
    per_rank: list[dict[str, Any]] = []
    started = time.perf_counter_ns()
    try:
        for instance, (ctx, items, _) in zip(compiled, bound):
            values = {key: value for key, _, value in items}
            bindings = {}
            for name, shape, dtype, kind in instance.parameters:
                memory = _parameter_memory(ctx, instance, values, name, shape, dtype)
                owned.append((ctx, memory))
                bindings[name] = memory
            per_rank.append(bindings)
            fences.append(instance.kernel.execute(**bindings))
        infos = []
        for instance, fence in zip(compiled, fences):
            try:
                fence.wait()
            except _errors.VtrnError as error:
                raise _located(error, instance.origin) from None
            infos.append(fence.info)
        wall = time.perf_counter_ns() - started
        outputs = []
        for instance, bindings, (ctx, items, _) in zip(compiled, per_rank, bound):
            results = {}
            for name, shape, dtype, kind in instance.parameters:
                if kind == "output" or name in instance.written_inputs:
                    results[name] = ctx.device.from_device(bindings[name], numpy_dtype(dtype), shape)
            values = {key: value for key, _, value in items}
            for key, name in instance.inputs.items():
                if name in instance.written_inputs and values[key].flags.writeable:
                    values[key][...] = results[name].astype(values[key].dtype, copy=False)
            outputs.append(_fill(instance.outputs, results))
    finally:
        for fence in fences:
            if not fence.closed:
                try:
                    fence.wait()
                except _errors.VtrnError:
                    pass
                fence.close()
        for ctx, memory in owned:
            memory.free()
    report = _report(kernel, bound[0][0], compiled, infos, wall, False, list(range(len(compiled))))
    _last.report = report
    return outputs
