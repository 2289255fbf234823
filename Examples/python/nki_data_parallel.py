"""A data-parallel training step written as an NKI kernel with nki.collectives, run on several
virtual NeuronCores by vtrn.nki, as NKI's nki.multi_rank_simulate runs it.

    python3 Examples/python/nki_data_parallel.py            # 4 ranks, batch 256 each, 256 x 512 weights
    python3 Examples/python/nki_data_parallel.py 8 128      # RANKS BATCH

Each rank holds a shard of the batch (x: [batch, 256], dy: [batch, 512]), computes its weight
gradient dW = x.T @ dy on the tensor engine (the batch is the contraction, 128 rows at a time,
accumulated in PSUM), stores it, and all-reduces it with the other ranks on the CC engine
(nccl.all_reduce over one rank-list of every rank). Every rank ends with the sum of all the
shards' gradients, checked against numpy.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import numpy as np  # noqa: E402

import vtrn.nki  # noqa: E402

vtrn.nki.install_import_shim()   # `import nki` means vtrn.nki where AWS's package is absent

import nki  # noqa: E402
import nki.collectives as nccl  # noqa: E402
import nki.isa as nisa  # noqa: E402
import nki.language as nl  # noqa: E402


@nki.jit
def gradient_kernel(x, dy, replica_group):
    """dW = sum over the ranks of x.T @ dy; x [B, K], dy [B, N]; B a multiple of 128, K of 128, N of 512."""
    B, K = x.shape
    _, N = dy.shape
    local = nl.ndarray((K, N), dtype=x.dtype, buffer=nl.private_hbm)
    gradient = nl.ndarray((K, N), dtype=x.dtype, buffer=nl.shared_hbm)
    for k in nl.affine_range(K // 128):
        for n in nl.affine_range(N // 512):
            acc = nl.zeros((128, 512), nl.float32, buffer=nl.psum)
            for b in nl.affine_range(B // 128):
                x_tile = nl.load(x[b * 128:(b + 1) * 128, k * 128:(k + 1) * 128])
                dy_tile = nl.load(dy[b * 128:(b + 1) * 128, n * 512:(n + 1) * 512])
                acc += nisa.nc_matmul(x_tile, dy_tile)
            nl.store(local[k * 128:(k + 1) * 128, n * 512:(n + 1) * 512], value=nl.copy(acc, dtype=x.dtype))
    nccl.all_reduce(srcs=[local], dsts=[gradient], replica_group=replica_group, op=nl.add)
    return gradient


def main(arguments):
    ranks = int(arguments[0]) if arguments else 4
    batch = int(arguments[1]) if len(arguments) > 1 else 256
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((batch, 256), dtype=np.float32) for _ in range(ranks)]
    dys = [rng.standard_normal((batch, 512), dtype=np.float32) for _ in range(ranks)]
    group = nccl.ReplicaGroup([list(range(ranks))])
    gradients = nki.multi_rank_simulate(gradient_kernel, world_size=ranks,
                                        per_rank_inputs=[((xs[r], dys[r], group), {}) for r in range(ranks)])
    expected = sum(x.T.astype(np.float64) @ dy for x, dy in zip(xs, dys))
    for rank, gradient in enumerate(gradients):
        error = np.abs(gradient - expected).max()
        if not np.allclose(gradient, expected, atol=1e-3, rtol=1e-4):
            print(f"rank {rank}: the gradient differs from numpy's by up to {error}")
            return 1
        if gradient.tobytes() != gradients[0].tobytes():
            print(f"rank {rank}: the gradient differs from rank 0's (an all-reduce gives every rank the same bits)")
            return 1
    print(vtrn.nki.last_report())
    print(f"{ranks} ranks x batch {batch}: every rank's all-reduced 256 x 512 gradient verified against numpy "
          f"(max error {np.abs(gradients[0] - expected).max():.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
