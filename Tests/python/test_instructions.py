"""Every instruction of the virtual NeuronCore against a numpy reference: bit exact for copies,
casts, transposes, iota and integer arithmetic; within the dtype's precision otherwise. Casts
are checked against ml_dtypes (bf16, fp8) and numpy (fp16), which round to nearest even."""

import math

import numpy as np
import pytest

import vtrn

from support import SerialProgram, open_runtime

ml_dtypes = pytest.importorskip("ml_dtypes")

DTYPES = ["fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "int32", "int8", "uint8"]
FLOATS = DTYPES[:5]
INTEGER_RANGES = {"int32": (-2**31, 2**31 - 1), "int8": (-128, 127), "uint8": (0, 255)}
SBUF_PARTITION_BYTES = 192 * 1024  # trn1


@pytest.fixture(scope="module")
def runtime():
    with open_runtime(topology="trn1", visible_cores="0-1") as runtime:
        yield runtime


@pytest.fixture(scope="module")
def device(runtime):
    return runtime.device(0)


@pytest.fixture
def serial(runtime):
    return SerialProgram(runtime)


# -- references ------------------------------------------------------------------------------------

def rounded(values, dtype):
    """fp32 values as the device stores them in ``dtype``: round to nearest even; integers
    saturate and NaN becomes 0."""
    values = np.asarray(values, np.float32)
    if dtype in INTEGER_RANGES:
        low, high = INTEGER_RANGES[dtype]
        whole = np.rint(values.astype(np.float64))
        whole = np.where(np.isnan(whole), 0, np.clip(whole, low, high))
        return whole.astype(vtrn.numpy_dtype(dtype))
    with np.errstate(over="ignore"):
        return values.astype(vtrn.numpy_dtype(dtype))


def bits(array):
    """The array's raw bits as unsigned integers, to compare NaNs and signed zeros exactly."""
    return np.ascontiguousarray(array).view(f"u{array.dtype.itemsize}")


def assert_bits_equal(result, expected):
    assert result.dtype == expected.dtype
    mismatched = np.flatnonzero(bits(result) != bits(expected))
    assert mismatched.size == 0, (f"{mismatched.size} elements differ, first at {mismatched[0]}: "
                                  f"{result.ravel()[mismatched[0]]!r} != {expected.ravel()[mismatched[0]]!r}")


def special_values():
    """fp32 values that exercise every cast: signed zeros, subnormals of every format, the
    overflow thresholds and halfway cases of each, integer bounds, infinities and NaN."""
    specials = [0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.5, -2.5, 3.5, 126.5, 127.5, 128.0, 254.5, 255.5, 256.0, -128.5,
                -129.0, 1e-45, -1e-45, 1.17e-38, 6e-8, 3e-5, 1.5e-5, 0.0019, 0.0039, 0.015625, 1.52e-5,
                239.0, 240.0, 247.9, 248.0, 250.0, 448.0, 464.0, 57344.0, 61439.0, 61440.0, 65504.0, 65519.0,
                65520.0, 1e5, -1e5, 3.3895314e38, 3.4e38, 2.0**31, -2.0**31, 2.0**31 - 128, 2.0**24 + 1, 16777217.0,
                np.inf, -np.inf, np.nan, -np.nan, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-9, 1.0 + 2.0**-11, 1.0 + 2.0**-4]
    rng = np.random.default_rng(7)
    scales = 2.0 ** rng.integers(-30, 30, 512 - len(specials))
    random = rng.standard_normal(512 - len(specials)) * scales
    return np.concatenate([np.array(specials, np.float32), random.astype(np.float32)]).reshape(8, 64)


def source_data(dtype):
    """(8, 64) values of ``dtype`` to cast from."""
    if dtype in INTEGER_RANGES:
        low, high = INTEGER_RANGES[dtype]
        rng = np.random.default_rng(3)
        values = rng.integers(low, high, (8, 64), endpoint=True, dtype=np.int64)
        values.ravel()[:6] = [low, high, 0, -1 if low < 0 else 1, low + 1, high - 1]
        if dtype == "int32":
            values.ravel()[6:12] = [2**24, 2**24 + 1, -(2**24) - 1, 2**31 - 64, 2**31 - 65, 123456789]
        return values.astype(vtrn.numpy_dtype(dtype))
    return rounded(special_values(), dtype)


# -- DMA and copies: every dtype to every dtype, bit exact ---------------------------------------

@pytest.mark.parametrize("target", DTYPES)
@pytest.mark.parametrize("source", DTYPES)
def test_casts_are_bit_exact(serial, device, source, target):
    data = source_data(source)
    # The same dtype moves bits; a dtype change goes through fp32 (int32 to fp32 rounds to
    # nearest even, as numpy does).
    expected = data if source == target else rounded(data.astype(np.float32), target)
    as_source = serial.load("x", data)
    as_target = serial.program.sbuf(data.shape, target)
    serial.program.dma_copy(as_target, serial.hbm["x"], **serial())  # cast by the DMA from HBM
    copied = serial.program.sbuf(data.shape, target)
    engine = ("dve", "act", "pool")[DTYPES.index(source) % 3]
    serial.program.tensor_copy(copied, as_source, engine=engine, **serial())  # cast by an engine
    serial.store("dma_in", as_target)
    serial.store("copy", copied)
    serial.program.dma_copy(serial.output("dma_out", data.shape, target), as_source, **serial())  # by the DMA to HBM
    results = serial.run(device)
    for name in ("dma_in", "copy", "dma_out"):
        assert_bits_equal(results[name], expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("engine", ["dve", "act", "pool"])
def test_tensor_copy_of_one_dtype_keeps_every_bit(serial, device, dtype, engine):
    # NaN payloads included: same-dtype copies move bits, not values.
    raw = np.random.default_rng(5).integers(0, 256, (16, 32 * np.dtype(vtrn.numpy_dtype(dtype)).itemsize), dtype=np.uint8)
    data = raw.view(vtrn.numpy_dtype(dtype))
    tile = serial.load("x", data)
    copy = serial.program.sbuf(data.shape, dtype, partition=32)
    serial.program.tensor_copy(copy, tile, engine=engine, **serial())
    serial.store("y", copy)
    assert_bits_equal(serial.run(device)["y"], data)


@pytest.mark.parametrize("shape", [(1, 1), (128, 1), (1, 7), (128, 300), (1, SBUF_PARTITION_BYTES // 4),
                                   (128, SBUF_PARTITION_BYTES // 4)])
def test_dma_copy_edge_shapes(serial, device, shape):
    data = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    serial.store("y", serial.load("x", data))
    assert_bits_equal(serial.run(device)["y"], data)


def test_dma_copy_between_partitions_and_sbuf_to_sbuf(serial, device):
    # DMA has no quadrant rule: any start partition, and partition p goes to partition p.
    data = np.arange(20 * 12, dtype=np.int32).reshape(20, 12)
    tile = serial.load("x", data, partition=5)
    moved = serial.program.sbuf((20, 12), "int32", partition=101)
    serial.program.dma_copy(moved, tile, **serial())
    serial.store("y", moved)
    assert_bits_equal(serial.run(device)["y"], data)


def test_dma_copy_reshapes_in_flat_order(serial, device):
    # Equal element counts are enough: elements go in flat (partition-major) order.
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
    tile = serial.load("x", data)
    reshaped = serial.program.sbuf((2, 12))
    serial.program.dma_copy(reshaped, tile, **serial())
    serial.store("y", reshaped)
    assert_bits_equal(serial.run(device)["y"], data.reshape(2, 12))


def test_hbm_to_hbm_copies_have_no_partition_limit(serial, device):
    # 128 partitions bound SBUF and PSUM tiles, not HBM: an HBM-to-HBM copy's rows may be many.
    data = np.random.default_rng(23).standard_normal((300, 7)).astype(np.float32)
    serial.inputs["a"] = data
    a = serial.hbm["a"] = serial.program.parameter("a", data.shape, "fp32")
    copied = serial.output("copied", data.shape, "fp32")
    transposed = serial.output("transposed", data.shape[::-1], "bf16")
    serial.program.dma_copy(copied, a, **serial())  # 300 rows
    serial.program.dma_copy(transposed.T, a, **serial())  # 300 rows of 7, strided, through fp32
    # HBM rows reshape into SBUF partitions in flat order, as any DMA_COPY.
    tile = serial.program.sbuf((100, 21))
    serial.program.dma_copy(tile, a, **serial())
    serial.store("tile", tile)
    results = serial.run(device)
    assert_bits_equal(results["copied"], data)
    assert_bits_equal(results["transposed"], rounded(data.T, "bf16"))
    assert_bits_equal(results["tile"], data.reshape(100, 21))


def test_dma_copy_accumulates_with_dst_rmw_op_add(serial, device):
    rng = np.random.default_rng(24)
    initial = rng.standard_normal((200, 5)).astype(np.float32)  # HBM rows: no 128 limit either
    addend = rng.standard_normal((40, 25)).astype(np.float32)
    tile = serial.load("addend", addend)
    acc = serial.hbm["acc"] = serial.program.parameter("acc", initial.shape, "fp32")
    serial.inputs["acc"] = initial
    serial.outputs.append("acc")
    serial.program.dma_copy(acc, tile, dst_rmw_op="add", **serial())  # flat order, as any DMA_COPY
    serial.program.dma_copy(acc, tile, dst_rmw_op="add", **serial())
    # Into SBUF, bf16 += fp32: both widened to fp32, the sum rounded to bf16.
    narrow = serial.program.sbuf(addend.shape, "bf16")
    serial.program.memset(narrow, 0.5, **serial())
    serial.program.dma_copy(narrow, tile, dst_rmw_op="add", **serial())
    serial.store("narrow", narrow)
    results = serial.run(device)
    step = addend.reshape(initial.shape)
    assert_bits_equal(results["acc"], (initial + step) + step)
    assert_bits_equal(results["narrow"], rounded(np.float32(0.5) + addend, "bf16"))


# -- MATMUL and TRANSPOSE ---------------------------------------------------------------------------

def matmul_bound(stationary, moving):
    """fp32 accumulation over K stays within K * 2^-24 * sum |a||b| of the exact product."""
    k = stationary.shape[0]
    return k * 2.0**-24 * (np.abs(stationary.T) @ np.abs(moving)) + 1e-37


@pytest.mark.parametrize("k, m, n", [(128, 128, 512), (1, 1, 1), (1, 128, 512), (128, 1, 1), (7, 3, 5), (64, 100, 333)])
def test_matmul_fp32_shapes(serial, device, k, m, n):
    rng = np.random.default_rng(k * m + n)
    stationary = rng.standard_normal((k, m)).astype(np.float32)
    moving = rng.standard_normal((k, n)).astype(np.float32)
    s, v = serial.load("s", stationary), serial.load("v", moving)
    result = serial.program.psum((m, n))
    serial.program.matmul(result, s, v, **serial())
    serial.store("c", result)
    c = serial.run(device)["c"]
    exact = stationary.T.astype(np.float64) @ moving.astype(np.float64)
    assert np.all(np.abs(c - exact) <= matmul_bound(stationary.astype(np.float64), moving.astype(np.float64)))


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp8_e4m3", "fp8_e5m2"])
def test_matmul_widens_narrow_inputs(serial, device, dtype):
    rng = np.random.default_rng(2)
    stationary = rng.standard_normal((96, 64)).astype(np.float32)
    moving = rng.standard_normal((96, 200)).astype(np.float32)
    # The DMA rounds the fp32 inputs to the tiles' dtype; the PE widens them back exactly.
    s, v = serial.load("s", stationary, dtype=dtype), serial.load("v", moving, dtype=dtype)
    result = serial.program.psum((64, 200))
    serial.program.matmul(result, s, v, **serial())
    serial.store("c", result)
    c = serial.run(device)["c"]
    seen_s = rounded(stationary, dtype).astype(np.float64)
    seen_v = rounded(moving, dtype).astype(np.float64)
    assert np.all(np.abs(c - seen_s.T @ seen_v) <= matmul_bound(seen_s, seen_v))


def test_matmul_mixed_dtypes_and_a_quadrant(serial, device):
    rng = np.random.default_rng(4)
    stationary = rng.standard_normal((32, 16)).astype(np.float32)
    moving = rng.standard_normal((32, 48)).astype(np.float32)
    s = serial.load("s", stationary, dtype="bf16", partition=96)
    v = serial.load("v", moving, dtype="fp16", partition=96)  # (fp32 mixes with fp32 only)
    result = serial.program.psum((16, 48), partition=64)
    serial.program.matmul(result, s, v, **serial())
    serial.store("c", result)
    c = serial.run(device)["c"]
    seen_s = rounded(stationary, "bf16").astype(np.float64)
    seen_v = rounded(moving, "fp16").astype(np.float64)
    assert np.all(np.abs(c - seen_s.T @ seen_v) <= matmul_bound(seen_s, seen_v))


def test_dve_and_act_write_psum(serial, device):
    x = np.random.default_rng(22).standard_normal((64, 40)).astype(np.float32)
    tile = serial.load("x", x)
    zeros, copied, exps = (serial.program.psum(x.shape) for _ in range(3))
    sums = serial.program.psum((64, 4))
    serial.program.memset(zeros, 0.0, **serial())  # nl.zeros in PSUM
    serial.program.tensor_copy(copied, tile, engine="act", **serial())
    serial.program.activate(exps, "exp", copied, **serial())  # ACT reads and writes PSUM
    serial.program.tensor_reduce(sums, exps, "add", **serial())  # DVE too
    for name, result in (("zeros", zeros), ("copied", copied), ("exps", exps), ("sums", sums)):
        serial.store(name, result)
    results = serial.run(device)
    assert_bits_equal(results["zeros"], np.zeros_like(x))
    assert_bits_equal(results["copied"], x)
    np.testing.assert_allclose(results["exps"], np.exp(x.astype(np.float64)), rtol=2e-7)
    np.testing.assert_allclose(results["sums"], results["exps"].astype(np.float64).reshape(64, 4, 10).sum(axis=2),
                               rtol=1e-6)


def test_matmul_accumulates_across_instructions(serial, device):
    rng = np.random.default_rng(6)
    parts = [(rng.standard_normal((128, 128)).astype(np.float32), rng.standard_normal((128, 512)).astype(np.float32))
             for _ in range(3)]
    result = serial.program.psum((128, 512))
    tiles = [(serial.load(f"s{index}", s), serial.load(f"v{index}", v)) for index, (s, v) in enumerate(parts)]
    # The first overwrites whatever the bank held; the others add.
    for index, (s, v) in enumerate(tiles):
        serial.program.matmul(result, s, v, accumulate=index > 0, **serial())
    serial.store("c", result)
    serial.program.matmul(result, *tiles[0], **serial())  # overwrites again: only the first product
    serial.store("first", result)
    results = serial.run(device)
    stationary = np.concatenate([s for s, _ in parts]).astype(np.float64)
    moving = np.concatenate([v for _, v in parts]).astype(np.float64)
    assert np.all(np.abs(results["c"] - stationary.T @ moving) <= matmul_bound(stationary, moving))
    s0, v0 = (part.astype(np.float64) for part in parts[0])
    assert np.all(np.abs(results["first"] - s0.T @ v0) <= matmul_bound(s0, v0))


@pytest.mark.parametrize("shape", [(128, 128), (1, 128), (128, 1), (5, 77), (1, 1)])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp8_e5m2", "int32", "uint8"])
def test_transpose_is_bit_exact(serial, device, shape, dtype):
    size = np.dtype(vtrn.numpy_dtype(dtype)).itemsize
    data = np.random.default_rng(8).integers(0, 256, (shape[0], shape[1] * size), dtype=np.uint8)
    data = data.view(vtrn.numpy_dtype(dtype))
    tile = serial.load("x", data)
    transposed = serial.program.psum(shape[::-1], dtype)
    serial.program.transpose(transposed, tile, **serial())
    serial.store("y", transposed)
    assert_bits_equal(serial.run(device)["y"], np.ascontiguousarray(data.T))


@pytest.mark.parametrize("shape", [(32, 32), (1, 32), (32, 1), (5, 17)])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_transpose_on_dve_is_bit_exact_between_sbuf_and_psum(serial, device, shape, dtype):
    size = np.dtype(vtrn.numpy_dtype(dtype)).itemsize
    data = np.random.default_rng(9).integers(0, 256, (shape[0], shape[1] * size), dtype=np.uint8)
    data = data.view(vtrn.numpy_dtype(dtype))
    tile = serial.load("x", data, partition=32)
    in_sbuf, in_psum = serial.program.sbuf(shape[::-1], dtype), serial.program.psum(shape[::-1], dtype, partition=64)
    back = serial.program.sbuf(shape, dtype, partition=96)
    serial.program.transpose(in_sbuf, tile, engine="dve", **serial())
    serial.program.transpose(in_psum, tile, engine="dve", **serial())
    serial.program.transpose(back, in_psum, engine="dve", **serial())  # from PSUM
    serial.store("sbuf", in_sbuf)
    serial.store("psum", in_psum)
    serial.store("back", back)
    results = serial.run(device)
    assert_bits_equal(results["sbuf"], np.ascontiguousarray(data.T))
    assert_bits_equal(results["psum"], np.ascontiguousarray(data.T))
    assert_bits_equal(results["back"], data)


# -- ACTIVATE ---------------------------------------------------------------------------------------

_erf = np.vectorize(math.erf)
_erfc = np.vectorize(math.erfc)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


ACTIVATIONS = {
    "copy": lambda x: x,
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0),
    "gelu": lambda x: 0.5 * x * _erfc(-x / math.sqrt(2)),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "silu": lambda x: x / (1 + np.exp(-x)),
    "square": lambda x: x * x,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "reciprocal": lambda x: 1 / x,
    "abs": np.abs,
    "sign": np.sign,
    "erf": _erf,
    "erf_dx": lambda x: 2 / math.sqrt(math.pi) * np.exp(-x * x),
    "sin": np.sin,
    "arctan": np.arctan,
    "softplus": _softplus,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "gelu_dx": lambda x: 0.5 * _erfc(-x / math.sqrt(2)) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi),
    "silu_dx": lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x))),
    "gelu_apprx_sigmoid": lambda x: x * _sigmoid(1.702 * x),
    "gelu_apprx_sigmoid_dx": lambda x: _sigmoid(1.702 * x) * (1 + 1.702 * x * (1 - _sigmoid(1.702 * x))),
}
POSITIVE_ONLY = {"log", "sqrt", "rsqrt", "reciprocal"}


def activation_input(function, shape, seed=0):
    rng = np.random.default_rng(seed)
    if function in POSITIVE_ONLY:
        return rng.uniform(0.05, 8, shape).astype(np.float32)
    return (rng.standard_normal(shape) * 3).astype(np.float32)


def test_every_activation_function_is_tested():
    assert sorted(ACTIVATIONS) == sorted(vtrn._library.ACTIVATIONS)


@pytest.mark.parametrize("function", list(ACTIVATIONS))
def test_activate(serial, device, function):
    x = activation_input(function, (128, 96))
    bias = np.linspace(0.0, 0.5, 128, dtype=np.float32).reshape(128, 1)
    tile, bias_tile = serial.load("x", x), serial.load("bias", bias)
    out = serial.program.sbuf(x.shape)
    serial.program.activate(out, function, tile, scale=0.75, bias=bias_tile, **serial())
    serial.store("y", out)
    y = serial.run(device)["y"]
    argument = (x * np.float32(0.75) + bias).astype(np.float64)  # fp32 multiply-add, as the engine
    np.testing.assert_allclose(y, ACTIVATIONS[function](argument), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("function", ["exp", "gelu", "silu", "reciprocal"])
def test_activate_rounds_to_a_narrow_output(serial, device, function):
    x = activation_input(function, (64, 80), seed=1)
    tile = serial.load("x", x)
    out = serial.program.sbuf(x.shape, "bf16", partition=64)
    serial.program.activate(out, function, tile, **serial())
    serial.store("y", out)
    y = serial.run(device)["y"]
    assert y.dtype == ml_dtypes.bfloat16
    exact = ACTIVATIONS[function](x.astype(np.float64))
    # Within one bf16 rounding of the exact value, plus the fp32 function's own error.
    np.testing.assert_allclose(y.astype(np.float64), exact, rtol=2.0**-8 + 1e-6, atol=1e-30)


def test_nki_spellings_are_aliases(serial, device):
    x = activation_input("gelu_tanh", (4, 16), seed=3)
    tile = serial.load("x", x)
    nki, ours = serial.program.sbuf(x.shape), serial.program.sbuf(x.shape)
    serial.program.activate(nki, "gelu_apprx_tanh", tile, **serial())
    serial.program.activate(ours, "gelu_tanh", tile, **serial())
    larger = serial.program.sbuf(x.shape)
    serial.program.tensor_tensor(larger, nki, ours, "maximum", **serial())
    serial.store("nki", nki)
    serial.store("ours", ours)
    serial.store("larger", larger)
    results = serial.run(device)
    assert_bits_equal(results["nki"], results["ours"])
    assert_bits_equal(results["larger"], results["ours"])


def gelu_exact(x):
    """GELU in float64 without cancellation: x/2 * erfc(-x/sqrt 2) (math.erfc, no scipy)."""
    return 0.5 * x * math.erfc(-x / math.sqrt(2))


def gelu_tanh_exact(x):
    """The tanh approximation in float64 without cancellation: x * sigmoid(2u)."""
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    return x / (1 + math.exp(-2 * u))


def test_gelu_keeps_its_relative_accuracy_for_negative_inputs(serial, device):
    # 1 + erf(x / sqrt 2) and 1 + tanh(u) cancel to nothing in fp32 below about -4: the results
    # must still be within a few fp32 roundings of the true (tiny) values.
    x = np.array([[-1.0, -3.0, -5.0, -7.5, -10.0, -12.0]], np.float32)
    tile = serial.load("x", x)
    exact, tanh = serial.program.sbuf(x.shape), serial.program.sbuf(x.shape)
    serial.program.activate(exact, "gelu", tile, **serial())
    serial.program.activate(tanh, "gelu_tanh", tile, **serial())
    serial.store("exact", exact)
    serial.store("tanh", tanh)
    results = serial.run(device)
    for value, got in zip(x[0].tolist(), results["exact"][0].tolist()):
        assert got != 0 and abs(got - gelu_exact(value)) <= 4e-7 * abs(gelu_exact(value)), (value, got)
    for value, got in zip(x[0].tolist(), results["tanh"][0].tolist()):
        reference = gelu_tanh_exact(value)
        if abs(reference) < 1.2e-38:  # below fp32's normal range (x = -12: 1e-55): flushes to -0
            assert got == 0 and math.copysign(1, got) == -1, (value, got)
        else:
            assert abs(got - reference) <= 4e-7 * abs(reference), (value, got)


def test_activate_scale_tile_and_accumulate_out(serial, device):
    x = activation_input("exp", (128, 4, 16), seed=2)
    scale = np.random.default_rng(3).uniform(-1, 1, (128, 1)).astype(np.float32)
    tile, scale_tile = serial.load("x", x), serial.load("scale", scale)
    out = serial.program.sbuf(x.shape)
    sums = serial.program.sbuf((128, 1))
    serial.program.activate(out, "exp", tile, scale=scale_tile, accumulate_out=sums, **serial())
    serial.store("y", out)
    serial.store("sums", sums)
    results = serial.run(device)
    expected = np.exp((x * scale[:, :, None]).astype(np.float64))
    np.testing.assert_allclose(results["y"], expected, rtol=2e-6)
    np.testing.assert_allclose(results["sums"], expected.sum(axis=(1, 2))[:, None], rtol=1e-5)


def test_activate_accumulate_out_sums_the_rounded_results_of_one_partition(serial, device):
    x = np.arange(1 * 10, dtype=np.float32).reshape(1, 10) - 4.5
    tile = serial.load("x", x)
    out = serial.program.sbuf(x.shape)
    sums = serial.program.sbuf((1, 1), "int32")
    serial.program.activate(out, "relu", tile, accumulate_out=sums, **serial())
    serial.store("sums", sums)
    assert serial.run(device)["sums"].tolist() == [[round(0.5 + 1.5 + 2.5 + 3.5 + 4.5)]]


# -- TENSOR_TENSOR and TENSOR_SCALAR: every ALU op -------------------------------------------------

def as_int32(values):
    """The int32 an fp32 operand of a bitwise op stands for: nearest even, saturated, NaN 0."""
    return rounded(values, "int32")


def bitvec(op, a, b):
    """The engines' bitvec ops on the 32-bit two's complement patterns of integer arrays (int8
    sign-extended, uint8 zero-extended): int32 results. Shift amounts count modulo 32 and
    shift_right is logical."""
    a = np.asarray(a).astype(np.int32).view(np.uint32)
    b = np.asarray(b).astype(np.int32).view(np.uint32)
    function = {"bitwise_and": np.bitwise_and, "bitwise_or": np.bitwise_or, "bitwise_xor": np.bitwise_xor,
                "shift_left": lambda a, b: np.left_shift(a, b & 31),
                "shift_right": lambda a, b: np.right_shift(a, b & 31), "invert": lambda a, b: np.invert(a)}[op]
    return np.asarray(function(a, b), np.uint32).view(np.int32)


def alu(op, x, y):
    """The engines' ALU in fp32 (comparisons give 1.0 or 0.0); a bitvec op's fp32 operands stand
    for the int32s they round to."""
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    with np.errstate(all="ignore"):
        if op in BITWISE_OPS + ["invert"]:
            return bitvec(op, as_int32(x), as_int32(y)).astype(np.float32)
        if op.startswith("logical_"):
            truth = {"logical_and": lambda: (x != 0) & (y != 0), "logical_or": lambda: (x != 0) | (y != 0),
                     "logical_xor": lambda: (x != 0) ^ (y != 0), "logical_not": lambda: x == 0}[op]()
            return truth.astype(np.float32)  # NaN != 0: true
        return {
            "add": lambda: x + y, "subtract": lambda: x - y, "multiply": lambda: x * y, "divide": lambda: x / y,
            "max": lambda: np.maximum(x, y), "min": lambda: np.minimum(x, y),
            "equal": lambda: (x == y).astype(np.float32), "not_equal": lambda: (x != y).astype(np.float32),
            "greater": lambda: (x > y).astype(np.float32), "greater_equal": lambda: (x >= y).astype(np.float32),
            "less": lambda: (x < y).astype(np.float32), "less_equal": lambda: (x <= y).astype(np.float32),
            "pow": lambda: np.power(x, y), "abs": lambda: np.abs(x), "reciprocal": lambda: np.float32(1) / x,
            "rsqrt": lambda: np.float32(1) / np.sqrt(x), "bypass": lambda: x,
        }[op]()


BINARY_FLOAT_OPS = ["add", "subtract", "multiply", "divide", "max", "min", "equal", "not_equal", "greater",
                    "greater_equal", "less", "less_equal", "pow"]
BITWISE_OPS = ["bitwise_and", "bitwise_or", "bitwise_xor", "shift_left", "shift_right"]
LOGICAL_OPS = ["logical_and", "logical_or", "logical_xor"]
UNARY_OPS = ["abs", "reciprocal", "rsqrt", "logical_not"]
# Ops whose fp32 result may differ from numpy's by the last bit (libm's powf, a reciprocal square root).
INEXACT = {"pow", "rsqrt"}


def test_every_alu_op_is_tested():
    assert sorted(BINARY_FLOAT_OPS + BITWISE_OPS + LOGICAL_OPS + UNARY_OPS + ["bypass", "invert"]) == \
        sorted(vtrn._library.ALU_OPS)


def float_operands(op, shape, seed=0):
    rng = np.random.default_rng(seed)
    if op == "pow":
        return rng.uniform(0.1, 4, shape).astype(np.float32), rng.uniform(-3, 3, shape).astype(np.float32)
    a = np.round(rng.standard_normal(shape) * 4, 1).astype(np.float32)
    b = np.round(rng.standard_normal(shape) * 4, 1).astype(np.float32)
    b.ravel()[::5] = a.ravel()[::5]  # equal pairs for the comparisons
    return a, b


def assert_alu_result(op, result, expected):
    if op in INEXACT:
        np.testing.assert_allclose(result, expected, rtol=2e-7)
    else:
        assert_bits_equal(result, expected)


@pytest.mark.parametrize("op", BINARY_FLOAT_OPS)
def test_tensor_tensor_float_ops(serial, device, op):
    a, b = float_operands(op, (128, 64))
    a_tile, b_tile = serial.load("a", a), serial.load("b", b)
    out = serial.program.sbuf(a.shape)
    serial.program.tensor_tensor(out, a_tile, b_tile, op, **serial())
    serial.store("y", out)
    assert_alu_result(op, serial.run(device)["y"], alu(op, a, b))


@pytest.mark.parametrize("dtype", ["int32", "int8", "uint8"])
@pytest.mark.parametrize("op", BITWISE_OPS + ["add", "subtract", "multiply", "max"])
def test_tensor_tensor_integer_ops_are_exact(serial, device, op, dtype):
    rng = np.random.default_rng(9)
    low, high = INTEGER_RANGES[dtype]
    if op.startswith("shift"):
        a = rng.integers(max(low, -1000), min(high, 1000), (32, 40), endpoint=True)
        b = rng.integers(0, 7 if dtype != "int32" else 12, (32, 40), endpoint=True)
    else:
        a = rng.integers(max(low, -3000), min(high, 3000), (32, 40), endpoint=True)
        b = rng.integers(max(low, -3000), min(high, 3000), (32, 40), endpoint=True)
    a, b = a.astype(vtrn.numpy_dtype(dtype)), b.astype(vtrn.numpy_dtype(dtype))
    a_tile, b_tile = serial.load("a", a), serial.load("b", b)
    out = serial.program.sbuf(a.shape, dtype)
    serial.program.tensor_tensor(out, a_tile, b_tile, op, **serial())
    serial.store("y", out)
    if op in BITWISE_OPS:
        # Bitvec ops act on the bits; a narrow output keeps the low bits (numpy's astype wraps too).
        expected = bitvec(op, a, b).astype(vtrn.numpy_dtype(dtype))
    else:
        # Arithmetic passes through fp32 (exact below 2^24) and saturates into the output dtype.
        expected = rounded(alu(op, a.astype(np.float32), b.astype(np.float32)), dtype)
    assert_bits_equal(serial.run(device)["y"], expected)


def int32_patterns(shape, seed):
    """int32 values over the whole range, with the edge patterns first."""
    values = np.random.default_rng(seed).integers(-2**31, 2**31, shape, dtype=np.int64)
    values.ravel()[:8] = [0x7fffffff, 0x12345679, -1, -2**31, 0, 1, 0x55555555, -0x55555556]
    return values.astype(np.int32)


@pytest.mark.parametrize("op", BITWISE_OPS)
def test_bitvec_ops_keep_all_32_bits(serial, device, op):
    a = int32_patterns((64, 50), seed=10)
    b = int32_patterns((64, 50), seed=11)
    if op.startswith("shift"):
        b = np.random.default_rng(12).integers(0, 40, a.shape).astype(np.int32)  # 32 and more count modulo 32
    a_tile, b_tile = serial.load("a", a), serial.load("b", b)
    out = serial.program.sbuf(a.shape, "int32")
    serial.program.tensor_tensor(out, a_tile, b_tile, op, **serial())
    serial.store("y", out)
    assert_bits_equal(serial.run(device)["y"], bitvec(op, a, b))


def test_bitvec_example_that_fp32_loses(serial, device):
    a = np.array([[0x7fffffff, -8, 0x12345679]], np.int32)
    b = np.array([[0x12345679, 1, 0x7fffffff]], np.int32)
    tiles = serial.load("a", a), serial.load("b", b)
    anded, shifted = serial.program.sbuf(a.shape, "int32"), serial.program.sbuf(a.shape, "int32")
    serial.program.tensor_tensor(anded, *tiles, "bitwise_and", **serial())
    serial.program.tensor_tensor(shifted, *tiles, "shift_right", **serial())
    serial.store("and", anded)
    serial.store("shift", shifted)
    results = serial.run(device)
    assert results["and"].tolist() == [[0x12345679, 0, 0x12345679]]
    assert results["shift"].tolist() == [[63, 0x7ffffffc, 0]]  # shift by 25, 1, 31: logical, zeros come in


def test_tensor_scalar_int32_immediates_and_tiles_are_exact(serial, device):
    source = int32_patterns((32, 40), seed=13)
    column = int32_patterns((32, 1), seed=14)
    tile, column_tile = serial.load("x", source), serial.load("column", column)
    masked, mixed = serial.program.sbuf(source.shape, "int32"), serial.program.sbuf(source.shape, "int32")
    # Python integers are exact 32-bit immediates; 0xffffffff is the pattern of -1.
    serial.program.tensor_scalar(masked, tile, "bitwise_and", 0x7ffffff5, "bitwise_xor", 0xffffffff, **serial())
    serial.program.tensor_scalar(mixed, tile, "bitwise_or", column_tile, "shift_left", 3, reverse=2, **serial())
    serial.store("masked", masked)
    serial.store("mixed", mixed)
    results = serial.run(device)
    assert_bits_equal(results["masked"], (source & np.int32(0x7ffffff5)) ^ np.int32(-1))
    assert_bits_equal(results["mixed"], bitvec("shift_left", np.full_like(source, 3), source | column))


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_bitvec_results_wrap_into_narrow_integers(serial, device, dtype):
    # int8 sign-extends and uint8 zero-extends to 32 bits; the result keeps its low 8 bits.
    values = np.arange(256, dtype=np.uint8).view(vtrn.numpy_dtype(dtype)).reshape(8, 32)
    tile = serial.load("x", values)
    shifted, wide = serial.program.sbuf(values.shape, dtype), serial.program.sbuf(values.shape, "int32")
    serial.program.tensor_scalar(shifted, tile, "shift_left", 3, **serial())
    serial.program.tensor_scalar(wide, tile, "shift_right", 1, **serial())
    serial.store("shifted", shifted)
    serial.store("wide", wide)
    results = serial.run(device)
    assert_bits_equal(results["shifted"], bitvec("shift_left", values, 3).astype(values.dtype))
    assert_bits_equal(results["wide"], bitvec("shift_right", values, 1))


def logical_operands(shape, seed):
    """fp32 values where zeros (both signs), NaN, infinities and tiny numbers are common."""
    rng = np.random.default_rng(seed)
    choices = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -2.5, 1.0, 0.0, 0.0], np.float32)
    return rng.choice(choices, shape)


@pytest.mark.parametrize("op", LOGICAL_OPS)
def test_logical_ops_treat_nonzero_as_true(serial, device, op):
    a, b = logical_operands((32, 64), seed=15), logical_operands((32, 64), seed=16)
    a_tile, b_tile = serial.load("a", a), serial.load("b", b)
    out, narrow = serial.program.sbuf(a.shape), serial.program.sbuf(a.shape, "uint8")
    serial.program.tensor_tensor(out, a_tile, b_tile, op, **serial())
    serial.program.tensor_scalar(narrow, a_tile, op, 0.0, **serial())  # x op 0: 0 for and, the truth of x else
    serial.store("y", out)
    serial.store("narrow", narrow)
    results = serial.run(device)
    assert_bits_equal(results["y"], alu(op, a, b))
    assert_bits_equal(results["narrow"], alu(op, a, np.float32(0)).astype(np.uint8))


def test_logical_not_and_invert(serial, device):
    a = logical_operands((16, 40), seed=17)
    ints = int32_patterns((16, 40), seed=18)
    a_tile, int_tile = serial.load("a", a), serial.load("ints", ints)
    negated, inverted = serial.program.sbuf(a.shape, "bf16"), serial.program.sbuf(ints.shape, "int32")
    serial.program.tensor_scalar(negated, a_tile, "logical_not", 0.0, **serial())
    serial.program.tensor_scalar(inverted, int_tile, "invert", 0, "bitwise_and", 0x7fffffff, **serial())
    serial.store("negated", negated)
    serial.store("inverted", inverted)
    results = serial.run(device)
    assert_bits_equal(results["negated"], rounded(alu("logical_not", a, 0), "bf16"))
    assert_bits_equal(results["inverted"], ~ints & np.int32(0x7fffffff))


def test_arithmetic_ops_on_int32_go_through_fp32(serial, device):
    # The Vector Engine computes add in fp32, as NKI documents: 2^24 + 1 has no fp32.
    a = np.array([[2**24 + 1, 2**31 - 1, 7]], np.int32)
    tile = serial.load("a", a)
    out = serial.program.sbuf(a.shape, "int32")
    serial.program.tensor_scalar(out, tile, "add", 0, **serial())
    serial.store("y", out)
    assert serial.run(device)["y"].tolist() == [[2**24, 2**31 - 1, 7]]  # 2^31 - 1 -> 2^31 -> saturates back


def test_tensor_tensor_reads_one_input_from_psum_and_rounds_its_output(serial, device):
    a, b = float_operands("add", (64, 100), seed=3)
    identity = np.eye(64, dtype=np.float32)
    a_tile, b_tile, eye = serial.load("a", a), serial.load("b", b), serial.load("eye", identity)
    in_psum = serial.program.psum((64, 100))
    serial.program.matmul(in_psum, eye, a_tile, **serial())  # a, exactly, in PSUM
    out = serial.program.sbuf(a.shape, "bf16")
    serial.program.tensor_tensor(out, in_psum, b_tile, "multiply", **serial())
    serial.store("y", out)
    # The matmul's sum turns -0 into +0 (0 + -0); everything else of a is exact.
    assert_bits_equal(serial.run(device)["y"], rounded((a + np.float32(0)) * b, "bf16"))


def scalar_reference(op0, x0, op1, x1, reverse, source):
    first = alu(op0, x0, source) if reverse & 1 else alu(op0, source, x0)
    if op1 == "bypass":
        return first
    return alu(op1, x1, first) if reverse & 2 else alu(op1, first, x1)


@pytest.mark.parametrize("op", BINARY_FLOAT_OPS + UNARY_OPS)
def test_tensor_scalar_float_ops(serial, device, op):
    source, _ = float_operands(op, (128, 48), seed=4)
    if op in ("rsqrt", "reciprocal"):
        source = np.abs(source) + np.float32(0.5)
    x0 = np.float32(1.5 if op != "pow" else 0.5)
    tile = serial.load("x", source)
    out = serial.program.sbuf(source.shape)
    serial.program.tensor_scalar(out, tile, op, float(x0), **serial())
    serial.store("y", out)
    assert_alu_result(op, serial.run(device)["y"], scalar_reference(op, x0, "bypass", None, 0, source))


@pytest.mark.parametrize("reverse", [0, 1, 2, 3])
@pytest.mark.parametrize("engine", ["dve", "act", "pool"])
def test_tensor_scalar_two_stages_reverse_bits_and_tile_operands(serial, device, engine, reverse):
    source, _ = float_operands("divide", (64, 32), seed=5)
    x1 = np.random.default_rng(6).uniform(1, 2, (64, 1)).astype(np.float32)
    tile, x1_tile = serial.load("x", source, partition=64), serial.load("x1", x1, partition=64)
    out = serial.program.sbuf(source.shape, partition=64)
    serial.program.tensor_scalar(out, tile, "subtract", 3.0, "divide", x1_tile, reverse=reverse, engine=engine,
                                 **serial())
    serial.store("y", out)
    expected = scalar_reference("subtract", np.float32(3), "divide", x1, reverse, source)
    assert_bits_equal(serial.run(device)["y"], expected)


@pytest.mark.parametrize("op", BITWISE_OPS)
def test_tensor_scalar_integer_ops(serial, device, op):
    source = np.random.default_rng(7).integers(-5000, 5000, (16, 24)).astype(np.int32)
    tile = serial.load("x", source)
    out = serial.program.sbuf(source.shape, "int32")
    # Reversed: 3 op x, so shifts move a constant by the data's low bits.
    serial.program.tensor_scalar(out, tile, "bitwise_and", 7.0, op, 3.0, reverse=2, **serial())
    serial.store("y", out)
    expected = rounded(scalar_reference("bitwise_and", np.float32(7), op, np.float32(3), 2, source.astype(np.float32)),
                       "int32")
    assert_bits_equal(serial.run(device)["y"], expected)


# -- TENSOR_REDUCE, MEMSET, IOTA, AFFINE_SELECT ------------------------------------------------------

@pytest.mark.parametrize("negate", [False, True])
@pytest.mark.parametrize("op", ["add", "max", "min", "multiply"])
def test_tensor_reduce(serial, device, op, negate):
    rng = np.random.default_rng(8)
    if op == "multiply":
        source = rng.uniform(0.9, 1.1, (128, 3, 50)).astype(np.float32)
    else:
        source = (rng.standard_normal((128, 3, 50)) * 10).astype(np.float32)
    tile = serial.load("x", source)
    out = serial.program.sbuf((128, 1))
    serial.program.tensor_reduce(out, tile, op, negate=negate, **serial())
    serial.store("y", out)
    y = serial.run(device)["y"]
    reduce = {"add": np.sum, "max": np.max, "min": np.min, "multiply": np.prod}[op]
    expected = reduce(source.astype(np.float64).reshape(128, -1), axis=1, keepdims=True) * (-1 if negate else 1)
    if op in ("max", "min"):
        assert_bits_equal(y, expected.astype(np.float32))
    else:  # a sum or product of n fp32 terms is within n * 2^-24 of the sum of their magnitudes
        terms = np.abs(source.astype(np.float64).reshape(128, -1))
        scale = np.sum(terms, axis=1, keepdims=True) if op == "add" else np.abs(expected)
        assert np.all(np.abs(y - expected) <= terms.shape[1] * 2.0**-24 * scale)


@pytest.mark.parametrize("op", ["add", "max", "min", "multiply"])
def test_tensor_reduce_keeps_leading_axes(serial, device, op):
    rng = np.random.default_rng(19)
    source = rng.uniform(0.5, 1.5, (64, 3, 5, 7)).astype(np.float32)
    tile = serial.load("x", source)
    last, two = serial.program.sbuf((64, 3, 5)), serial.program.sbuf((64, 3))
    middle = serial.program.sbuf((64, 3, 7))
    serial.program.tensor_reduce(last, tile, op, **serial())  # the last axis: groups of 7
    serial.program.tensor_reduce(two, tile, op, negate=True, **serial())  # the last two: groups of 35
    # The middle axis: a view of (64, 3, 7, 5) that puts it last (strides in elements).
    view = vtrn.AccessPattern("sbuf", "fp32", (64, 3, 7, 5), (None, 35, 1, 7), offset=tile.offset)
    serial.program.tensor_reduce(middle, view, op, **serial())
    for name, result in (("last", last), ("two", two), ("middle", middle)):
        serial.store(name, result)
    results = serial.run(device)
    reduce = {"add": np.sum, "max": np.max, "min": np.min, "multiply": np.prod}[op]
    wide = source.astype(np.float64)
    for name, expected in (("last", reduce(wide, axis=3)), ("two", -reduce(wide, axis=(2, 3))),
                           ("middle", reduce(wide, axis=2))):
        np.testing.assert_allclose(results[name], expected, rtol=40 * 2.0**-24, err_msg=name)


@pytest.mark.parametrize("op", ["bitwise_and", "bitwise_or", "bitwise_xor"])
@pytest.mark.parametrize("dtype", ["int32", "uint8"])
def test_bitwise_reductions_are_exact(serial, device, op, dtype):
    source = int32_patterns((32, 4, 9), seed=20).astype(vtrn.numpy_dtype(dtype))
    tile = serial.load("x", source)
    out, everything = serial.program.sbuf((32, 4), dtype), serial.program.sbuf((32, 1), "int32")
    serial.program.tensor_reduce(out, tile, op, **serial())
    serial.program.tensor_reduce(everything, tile, op, **serial())
    serial.store("y", out)
    serial.store("all", everything)
    results = serial.run(device)
    function = {"bitwise_and": np.bitwise_and, "bitwise_or": np.bitwise_or, "bitwise_xor": np.bitwise_xor}[op]
    assert_bits_equal(results["y"], function.reduce(source, axis=2))
    assert_bits_equal(results["all"], function.reduce(source.astype(np.int32).reshape(32, -1), axis=1, keepdims=True))


@pytest.mark.parametrize("op", ["logical_and", "logical_or", "logical_xor"])
def test_logical_reductions(serial, device, op):
    source = logical_operands((16, 6, 4), seed=21)
    source[0] = 1.0  # all true
    source[1] = 0.0  # all false
    tile = serial.load("x", source)
    out = serial.program.sbuf((16, 6), "bf16")
    serial.program.tensor_reduce(out, tile, op, negate=True, **serial())
    serial.store("y", out)
    truth = source != 0
    expected = {"logical_and": np.all, "logical_or": np.any,
                "logical_xor": lambda t, axis: np.sum(t, axis=axis) % 2 == 1}[op](truth, axis=2)
    assert_bits_equal(serial.run(device)["y"], rounded(-expected.astype(np.float32), "bf16"))


def test_tensor_reduce_of_one_element_and_into_an_integer(serial, device):
    source = np.array([[2.5], [-7.0], [3.5]], np.float32)
    tile = serial.load("x", source)
    out = serial.program.sbuf((3, 1), "int8")
    serial.program.tensor_reduce(out, tile, "add", negate=True, **serial())
    serial.store("y", out)
    assert serial.run(device)["y"].tolist() == [[-2], [7], [-4]]  # -2.5 and -3.5 round to even


@pytest.mark.parametrize("engine", ["dve", "pool"])
@pytest.mark.parametrize("dtype, value", [("fp32", 3.25), ("bf16", 1.1), ("fp16", 70000.0), ("fp8_e4m3", 239.0),
                                          ("fp8_e4m3", 1000.0), ("fp8_e5m2", -0.3), ("int32", -7.5), ("int8", 300.0),
                                          ("uint8", -5.0)])
def test_memset(serial, device, engine, dtype, value):
    tile = serial.program.sbuf((32, 17), dtype, partition=32)
    serial.program.memset(tile, value, engine=engine, **serial())
    serial.store("y", tile)
    assert_bits_equal(serial.run(device)["y"], rounded(np.full((32, 17), value, np.float32), dtype))


def affine(shape, steps, offset, channel_multiplier):
    """offset + p * channel_multiplier + sum(steps[d] * i_d) over a (P, free...) shape, in int64."""
    indices = np.indices(shape, dtype=np.int64)
    value = offset + indices[0] * channel_multiplier
    for step, index in zip(steps, indices[1:]):
        value = value + step * index
    return value


@pytest.mark.parametrize("shape, steps, offset, channel_multiplier, dtype", [
    ((128, 4, 8), [8, 1], -5, 100, "int32"),
    ((1, 512), [1], 0, 0, "int32"),
    ((128, 1), [0], 0, 1, "int32"),
    ((16, 3, 2, 5, 7), [-70, 35, 7, 1], 1000, -3, "int32"),
    ((64, 64), [3], 2**31 - 100, 1, "int32"),  # wraps around, as int32 arithmetic does
    ((128, 300), [1], 0, 300, "fp32"),
    ((128, 300), [1], 0, 300, "bf16"),
    ((8, 40), [-1], 20, 1, "int8"),
])
def test_iota(serial, device, shape, steps, offset, channel_multiplier, dtype):
    tile = serial.program.sbuf(shape, dtype)
    serial.program.iota(tile, steps, offset=offset, channel_multiplier=channel_multiplier, **serial())
    serial.store("y", tile)
    values = affine(shape, steps, offset, channel_multiplier).astype(np.int32)  # wraps
    expected = values if dtype == "int32" else rounded(values.astype(np.float32), dtype)
    assert_bits_equal(serial.run(device)["y"], expected)


def test_affine_select_makes_a_causal_mask(serial, device):
    scores = np.random.default_rng(9).standard_normal((128, 128)).astype(np.float32)
    tile = serial.load("scores", scores)
    masked = serial.program.sbuf(scores.shape)
    # Keep column i of row p where p - i >= 0.
    serial.program.affine_select(masked, [-1], 0, 1, "greater_equal", tile, -np.inf, **serial())
    serial.store("y", masked)
    expected = np.where(np.tril(np.ones((128, 128), bool)), scores, np.float32(-np.inf))
    assert_bits_equal(serial.run(device)["y"], expected)


@pytest.mark.parametrize("cmp", ["equal", "not_equal", "greater", "greater_equal", "less", "less_equal"])
def test_affine_select_comparisons(serial, device, cmp):
    on_true = np.arange(16 * 3 * 5, dtype=np.float32).reshape(16, 3, 5)
    tile = serial.load("x", on_true, partition=96)
    out = serial.program.sbuf(on_true.shape, "bf16", partition=96)
    serial.program.affine_select(out, [5, -1], -20, 2, cmp, tile, -1.5, **serial())
    serial.store("y", out)
    value = affine(on_true.shape, [5, -1], -20, 2)
    keep = alu(cmp, value.astype(np.float32), np.float32(0)) != 0
    assert_bits_equal(serial.run(device)["y"], rounded(np.where(keep, on_true, np.float32(-1.5)), "bf16"))
