"""From a recorded trace to a loaded vtrn kernel: the part of Neuron's compiler that vtrn.nki does.

1. Allocation. Every on-chip buffer lives from its first to its last operation. SBUF buffers get
   64-byte-aligned byte ranges of every partition, PSUM buffers whole 2 KiB banks (8 per
   partition), each from a next-fit allocator that goes round its space, so that a buffer freed
   just now is the last to be reused: consecutive iterations of an ``affine_range`` loop then
   land in different places and their engines overlap, as NKI's allocator permits. A buffer that
   does not fit is an NKIError naming where it was made and what else was live.
2. Dependencies. For each operation, the earlier operations it must follow: read after write,
   write after read and write after write on overlapping bytes of the same buffer, and on bytes
   a dead buffer left to a new one. HBM needs none: only the DMA engine reaches it, in order.
3. Synchronisation. Each engine counts its finished instructions in a semaphore of its own
   (semaphore = engine number, +1 per instruction). An instruction that needs instruction k of
   another engine waits for that semaphore to reach k. Waits already implied by earlier ones
   (each engine's knowledge of the others is a vector clock) are left out; the last wait rides
   on the instruction itself, others become SEM_WAIT instructions just before it.
4. Emission through the C builders (vtrn_program_*), then vtrn_kernel_load validates it.
"""

import bisect
import ctypes
from ctypes import byref
from typing import Any

from .._library import (
    ACTIVATIONS,
    ALU_OPS,
    COLLECTIVES,
    DTYPES,
    ENGINE_FLAGS,
    MEMORY_SPACES,
    SEMAPHORE_OPS,
    DMA_INDIRECT,
    DMA_OOB_MODES,
    AccessStruct,
    DmaCopyOptionsStruct,
    ScalarStruct,
    SyncStruct,
    lib,
)
from ..errors import VtrnError, check
from ._core import PSUM_BANK_BYTES, PSUM_BANKS, NKIError, Trace, contains, itemsize, overlap

ENGINES = ("pe", "act", "dve", "pool", "dma")
# The engines a kernel's instructions go to: the collective (CC) engine too, for nki.collectives.
SCHEDULED_ENGINES = ENGINES + ("cc",)
ENGINE_NUMBER = {name: number for number, name in enumerate(SCHEDULED_ENGINES)}
ALIGNMENT = 64


# -- 1. allocation ----------------------------------------------------------------------------------

class _Space:
    """Placement in [0, capacity) units of one memory, remembering who last held each unit.

    Next fit, going round the space: a tile freed just now is the last place reused, so that
    consecutive iterations of an affine_range loop land in different places and their engines
    overlap, as NKI's compiler multi-buffers such loops. A kernel whose tiles do not fit that way
    (the round trip cuts the space into pieces) is placed again by best fit (``compact``)."""

    def __init__(self, name: Any, capacity: Any, unit: Any, compact: Any = False) -> None:
        self.name = name
        self.capacity = capacity    # units
        self.unit = unit            # bytes per unit
        self.free = [(0, capacity)]  # sorted, disjoint [start, end)
        self.owner: list[Any] = [None] * capacity  # the last buffer that held each unit
        self.live: dict[Any, Any] = {}
        self.compact = compact
        self.cursor = 0

    def _choose(self, units: Any) -> Any:
        if self.compact:
            best = None
            for start, end in self.free:
                if end - start >= units and (best is None or end - start < best[1] - best[0]):
                    best = (start, end)
            return None if best is None else best[0]
        for cursor in (self.cursor, 0):
            for start, end in self.free:
                begin = max(start, cursor)
                if end - begin >= units:
                    return begin
        return None

    def allocate(self, buffer: Any, units: Any) -> Any:
        start = self._choose(units)
        if start is None:
            return None
        end = start + units
        for position, (a, b) in enumerate(self.free):
            if a <= start and end <= b:
                self.free[position:position + 1] = ([(a, start)] if a < start else []) + ([(end, b)] if end < b else [])
                break
        self.cursor = end
        previous: list[Any] = []
        seen: set[int] = set()
        for unit in range(start, end):
            owner = self.owner[unit]
            if owner is not None and owner.number not in seen:
                seen.add(owner.number)
                previous.append(owner)
            self.owner[unit] = buffer
        buffer.predecessors = tuple(previous)
        self.live[buffer] = (start, end)
        return start

    def release(self, buffer: Any) -> None:
        start, end = self.live.pop(buffer)
        position = bisect.bisect_left(self.free, (start, end))
        if position > 0 and self.free[position - 1][1] == start:
            position -= 1
            start = self.free[position][0]
            del self.free[position]
        if position < len(self.free) and self.free[position][0] == end:
            end = self.free[position][1]
            del self.free[position]
        self.free.insert(position, (start, end))


def allocate(trace: Trace) -> None:
    """Gives every on-chip buffer of ``trace`` its offset; NKIError when one does not fit."""
    try:
        _allocate(trace, compact=False)
    except NKIError:
        _allocate(trace, compact=True)


def _allocate(trace: Trace, compact: Any) -> None:
    target = trace.target
    spaces = {"sbuf": _Space("SBUF", target["sbuf_bytes"] // ALIGNMENT, ALIGNMENT, compact),
              "psum": _Space("PSUM", target["psum_bytes"] // PSUM_BANK_BYTES, PSUM_BANK_BYTES, compact)}
    starting: dict[int, list[Any]] = {}
    ending: dict[int, list[Any]] = {}
    seen = set()
    for op in trace.ops:
        for view in op.writes + op.reads:
            buffer = view.buffer
            if buffer.space == "hbm" or buffer in seen:
                continue
            seen.add(buffer)
            starting.setdefault(buffer.first, []).append(buffer)
            ending.setdefault(buffer.last, []).append(buffer)
    for index in range(len(trace.ops)):
        for buffer in starting.get(index, ()):
            space = spaces[buffer.space]
            units = max(1, -(-buffer.bytes_per_partition // space.unit))
            if buffer.partitions > target["partitions"]:
                raise NKIError(f"{buffer.describe()} has {buffer.partitions} partitions; SBUF and PSUM have "
                               f"{target['partitions']} (the partition dimension is the first of a tile, at most "
                               f"{target['partitions']})", buffer.where, "allocation")
            start = space.allocate(buffer, units)
            if start is None:
                raise _overflow(buffer, space, units, target)
            buffer.offset = start * space.unit
            buffer.bank = start if buffer.space == "psum" else None
        for buffer in ending.get(index, ()):
            spaces[buffer.space].release(buffer)


def _overflow(buffer: Any, space: Any, units: Any, target: Any) -> Any:
    live = sorted(space.live.items(), key=lambda item: item[1])
    used = sum(end - start for _, (start, end) in live)
    lines = [f"{other.describe()} made at {_short(other.where)}" for other, _ in live[:8]]
    more = f" and {len(live) - 8} more" if len(live) > 8 else ""
    if buffer.space == "psum":
        what = (f"PSUM overflow: {buffer.describe()} needs {units} of PSUM's {PSUM_BANKS} banks "
                f"({PSUM_BANK_BYTES} bytes per partition each), but {used} are held by tiles still in use: "
                + "; ".join(lines) + more + ". Reuse a PSUM tile (accumulate into it) or let tiles die sooner")
    else:
        largest = max((end - start for start, end in space.free), default=0)
        what = (f"SBUF overflow: {buffer.describe()} needs {units * space.unit} bytes per partition, but "
                f"{(space.capacity - used) * space.unit} of {target['sbuf_bytes']} are free, the largest piece "
                f"{largest * space.unit}; {len(live)} tiles live: " + "; ".join(lines) + more)
    return NKIError(what, buffer.where, "allocation")


def _short(where_: Any) -> Any:
    import os
    return f"{os.path.basename(where_[0])}:{where_[1]}" if where_ else "?"


# -- 2-3. dependencies and synchronisation -------------------------------------------------------

class _Record:
    __slots__ = ("writes", "reads", "last")

    def __init__(self) -> None:
        self.writes: list[tuple[int, int, int, int, str, int]] = []   # (p0, p1, b0, b1, engine, ordinal)
        self.reads: list[tuple[int, int, int, int, str, int]] = []
        self.last: dict[str, int] = {}     # engine -> its last ordinal that touched the buffer


def _inside(entry: Any, box: Any) -> Any:
    return box[0] <= entry[0] and entry[1] <= box[1] and box[2] <= entry[2] and entry[3] <= box[3]


COLLAPSE = 64   # accesses remembered per buffer before those of one engine merge


def _collapse(entries: Any) -> Any:
    """One entry per engine: the union of its boxes at its latest ordinal. Later accesses may then
    wait for more than they must (never less), and a scan over a buffer's columns stays linear."""
    merged: dict[str, Any] = {}
    for p0, p1, b0, b1, engine, ordinal in entries:
        found = merged.get(engine)
        merged[engine] = (p0, p1, b0, b1, engine, ordinal) if found is None else (
            min(found[0], p0), max(found[1], p1), min(found[2], b0), max(found[3], b1), engine, max(found[5], ordinal))
    return list(merged.values())


def schedule(trace: Trace) -> Any:
    """For each op, ``(waits, ordinal)``: the (engine, count) semaphore waits to put before it, the
    last of which rides on the instruction, and its ordinal on its engine (its semaphore's value
    once it is done)."""
    counts = dict.fromkeys(SCHEDULED_ENGINES, 0)
    known = {engine: dict.fromkeys(SCHEDULED_ENGINES, 0) for engine in SCHEDULED_ENGINES}   # what each engine knows is done
    clocks: dict[str, list[Any]] = {engine: [None] for engine in SCHEDULED_ENGINES}   # known-vector after each instruction
    # HBM is reached by the DMA engine alone, in order, unless the kernel has collectives: the CC
    # engine reads and writes HBM too, so its accesses are ordered against the DMA's like SBUF's.
    track_hbm = any(op.engine == "cc" for op in trace.ops)
    plan = []
    for op in trace.ops:
        engine = op.engine
        needs: dict[str, int] = {}
        for is_write, views in ((False, op.reads), (True, op.writes)):
            for view in views:
                buffer = view.buffer
                if buffer.space == "hbm" and not track_hbm:
                    continue
                record = buffer.record
                if record is None:
                    record = buffer.record = _Record()
                    for previous in buffer.predecessors:
                        if previous.record is not None:
                            for other, ordinal in previous.record.last.items():
                                if ordinal > needs.get(other, 0):
                                    needs[other] = ordinal
                box = view.byte_box()
                conflicts = record.writes + record.reads if is_write else record.writes
                for entry in conflicts:
                    if overlap(box, entry) and entry[5] > needs.get(entry[4], 0):
                        needs[entry[4]] = entry[5]
        ordinal = counts[engine] + 1
        mine = known[engine]
        waits = []
        pending = sorted(((other, value) for other, value in needs.items()
                          if other != engine and value > mine[other]), key=lambda item: -item[1])
        while pending:
            other, value = pending.pop(0)
            waits.append((other, value))
            implied = clocks[other][value]
            for name, done in implied.items():
                if done > mine[name]:
                    mine[name] = done
            if value > mine[other]:
                mine[other] = value
            pending = [(o, v) for o, v in pending if v > mine[o]]
        counts[engine] = ordinal
        mine[engine] = ordinal
        clocks[engine].append(dict(mine))
        plan.append((waits, ordinal))
        # Record this op's accesses.
        for is_write, views in ((False, op.reads), (True, op.writes)):
            for view in views:
                buffer = view.buffer
                if buffer.space == "hbm" and not track_hbm:
                    continue
                record = buffer.record
                box = view.byte_box()
                entry = box + (engine, ordinal)
                if is_write:
                    record.writes = [e for e in record.writes if not contains(box, e)]
                    record.reads = [e for e in record.reads if not contains(box, e)]
                    record.writes.append(entry)
                    if len(record.writes) > COLLAPSE:
                        record.writes = _collapse(record.writes)
                else:
                    record.reads = [e for e in record.reads if not (e[4] == engine and contains(box, e))]
                    record.reads.append(entry)
                    if len(record.reads) > COLLAPSE:
                        record.reads = _collapse(record.reads)
                record.last[engine] = ordinal
    return plan


# -- 4. emission ----------------------------------------------------------------------------------

def access(view: Any) -> Any:
    """The vtrn_access_t of a view whose buffer has its place."""
    buffer = view.buffer
    size = itemsize(buffer.dtype)
    if buffer.space == "hbm":
        shape, strides = view.shape, view.strides
        if len(shape) > 1:
            partitions, partition_stride = shape[0], strides[0]
            free = list(zip(shape[1:], strides[1:]))
        else:
            partitions, partition_stride = 1, 0
            free = list(zip(shape, strides))
        start, offset = 0, view.offset * size
    else:
        paxis = view.paxis
        partitions = view.shape[paxis] if paxis is not None else 1
        free = [(s, t) for axis, (s, t) in enumerate(zip(view.shape, view.strides)) if axis != paxis]
        partition_stride = 0
        start, offset = view.partition, buffer.offset + view.offset * size
    free = _compact(free)
    struct = AccessStruct(space=MEMORY_SPACES[buffer.space], dtype=DTYPES[buffer.dtype], start_partition=start,
                          partitions=partitions, offset=offset, parameter=buffer.parameter or 0, dims=len(free))
    for dimension, (extent, stride) in enumerate(reversed(free)):
        struct.size[dimension] = extent
        struct.stride[dimension] = stride
    for dimension in range(len(free), 4):
        struct.size[dimension] = 1
    struct.partition_stride = partition_stride
    return struct


def _compact(free: Any) -> Any:
    """Free axes (outermost first) without size-1 axes, adjacent axes merged where they are one
    run; at least one axis. More than 4 is NKIUnsupportedError's business (checked by the caller)."""
    axes = [(extent, stride) for extent, stride in free if extent != 1]
    merged: list[Any] = []
    for extent, stride in axes:
        if merged and merged[-1][1] == stride * extent:
            outer_extent, _ = merged[-1]
            merged[-1] = (outer_extent * extent, stride)
        else:
            merged.append((extent, stride))
    if any(extent == 0 for extent, _ in free):
        return [(0, 1)]
    return merged or [(1, 1)]


def _scalar(value: Any) -> Any:
    if isinstance(value, int):
        return ScalarStruct.int32(value)
    if isinstance(value, float):
        return ScalarStruct(is_tile=0, value=value)
    return ScalarStruct(is_tile=1, value=0.0, tile=access(value))


def emit(program_handle: Any, trace: Trace, plan: Any) -> Any:
    """Appends the trace's instructions to a program. Returns the map from program instruction
    index to op, for messages."""
    origin = []
    handle = program_handle
    for op, (waits, ordinal) in zip(trace.ops, plan):
        engine = op.engine
        flag = ENGINE_FLAGS[engine]
        for other, value in waits[:-1]:
            check(lib.vtrn_program_sem_wait(handle, flag, ENGINE_NUMBER[other], value))
            origin.append(op)
        sync = SyncStruct(-1, 0, ENGINE_NUMBER[engine], SEMAPHORE_OPS["add"], 1)
        if waits:
            other, value = waits[-1]
            sync.wait_semaphore, sync.wait_value = ENGINE_NUMBER[other], value
        _emit_one(handle, op, flag, byref(sync))
        origin.append(op)
    return origin


def _emit_one(handle: Any, op: Any, flag: Any, sync: Any) -> None:
    args = op.args
    kind = op.kind
    dst = access(op.writes[0]) if op.writes else None
    if kind == "dma_copy":
        if args.get("indirect"):
            index = access(args["index"])
            options = DmaCopyOptionsStruct.init(dst_rmw_op=ALU_OPS[args.get("rmw") or "bypass"],
                                                indirect=DMA_INDIRECT[args["indirect"]], index=ctypes.pointer(index),
                                                oob_mode=DMA_OOB_MODES[args.get("oob") or "error"])
            status = lib.vtrn_program_dma_copy_ex(handle, dst, access(args["src"]), byref(options), sync)
        elif args.get("rmw"):
            options = DmaCopyOptionsStruct.init(dst_rmw_op=ALU_OPS[args["rmw"]])
            status = lib.vtrn_program_dma_copy_ex(handle, dst, access(args["src"]), byref(options), sync)
        else:
            status = lib.vtrn_program_dma_copy(handle, dst, access(args["src"]), sync)
    elif kind == "matmul":
        status = lib.vtrn_program_matmul(handle, dst, access(args["stationary"]), access(args["moving"]),
                                         1 if args["accumulate"] else 0, sync)
    elif kind == "transpose":
        if op.engine == "pe":
            status = lib.vtrn_program_transpose(handle, dst, access(args["src"]), sync)
        else:
            status = lib.vtrn_program_transpose_on(handle, flag, dst, access(args["src"]), sync)
    elif kind == "activate":
        scale = _scalar(args["scale"])
        bias = args.get("bias")
        out = args.get("accumulate_out")
        status = lib.vtrn_program_activate(handle, dst, ACTIVATIONS[args["function"]], access(args["src"]),
                                           byref(scale), None if bias is None else byref(access(bias)),
                                           None if out is None else byref(access(out)), sync)
    elif kind == "tensor_tensor":
        status = lib.vtrn_program_tensor_tensor(handle, dst, access(args["a"]), access(args["b"]),
                                                ALU_OPS[args["op"]], sync)
    elif kind == "tensor_scalar":
        x0 = _scalar(args["x0"])
        x1 = args.get("x1")
        op1 = args.get("op1")
        status = lib.vtrn_program_tensor_scalar(handle, flag, dst, access(args["src"]), ALU_OPS[args["op0"]], byref(x0),
                                                ALU_OPS["bypass" if op1 is None else op1],
                                                None if x1 is None else byref(_scalar(x1)), args.get("reverse", 0), sync)
    elif kind == "tensor_reduce":
        status = lib.vtrn_program_tensor_reduce(handle, dst, access(args["src"]), ALU_OPS[args["op"]],
                                                1 if args.get("negate") else 0, sync)
    elif kind == "tensor_copy":
        status = lib.vtrn_program_tensor_copy(handle, flag, dst, access(args["src"]), sync)
    elif kind == "memset":
        status = lib.vtrn_program_memset(handle, flag, dst, float(args["value"]), sync)
    elif kind == "iota":
        steps = args["steps"]
        status = lib.vtrn_program_iota(handle, dst, (ctypes.c_int32 * len(steps))(*steps), args["offset"],
                                       args["channel_multiplier"], sync)
    elif kind == "affine_select":
        steps = args["steps"]
        status = lib.vtrn_program_affine_select(handle, dst, (ctypes.c_int32 * len(steps))(*steps), args["offset"],
                                                args["channel_multiplier"], ALU_OPS[args["cmp"]],
                                                access(args["on_true"]), float(args["on_false"]), sync)
    elif kind == "collective":
        src = args.get("src")
        status = lib.vtrn_program_collective(handle, args["comm"].handle, COLLECTIVES[args["collective"]],
                                             dst if dst is not None else AccessStruct(),
                                             access(src) if src is not None else AccessStruct(),
                                             ALU_OPS[args.get("op") or "bypass"], args.get("peer", 0), sync)
    elif kind == "collective_permute":
        targets = args["targets"]
        status = lib.vtrn_program_collective_permute(handle, args["comm"].handle, dst, access(args["src"]),
                                                     (ctypes.c_int32 * max(1, len(targets)))(*targets), sync)
    else:
        raise AssertionError(f"unknown op kind {kind}")
    try:
        check(status)
    except VtrnError as error:
        raise NKIError(error.message, op.where, op.api) from None
