"""One Tensor Engine matmul: a [64, 128] x [128, 512] product, the matmul tutorial's first step.

The Tensor Engine contracts over the partition dimension, so the left operand arrives
transposed: ``lhsT`` is [K=128, M=64] and ``rhs`` is [K=128, N=512]; the result is [M=64, N=512].
The matmul writes float32 into PSUM; the result is copied to SBUF (and cast to the output
dtype) before it is stored to HBM.

Two spellings of the same kernel:

* ``matmul_basic_kernel``: ``nki.isa.nc_matmul(stationary, moving)``, the instruction itself.
* ``matmul_basic_nl_kernel``: ``nki.language.matmul(x, y, transpose_x=True)``.

This file uses the ``neuronxcc.nki`` spelling of the imports (NKI before Neuron 2.27).
"""

import numpy as np

from neuronxcc import nki
import neuronxcc.nki.isa as nisa
import neuronxcc.nki.language as nl


@nki.jit
def matmul_basic_kernel(lhsT, rhs):
    """result[64, 512] = lhsT.T @ rhs with lhsT [128, 64] and rhs [128, 512]."""
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_ == 128, "the contraction dimension must be 128 (one tile)"
    assert M == 64 and N == 512

    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    # Index grids: the contraction dimension K is the partition dimension of both inputs.
    i_lhsT_p, i_lhsT_f = nl.mgrid[0:K, 0:M]
    i_rhs_p, i_rhs_f = nl.mgrid[0:K, 0:N]
    i_out_p, i_out_f = nl.mgrid[0:M, 0:N]

    lhsT_tile = nl.load(lhsT[i_lhsT_p, i_lhsT_f])
    rhs_tile = nl.load(rhs[i_rhs_p, i_rhs_f])

    # stationary [K, M] (free size <= 128), moving [K, N] (free size <= 512): a [M, N] PSUM tile.
    result_psum = nisa.nc_matmul(stationary=lhsT_tile, moving=rhs_tile)

    # PSUM -> SBUF, cast to the output dtype, then SBUF -> HBM.
    result_sbuf = nl.copy(result_psum, dtype=result.dtype)
    nl.store(result[i_out_p, i_out_f], value=result_sbuf)
    return result


@nki.jit
def matmul_basic_nl_kernel(lhsT, rhs):
    """The same product through nki.language.matmul: transpose_x=True says x is already [K, M]."""
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_ == 128
    assert M == 64 and N == 512

    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    lhsT_tile = nl.load(lhsT)
    rhs_tile = nl.load(rhs)
    result_psum = nl.matmul(lhsT_tile, rhs_tile, transpose_x=True)
    nl.store(result, value=nl.copy(result_psum, dtype=result.dtype))
    return result


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    lhs = rng.random((64, 128)).astype(np.float32)
    rhs = rng.random((128, 512)).astype(np.float32)
    lhsT = np.ascontiguousarray(lhs.T)
    expected = lhs.astype(np.float64) @ rhs.astype(np.float64)

    matches = []
    for name, kernel in (("matmul_basic_kernel", matmul_basic_kernel), ("matmul_basic_nl_kernel", matmul_basic_nl_kernel)):
        output = nki.simulate_kernel(kernel, lhsT, rhs)
        match = np.allclose(output, expected, atol=1e-4, rtol=1e-2)
        print(name, "(64x128 @ 128x512):", "NKI and NumPy match" if match else "NKI and NumPy differ")
        matches.append(match)

    assert all(matches)
