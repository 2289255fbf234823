"""The NKI kernel suite (Tests/nki/kernels) on vtrn.nki, the front end that runs NKI kernels
unmodified on vtrn's virtual NeuronCores.

Every kernel file is plain NKI: it imports ``nki`` (or ``neuronxcc.nki``), which
``vtrn.nki.install_import_shim()`` resolves to vtrn.nki when the real packages are absent. For
every kernel and a few shapes (rows that are not a multiple of 128 where the kernel masks),
the tests here

* run it with ``vtrn.nki.simulate_kernel(kernel[grid], *inputs, **options)`` on inputs from a
  seeded numpy Generator and compare with a numpy reference written here (float64), at the
  tolerance NKI's own tutorials and tests use for that kernel (see TOLERANCES);
* run it twice on the same inputs and require bit-identical outputs;
* run every kernel file's ``__main__`` block, unmodified, with ``python -m vtrn.nki run``.

"""

import dataclasses
import functools
import importlib.util
import math
import os
import subprocess
import sys
import zlib
from typing import Any, Callable, Optional

import numpy as np
import pytest

from support import PYTHON_FOLDER, REPOSITORY, child_environment

import vtrn.nki as vtrn_nki  # noqa: E402

vtrn_nki.install_import_shim()
vtrn_nki_close = vtrn_nki.close

@pytest.fixture(autouse=True, scope="module")
def release_nki_runtime():
    """vtrn.nki holds the cores of the runtime it opens; later test modules need them back."""
    yield
    vtrn_nki_close()


try:
    import ml_dtypes
except ImportError:  # the bfloat16-input cases need numpy arrays of bfloat16
    ml_dtypes = None

KERNELS = os.path.join(REPOSITORY, "Tests", "nki", "kernels")
KERNEL_FILES = sorted(name[:-3] for name in os.listdir(KERNELS) if name.endswith(".py"))

# (atol, rtol) by kernel family, and where NKI uses them (aws-neuron/nki-samples, the tutorials'
# kernels and tests; "main" is the __main__ check of the tutorial's kernel file):
TOLERANCES = {
    "add": (1e-4, 1e-2),        # tensor_addition_nki_kernels.py main (float16 inputs)
    "matmul": (1e-4, 1e-2),     # matrix_multiplication_torch.py (bfloat16 inputs)
    "rmsnorm": (1e-5, 1e-3),    # rmsnorm_torch.py (float32, 250 x 512)
    "layernorm": (1e-3, 1e-2),  # layernorm_torch.py (float32)
    "softmax": (1e-5, 1e-5),    # softmax_torch.py (float32)
    "avgpool": (1e-5, 1e-5),    # test/unit/test_adaptive_avg_pool2d.py, float32 (1e-2 for 16-bit)
    "attention": (1e-5, 1e-3),  # sd_attention_nki_kernels.py main (float32)
    "attention_bf16": (1e-2, 1e-5),  # test/unit/test_SD_attention_small_head.py, test_flash_attn_fwd.py
                                     # (atol=1e-2, numpy's default rtol), bfloat16 Tensor Engine operands
}


@dataclasses.dataclass(frozen=True)
class Case:
    module: str  # file name in Tests/nki/kernels, without .py
    kernel: str  # the @nki.jit function of that module
    label: str  # what distinguishes this case from the kernel's others (shapes, options)
    make: Callable[[np.random.Generator], tuple]  # -> (args, kwargs)
    reference: Callable[..., Any]  # reference(*args, **kwargs) -> array or tuple of arrays
    tolerance: Optional[str] = None  # a key of TOLERANCES; None: outputs must equal the reference exactly
    grid: Optional[Callable[..., tuple]] = None  # grid(*args) -> launch grid, for SPMD kernels
    needs_ml_dtypes: bool = False

    @property
    def id(self):
        return f"{self.module}.{self.kernel}[{self.label}]"


def _random(rng, shape, dtype=np.float32, low=0.0, high=1.0):
    return (low + (high - low) * rng.random(shape)).astype(dtype)


def _bf16(array):
    return array.astype(ml_dtypes.bfloat16)


def _f64(array):
    return np.asarray(array).astype(np.float64)


# -- numpy references (float64) ----------------------------------------------------------------

def ref_add(a, b):
    return _f64(a) + _f64(b)


def ref_matmul(lhsT, rhs, **_blocks):
    return _f64(lhsT).T @ _f64(rhs)


def ref_transpose_free(x, shape2D):
    rows = x.shape[0]
    size_x, size_y = shape2D
    return np.transpose(x.reshape(rows, size_x, size_y), (0, 2, 1)).reshape(rows, size_y * size_x)


def ref_transpose_pf(x):
    return x.T


def ref_rmsnorm(a, g, eps=1e-6):
    a = _f64(a)
    return a / np.sqrt(np.mean(a * a, axis=1, keepdims=True) + eps) * _f64(g)


def ref_layernorm(x, epsilon, gamma, beta):
    x = _f64(x)
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * _f64(gamma) + _f64(beta)


def ref_softmax(x):
    x = _f64(x)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ref_avgpool(x, pool_size):
    *lead, h, w = x.shape
    return _f64(x).reshape(*lead, h // pool_size, pool_size, w // pool_size, pool_size).mean(axis=(-3, -1))


def ref_attention(q, k, v, use_causal_mask=False, mixed_precision=False):
    q, k, v = _f64(q), _f64(k), _f64(v)
    scores = q @ k.T / math.sqrt(q.shape[1])
    if use_causal_mask:  # query i sees keys 0 ... i
        scores = np.where(np.tril(np.ones(scores.shape, dtype=bool)), scores, -np.inf)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)) @ v


def ref_flash_attention(q, k, v, mixed_precision=False):
    q, k, v = _f64(q), _f64(k), _f64(v)
    scores = np.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    row_max = scores.max(axis=-1, keepdims=True)
    e = np.exp(scores - row_max)
    row_sum = e.sum(axis=-1, keepdims=True)
    return np.einsum("bhqk,bhkd->bhqd", e / row_sum, v), row_max + np.log(row_sum)


# -- the cases ---------------------------------------------------------------------------------

def _cases():
    cases = []

    # tensor_add.py
    for shape, dtype in (((4, 3), np.float16), ((128, 512), np.float32), ((100, 1000), np.float16)):
        cases.append(Case("tensor_add", "tensor_add_kernel", f"{shape[0]}x{shape[1]}-{np.dtype(dtype).name}",
                          lambda rng, shape=shape, dtype=dtype: ((_random(rng, shape, dtype), _random(rng, shape, dtype)), {}),
                          ref_add, "add"))
    for shape, dtype in (((256, 1024), np.float16), ((128, 512), np.float32), ((384, 1536), np.float32)):
        cases.append(Case("tensor_add", "tensor_add_spmd_kernel", f"{shape[0]}x{shape[1]}-{np.dtype(dtype).name}",
                          lambda rng, shape=shape, dtype=dtype: ((_random(rng, shape, dtype), _random(rng, shape, dtype)), {}),
                          ref_add, "add", grid=lambda a, b: (a.shape[0] // 128, a.shape[1] // 512)))

    # matmul_basic.py: lhsT [128, 64], rhs [128, 512]
    def basic_inputs(rng, bf16=False):
        lhsT, rhs = _random(rng, (128, 64)), _random(rng, (128, 512))
        return ((_bf16(lhsT), _bf16(rhs)) if bf16 else (lhsT, rhs)), {}

    for kernel in ("matmul_basic_kernel", "matmul_basic_nl_kernel"):
        cases.append(Case("matmul_basic", kernel, "float32", basic_inputs, ref_matmul, "matmul"))
    cases.append(Case("matmul_basic", "matmul_basic_kernel", "bfloat16",
                      lambda rng: basic_inputs(rng, bf16=True), ref_matmul, "matmul", needs_ml_dtypes=True))

    # matmul_tiled.py: (K, M, N)
    def matmul_inputs(rng, K, M, N, bf16=False, **blocks):
        lhsT, rhs = _random(rng, (K, M)), _random(rng, (K, N))
        return ((_bf16(lhsT), _bf16(rhs)) if bf16 else (lhsT, rhs)), blocks

    for kernel in ("matmul_tiled_kernel", "matmul_tiled_hoisted_kernel", "matmul_tiled_dst_kernel"):
        for K, M, N in ((128, 128, 512), (512, 256, 1024)):
            cases.append(Case("matmul_tiled", kernel, f"K{K}-M{M}-N{N}",
                              lambda rng, K=K, M=M, N=N: matmul_inputs(rng, K, M, N), ref_matmul, "matmul"))
    cases.append(Case("matmul_tiled", "matmul_tiled_kernel", "K256-M128-N512-bfloat16",
                      lambda rng: matmul_inputs(rng, 256, 128, 512, bf16=True), ref_matmul, "matmul",
                      needs_ml_dtypes=True))

    # matmul_blocked.py: (K, M, N) and the block meta-parameters
    for (K, M, N), blocks in (((512, 256, 1024), {}),
                              ((1024, 256, 1024), {"TILES_IN_BLOCK_M": 1, "TILES_IN_BLOCK_N": 1, "TILES_IN_BLOCK_K": 4}),
                              ((512, 512, 512), {"TILES_IN_BLOCK_M": 4, "TILES_IN_BLOCK_N": 1, "TILES_IN_BLOCK_K": 2})):
        label = f"K{K}-M{M}-N{N}" + "".join(f"-{key[-1]}{value}" for key, value in blocks.items())
        cases.append(Case("matmul_blocked", "matmul_blocked_kernel", label,
                          lambda rng, K=K, M=M, N=N, blocks=blocks: matmul_inputs(rng, K, M, N, **blocks),
                          ref_matmul, "matmul"))

    # transpose2d.py: exact
    for rows, shape2D, dtype in ((5, (3, 4), np.int8), (128, (16, 8), np.float32), (64, (7, 9), np.float16)):
        def free_inputs(rng, rows=rows, shape2D=shape2D, dtype=dtype):
            size = shape2D[0] * shape2D[1]
            if np.issubdtype(dtype, np.integer):
                x = rng.integers(-128, 128, (rows, size)).astype(dtype)
            else:
                x = rng.standard_normal((rows, size)).astype(dtype)
            return (x, shape2D), {}
        cases.append(Case("transpose2d", "transpose2d_free_kernel",
                          f"{rows}x{shape2D[0]}x{shape2D[1]}-{np.dtype(dtype).name}", free_inputs, ref_transpose_free))
    for shape in ((128, 128), (200, 300), (256, 64)):
        cases.append(Case("transpose2d", "transpose2d_pf_kernel", f"{shape[0]}x{shape[1]}",
                          lambda rng, shape=shape: ((rng.standard_normal(shape).astype(np.float32),), {}),
                          ref_transpose_pf))

    # rmsnorm.py: rows not a multiple of 128 included (masked last tile)
    for rows, hidden in ((250, 512), (128, 1024), (300, 64)):
        def rms_inputs(rng, rows=rows, hidden=hidden):
            return (_random(rng, (rows, hidden)), _random(rng, (hidden,))), {}
        cases.append(Case("rmsnorm", "rmsnorm_kernel", f"{rows}x{hidden}", rms_inputs, ref_rmsnorm, "rmsnorm"))
        cases.append(Case("rmsnorm", "rmsnorm_spmd_kernel", f"{rows}x{hidden}", rms_inputs, ref_rmsnorm, "rmsnorm",
                          grid=lambda a, g: (math.ceil(a.shape[0] / 128),)))

    # layernorm.py
    for rows, hidden in ((300, 1000), (128, 512), (77, 256)):
        def ln_inputs(rng, rows=rows, hidden=hidden):
            return (_random(rng, (rows, hidden)), 1e-5, _random(rng, (hidden,)), _random(rng, (hidden,))), {}
        for kernel in ("layernorm_kernel_v1", "layernorm_kernel_v2"):
            cases.append(Case("layernorm", kernel, f"{rows}x{hidden}", ln_inputs, ref_layernorm, "layernorm"))

    # softmax.py
    for rows, columns in ((300, 1000), (128, 512), (129, 40)):
        def sm_inputs(rng, rows=rows, columns=columns):
            return (rng.standard_normal((rows, columns)).astype(np.float32),), {}
        for kernel in ("softmax_kernel", "softmax_isa_kernel"):
            cases.append(Case("softmax", kernel, f"{rows}x{columns}", sm_inputs, ref_softmax, "softmax"))

    # avgpool.py: the tutorial's exact float16 case, then float32
    cases.append(Case("avgpool", "avgpool2d_kernel", "2x6x6-float16-pool2-arange",
                      lambda rng: ((np.arange(2 * 6 * 6, dtype=np.float16).reshape(2, 6, 6), 2), {}),
                      ref_avgpool))
    for shape, pool in (((128, 32, 32), 2), ((16, 12, 18), 3)):
        cases.append(Case("avgpool", "avgpool2d_kernel", "x".join(map(str, shape)) + f"-pool{pool}",
                          lambda rng, shape=shape, pool=pool: ((rng.standard_normal(shape).astype(np.float32), pool), {}),
                          ref_avgpool, "avgpool"))
    for shape, pool in (((3, 64, 16, 24), 4), ((2, 128, 8, 8), 2)):
        cases.append(Case("avgpool", "avgpool2d_batched_kernel", "x".join(map(str, shape)) + f"-pool{pool}",
                          lambda rng, shape=shape, pool=pool: ((rng.standard_normal(shape).astype(np.float32), pool), {}),
                          ref_avgpool, "avgpool", grid=lambda x, pool: (x.shape[0],)))

    # attention.py: [seqlen, d_head]
    for seqlen, d_head, causal, mixed in ((128, 64, False, False), (128, 64, True, False),
                                          (512, 128, False, False), (512, 128, True, False),
                                          (384, 32, True, False),
                                          (512, 128, False, True), (256, 64, True, True)):
        def attn_inputs(rng, seqlen=seqlen, d_head=d_head, causal=causal, mixed=mixed):
            q, k, v = (_random(rng, (seqlen, d_head)) for _ in range(3))
            return (q, k, v), {"use_causal_mask": causal, "mixed_precision": mixed}
        label = f"{seqlen}x{d_head}" + ("-causal" if causal else "") + ("-mixed" if mixed else "")
        cases.append(Case("attention", "fused_self_attention_kernel", label, attn_inputs, ref_attention,
                          "attention_bf16" if mixed else "attention"))

    # flash_attention.py: [batch, heads, seqlen, d_head], grid (batch, heads), returns (out, lse)
    for batch, heads, seqlen_q, seqlen_kv, d_head, mixed in ((1, 1, 128, 512, 64, False),
                                                             (2, 2, 256, 1024, 64, False),
                                                             (1, 2, 256, 256, 128, False),
                                                             (1, 2, 512, 1024, 128, True)):
        def flash_inputs(rng, batch=batch, heads=heads, seqlen_q=seqlen_q, seqlen_kv=seqlen_kv, d_head=d_head, mixed=mixed):
            q = _random(rng, (batch, heads, seqlen_q, d_head), low=-1.0)
            k = _random(rng, (batch, heads, seqlen_kv, d_head), low=-1.0)
            v = _random(rng, (batch, heads, seqlen_kv, d_head), low=-1.0)
            return (q, k, v), {"mixed_precision": mixed}
        label = f"b{batch}-h{heads}-q{seqlen_q}-kv{seqlen_kv}-d{d_head}" + ("-mixed" if mixed else "")
        cases.append(Case("flash_attention", "flash_attention_fwd_kernel", label, flash_inputs, ref_flash_attention,
                          "attention_bf16" if mixed else "attention", grid=lambda q, k, v: (q.shape[0], q.shape[1])))

    return cases


CASES = _cases()

# The first case of every kernel, for the determinism test.
FIRST_CASES = []
for _case in CASES:
    if not any((case.module, case.kernel) == (_case.module, _case.kernel) for case in FIRST_CASES):
        FIRST_CASES.append(_case)


# -- running -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def kernel_module(name):
    """Tests/nki/kernels/<name>.py imported as a module (its __main__ block does not run)."""
    path = os.path.join(KERNELS, name + ".py")
    spec = importlib.util.spec_from_file_location(f"vtrn_nki_suite_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def case_inputs(case):
    if case.needs_ml_dtypes and ml_dtypes is None:
        pytest.skip("needs ml_dtypes for numpy arrays of bfloat16")
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    return case.make(rng)


def run(case, args, kwargs):
    """The kernel's outputs on vtrn, as a tuple of numpy arrays."""
    kernel = getattr(kernel_module(case.module), case.kernel)
    if case.grid is not None:
        kernel = kernel[case.grid(*args)]
    outputs = vtrn_nki.simulate_kernel(kernel, *args, **kwargs)
    if not isinstance(outputs, (tuple, list)):
        outputs = (outputs,)
    return tuple(np.asarray(output) for output in outputs)


def _as_float(array):
    """float64 copy of a float output (bfloat16 included) for the comparison; other dtypes as they are."""
    if array.dtype.kind == "f" or (ml_dtypes is not None and array.dtype == ml_dtypes.bfloat16):
        return array.astype(np.float64)
    return array


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_kernel_matches_numpy(case):
    args, kwargs = case_inputs(case)
    outputs = run(case, args, kwargs)
    expected = case.reference(*args, **kwargs)
    if not isinstance(expected, tuple):
        expected = (expected,)
    assert len(outputs) == len(expected), f"{case.id}: {len(outputs)} outputs, expected {len(expected)}"

    for index, (output, reference) in enumerate(zip(outputs, expected)):
        assert output.shape == reference.shape, f"{case.id} output {index}: shape {output.shape}, expected {reference.shape}"
        if case.tolerance is None:
            reference = np.asarray(reference).astype(output.dtype)
            assert np.array_equal(output, reference), f"{case.id} output {index} differs from numpy"
        else:
            atol, rtol = TOLERANCES[case.tolerance]
            actual = _as_float(output)
            assert not np.isnan(actual).any(), f"{case.id} output {index} has NaN (unwritten memory?)"
            error = np.max(np.abs(actual - reference))
            assert np.allclose(actual, reference, atol=atol, rtol=rtol), \
                f"{case.id} output {index}: max |error| {error:.3g} (atol {atol}, rtol {rtol})"


@pytest.mark.parametrize("case", FIRST_CASES, ids=lambda case: case.id)
def test_kernel_is_deterministic(case):
    args, kwargs = case_inputs(case)
    first = run(case, args, kwargs)
    second = run(case, args, kwargs)
    assert len(first) == len(second)
    for index, (a, b) in enumerate(zip(first, second)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), f"{case.id} output {index}: two runs on the same inputs differ"


def test_every_kernel_file_has_cases():
    assert {case.module for case in CASES} == set(KERNEL_FILES)


@pytest.mark.parametrize("name", KERNEL_FILES)
def test_kernel_file_runs_as_a_script(name):
    """`python -m vtrn.nki run Tests/nki/kernels/<name>.py` runs the file's __main__ block unmodified."""
    vtrn_nki_close()  # core claims are the host's: the child needs the cores this process's vtrn.nki holds
    environment = child_environment(PYTHONPATH=PYTHON_FOLDER)
    completed = subprocess.run([sys.executable, "-m", "vtrn.nki", "run", os.path.join(KERNELS, name + ".py")],
                               capture_output=True, text=True, env=environment, cwd=REPOSITORY, timeout=1800)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "NKI and NumPy match" in completed.stdout
    assert "NKI and NumPy differ" not in completed.stdout
