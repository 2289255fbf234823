"""Communicators and collectives (vtrn_comm_t): a replica group of cores that run all-reduce,
all-gather, reduce-scatter, all-to-all, broadcast, send/receive and permute together.

    with vtrn.Runtime(topology="trn1.32xlarge") as runtime:
        devices = runtime.devices
        with vtrn.Communicator(runtime, devices) as comm:           # rank i = core 0 of device i
            grads = [device.to_device(g) for device, g in zip(devices, gradients)]
            fences = [comm.all_reduce(rank, grads[rank], grads[rank], dtype="float32") for rank in comm.local_ranks]
            for fence in fences:
                fence.wait()
            summed = devices[0].from_device(grads[0], "float32", gradients[0].shape)

        # numpy in, numpy out, every rank at once:
        results = comm.all_reduce_arrays(gradients)               # the sum, one array per rank

As NCCL's, every rank calls every collective (one call per rank; each returns a CollectiveFence
at once, queued on the rank's core in order with its kernels), counts are NCCL's (``count`` is
what each rank contributes; all-gather's output holds ``count * size``, reduce-scatter's input
``count * size``), and the k-th collectives of the ranks meet. Results are deterministic: chunk
c of a reduction is folded from rank c+1 round to rank c, rounded to the dtype at every step
(include/vtrn.h, "Functions: collectives"). ``Communicator(runtime, members, mpi=True)`` spans
the processes of an MPI job (``mpirun``): each process passes its own members.
"""

from __future__ import annotations

import ctypes
import operator
from collections.abc import Iterable, Sequence
from ctypes import byref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ._library import (
    ALU_ALIASES,
    ALU_OPS,
    COLLECTIVES,
    DTYPE_SIZES,
    DTYPES,
    WAIT_FOREVER,
    CommHandle,
    CommInfoStruct,
    CommMemberStruct,
    ExecutionInfoStruct,
    FenceHandle,
    MemoryRefStruct,
    device_ref,
    lib,
    unsigned,
)
from .errors import Status, check
from .kernel import EnumValue, ExecutionInfo, _enum_value, dtype_name, execution_info, numpy_dtype
from .memory import DeviceMemory, _Resource

if TYPE_CHECKING:
    from .runtime import Device, Runtime

# A member: a device (its core 0) or (device, core).
Member: TypeAlias = "Device | tuple[Device, int]"
# Where a collective reads or writes: device memory of the rank's device, at offset 0 or given.
Buffer: TypeAlias = "DeviceMemory | tuple[DeviceMemory, int]"


@dataclass(frozen=True)
class CommInfo:
    """vtrn_comm_info_t."""

    ranks: int  # in every process
    first_local_rank: int  # this process's ranks: first_local_rank .. first_local_rank + local_ranks - 1
    collectives_completed: int  # by this process's ranks (sends and receives not counted)
    local_ranks: int
    process: int  # this process's MPI rank; 0 in one process
    processes: int  # 1 in one process


class CollectiveFence(_Resource[FenceHandle]):
    """One rank's part of a host-called collective (a vtrn_fence_t): ``wait()`` raises its
    failure (InvalidArgumentError when ranks asked for different things, DeviceTimeoutError
    naming a rank that never joined, DeviceLostError...)."""

    _destroy = "vtrn_fence_destroy"

    def __init__(self, comm: Communicator, handle: FenceHandle, rank: int, keep: Sequence[DeviceMemory] = ()) -> None:
        super().__init__(comm.runtime, handle)
        self.comm = comm
        self.rank = rank
        self._keep = list(keep)  # memory the fence's convenience call allocated, freed with it
        self._closed = False

    def wait(self, timeout_ns: int | None = None) -> bool:
        """True once the collective finished on this rank; False when polling (``timeout_ns`` 0)
        and not finished. Raises its failure. None waits forever."""
        timeout = WAIT_FOREVER if timeout_ns is None else unsigned(timeout_ns, "uint64_t", "timeout_ns")
        return check(lib.vtrn_fence_wait(self._handle, timeout)) == Status.SUCCESS

    @property
    def status(self) -> Status:
        """Status.NOT_READY while queued or waiting for other ranks; then the outcome."""
        status = ctypes.c_uint32()
        check(lib.vtrn_fence_status(self._handle, byref(status)))
        return Status(status.value)

    @property
    def info(self) -> ExecutionInfo:
        """Timings: ``device_ns`` is the cost model's estimate (the ring's steps on the links and the
        wait for the last rank), ``engine_busy_ns["cc"]`` the same for the CC engine."""
        raw = ExecutionInfoStruct.init()
        check(lib.vtrn_fence_get_info(self._handle, byref(raw)))
        return execution_info(raw)

    def _released(self) -> None:
        keep, self._keep = self._keep, []
        for memory in keep:
            memory.free()


def _buffer(value: Buffer | None, what: str) -> tuple[MemoryRefStruct, DeviceMemory | None, int]:
    if value is None:
        return MemoryRefStruct(None, 0), None, 0
    offset = 0
    if isinstance(value, tuple):
        if len(value) != 2:
            raise TypeError(f"{what} is a tuple of {len(value)}; a buffer is a DeviceMemory or (DeviceMemory, offset)")
        value, offset = value
    if not isinstance(value, DeviceMemory):
        raise TypeError(f"{what} is a {type(value).__name__}; collectives read and write device memory: a DeviceMemory "
                        "or (DeviceMemory, offset)")
    offset = unsigned(offset, "uint64_t", f"{what} offset")
    return device_ref(value.handle, offset), value, offset


class Communicator(_Resource[CommHandle]):
    """A communicator (vtrn_comm_create): rank i is ``members[i]``, a device (its core 0) or a
    (device, core). It claims those cores for the runtime, as loading a kernel does. With
    ``mpi=True`` (vtrn_comm_create_mpi) it spans the processes of an MPI job, each process giving
    its own members, ranks in MPI rank order; each process then calls the collectives of its own
    ranks (``local_ranks``)."""

    _destroy = "vtrn_comm_destroy"

    def __init__(self, runtime: Runtime, members: Iterable[Member], *, mpi: bool = False) -> None:
        pairs: list[tuple[Device, int]] = []
        for member in members:
            if isinstance(member, tuple):
                device, core = member
                pairs.append((device, operator.index(core)))
            else:
                pairs.append((member, 0))
        structs = (CommMemberStruct * max(1, len(pairs)))()
        for index, (device, core) in enumerate(pairs):
            structs[index] = CommMemberStruct(device.handle, unsigned(core, "uint32_t", f"members[{index}] core"), 0)
        handle = CommHandle()
        create = lib.vtrn_comm_create_mpi if mpi else lib.vtrn_comm_create
        check(create(runtime.handle, structs if pairs else None, len(pairs), byref(handle)))
        super().__init__(runtime, handle)
        self.members = pairs
        self._closed = False
        info = self.info
        self.size: int = info.ranks
        self.local_ranks = range(info.first_local_rank, info.first_local_rank + info.local_ranks)

    @property
    def info(self) -> CommInfo:
        """A CommInfo."""
        raw = CommInfoStruct.init()
        check(lib.vtrn_comm_get_info(self._handle, byref(raw)))
        return CommInfo(ranks=raw.ranks, first_local_rank=raw.first_local_rank,
                        collectives_completed=raw.collectives_completed, local_ranks=raw.local_ranks,
                        process=raw.process, processes=raw.processes)

    def rank_of(self, device: Device, core: int = 0) -> int:
        """The rank of ``core`` of ``device``; NotFoundError when it is not a member."""
        rank = ctypes.c_uint32()
        check(lib.vtrn_comm_rank(self._handle, device.handle, unsigned(core, "uint32_t", "core"), byref(rank)))
        return rank.value

    def device_of(self, rank: int) -> Device:
        """The device of this process's rank ``rank``."""
        return self.members[rank - self.local_ranks.start][0]

    # -- host-called collectives: one call per rank -------------------------------------------

    def _call(self, kind: str, rank: int, dst: Buffer | None, src: Buffer | None, count: int | None, dtype: DTypeLike,
              op: EnumValue = "add", peer: int = 0, targets: Iterable[int] | None = None,
              count_from: str = "src", divide: int = 1) -> CollectiveFence:
        name = dtype_name(dtype)
        dst_ref, dst_memory, dst_offset = _buffer(dst, "dst")
        src_ref, src_memory, src_offset = _buffer(src, "src")
        if count is None:
            memory, offset = (src_memory, src_offset) if count_from == "src" else (dst_memory, dst_offset)
            if memory is None:
                raise ValueError(f"{kind}: pass count (there is no {count_from} to take it from)")
            count = (memory.bytes - offset) // DTYPE_SIZES[name] // divide
        count = unsigned(count, "uint64_t", "count")
        rank = unsigned(rank, "uint32_t", "rank")
        fence = FenceHandle()
        if kind == "permute":
            values = [operator.index(target) for target in targets or ()]
            array = (ctypes.c_int32 * max(1, len(values)))(*values)
            check(lib.vtrn_collective_permute(self._handle, rank, dst_ref, src_ref, count, DTYPES[name], array, byref(fence)))
        else:
            check(lib.vtrn_comm_collective(self._handle, rank, COLLECTIVES[kind], dst_ref, src_ref, count, DTYPES[name],
                                           _enum_value(op, ALU_OPS, "op", ALU_ALIASES), unsigned(peer, "uint32_t", "peer"),
                                           byref(fence)))
        return CollectiveFence(self, fence, rank)

    def all_reduce(self, rank: int, src: Buffer, dst: Buffer, count: int | None = None, dtype: DTypeLike = "float32",
                   op: EnumValue = "add") -> CollectiveFence:
        """Every rank's ``count`` elements (default: all of src) reduced with ``op`` (add, max, min)
        into every rank's dst (which may be src)."""
        return self._call("all_reduce", rank, dst, src, count, dtype, op)

    def all_gather(self, rank: int, src: Buffer, dst: Buffer, count: int | None = None,
                   dtype: DTypeLike = "float32") -> CollectiveFence:
        """Each rank's ``count`` elements into chunk ``rank`` of every rank's dst (``count * size``)."""
        return self._call("all_gather", rank, dst, src, count, dtype)

    def reduce_scatter(self, rank: int, src: Buffer, dst: Buffer, count: int | None = None, dtype: DTypeLike = "float32",
                       op: EnumValue = "add") -> CollectiveFence:
        """src holds ``count * size`` elements; rank r's dst gets chunk r (``count``, default dst's
        size) of their reduction."""
        return self._call("reduce_scatter", rank, dst, src, count, dtype, op, count_from="dst")

    def all_to_all(self, rank: int, src: Buffer, dst: Buffer, count: int | None = None,
                   dtype: DTypeLike = "float32") -> CollectiveFence:
        """Chunk j (``count`` elements, default src / size) of this rank's src to chunk ``rank`` of rank
        j's dst. Not in place."""
        return self._call("all_to_all", rank, dst, src, count, dtype, divide=self.size)

    def broadcast(self, rank: int, src: Buffer | None, dst: Buffer, root: int, count: int | None = None,
                  dtype: DTypeLike = "float32") -> CollectiveFence:
        """The root's ``count`` elements (default: dst's size) of src into every rank's dst; only the
        root's src is read (others may pass None)."""
        return self._call("broadcast", rank, dst, src, count, dtype, peer=root, count_from="dst")

    def send(self, rank: int, src: Buffer, peer: int, count: int | None = None, dtype: DTypeLike = "float32") -> CollectiveFence:
        """``count`` elements of src to rank ``peer``; finishes when the peer received them (a send
        waits for its receive, as NCCL's outside a group: interleave sends and receives)."""
        return self._call("send", rank, None, src, count, dtype, peer=peer)

    def recv(self, rank: int, dst: Buffer, peer: int, count: int | None = None, dtype: DTypeLike = "float32") -> CollectiveFence:
        """Receives into dst the ``count`` elements (default: dst's size) rank ``peer`` sends."""
        return self._call("recv", rank, dst, None, count, dtype, peer=peer, count_from="dst")

    def permute(self, rank: int, src: Buffer, dst: Buffer, targets: Iterable[int], count: int | None = None,
                dtype: DTypeLike = "float32") -> CollectiveFence:
        """Collective permute: rank r sends src to ``targets[r]`` (-1: none) and receives into dst from
        the rank whose target it is; ``targets`` has one entry per rank, the same on every rank."""
        return self._call("permute", rank, dst, src, count, dtype, targets=targets)

    # -- numpy in, numpy out --------------------------------------------------------------------

    def _run_arrays(self, kind: str, arrays: Sequence[ArrayLike], output_elements: int, **arguments: Any) -> list[NDArray[Any]]:
        if len(arrays) != len(self.local_ranks):
            raise ValueError(f"{kind}: {len(arrays)} arrays for this process's {len(self.local_ranks)} ranks")
        inputs = [numpy.ascontiguousarray(array) for array in arrays]
        dtype = inputs[0].dtype
        if any(array.dtype != dtype for array in inputs):
            raise ValueError(f"{kind}: the arrays have different dtypes ({sorted({str(a.dtype) for a in inputs})})")
        name = dtype_name(dtype)
        sources: list[DeviceMemory] = []
        outputs: list[DeviceMemory] = []
        fences: list[CollectiveFence] = []
        try:
            for index, rank in enumerate(self.local_ranks):
                device = self.device_of(rank)
                sources.append(device.to_device(inputs[index]))
                outputs.append(device.allocate(max(1, output_elements * DTYPE_SIZES[name])))
            for index, rank in enumerate(self.local_ranks):
                call = getattr(self, kind)
                fences.append(call(rank, sources[index], outputs[index], dtype=name, **arguments))
            for fence in fences:
                fence.wait()
            return [self.device_of(rank).from_device(outputs[index], numpy_dtype(name), (output_elements,))
                    for index, rank in enumerate(self.local_ranks)]
        finally:
            for fence in fences:
                fence.close()
            for memory in sources + outputs:
                memory.free()

    def all_reduce_arrays(self, arrays: Sequence[ArrayLike], op: EnumValue = "add") -> list[NDArray[Any]]:
        """All-reduce of one array per local rank (same size and dtype): the reductions, flat."""
        count = int(numpy.asarray(arrays[0]).size)
        return self._run_arrays("all_reduce", arrays, count, op=op)

    def all_gather_arrays(self, arrays: Sequence[ArrayLike]) -> list[NDArray[Any]]:
        """All-gather of one array per local rank: each result holds every rank's array, in rank order."""
        count = int(numpy.asarray(arrays[0]).size)
        return self._run_arrays("all_gather", arrays, count * self.size)

    def reduce_scatter_arrays(self, arrays: Sequence[ArrayLike], op: EnumValue = "add") -> list[NDArray[Any]]:
        """Reduce-scatter of one array per local rank (size divisible by the ranks): rank r's chunk."""
        count = int(numpy.asarray(arrays[0]).size) // self.size
        return self._run_arrays("reduce_scatter", arrays, count, op=op)

    def all_to_all_arrays(self, arrays: Sequence[ArrayLike]) -> list[NDArray[Any]]:
        """All-to-all of one array per local rank (size divisible by the ranks)."""
        count = int(numpy.asarray(arrays[0]).size)
        return self._run_arrays("all_to_all", arrays, count)

