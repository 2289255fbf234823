"""Fused self-attention forward, one head: out = softmax(Q K^T / sqrt(d) [+ causal mask]) V.

q, k, v are [seqlen, d_head] with d_head <= 128 and seqlen a multiple of 128. The kernel keeps
the whole score row of a 128-query tile in SBUF (the softmax is exact, not online; see
flash_attention.py for the tiled version):

1. K^T, [d_head, seqlen], is built once from 128-row tiles of k transposed on the Tensor
   Engine (``nisa.nc_transpose``); V is loaded once, 128 keys per partition block.
2. For every 128-query tile: Q^T (``nl.transpose``) scaled by 1/sqrt(d_head); the scores
   [128, seqlen] come from ``nisa.nc_matmul`` in chunks of at most 512 keys (moving free
   size); with ``use_causal_mask`` the chunk goes through ``nisa.affine_select``, which keeps
   query >= key and writes -9984.0 elsewhere.
3. softmax: row max (``nisa.tensor_reduce`` with ``negate=True``), exp(s - max) on the Scalar
   Engine (``nisa.activation`` with a per-row bias), row sums, reciprocals.
4. P V: P is transposed 128 keys at a time and the partial products accumulate in one PSUM
   tile [128, d_head]; the result is divided by the row sums on the way out.

With ``mixed_precision`` the Tensor Engine operands (Q^T, K^T, V, P) are bfloat16 and the
accumulation stays float32 in PSUM; otherwise everything is float32.
"""

import math

import numpy as np

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def fused_self_attention_kernel(q, k, v, use_causal_mask=False, mixed_precision=False):
    seqlen, d_head = q.shape
    assert tuple(k.shape) == (seqlen, d_head) and tuple(v.shape) == (seqlen, d_head)
    assert q.dtype == k.dtype == v.dtype

    TILE = nl.tile_size.pmax  # 128 queries per softmax tile, 128 keys per transpose / PV step
    assert d_head <= TILE, "d_head must fit the partition dimension"
    assert seqlen % TILE == 0, "seqlen must be a multiple of 128"
    # Keys per QK^T matmul: the moving operand's free size, at most 512.
    KV_CHUNK = min(seqlen, nl.tile_size.gemm_moving_fmax)
    assert seqlen % KV_CHUNK == 0

    n_tiles = seqlen // TILE
    n_chunks = seqlen // KV_CHUNK
    mm_dtype = nl.bfloat16 if mixed_precision else nl.float32
    softmax_scale = 1.0 / math.sqrt(d_head)

    out = nl.ndarray((seqlen, d_head), dtype=q.dtype, buffer=nl.shared_hbm)

    i_p = nl.arange(TILE)[:, None]
    i_d = nl.arange(d_head)[None, :]

    # 1. K^T [d_head, seqlen] and V [128, n_tiles * d_head] (block j holds keys j*128 ... j*128+127).
    k_t = nl.ndarray((d_head, seqlen), dtype=mm_dtype, buffer=nl.sbuf)
    v_all = nl.ndarray((TILE, n_tiles * d_head), dtype=mm_dtype, buffer=nl.sbuf)
    for j in nl.affine_range(n_tiles):
        k_rows = nl.load(k[j * TILE + i_p, i_d])
        k_t[:, nl.ds(j * TILE, TILE)] = nl.copy(nisa.nc_transpose(k_rows), dtype=mm_dtype)
        v_all[:, nl.ds(j * d_head, d_head)] = nl.load(v[j * TILE + i_p, i_d], dtype=mm_dtype)

    for i in nl.affine_range(n_tiles):
        # 2. Q^T for this tile, pre-scaled: [d_head, 128]
        q_rows = nl.load(q[i * TILE + i_p, i_d])
        q_t = nl.multiply(nl.transpose(q_rows), softmax_scale, dtype=mm_dtype)

        scores = nl.ndarray((TILE, seqlen), dtype=nl.float32, buffer=nl.sbuf)
        for c in nl.affine_range(n_chunks):
            scores_psum = nisa.nc_matmul(stationary=q_t, moving=k_t[:, nl.ds(c * KV_CHUNK, KV_CHUNK)])
            if use_causal_mask:
                i_q = nl.arange(TILE)[:, None]
                i_k = nl.arange(KV_CHUNK)[None, :]
                scores[i_q, c * KV_CHUNK + i_k] = nisa.affine_select(
                    pred=(i * TILE + i_q >= c * KV_CHUNK + i_k),
                    on_true_tile=scores_psum, on_false_value=-9984.0, dtype=nl.float32)
            else:
                scores[:, nl.ds(c * KV_CHUNK, KV_CHUNK)] = nl.copy(scores_psum, dtype=nl.float32)

        # 3. softmax numerator and row sums
        negative_max = nisa.tensor_reduce(op=nl.max, data=scores, axis=(1,), negate=True, keepdims=True)
        probabilities = nisa.activation(op=nl.exp, data=scores, bias=negative_max, scale=1.0, dtype=nl.float32)
        row_sum = nl.sum(probabilities, axis=[1], keepdims=True)
        inverse_sum = nl.reciprocal(row_sum)
        probabilities_mm = nl.copy(probabilities, dtype=mm_dtype)

        # 4. (P V) accumulated over key tiles in PSUM: stationary P^T [128 keys, 128 queries],
        # moving V [128 keys, d_head] -> [128 queries, d_head]
        out_psum = nl.zeros((TILE, d_head), dtype=nl.float32, buffer=nl.psum)
        for j in nl.affine_range(n_tiles):
            p_t = nl.copy(nisa.nc_transpose(probabilities_mm[:, nl.ds(j * TILE, TILE)]), dtype=mm_dtype)
            out_psum += nisa.nc_matmul(stationary=p_t, moving=v_all[:, nl.ds(j * d_head, d_head)])

        out_tile = nl.multiply(out_psum, inverse_sum, dtype=out.dtype)
        nl.store(out[i * TILE + i_p, i_d], value=out_tile)

    return out


def attention_reference(q, k, v, use_causal_mask=False):
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    scores = q64 @ k64.T / math.sqrt(q.shape[1])
    if use_causal_mask:
        scores = np.where(np.tril(np.ones(scores.shape, dtype=bool)), scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=1, keepdims=True))
    return (scores / scores.sum(axis=1, keepdims=True)) @ v64


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    seqlen, d_head = 512, 64
    q = rng.random((seqlen, d_head)).astype(np.float32)
    k = rng.random((seqlen, d_head)).astype(np.float32)
    v = rng.random((seqlen, d_head)).astype(np.float32)

    matches = []
    for causal in (False, True):
        expected = attention_reference(q, k, v, use_causal_mask=causal)
        out = nki.simulate_kernel(fused_self_attention_kernel, q, k, v, use_causal_mask=causal)
        match = np.allclose(out, expected, atol=1e-5, rtol=1e-3)
        print(f"fused_self_attention_kernel ({seqlen}, {d_head}) float32, causal={causal}:",
              "NKI and NumPy match" if match else "NKI and NumPy differ")
        matches.append(match)

        out_mixed = nki.simulate_kernel(fused_self_attention_kernel, q, k, v, use_causal_mask=causal,
                                        mixed_precision=True)
        match = np.allclose(out_mixed, expected, atol=1e-2)
        print(f"fused_self_attention_kernel ({seqlen}, {d_head}) bfloat16 matmuls, causal={causal}:",
              "NKI and NumPy match" if match else "NKI and NumPy differ")
        matches.append(match)

    assert all(matches)
