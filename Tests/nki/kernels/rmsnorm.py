"""RMSNorm over the last dimension: out = a / sqrt(mean(a * a, axis=1) + eps) * g.

a is [rows, hidden], g is [hidden]. Rows go to partitions, 128 at a time; ``rows`` need not be a
multiple of 128: the last tile's loads and stores are masked.

* ``rmsnorm_kernel``: the tutorial's shape, nki.language only, one kernel looping over row tiles.
* ``rmsnorm_spmd_kernel``: one row tile per program of a 1D launch grid
  (``rmsnorm_spmd_kernel[ceil(rows / 128)](a, g)``), written with nki.isa instructions
  (Scalar Engine activations, Vector Engine reductions and tensor-scalar/tensor-tensor ops).
"""

import math

import numpy as np

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def rmsnorm_kernel(a_tensor, g_tensor, eps=1e-6):
    out_tensor = nl.ndarray(a_tensor.shape, dtype=a_tensor.dtype, buffer=nl.shared_hbm)

    num_rows, hidden = a_tensor.shape
    assert g_tensor.shape[0] == hidden

    i_p = nl.arange(128)[:, None]
    i_g = nl.arange(1)[:, None]
    i_f = nl.arange(hidden)[None, :]

    # The weight, loaded once as a [1, hidden] tile and broadcast to all 128 partitions.
    g_tile = nl.load(g_tensor.reshape((1, hidden))[i_g, i_f])
    g_bcast = g_tile.broadcast_to((128, hidden))

    # Row tiles are independent: affine_range.
    for i in nl.affine_range(math.ceil(num_rows / 128)):
        row_mask = (i * 128 + i_p < num_rows)
        a_tile = nl.load(a_tensor[i * 128 + i_p, i_f], mask=row_mask)

        # Sum of squares along the free dimension, then mean, then 1 / sqrt(mean + eps).
        square_sum = nl.sum(nl.square(a_tile), axis=[1])
        mean = square_sum / hidden
        rms_reciprocal = nl.rsqrt(mean + eps)

        out_tile = nl.multiply(a_tile, rms_reciprocal)
        out_tile[...] = nl.multiply(out_tile, g_bcast, mask=row_mask)

        nl.store(out_tensor[i * 128 + i_p, i_f], value=out_tile, mask=row_mask)

    return out_tensor


@nki.jit
def rmsnorm_spmd_kernel(a_tensor, g_tensor, eps=1e-6):
    out_tensor = nl.ndarray(a_tensor.shape, dtype=a_tensor.dtype, buffer=nl.shared_hbm)

    num_rows, hidden = a_tensor.shape
    assert g_tensor.shape[0] == hidden
    TILE = nl.tile_size.pmax

    # This program's row tile.
    first_row = nl.program_id(0) * TILE
    i_p = first_row + nl.arange(TILE)[:, None]
    i_f = nl.arange(hidden)[None, :]
    row_mask = (i_p < num_rows)

    g_tile = nl.load(g_tensor.reshape((1, hidden))[nl.arange(1)[:, None], i_f])
    g_bcast = g_tile.broadcast_to((TILE, hidden))

    a_tile = nl.load(a_tensor[i_p, i_f], mask=row_mask)

    # Scalar Engine: square; Vector Engine: sum along the free dimension -> [128, 1].
    squares = nisa.activation(op=nl.square, data=a_tile, dtype=nl.float32)
    square_sum = nisa.tensor_reduce(op=nl.add, data=squares, axis=(1,), keepdims=True, dtype=nl.float32)

    # mean + eps in one tensor_scalar (two operators), then rsqrt on the Scalar Engine.
    mean_eps = nisa.tensor_scalar(data=square_sum, op0=nl.multiply, operand0=1.0 / hidden,
                                  op1=nl.add, operand1=eps)
    rms_reciprocal = nisa.activation(op=nl.rsqrt, data=mean_eps)

    # Each row times its own 1/rms (a [128, 1] operand broadcast along the free dimension),
    # then element-wise times the weight.
    scaled = nisa.tensor_scalar(data=a_tile, op0=nl.multiply, operand0=rms_reciprocal)
    out_tile = nisa.tensor_tensor(data1=scaled, data2=g_bcast, op=nl.multiply, dtype=a_tensor.dtype)

    nl.store(out_tensor[i_p, i_f], value=out_tile, mask=row_mask)
    return out_tensor


def rmsnorm_reference(a, g, eps=1e-6):
    a64 = a.astype(np.float64)
    return a64 / np.sqrt(np.mean(a64 * a64, axis=1, keepdims=True) + eps) * g.astype(np.float64)


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    a = rng.random((250, 512)).astype(np.float32)
    g = rng.random(512).astype(np.float32)
    expected = rmsnorm_reference(a, g)

    out = nki.simulate_kernel(rmsnorm_kernel, a, g)
    loop_match = np.allclose(out, expected, atol=1e-5, rtol=1e-3)
    print("rmsnorm_kernel (250, 512):", "NKI and NumPy match" if loop_match else "NKI and NumPy differ")

    out_spmd = nki.simulate_kernel(rmsnorm_spmd_kernel[math.ceil(a.shape[0] / 128)], a, g)
    spmd_match = np.allclose(out_spmd, expected, atol=1e-5, rtol=1e-3)
    print("rmsnorm_spmd_kernel[2] (250, 512):", "NKI and NumPy match" if spmd_match else "NKI and NumPy differ")

    assert loop_match and spmd_match
