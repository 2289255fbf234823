"""vtrn.nki: run kernels written for AWS's Neuron Kernel Interface (NKI) on vtrn's virtual
NeuronCores, unmodified.

    import vtrn.nki
    vtrn.nki.install_import_shim()        # `import nki` / `import neuronxcc.nki` now mean vtrn.nki
    import nki, nki.language as nl

    @nki.jit
    def add(a, b):
        out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
        nl.store(out, value=nl.add(nl.load(a), nl.load(b)))
        return out

    c = nki.simulate_kernel(add, x, y)    # numpy in, numpy out, as NKI's simulator
    print(vtrn.nki.last_report())         # estimated device time, per-engine instructions and busy time

Or, with no edit to the kernel file at all: ``python -m vtrn.nki run kernel.py``.

How it works: the kernel runs once in Python to be recorded (loops unroll; tiles are views of
buffers), buffers get SBUF/PSUM places, engine dependencies become semaphore waits, and the
program is loaded on a virtual core (cached: the same kernel, shapes, dtypes and constant
arguments load once) and executed with the numpy inputs in HBM. See the README's NKI section.

Devices: vtrn.nki opens a runtime of its own on first use (VTRN_TOPOLOGY's first device, or the
kernel's platform_target) and holds the cores it runs on until ``vtrn.nki.close()`` or exit, as a
process holds NeuronCores. To run kernels on a device of your own runtime instead (and share the
process with it), call ``vtrn.nki.use_device(device)``.
"""

from collections.abc import Callable
from typing import Any, overload

from . import collectives, compiler, isa, language, typing
from ._core import NKIError, NKIUnsupportedError
from ._kernel import JitKernel, Launch, Report, as_kernel, close, last_report, multi_rank_run, run, use_device
from ._shim import install_import_shim, uninstall_import_shim

__all__ = ["collectives", "multi_rank_simulate", "multi_rank_execute", "compiler", "jit", "simulate_kernel", "simulate", "baremetal", "benchmark", "profile", "language", "isa", "typing",
           "NKIError", "NKIUnsupportedError", "Report", "last_report", "simulate_with_report",
           "install_import_shim", "uninstall_import_shim", "use_device", "close"]


@overload
def jit(func: Callable[..., Any], mode: str = "auto", **kwargs: Any) -> JitKernel: ...
@overload
def jit(func: None = None, mode: str = "auto", **kwargs: Any) -> Callable[[Callable[..., Any]], JitKernel]: ...


def jit(func: Callable[..., Any] | None = None, mode: str = "auto",
        **kwargs: Any) -> JitKernel | Callable[[Callable[..., Any]], JitKernel]:
    """@nki.jit / @nki.jit(mode=..., platform_target="trn2"): a kernel that runs on vtrn when
    called with numpy arrays (every mode simulates: vtrn has no other device)."""
    if func is None:
        return lambda f: JitKernel(f, mode, **kwargs)
    return JitKernel(func, mode, **kwargs)


def simulate_kernel(kernel: Any, *args: Any, **kwargs: Any) -> Any:
    """Runs ``kernel`` (an @nki.jit function, or ``kernel[grid]``) on numpy arrays and returns what
    it returns, as numpy arrays, as NKI's simulate_kernel does. ``last_report()`` has the costs."""
    function, grid = as_kernel(kernel)
    return run(function, grid, args, kwargs)[0]


def multi_rank_simulate(kernel: Any, *, world_size: int, per_rank_inputs: Any) -> list[Any]:
    """NKI's ``nki.multi_rank_simulate``: runs ``kernel`` on ``world_size`` ranks at once, rank r
    with ``per_rank_inputs[r]`` (an (args, kwargs) pair; a sequence in rank order or a mapping
    by rank), and returns each rank's outputs in rank order. Rank r is core r % C of device r // C
    (C: 2 cores per trn1 device, 8 per trn2; the kernel's platform_target, trn2 by default) of a
    runtime of the launch's own, so nki.collectives in the kernel run on vtrn communicators."""
    return multi_rank_run(kernel, world_size, per_rank_inputs)


def multi_rank_execute(kernel: Any, *, world_size: int, per_rank_inputs: Any) -> list[Any]:
    """NKI's ``nki.multi_rank_execute`` (on hardware there): on vtrn the same as multi_rank_simulate."""
    return multi_rank_run(kernel, world_size, per_rank_inputs)


def simulate_with_report(kernel: Any, *args: Any, trace_file: str | None = None, **kwargs: Any) -> tuple[Any, Report]:
    """simulate_kernel, returning ``(outputs, Report)``; ``trace_file`` writes a Perfetto/Chrome
    trace of every engine's instructions, each labelled with its NKI call and kernel line."""
    function, grid = as_kernel(kernel)
    return run(function, grid, args, kwargs, trace_path=trace_file)


def simulate(kernel: Any) -> Callable[..., Any]:
    """NKI 0.3+'s ``nki.simulate(kernel)(*arrays)``."""
    function, grid = as_kernel(kernel)

    def call(*args: Any, **kwargs: Any) -> Any:
        return run(function, grid, args, kwargs)[0]
    return call


def baremetal(kernel: Any = None, **kwargs: Any) -> Any:
    """@nki.baremetal: on vtrn the same as simulating (the virtual device is the device)."""
    if kernel is None:
        return lambda k: baremetal(k, **kwargs)
    return kernel if isinstance(kernel, (Launch, JitKernel)) else as_kernel(kernel)[0]


def benchmark(kernel: Any = None, warmup: int = 10, iters: int = 100, save_trace_name: str | None = None,
              **kwargs: Any) -> Any:
    """@nki.benchmark: runs the kernel once and reports vtrn's estimated device time as the
    latency (every percentile: the estimate is deterministic) in ``benchmark_result``;
    ``save_trace_name`` gets vtrn's Perfetto trace of the run (not a Neuron NTFF profile)."""
    if kernel is None:
        return lambda k: benchmark(k, warmup=warmup, iters=iters, save_trace_name=save_trace_name, **kwargs)
    return _Benchmarked(kernel, save_trace_name)


def profile(func: Any = None, **kwargs: Any) -> Callable[..., Any]:
    """@nki.profile: runs the kernel; ``trace_file=`` (vtrn's) writes a Perfetto trace."""
    if func is None:
        return lambda f: profile(f, **kwargs)
    function, grid = as_kernel(func)
    trace_file = kwargs.get("trace_file")

    def call(*args: Any, **call_kwargs: Any) -> Any:
        return run(function, grid, args, call_kwargs, trace_path=trace_file)[0]
    return call


class _Latency:
    def __init__(self, microseconds: float) -> None:
        self.microseconds = microseconds

    def get_latency_percentile(self, percentile: float) -> float:
        return self.microseconds


class _BenchmarkResult:
    def __init__(self, report: Report) -> None:
        self.report = report
        self.nc_latency = _Latency(report.device_ns / 1000)


class _Benchmarked:
    def __init__(self, kernel: Any, trace_file: str | None = None) -> None:
        self.function, self.grid = as_kernel(kernel)
        self.trace_file = trace_file
        self.benchmark_result: _BenchmarkResult | None = None

    def __getitem__(self, grid: Any) -> "_Benchmarked":
        return _Benchmarked(Launch(self.function, grid), self.trace_file)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        outputs, report = run(self.function, self.grid, args, kwargs, trace_path=self.trace_file)
        self.benchmark_result = _BenchmarkResult(report)
        return outputs
