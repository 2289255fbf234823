"""`python -m vtrn.nki bench` (what `vtrn bench nki` runs): vtrn's execution of NKI kernels against
an eager numpy interpretation of the same recorded operations (how NKI's simulator works), and
the front end's own costs (tracing and loading a 10,000-instruction kernel, cached reruns)."""

import math
import sys
import time
from typing import Any

import numpy

from . import _eager, _kernel, isa as nisa, language as nl
from . import jit


@jit
def tiled_matmul(lhsT: Any, rhs: Any) -> Any:
    """result[M, N] = lhsT.T @ rhs, tiled 128 x 128 x 512, fp32 accumulation in PSUM."""
    K, M = lhsT.shape
    _, N = rhs.shape
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)
    for m in nl.affine_range(M // 128):
        for n in nl.affine_range(N // 512):
            acc = nl.zeros((128, 512), nl.float32, buffer=nl.psum)
            for k in nl.affine_range(K // 128):
                a = nl.load(lhsT[k * 128:(k + 1) * 128, m * 128:(m + 1) * 128])
                b = nl.load(rhs[k * 128:(k + 1) * 128, n * 512:(n + 1) * 512])
                acc += nisa.nc_matmul(a, b)
            nl.store(result[m * 128:(m + 1) * 128, n * 512:(n + 1) * 512], value=nl.copy(acc, dtype=result.dtype))
    return result


@jit
def attention(qT: Any, kT: Any, v: Any) -> Any:
    """softmax(q k^T / sqrt(d)) v for q, k given transposed ([d, S]) and v [S, d]; d <= 128."""
    d, seqlen = qT.shape
    out = nl.ndarray((seqlen, d), dtype=v.dtype, buffer=nl.shared_hbm)
    scale = 1.0 / math.sqrt(d)
    k_all = nl.load(kT)
    for i in nl.affine_range(seqlen // 128):
        q = nl.load(qT[:, i * 128:(i + 1) * 128])
        scores = nl.ndarray((128, seqlen), dtype=nl.float32, buffer=nl.sbuf)
        for j in nl.affine_range(seqlen // 512):
            s = nisa.nc_matmul(q, k_all[:, j * 512:(j + 1) * 512])
            scores[:, j * 512:(j + 1) * 512] = nl.multiply(s, scale)
        negmax = nisa.tensor_reduce(nl.max, scores, axis=(1,), negate=True, keepdims=True)
        total = nl.ndarray((128, 1), dtype=nl.float32, buffer=nl.sbuf)
        probs = nisa.activation(nl.exp, scores, bias=negmax, reduce_op=nl.add, reduce_res=total)
        inverse = nl.reciprocal(total)
        acc = nl.zeros((128, d), nl.float32, buffer=nl.psum)
        for j in nl.affine_range(seqlen // 128):
            pT = nl.copy(nisa.nc_transpose(probs[:, j * 128:(j + 1) * 128]))
            acc += nisa.nc_matmul(pT, nl.load(v[j * 128:(j + 1) * 128, :]))
        nl.store(out[i * 128:(i + 1) * 128, :], value=nl.multiply(acc, inverse))
    return out


@jit
def many_instructions(x: Any, repeats: Any) -> Any:
    """A kernel that unrolls to ~10,000 instructions: small tiles, every engine."""
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    for r in nl.sequential_range(repeats):
        t = nl.load(x[r % x.shape[0]:r % x.shape[0] + 1, :])
        u = nl.exp(t)
        w = nl.add(u, t)
        nl.store(out[r % x.shape[0]:r % x.shape[0] + 1, :], value=w)
    return out


def _best(function: Any, runs: Any) -> Any:
    best = math.inf
    for _ in range(runs):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


class _Progress:
    """What the bench is doing, as ``vtrn bench`` shows it: on a terminal one line rewritten in
    place by each step and erased when results print; elsewhere (a pipe, a log) a plain line per
    step. Every line is flushed at once."""

    def __init__(self, title: Any, steps: Any) -> None:
        self.title, self.steps, self.completed = title, steps, 0
        self.on_terminal = sys.stdout.isatty()
        self.line_shown = False

    def step(self, what: str) -> None:
        """Announces the next step, before its work starts."""
        self.completed += 1
        text = f"{self.title} [{min(self.completed, self.steps)}/{self.steps}] {what}..."
        if self.on_terminal:
            sys.stdout.write("\r\x1b[K" + text)
            self.line_shown = True
        else:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def print(self, line: Any = "") -> None:
        """Prints a line of results, erasing the progress line on a terminal."""
        if self.line_shown:
            sys.stdout.write("\r\x1b[K")
            self.line_shown = False
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _last_report() -> _kernel.Report:
    """The report of the run just made (there always is one here)."""
    report = _kernel.last_report()
    assert report is not None, "a kernel ran"
    return report


def _eager_inputs(kernel: Any, args: Any) -> Any:
    ctx = _kernel.context(None)
    items = _kernel._bind_arguments(kernel.func, args, {})
    trace, inputs, _ = _kernel._trace(kernel, (), (), items, ctx.target)
    trace.finish()
    return trace, {inputs[key]: value for key, _, value in items if key in inputs}


def bench(runs: Any = 5) -> None:
    """Runs the benchmark (``python -m vtrn.nki bench``, ``vtrn bench nki``) and prints its report."""
    rng = numpy.random.default_rng(7)
    size = 1024
    lhsT = rng.standard_normal((size, size), dtype=numpy.float32)
    rhs = rng.standard_normal((size, size), dtype=numpy.float32)
    qT = rng.standard_normal((128, size), dtype=numpy.float32)
    kT = rng.standard_normal((128, size), dtype=numpy.float32)
    v = rng.standard_normal((size, 128), dtype=numpy.float32)
    cases = [("tiled matmul 1024^3 fp32", tiled_matmul, (lhsT, rhs), lambda: lhsT.T @ rhs),
             ("attention S=1024 d=128 fp32", attention, (qT, kT, v), None)]
    progress = _Progress("bench nki", 3 * len(cases) + 2)
    rows = []
    for name, kernel, args, reference in cases:
        progress.step(f"{name}: tracing and loading")
        first = kernel(*args)      # traces, loads, caches
        progress.step(f"{name}: {runs} runs on vtrn")
        vtrn_time = _best(lambda: kernel(*args), runs)
        report = _last_report()
        progress.step(f"{name}: {runs} runs of eager numpy")
        trace, inputs = _eager_inputs(kernel, args)
        eager_out = {}
        eager_time = _best(lambda: eager_out.update(_eager.run(trace, inputs)), runs)
        result = eager_out[trace.parameters[-1].name]
        agree = numpy.allclose(result.astype(numpy.float32), first.astype(numpy.float32), rtol=1e-3, atol=1e-3)
        ratio = eager_time / vtrn_time
        rows.append(f"| {name} | {vtrn_time * 1e3:.1f} ms | {eager_time * 1e3:.1f} ms | {ratio:.2f} | >= 3 | "
                    f"{'yes' if ratio >= 3 else 'no'} | {report.device_ns / 1e3:.1f} us | "
                    f"{sum(report.instructions.values())}{'' if agree else ' (results differ!)'} |")
    x = rng.standard_normal((128, 64), dtype=numpy.float32)
    repeats = 2500
    progress.step(f"tracing and loading a kernel of {repeats} iterations")
    many_instructions(x, repeats)
    report = _last_report()
    progress.step(f"{runs} cached reruns of it")
    rerun = _best(lambda: many_instructions(x, repeats), runs)
    rerun_report = _last_report()
    overhead = rerun - rerun_report.execution_ns / 1e9
    progress.print("| KERNEL | VTRN (warm) | NUMPY EAGER (same ops) | RATIO | GOAL | MET | DEVICE TIME (est.) | INSTRUCTIONS |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    print()
    print("| FRONT END | MEASURED | GOAL | MET |")
    print("|---|---|---|---|")
    print(f"| trace + load, {report.program_instructions} instructions | "
          f"{(report.trace_ms + report.load_ms):.0f} ms (trace {report.trace_ms:.0f}, load {report.load_ms:.0f}) "
          f"| <= 1000 ms | {'yes' if report.trace_ms + report.load_ms <= 1000 else 'no'} |")
    print(f"| cached rerun, overhead beyond the execution | {overhead * 1e3:.2f} ms (whole call {rerun * 1e3:.2f} ms) "
          f"| <= 10 ms | {'yes' if overhead <= 0.010 else 'no'} |")
