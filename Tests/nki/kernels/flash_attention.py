"""Flash-attention forward: softmax(Q K^T / sqrt(d)) V with an online softmax over K/V blocks.

q, k, v are [batch, heads, seqlen, d_head] (d_head <= 128, seqlens multiples of 128). One
program of a 2D launch grid handles one (batch, head): launch as
``flash_attention_fwd_kernel[batch, heads](q, k, v)``; ``nl.program_id(0)`` is the batch
index, ``nl.program_id(1)`` the head.

For every 128-query tile the kernel walks the keys in blocks of up to 512
(``nl.sequential_range``: each step depends on the previous one) and keeps, per query row,
the running max m of the raw scores, the running sum l of exp(scale * (s - m)) and the
running unnormalized output o. A step with scores s:

    m_new = max(m, rowmax(s))
    alpha = exp(scale * (m - m_new))                 # rescales what was accumulated before
    p     = exp(scale * s - scale * m_new)           # one Scalar Engine activation
    l     = alpha * l + rowsum(p)
    o     = alpha * o + p @ V_block                  # PSUM accumulation over 128-key slabs
    m     = m_new

and at the end out = o / l. The kernel also returns the log-sum-exp of every scaled score row,
lse = scale * m + log(l), as a [batch, heads, seqlen_q, 1] float32 tensor (the statistic a
backward pass reuses): the kernel's return value is the tuple (out, lse).

With ``mixed_precision`` the Tensor Engine operands are bfloat16 (accumulation stays float32).
"""

import math

import numpy as np

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def flash_attention_fwd_kernel(q, k, v, mixed_precision=False):
    batch, heads, seqlen_q, d_head = q.shape
    batch_k, heads_k, seqlen_kv, d_head_k = k.shape
    assert (batch_k, heads_k, d_head_k) == (batch, heads, d_head)
    assert tuple(v.shape) == tuple(k.shape)

    B_Q = nl.tile_size.pmax  # queries per tile (partitions of the score tile)
    B_T = nl.tile_size.pmax  # keys per transpose and per P V matmul
    B_KV = min(seqlen_kv, nl.tile_size.gemm_moving_fmax)  # keys per online-softmax step
    assert d_head <= nl.tile_size.pmax
    assert seqlen_q % B_Q == 0 and seqlen_kv % B_KV == 0 and B_KV % B_T == 0
    T_PER_KV = B_KV // B_T

    mm_dtype = nl.bfloat16 if mixed_precision else nl.float32
    scale = 1.0 / math.sqrt(d_head)

    out = nl.ndarray(q.shape, dtype=q.dtype, buffer=nl.shared_hbm)
    lse = nl.ndarray((batch, heads, seqlen_q, 1), dtype=nl.float32, buffer=nl.shared_hbm)

    b = nl.program_id(0)
    h = nl.program_id(1)

    for qi in nl.affine_range(seqlen_q // B_Q):
        # Q^T [d_head, 128] for the stationary side of Q K^T
        q_rows = nl.load(q[b, h, nl.ds(qi * B_Q, B_Q), :])
        q_t = nl.copy(nisa.nc_transpose(q_rows), dtype=mm_dtype)

        # Running statistics of this query tile, float32 in SBUF.
        m_run = nl.full((B_Q, 1), -1.0e30, dtype=nl.float32)
        l_run = nl.zeros((B_Q, 1), dtype=nl.float32)
        o_run = nl.zeros((B_Q, d_head), dtype=nl.float32)

        for kj in nl.sequential_range(seqlen_kv // B_KV):
            # K^T block [d_head, B_KV] and V block [128, T_PER_KV * d_head] (slab t = keys t*128 ...).
            k_t = nl.ndarray((d_head, B_KV), dtype=mm_dtype, buffer=nl.sbuf)
            v_block = nl.ndarray((B_T, T_PER_KV * d_head), dtype=mm_dtype, buffer=nl.sbuf)
            for t in nl.affine_range(T_PER_KV):
                first_key = kj * B_KV + t * B_T
                k_rows = nl.load(k[b, h, nl.ds(first_key, B_T), :])
                k_t[:, nl.ds(t * B_T, B_T)] = nl.copy(nisa.nc_transpose(k_rows), dtype=mm_dtype)
                v_block[:, nl.ds(t * d_head, d_head)] = nl.load(v[b, h, nl.ds(first_key, B_T), :], dtype=mm_dtype)

            # Raw scores [128, B_KV] in PSUM (one 2 KiB bank when B_KV is 512).
            scores = nisa.nc_matmul(stationary=q_t, moving=k_t)

            block_max = nisa.tensor_reduce(op=nl.max, data=scores, axis=(1,), keepdims=True)
            m_new = nl.maximum(m_run, block_max)
            bias = nl.multiply(m_new, -scale)  # -scale * m_new, [128, 1]

            # exp(scale * s - scale * m_new), and the rescale factor of the old statistics
            p = nisa.activation(op=nl.exp, data=scores, bias=bias, scale=scale, dtype=nl.float32)
            alpha = nisa.activation(op=nl.exp, data=m_run, bias=bias, scale=scale, dtype=nl.float32)

            p_sum = nisa.tensor_reduce(op=nl.add, data=p, axis=(1,), keepdims=True)
            l_run[...] = nisa.tensor_scalar(data=l_run, op0=nl.multiply, operand0=alpha, op1=nl.add, operand1=p_sum)

            # P V over the block, 128 keys at a time, accumulated in PSUM
            p_mm = nl.copy(p, dtype=mm_dtype)
            pv_psum = nl.zeros((B_Q, d_head), dtype=nl.float32, buffer=nl.psum)
            for t in nl.affine_range(T_PER_KV):
                p_t = nl.copy(nisa.nc_transpose(p_mm[:, nl.ds(t * B_T, B_T)]), dtype=mm_dtype)
                pv_psum += nisa.nc_matmul(stationary=p_t, moving=v_block[:, nl.ds(t * d_head, d_head)])

            o_run[...] = nl.add(nl.multiply(o_run, alpha), pv_psum)
            m_run[...] = nl.copy(m_new)

        # out = o / l; lse = scale * m + log(l)
        o_tile = nl.multiply(o_run, nl.reciprocal(l_run), dtype=out.dtype)
        nl.store(out[b, h, nl.ds(qi * B_Q, B_Q), :], value=o_tile)

        lse_tile = nl.add(nl.multiply(m_run, scale), nl.log(l_run))
        nl.store(lse[b, h, nl.ds(qi * B_Q, B_Q), :], value=lse_tile)

    return out, lse


def flash_attention_reference(q, k, v):
    """(out, lse) in float64: out = softmax(q k^T / sqrt(d)) v, lse = logsumexp of the scaled scores."""
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    scores = np.einsum("bhqd,bhkd->bhqk", q64, k64) / math.sqrt(q.shape[-1])
    row_max = scores.max(axis=-1, keepdims=True)
    e = np.exp(scores - row_max)
    row_sum = e.sum(axis=-1, keepdims=True)
    out = np.einsum("bhqk,bhkd->bhqd", e / row_sum, v64)
    return out, row_max + np.log(row_sum)


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    batch, heads, seqlen, d_head = 2, 2, 1024, 64
    q = (rng.random((batch, heads, seqlen, d_head)) * 2 - 1).astype(np.float32)
    k = (rng.random((batch, heads, seqlen, d_head)) * 2 - 1).astype(np.float32)
    v = (rng.random((batch, heads, seqlen, d_head)) * 2 - 1).astype(np.float32)
    expected_out, expected_lse = flash_attention_reference(q, k, v)

    matches = []
    for mixed in (False, True):
        out, lse = nki.simulate_kernel(flash_attention_fwd_kernel[batch, heads], q, k, v, mixed_precision=mixed)
        if mixed:
            match = np.allclose(out, expected_out, atol=1e-2) and np.allclose(lse, expected_lse, atol=1e-2)
        else:
            match = (np.allclose(out, expected_out, atol=1e-5, rtol=1e-3)
                     and np.allclose(lse, expected_lse, atol=1e-5, rtol=1e-3))
        print(f"flash_attention_fwd_kernel[{batch}, {heads}] seqlen {seqlen}, d_head {d_head},",
              "bfloat16 matmuls:" if mixed else "float32:", "NKI and NumPy match" if match else "NKI and NumPy differ")
        matches.append(match)

    assert all(matches)
