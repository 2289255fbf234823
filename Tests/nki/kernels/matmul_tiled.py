"""Tiled matrix multiplication: result[M, N] = lhsT.T @ rhs, tiled over M, N and K.

lhsT is [K, M] (the left operand delivered transposed, K on the partition dimension) and rhs is
[K, N]. Tiles follow the Tensor Engine's limits: K tiles of 128 (partitions), M tiles of 128
(stationary free size), N tiles of 512 (moving free size); each [128, 512] float32 result tile
fills one 2 KiB PSUM bank per partition. K must be a multiple of 128, M of 128, N of 512.

Kernels:

* ``matmul_tiled_kernel``: the tutorial's loop nest; partial products over K accumulate into a
  zeroed PSUM tile with ``res_psum += nl.matmul(..., transpose_x=True)``.
* ``matmul_tiled_hoisted_kernel``: loads each lhsT column strip once per M tile (hoisted out of
  the N loop), indexes with ``nl.ds``, multiplies with ``nisa.nc_matmul``.
* ``matmul_tiled_dst_kernel``: the same loop nest in the API of NKI 0.2 and later (below).

NOTE: NKI's newest API (``import nki``, NKI 0.2.0 / "Beta 2" from Neuron 2.27, NKI 0.3.0+ from
Neuron 2.29) differs from the tutorials this suite follows:

* every ``nki.isa`` instruction takes its output as ``dst=`` and returns nothing:
  ``nisa.nc_matmul(dst=psum_tile, stationary=..., moving=...)``, ``nisa.tensor_copy(dst=, src=)``,
  ``nisa.dma_copy(dst=, src=)`` (the loads and stores of the current matmul tutorial),
  ``nisa.activation(dst=, op=, data=, ...)``, ...; isa instructions lost ``mask=`` and ``dtype=``
  (the dtype is dst's);
* nc_matmul accumulates into its PSUM dst (``accumulate=None``: the first write of a PSUM
  location overwrites, later ones accumulate) instead of ``psum_tile += nisa.nc_matmul(...)``
  on a tile from ``nl.zeros(..., buffer=nl.psum)``;
* ``nl.arange``/``nl.mgrid`` index tiles, ``mask=`` and block dimensions (a partition
  dimension that is not the left-most one) are gone: slices, ``nl.ds`` and tensor views remain;
* the CPU simulator is ``nki.simulate(kernel)(*arrays)`` (``nki.simulate_kernel(kernel, *arrays)``
  before), and ``neuronxcc.nki`` is no longer shipped from Neuron 2.28.

The rest of the suite is written the way the tutorials were (values returned by ``nl``/``nisa``
calls, ``nl.load``/``nl.store``, masks); ``matmul_tiled_dst_kernel`` is the one kernel in the
newer style.
"""

import numpy as np

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def matmul_tiled_kernel(lhsT, rhs):
    """result = lhsT.T @ rhs, one [128, 512] result tile at a time, K accumulated in PSUM."""
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_, "lhsT and rhs must have the same contraction dimension"

    TILE_M = nl.tile_size.gemm_stationary_fmax  # 128
    TILE_K = nl.tile_size.pmax  # 128
    TILE_N = nl.tile_size.gemm_moving_fmax  # 512
    assert M % TILE_M == 0 and K % TILE_K == 0 and N % TILE_N == 0

    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    for m in nl.affine_range(M // TILE_M):
        for n in nl.affine_range(N // TILE_N):
            # float32 accumulator for this output tile, in PSUM
            res_psum = nl.zeros((TILE_M, TILE_N), nl.float32, buffer=nl.psum)

            for k in nl.affine_range(K // TILE_K):
                lhsT_tile = nl.ndarray((TILE_K, TILE_M), dtype=lhsT.dtype, buffer=nl.sbuf)
                rhs_tile = nl.ndarray((TILE_K, TILE_N), dtype=rhs.dtype, buffer=nl.sbuf)
                lhsT_tile[...] = nl.load(lhsT[k * TILE_K:(k + 1) * TILE_K, m * TILE_M:(m + 1) * TILE_M])
                rhs_tile[...] = nl.load(rhs[k * TILE_K:(k + 1) * TILE_K, n * TILE_N:(n + 1) * TILE_N])

                # A reduction into PSUM is the one loop-carried dependency affine_range allows.
                res_psum += nl.matmul(lhsT_tile, rhs_tile, transpose_x=True)

            res_sbuf = nl.copy(res_psum, dtype=result.dtype)
            nl.store(result[m * TILE_M:(m + 1) * TILE_M, n * TILE_N:(n + 1) * TILE_N], value=res_sbuf)

    return result


@nki.jit
def matmul_tiled_hoisted_kernel(lhsT, rhs):
    """result = lhsT.T @ rhs; the lhsT strip of an M tile is loaded once and reused for every N tile."""
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_

    TILE_M = nl.tile_size.gemm_stationary_fmax
    TILE_K = nl.tile_size.pmax
    TILE_N = nl.tile_size.gemm_moving_fmax
    assert M % TILE_M == 0 and K % TILE_K == 0 and N % TILE_N == 0
    K_TILES = K // TILE_K

    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    for m in nl.affine_range(M // TILE_M):
        # All K tiles of lhsT[:, m-th 128 columns], side by side on the free dimension.
        lhsT_strip = nl.ndarray((TILE_K, K_TILES * TILE_M), dtype=lhsT.dtype, buffer=nl.sbuf)
        for k in nl.affine_range(K_TILES):
            lhsT_strip[:, nl.ds(k * TILE_M, TILE_M)] = nl.load(lhsT[nl.ds(k * TILE_K, TILE_K), nl.ds(m * TILE_M, TILE_M)])

        for n in nl.affine_range(N // TILE_N):
            rhs_strip = nl.ndarray((TILE_K, K_TILES * TILE_N), dtype=rhs.dtype, buffer=nl.sbuf)
            for k in nl.affine_range(K_TILES):
                rhs_strip[:, nl.ds(k * TILE_N, TILE_N)] = nl.load(rhs[nl.ds(k * TILE_K, TILE_K), nl.ds(n * TILE_N, TILE_N)])

            res_psum = nl.zeros((TILE_M, TILE_N), nl.float32, buffer=nl.psum)
            for k in nl.affine_range(K_TILES):
                res_psum += nisa.nc_matmul(stationary=lhsT_strip[:, nl.ds(k * TILE_M, TILE_M)],
                                           moving=rhs_strip[:, nl.ds(k * TILE_N, TILE_N)])

            nl.store(result[nl.ds(m * TILE_M, TILE_M), nl.ds(n * TILE_N, TILE_N)],
                     value=nl.copy(res_psum, dtype=result.dtype))

    return result


@nki.jit
def matmul_tiled_dst_kernel(lhsT, rhs):
    """matmul_tiled_kernel in the API of NKI 0.2+: isa instructions write dst=, DMA with dma_copy."""
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_

    TILE_M = nl.tile_size.gemm_stationary_fmax
    TILE_K = nl.tile_size.pmax
    TILE_N = nl.tile_size.gemm_moving_fmax
    assert M % TILE_M == 0 and K % TILE_K == 0 and N % TILE_N == 0

    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    for m in nl.affine_range(M // TILE_M):
        for n in nl.affine_range(N // TILE_N):
            # Not initialized: the first nc_matmul into it overwrites, the next ones accumulate.
            res_psum = nl.ndarray((TILE_M, TILE_N), nl.float32, buffer=nl.psum)

            for k in nl.affine_range(K // TILE_K):
                lhsT_tile = nl.ndarray((TILE_K, TILE_M), dtype=lhsT.dtype, buffer=nl.sbuf)
                rhs_tile = nl.ndarray((TILE_K, TILE_N), dtype=rhs.dtype, buffer=nl.sbuf)
                nisa.dma_copy(dst=lhsT_tile, src=lhsT[k * TILE_K:(k + 1) * TILE_K, m * TILE_M:(m + 1) * TILE_M])
                nisa.dma_copy(dst=rhs_tile, src=rhs[k * TILE_K:(k + 1) * TILE_K, n * TILE_N:(n + 1) * TILE_N])
                nisa.nc_matmul(dst=res_psum, stationary=lhsT_tile, moving=rhs_tile)

            res_sbuf = nl.ndarray((TILE_M, TILE_N), dtype=result.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=res_sbuf, src=res_psum)
            nisa.dma_copy(dst=result[m * TILE_M:(m + 1) * TILE_M, n * TILE_N:(n + 1) * TILE_N], src=res_sbuf)

    return result


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    K, M, N = 512, 256, 1024
    lhs = rng.random((M, K)).astype(np.float32)
    rhs = rng.random((K, N)).astype(np.float32)
    lhsT = np.ascontiguousarray(lhs.T)
    expected = lhs.astype(np.float64) @ rhs.astype(np.float64)

    outputs = {
        "matmul_tiled_kernel": nki.simulate_kernel(matmul_tiled_kernel, lhsT, rhs),
        "matmul_tiled_hoisted_kernel": nki.simulate_kernel(matmul_tiled_hoisted_kernel, lhsT, rhs),
        # NKI 0.3+ spelling of the simulator, paired with the NKI 0.2+ style kernel.
        "matmul_tiled_dst_kernel": nki.simulate(matmul_tiled_dst_kernel)(lhsT, rhs),
    }
    matches = []
    for name, output in outputs.items():
        match = np.allclose(output, expected, atol=1e-4, rtol=1e-2)
        print(f"{name} ({M}x{K} @ {K}x{N}):", "NKI and NumPy match" if match else "NKI and NumPy differ")
        matches.append(match)

    assert all(matches)
