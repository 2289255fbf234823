"""nki.collectives under vtrn.nki: kernels launched on several ranks with nki.multi_rank_simulate
(and multi_rank_execute), their collectives on the CC engine, against numpy folding in vtrn's
documented ring order (exact), replica groups of several rank-lists, SBUF operands, rank_id, and
the errors a kernel author meets."""

import numpy as np
import pytest

import vtrn.nki as nki
from vtrn.nki import NKIError, NKIUnsupportedError
from vtrn.nki import collectives as nccl
from vtrn.nki import isa as nisa
from vtrn.nki import language as nl


@pytest.fixture(autouse=True, scope="module")
def release_nki_runtime():
    yield
    nki.close()


def ring_reduce(inputs, op=np.add):
    """Chunk c (of len(inputs) chunks of the flattened data, the first count % n one longer)
    folded from rank c+1 round to rank c, in the dtype."""
    n = len(inputs)
    flat = [array.reshape(-1) for array in inputs]
    count = flat[0].size
    result = np.empty_like(flat[0])
    base, extra = divmod(count, n)
    for c in range(n):
        start = c * base + min(c, extra)
        where = slice(start, start + base + (1 if c < extra else 0))
        accumulator = flat[(c + 1) % n][where].copy()
        for k in range(2, n + 1):
            accumulator = op(accumulator, flat[(c + k) % n][where]).astype(flat[0].dtype)
        result[where] = accumulator
    return result.reshape(inputs[0].shape)


def rand(shape, seed, dtype=np.float32):
    return (np.random.default_rng(seed).standard_normal(shape) * 10).astype(dtype)


@nki.jit
def all_reduce_kernel(x, replica_group, op):
    src = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.private_hbm)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=src, src=x)
    nccl.all_reduce(srcs=[src], dsts=[out], replica_group=replica_group, op=op)
    return out


@pytest.mark.parametrize("world", [2, 4, 8])
@pytest.mark.parametrize("op", [nl.add, nl.maximum, nl.minimum])
def test_all_reduce_is_the_ring_fold(world, op):
    inputs = [rand((128, 96), seed=rank) for rank in range(world)]
    group = nccl.ReplicaGroup([list(range(world))])
    outputs = nki.multi_rank_simulate(all_reduce_kernel, world_size=world,
                                      per_rank_inputs=[((x, group, op), {}) for x in inputs])
    expected = ring_reduce(inputs, {nl.add: np.add, nl.maximum: np.maximum, nl.minimum: np.minimum}[op])
    assert len(outputs) == world
    for output in outputs:
        assert output.tobytes() == expected.tobytes()
    report = nki.last_report()
    assert report.instructions["cc"] == world and report.busy_ns["cc"] > 0 and report.instances == world


def test_rank_lists_reduce_independently_and_ranks_span_devices():
    """[[0, 1], [2, 3]] on trn1 (2 cores a device): ranks 0-1 on device 0, 2-3 on device 1."""
    kernel = nki.jit(all_reduce_kernel.func, platform_target="trn1")
    inputs = [np.full((4, 8), rank + 1, dtype=np.float32) for rank in range(4)]
    group = nccl.ReplicaGroup.from_partition_op(4, nccl.rg_partition_op.div, 2)
    assert group.rank_lists == [(0, 1), (2, 3)]
    outputs = nki.multi_rank_execute(kernel, world_size=4, per_rank_inputs={r: ((inputs[r], group, nl.add), {}) for r in range(4)})
    assert [float(output[0, 0]) for output in outputs] == [3.0, 3.0, 7.0, 7.0]
    assert nki.last_report().target == "trn1"
    strided = nccl.ReplicaGroup.from_partition_op(8, nccl.rg_partition_op.mod, 4)
    assert strided.rank_lists == [(0, 4), (1, 5), (2, 6), (3, 7)]


@nki.jit
def gather_scatter_kernel(x):
    group = nccl.ReplicaGroup([[0, 1, 2, 3]])
    rows = x.shape[0]
    gathered = nl.ndarray((4 * rows, x.shape[1]), dtype=x.dtype, buffer=nl.shared_hbm)
    scattered = nl.ndarray((rows // 4, x.shape[1]), dtype=x.dtype, buffer=nl.shared_hbm)
    exchanged = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nccl.all_gather(srcs=[x], dsts=[gathered], replica_group=group, collective_dim=0)
    nccl.reduce_scatter(srcs=[x], dsts=[scattered], replica_group=group, op=nl.add)
    nccl.all_to_all(srcs=[x], dsts=[exchanged], replica_group=group)
    return gathered, scattered, exchanged


def test_gather_scatter_and_all_to_all_along_dimension_0():
    inputs = [rand((8, 16), seed=10 + rank) for rank in range(4)]
    outputs = nki.multi_rank_simulate(gather_scatter_kernel, world_size=4, per_rank_inputs=[((x,), {}) for x in inputs])
    reduced = np.concatenate([_chunk_fold(inputs, c) for c in range(4)])
    for rank, (gathered, scattered, exchanged) in enumerate(outputs):
        assert gathered.tobytes() == np.concatenate(inputs).tobytes()
        assert scattered.tobytes() == reduced[2 * rank:2 * rank + 2].tobytes()
        assert exchanged.tobytes() == np.concatenate([inputs[j][2 * rank:2 * rank + 2] for j in range(4)]).tobytes()


def _chunk_fold(inputs, c):
    """Reduce-scatter's chunk c (rows 2c, 2c+1): folded from rank c+1 round to rank c."""
    n = len(inputs)
    accumulator = inputs[(c + 1) % n][2 * c:2 * c + 2].copy()
    for k in range(2, n + 1):
        accumulator = (accumulator + inputs[(c + k) % n][2 * c:2 * c + 2]).astype(np.float32)
    return accumulator


@nki.jit
def sbuf_kernel(x):
    """All-reduce of an SBUF tile between compute on either side: loads, doubles, all-reduces in
    SBUF, adds the rank id, stores."""
    tile = nl.load(x)
    doubled = nl.multiply(tile, 2.0)
    summed = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    nccl.all_reduce(srcs=[doubled], dsts=[summed], replica_group=nccl.ReplicaGroup([[0, 1]]), op=nl.add)
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nl.store(out, value=nl.add(summed, float(nccl.rank_id())))
    return out


def test_sbuf_tiles_and_rank_id_order_against_compute():
    inputs = [rand((128, 32), seed=20 + rank) for rank in range(2)]
    outputs = nki.multi_rank_simulate(sbuf_kernel, world_size=2, per_rank_inputs=[((x,), {}) for x in inputs])
    summed = ring_reduce([x * 2 for x in inputs])
    for rank, output in enumerate(outputs):
        assert output.tobytes() == (summed + np.float32(rank)).astype(np.float32).tobytes()


@nki.jit
def permute_kernel(x, pairs):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    nisa.dma_copy(dst=out, src=x)            # ranks nobody sends to keep their own
    nccl.collective_permute(srcs=[x], dsts=[out], source_target_pairs=pairs)
    return out


def test_collective_permute_follows_the_pairs():
    inputs = [np.full((2, 4), rank, dtype=np.int32) for rank in range(4)]
    pairs = [(0, 1), (1, 2), (2, 0)]          # a 3-cycle; rank 3 takes no part
    outputs = nki.multi_rank_simulate(permute_kernel, world_size=4, per_rank_inputs=[((x, pairs), {}) for x in inputs])
    assert [int(output[0, 0]) for output in outputs] == [2, 0, 1, 3]


def test_errors_name_the_problem():
    x = np.ones((4, 4), dtype=np.float32)
    group = nccl.ReplicaGroup([[0, 1]])
    with pytest.raises(NKIError, match="collectives need the kernel to run on several ranks: launch it with "
                                       r"nki.multi_rank_simulate"):
        nki.simulate_kernel(all_reduce_kernel, x, group, nl.add)
    with pytest.raises(NKIError, match="rank 2 is in no rank-list"):
        nki.multi_rank_simulate(all_reduce_kernel, world_size=3, per_rank_inputs=[((x, group, nl.add), {})] * 3)
    with pytest.raises(NKIError, match="rank 1's arguments differ from rank 0's"):
        nki.multi_rank_simulate(all_reduce_kernel, world_size=2,
                                per_rank_inputs=[((x, group, nl.add), {}), ((np.ones((4, 8), np.float32), group, nl.add), {})])
    with pytest.raises(NKIError, match="per_rank_inputs has 1 entries for world_size 2"):
        nki.multi_rank_simulate(all_reduce_kernel, world_size=2, per_rank_inputs=[((x, group, nl.add), {})])
    with pytest.raises(NKIError, match="world_size 0 is not a positive int"):
        nki.multi_rank_simulate(all_reduce_kernel, world_size=0, per_rank_inputs=[])
    with pytest.raises(NKIError, match="op subtract is not nl.add, nl.maximum or nl.minimum"):
        nki.multi_rank_simulate(all_reduce_kernel, world_size=2, per_rank_inputs=[((x, group, nl.subtract), {})] * 2)
    with pytest.raises(NKIError, match="rank 1 is in two rank-lists"):
        nccl.ReplicaGroup([[0, 1], [1, 2]])

    @nki.jit
    def wrong_dim(x):
        out = nl.ndarray((4, 8), dtype=x.dtype, buffer=nl.shared_hbm)
        nccl.all_gather(srcs=[x], dsts=[out], replica_group=nccl.ReplicaGroup([[0, 1]]), collective_dim=1)
        return out
    with pytest.raises(NKIUnsupportedError, match="collective_dim=1"):
        nki.multi_rank_simulate(wrong_dim, world_size=2, per_rank_inputs=[((x,), {})] * 2)

    @nki.jit
    def short_gather(x):
        out = nl.ndarray((4, 4), dtype=x.dtype, buffer=nl.shared_hbm)
        nccl.all_gather(srcs=[x], dsts=[out], replica_group=nccl.ReplicaGroup([[0, 1]]))
        return out
    with pytest.raises(NKIError, match="dst has 16 elements; all-gather over 2 ranks of 16 makes 32"):
        nki.multi_rank_simulate(short_gather, world_size=2, per_rank_inputs=[((x,), {})] * 2)
    with pytest.raises(NKIUnsupportedError, match="all_to_all_v"):
        nccl.all_to_all_v()
