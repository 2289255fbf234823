"""nki.collectives (``import nki.collectives as nccl``) for vtrn: collectives between the ranks of a
multi-rank launch (``nki.multi_rank_simulate`` / ``nki.multi_rank_execute``), each rank a
NeuronCore running the kernel. A collective becomes an instruction of the core's CC engine, on a
vtrn communicator of the ranks of the caller's rank-list; the CC engine runs beside the compute
and DMA engines, ordered against them by what the tensors share, as NKI's compiler orders it.

The arithmetic is vtrn's (the README's Collectives section): chunk c of a reduction is folded in
ring order from rank c+1 round to rank c, rounded to the dtype at every step, the same bits every
run. Tensors are HBM (nl.shared_hbm, nl.private_hbm, the kernel's inputs) or SBUF tiles, as NKI
allows; ``collective_dim`` must be 0 (the rank blocks are the tensor's leading rows); coalesced
lists pair srcs[i] with dsts[i].
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Any

from . import _core
from . import language as nl
from ._core import fail, unsupported
from ._tensor import Tensor

__all__ = ["ReplicaGroup", "rg_partition_op", "rank_id", "self_index_in_replica_group", "all_reduce", "all_gather",
           "reduce_scatter", "all_to_all", "collective_permute", "all_to_all_v", "collective_permute_implicit",
           "collective_permute_implicit_reduce", "collective_permute_implicit_current_processing_rank_id"]


class rg_partition_op(enum.Enum):
    """How ReplicaGroup.from_partition_op maps a rank to its rank-list: rank & operand, rank //
    operand, rank % operand."""
    bitwise_and = "bitwise_and"
    div = "div"
    mod = "mod"


class ReplicaGroup:
    """The ranks a collective runs on, as rank-lists: the collective runs within each list
    independently (``[[0, 1, 2, 3], [4, 5, 6, 7]]``). A rank is in one list at most."""

    def __init__(self, rank_lists: Sequence[Sequence[int]]) -> None:
        lists = [tuple(int(rank) for rank in ranks) for ranks in rank_lists]
        seen: set[int] = set()
        for ranks in lists:
            if not ranks:
                fail("a rank-list of a ReplicaGroup is empty", "nki.collectives.ReplicaGroup")
            for rank in ranks:
                if rank < 0:
                    fail(f"rank {rank} is negative", "nki.collectives.ReplicaGroup")
                if rank in seen:
                    fail(f"rank {rank} is in two rank-lists of {lists}; each rank takes part in one",
                         "nki.collectives.ReplicaGroup")
                seen.add(rank)
        self.rank_lists = lists

    @staticmethod
    def from_partition_op(world_size: int, op: rg_partition_op, operand: int) -> "ReplicaGroup":
        """Ranks 0 .. world_size-1, those with the same ``op(rank, operand)`` in one list."""
        key = {rg_partition_op.bitwise_and: lambda r: r & operand, rg_partition_op.div: lambda r: r // operand,
               rg_partition_op.mod: lambda r: r % operand}.get(op)
        if key is None:
            fail(f"op {op!r} is not an rg_partition_op", "nki.collectives.ReplicaGroup.from_partition_op")
        if op in (rg_partition_op.div, rg_partition_op.mod) and operand == 0:
            fail("operand 0 divides by zero", "nki.collectives.ReplicaGroup.from_partition_op")
        lists: dict[int, list[int]] = {}
        for rank in range(world_size):
            lists.setdefault(key(rank), []).append(rank)
        return ReplicaGroup([lists[k] for k in sorted(lists)])

    def rank_list_of(self, rank: int, api: str) -> tuple[int, ...]:
        """The rank-list ``rank`` is in; NKIError (naming ``api``) when it is in none."""
        for ranks in self.rank_lists:
            if rank in ranks:
                return ranks
        fail(f"rank {rank} is in no rank-list of the replica group {[list(r) for r in self.rank_lists]}", api)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplicaGroup) and other.rank_lists == self.rank_lists

    def __hash__(self) -> int:
        return hash(tuple(self.rank_lists))

    def __repr__(self) -> str:
        return f"ReplicaGroup({[list(ranks) for ranks in self.rank_lists]})"


def rank_id(name: str | None = None) -> int:
    """This rank's id in the launch (0 .. world_size-1)."""
    return _core.rank_context("nki.collectives.rank_id").rank


def self_index_in_replica_group(replica_group: ReplicaGroup, name: str | None = None) -> int:
    """This rank's position in its own rank-list of ``replica_group``."""
    api = "nki.collectives.self_index_in_replica_group"
    rank = _core.rank_context(api).rank
    return _replica_group(replica_group, api).rank_list_of(rank, api).index(rank)


def _replica_group(value: Any, api: str) -> ReplicaGroup:
    if isinstance(value, ReplicaGroup):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(ranks, (list, tuple)) for ranks in value):
        return ReplicaGroup(value)
    fail(f"replica_group {value!r} is not a ReplicaGroup (nki.collectives.ReplicaGroup([[0, 1, ...]]))", api)


def _pairs(srcs: Any, dsts: Any, api: str) -> list[tuple[Tensor, Tensor]]:
    if isinstance(srcs, Tensor) or isinstance(dsts, Tensor):
        fail("srcs and dsts are lists of tensors (srcs=[x], dsts=[out])", api)
    srcs, dsts = list(srcs), list(dsts)
    if len(srcs) != len(dsts) or not srcs:
        fail(f"{len(srcs)} srcs and {len(dsts)} dsts: the lists pair up, one or more of each", api)
    for tensor in srcs + dsts:
        if not isinstance(tensor, Tensor):
            fail(f"{tensor!r} is not a tensor", api)
    spaces = {tensor._view.buffer.space for tensor in srcs + dsts}
    if "psum" in spaces:
        fail("a tensor is in PSUM; collectives take HBM or SBUF tensors", api)
    if len(spaces) > 1:
        fail("the tensors mix HBM and SBUF; NKI's collectives take one or the other", api)
    if len(srcs) > 1 and spaces != {"hbm"}:
        fail("coalesced collectives (several tensors) take HBM tensors only", api)
    for src, dst in zip(srcs, dsts):
        if src._view.buffer.dtype != dst._view.buffer.dtype:
            fail(f"src is {src._view.buffer.dtype} and dst {dst._view.buffer.dtype}: a collective keeps the dtype", api)
    return list(zip(srcs, dsts))


def _dim(collective_dim: int, api: str) -> None:
    if collective_dim != 0:
        unsupported(api, f"collective_dim={collective_dim}: vtrn gathers and scatters along dimension 0 (the rank "
                         "blocks are the leading rows)")


def _size(tensor: Tensor) -> int:
    return math.prod(tensor._view.shape)


def _group(replica_group: Any, api: str) -> tuple[Any, tuple[int, ...]]:
    context = _core.rank_context(api)
    group = _replica_group(replica_group, api)
    ranks = group.rank_list_of(context.rank, api)
    for rank in ranks:
        if rank >= context.world_size:
            fail(f"rank {rank} of the replica group is past the launch's world_size {context.world_size}", api)
    return context.communicator(ranks), ranks


def _record(api: str, kind: str, comm: Any, dst: Tensor, src: Tensor, op: str | None = None) -> None:
    nl._record("cc", "collective", [dst._view], [src._view], api, src=src._view, comm=comm, collective=kind, op=op)


def _reduce_op(op: Any, api: str) -> str:
    from .isa import _op_name
    name = _op_name(op, api)
    if name not in ("add", "max", "min"):
        fail(f"op {name} is not nl.add, nl.maximum or nl.minimum", api)
    return str(name)


def all_reduce(srcs: Any, dsts: Any, replica_group: Any, op: Any, priority: int | None = None,
               name: str | None = None) -> None:
    """dsts[i] = the reduction with ``op`` (nl.add, nl.maximum, nl.minimum) of srcs[i] over the
    ranks of this rank's rank-list."""
    api = "nki.collectives.all_reduce"
    comm, _ = _group(replica_group, api)
    reduction = _reduce_op(op, api)
    for src, dst in _pairs(srcs, dsts, api):
        if _size(src) != _size(dst):
            fail(f"src has {_size(src)} elements and dst {_size(dst)}: all-reduce keeps the size", api)
        _record(api, "all_reduce", comm, dst, src, reduction)


def all_gather(srcs: Any, dsts: Any, replica_group: Any, collective_dim: int = 0, priority: int | None = None,
               name: str | None = None) -> None:
    """dsts[i] = srcs[i] of every rank of the rank-list, stacked along dimension 0 in rank-list order."""
    api = "nki.collectives.all_gather"
    _dim(collective_dim, api)
    comm, ranks = _group(replica_group, api)
    for src, dst in _pairs(srcs, dsts, api):
        if _size(dst) != _size(src) * len(ranks):
            fail(f"dst has {_size(dst)} elements; all-gather over {len(ranks)} ranks of {_size(src)} makes "
                 f"{_size(src) * len(ranks)}", api)
        _record(api, "all_gather", comm, dst, src)


def reduce_scatter(srcs: Any, dsts: Any, replica_group: Any, op: Any, collective_dim: int = 0,
                   priority: int | None = None, name: str | None = None) -> None:
    """dsts[i] = this rank's block (along dimension 0, by position in the rank-list) of the
    reduction of srcs[i] over the rank-list."""
    api = "nki.collectives.reduce_scatter"
    _dim(collective_dim, api)
    comm, ranks = _group(replica_group, api)
    reduction = _reduce_op(op, api)
    for src, dst in _pairs(srcs, dsts, api):
        if _size(src) != _size(dst) * len(ranks):
            fail(f"src has {_size(src)} elements; reduce-scatter over {len(ranks)} ranks into {_size(dst)} needs "
                 f"{_size(dst) * len(ranks)}", api)
        _record(api, "reduce_scatter", comm, dst, src, reduction)


def all_to_all(srcs: Any, dsts: Any, replica_group: Any, collective_dim: int = 0, priority: int | None = None,
               name: str | None = None) -> None:
    """Block j (along dimension 0) of srcs[i] goes to the j-th rank of the rank-list, as its block
    for this rank."""
    api = "nki.collectives.all_to_all"
    _dim(collective_dim, api)
    comm, ranks = _group(replica_group, api)
    for src, dst in _pairs(srcs, dsts, api):
        if _size(src) != _size(dst) or _size(src) % len(ranks):
            fail(f"src has {_size(src)} elements and dst {_size(dst)}: all-to-all over {len(ranks)} ranks needs "
                 "equal sizes that split evenly", api)
        _record(api, "all_to_all", comm, dst, src)


def collective_permute(srcs: Any, dsts: Any, source_target_pairs: Any, priority: int | None = None,
                       name: str | None = None) -> None:
    """Every (source, target) pair: the source rank's srcs[0] lands in the target rank's dsts[0],
    all pairs at once. Ranks are the launch's; HBM tensors only, one of each (as NKI's)."""
    api = "nki.collectives.collective_permute"
    context = _core.rank_context(api)
    pairs = [(int(a), int(b)) for a, b in source_target_pairs]
    world = context.world_size
    targets = [-1] * world
    for source, target in pairs:
        if not (0 <= source < world and 0 <= target < world):
            fail(f"pair ({source}, {target}) names a rank past the launch's world_size {world}", api)
        if targets[source] != -1:
            fail(f"rank {source} is the source of two pairs", api)
        targets[source] = target
    if len({t for t in targets if t >= 0}) != len([t for t in targets if t >= 0]):
        fail(f"two pairs send to the same rank in {pairs}", api)
    tensors = _pairs(srcs, dsts, api)
    if len(tensors) != 1:
        fail("collective_permute takes one src and one dst", api)
    src, dst = tensors[0]
    if src._view.buffer.space != "hbm":
        fail("collective_permute takes HBM tensors (SBUF is not supported, as in NKI)", api)
    if _size(src) != _size(dst):
        fail(f"src has {_size(src)} elements and dst {_size(dst)}", api)
    comm = context.communicator(tuple(range(world)))
    nl._record("cc", "collective_permute", [dst._view], [src._view], api, src=src._view, comm=comm, targets=targets)


def _not_yet(name: str) -> Any:
    def function(*args: Any, **kwargs: Any) -> Any:
        unsupported(f"nki.collectives.{name}", "not in vtrn.nki yet")
    function.__name__ = name
    function.__doc__ = f"nki.collectives.{name}: not supported by vtrn.nki yet (raises NKIUnsupportedError)."
    return function


all_to_all_v = _not_yet("all_to_all_v")
collective_permute_implicit = _not_yet("collective_permute_implicit")
collective_permute_implicit_reduce = _not_yet("collective_permute_implicit_reduce")
collective_permute_implicit_current_processing_rank_id = _not_yet("collective_permute_implicit_current_processing_rank_id")
