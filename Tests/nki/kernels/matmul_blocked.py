"""Blocked matrix multiplication: result[M, N] = lhsT.T @ rhs with all three dimensions blocked.

The loop nest works on blocks of TILES_IN_BLOCK_M x TILES_IN_BLOCK_N result tiles (each tile
[128, 512]) and walks K in blocks of TILES_IN_BLOCK_K tiles of 128:

* the lhsT and rhs blocks of one K block are loaded once into SBUF tensors with a block
  dimension in front of the partition dimension (``nl.par_dim``), then reused by every
  result tile of the block;
* inside a K block, the TILES_IN_BLOCK_K partial products of a result tile accumulate in one
  PSUM tile (``psum_tile += nisa.nc_matmul(...)``);
* across K blocks, which run in order (``nl.sequential_range``), each PSUM tile is added into a
  float32 SBUF accumulator with ``nisa.tensor_tensor``;
* at the end the accumulators are cast to the output dtype and stored.

M must be a multiple of 128 * TILES_IN_BLOCK_M, N of 512 * TILES_IN_BLOCK_N and K of
128 * TILES_IN_BLOCK_K. The block sizes are keyword meta-parameters of the kernel.
"""

import numpy as np

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def matmul_blocked_kernel(lhsT, rhs, TILES_IN_BLOCK_M=2, TILES_IN_BLOCK_N=2, TILES_IN_BLOCK_K=2):
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_, "lhsT and rhs must have the same contraction dimension"

    TILE_M = nl.tile_size.gemm_stationary_fmax  # 128
    TILE_K = nl.tile_size.pmax  # 128
    TILE_N = nl.tile_size.gemm_moving_fmax  # 512

    BLOCK_M = TILE_M * TILES_IN_BLOCK_M
    BLOCK_N = TILE_N * TILES_IN_BLOCK_N
    BLOCK_K = TILE_K * TILES_IN_BLOCK_K
    assert M % BLOCK_M == 0, f"M={M} is not a multiple of the M block {BLOCK_M}"
    assert N % BLOCK_N == 0, f"N={N} is not a multiple of the N block {BLOCK_N}"
    assert K % BLOCK_K == 0, f"K={K} is not a multiple of the K block {BLOCK_K}"

    NUM_BLOCK_M = M // BLOCK_M
    NUM_BLOCK_N = N // BLOCK_N
    NUM_BLOCK_K = K // BLOCK_K

    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    for n in nl.affine_range(NUM_BLOCK_N):
        for m in nl.affine_range(NUM_BLOCK_M):
            # One float32 accumulator per result tile of this block.
            acc = nl.zeros((TILES_IN_BLOCK_M, TILES_IN_BLOCK_N, nl.par_dim(TILE_M), TILE_N),
                           dtype=nl.float32, buffer=nl.sbuf)

            # K blocks in order: every iteration adds into acc.
            for kb in nl.sequential_range(NUM_BLOCK_K):
                # The K block of lhsT (all BLOCK_M columns) and of rhs (all BLOCK_N columns),
                # one [128, BLOCK_*] slab per K tile.
                lhsT_block = nl.ndarray((TILES_IN_BLOCK_K, nl.par_dim(TILE_K), BLOCK_M),
                                        dtype=lhsT.dtype, buffer=nl.sbuf)
                rhs_block = nl.ndarray((TILES_IN_BLOCK_K, nl.par_dim(TILE_K), BLOCK_N),
                                       dtype=rhs.dtype, buffer=nl.sbuf)
                for bk in nl.affine_range(TILES_IN_BLOCK_K):
                    k_start = (kb * TILES_IN_BLOCK_K + bk) * TILE_K
                    lhsT_block[bk, :, :] = nl.load(lhsT[nl.ds(k_start, TILE_K), nl.ds(m * BLOCK_M, BLOCK_M)])
                    rhs_block[bk, :, :] = nl.load(rhs[nl.ds(k_start, TILE_K), nl.ds(n * BLOCK_N, BLOCK_N)])

                for bm in nl.affine_range(TILES_IN_BLOCK_M):
                    for bn in nl.affine_range(TILES_IN_BLOCK_N):
                        psum_tile = nl.zeros((TILE_M, TILE_N), dtype=nl.float32, buffer=nl.psum)
                        for bk in nl.affine_range(TILES_IN_BLOCK_K):
                            psum_tile += nisa.nc_matmul(lhsT_block[bk, :, nl.ds(bm * TILE_M, TILE_M)],
                                                        rhs_block[bk, :, nl.ds(bn * TILE_N, TILE_N)])
                        # SBUF accumulator += PSUM partial sum (Vector Engine)
                        acc[bm, bn, :, :] = nisa.tensor_tensor(acc[bm, bn, :, :], psum_tile, op=nl.add)

            # Write the block back: unrolled, the trip counts are small constants.
            for bm in nl.static_range(TILES_IN_BLOCK_M):
                for bn in nl.static_range(TILES_IN_BLOCK_N):
                    out_tile = nl.copy(acc[bm, bn, :, :], dtype=result.dtype)
                    nl.store(result[nl.ds(m * BLOCK_M + bm * TILE_M, TILE_M),
                                    nl.ds(n * BLOCK_N + bn * TILE_N, TILE_N)],
                             value=out_tile)

    return result


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    K, M, N = 512, 256, 1024
    lhs = rng.random((M, K)).astype(np.float32)
    rhs = rng.random((K, N)).astype(np.float32)
    lhsT = np.ascontiguousarray(lhs.T)
    expected = lhs.astype(np.float64) @ rhs.astype(np.float64)

    matches = []
    for blocks in ({}, {"TILES_IN_BLOCK_M": 1, "TILES_IN_BLOCK_N": 1, "TILES_IN_BLOCK_K": 4}):
        output = nki.simulate_kernel(matmul_blocked_kernel, lhsT, rhs, **blocks)
        match = np.allclose(output, expected, atol=1e-4, rtol=1e-2)
        print(f"matmul_blocked_kernel ({M}x{K} @ {K}x{N}, blocks {blocks or 'default'}):",
              "NKI and NumPy match" if match else "NKI and NumPy differ")
        matches.append(match)

    assert all(matches)
