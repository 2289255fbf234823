// Exports of include/vtrn.h: communicators and host-called collectives. Translation only.
import CVtrn
import Vtrn
import VtrnDevice

func collectiveKind(_ kind: vtrn_collective_t) throws(VtrnError) -> CollectiveKind {
    guard let value = CollectiveKind(rawValue: Int(kind.rawValue)) else {
        throw .invalidArgument("kind is \(kind.rawValue); accepted: VTRN_COLLECTIVE_ALL_REDUCE (1) to VTRN_COLLECTIVE_PERMUTE (8)")
    }
    return value
}

private func dataType(_ dtype: vtrn_dtype_t) throws(VtrnError) -> DataType {
    guard let value = DataType(rawValue: Int(dtype.rawValue)) else {
        throw .invalidArgument("dtype is \(dtype.rawValue); accepted: VTRN_DTYPE_FP32 (1) to VTRN_DTYPE_UINT8 (8)")
    }
    return value
}

/// Device memory of a collective's operand; nil for an operand the rank does not use when it is
/// NULL.
private func buffer(_ reference: vtrn_memory_ref_t, _ name: String, used: Bool) throws(VtrnError) -> Communicator.Buffer? {
    if !used && reference.memory == nil { return nil }
    switch try memoryReference(reference, name) {
    case .device(let memory, let offset): return Communicator.Buffer(memory, offset: offset)
    case .host: throw .invalidArgument("\(name) is a host buffer; collectives read and write device memory (HBM)")
    }
}

private func communicatorMembers(_ members: UnsafePointer<vtrn_comm_member_t>?, _ count: UInt32) throws(VtrnError) -> [Communicator.Member] {
    guard let members else { throw VtrnError.invalidArgument("members is NULL") }
    guard count > 0 else { throw VtrnError.invalidArgument("count is 0; a communicator needs at least 1 member") }
    var list: [Communicator.Member] = []
    for index in 0..<Int(count) {
        let member = members[index]
        let device: Device
        do throws(VtrnError) {
            device = try Handles.devices.lookup(handleBits(member.device)).object
        } catch {
            throw VtrnError(error.status, "members[\(index)].device: \(error.message)")
        }
        list.append(Communicator.Member(device: device, core: Int(member.core)))
    }
    return list
}

@c @implementation
public func vtrn_comm_create(_ runtime: vtrn_runtime_t?, _ members: UnsafePointer<vtrn_comm_member_t>?, _ count: UInt32,
                             _ out: UnsafeMutablePointer<vtrn_comm_t?>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.runtimes.lookup(handleBits(runtime))
        let out = try UnsafeMutablePointer.required(out, "out")
        let communicator = try entry.runtime.makeCommunicator(try communicatorMembers(members, count))
        out.pointee = handle(try Handles.register(communicator, in: Handles.comms, runtimeToken: entry.token))
    }
}

@c @implementation
public func vtrn_comm_create_mpi(_ runtime: vtrn_runtime_t?, _ members: UnsafePointer<vtrn_comm_member_t>?, _ count: UInt32,
                                 _ out: UnsafeMutablePointer<vtrn_comm_t?>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.runtimes.lookup(handleBits(runtime))
        let out = try UnsafeMutablePointer.required(out, "out")
        let communicator = try entry.runtime.makeMPICommunicator(try communicatorMembers(members, count))
        out.pointee = handle(try Handles.register(communicator, in: Handles.comms, runtimeToken: entry.token))
    }
}

@c @implementation
public func vtrn_comm_destroy(_ comm: vtrn_comm_t?) -> vtrn_status_t {
    exported {
        guard comm != nil else { return }
        try Handles.comms.remove(handleBits(comm), because: "it was destroyed").object.destroy()
    }
}

@c @implementation
public func vtrn_comm_get_info(_ comm: vtrn_comm_t?, _ info: UnsafeMutablePointer<vtrn_comm_info_t>?) -> vtrn_status_t {
    exported {
        let communicator = try Handles.comms.lookup(handleBits(comm)).object
        let info = try vtrn_comm_info_t.checkOutput(info, name: "info")
        var result = vtrn_comm_info_t()
        result.ranks = UInt32(communicator.size)
        result.first_local_rank = UInt32(communicator.localRanks.lowerBound)
        result.local_ranks = UInt32(communicator.localRanks.count)
        result.process = UInt32(communicator.group.world?.process ?? 0)
        result.processes = UInt32(communicator.group.world?.processCount ?? 1)
        result.collectives_completed = communicator.group.completedCollectives
        result.write(to: info)
    }
}

@c @implementation
public func vtrn_comm_rank(_ comm: vtrn_comm_t?, _ device: vtrn_device_t?, _ core: UInt32,
                           _ rank: UnsafeMutablePointer<UInt32>?) -> vtrn_status_t {
    exported {
        let communicator = try Handles.comms.lookup(handleBits(comm)).object
        let device = try Handles.devices.lookup(handleBits(device)).object
        let rank = try UnsafeMutablePointer.required(rank, "rank")
        guard let found = communicator.rank(of: device, core: Int(core)) else {
            throw VtrnError.notFound("core \(core) of device \(device.index) is not a member of communicator \(communicator.serial)")
        }
        rank.pointee = UInt32(found)
    }
}

/// The one path of every host-called collective.
private func collective(_ comm: vtrn_comm_t?, _ rank: UInt32, _ kind: CollectiveKind, _ dst: vtrn_memory_ref_t,
                        _ src: vtrn_memory_ref_t, _ count: UInt64, _ dtype: vtrn_dtype_t, _ op: vtrn_alu_op_t?, _ peer: UInt32,
                        _ fence: UnsafeMutablePointer<vtrn_fence_t?>?) throws(VtrnError) {
    let entry = try Handles.comms.lookup(handleBits(comm))
    let fence = try UnsafeMutablePointer.required(fence, "fence")
    let communicator = entry.object
    let dtype = try dataType(dtype)
    var reduction = AluOp.bypass
    if kind.reduces, let op {
        guard let value = AluOp(rawValue: Int(op.rawValue)) else {
            throw .invalidArgument("op is \(op.rawValue); accepted: VTRN_ALU_ADD, VTRN_ALU_MAX, VTRN_ALU_MIN")
        }
        reduction = value
    }
    guard count <= UInt64(Int.max / 8) else { throw .invalidArgument("count \(count) is too large") }
    let source = try buffer(src, "src", used: kind.readsSource && (kind != .broadcast || rank == peer))
    let destination = try buffer(dst, "dst", used: kind.writesDestination)
    let result = try communicator.collective(kind, rank: Int(rank), source: kind.readsSource ? source : nil,
                                             destination: kind.writesDestination ? destination : nil, count: Int(count),
                                             dtype: dtype, op: reduction, peer: Int(peer))
    fence.pointee = handle(try Handles.register(result, in: Handles.fences, runtimeToken: entry.runtimeToken))
}

@c @implementation
public func vtrn_comm_collective(_ comm: vtrn_comm_t?, _ rank: UInt32, _ kind: vtrn_collective_t, _ dst: vtrn_memory_ref_t,
                                 _ src: vtrn_memory_ref_t, _ count: UInt64, _ dtype: vtrn_dtype_t, _ op: vtrn_alu_op_t,
                                 _ peer: UInt32, _ fence: UnsafeMutablePointer<vtrn_fence_t?>?) -> vtrn_status_t {
    exported { try collective(comm, rank, try collectiveKind(kind), dst, src, count, dtype, op, peer, fence) }
}

/// A permute's targets, one per rank of `communicator`.
func permuteTargets(_ targets: UnsafePointer<Int32>?, _ communicator: Communicator) throws(VtrnError) -> [Int] {
    guard let targets else { throw .invalidArgument("targets is NULL; a permute takes one target (or -1) per rank") }
    return (0..<communicator.size).map { Int(targets[$0]) }
}

@c @implementation
public func vtrn_collective_permute(_ comm: vtrn_comm_t?, _ rank: UInt32, _ dst: vtrn_memory_ref_t, _ src: vtrn_memory_ref_t,
                                    _ count: UInt64, _ dtype: vtrn_dtype_t, _ targets: UnsafePointer<Int32>?,
                                    _ fence: UnsafeMutablePointer<vtrn_fence_t?>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.comms.lookup(handleBits(comm))
        let fence = try UnsafeMutablePointer.required(fence, "fence")
        let communicator = entry.object
        let pairs = try permuteTargets(targets, communicator)
        guard count <= UInt64(Int.max / 8) else { throw VtrnError.invalidArgument("count \(count) is too large") }
        guard let source = try buffer(src, "src", used: true), let destination = try buffer(dst, "dst", used: true) else { return }
        let result = try communicator.permute(rank: Int(rank), source: source, destination: destination, count: Int(count),
                                              dtype: try dataType(dtype), targets: pairs)
        fence.pointee = handle(try Handles.register(result, in: Handles.fences, runtimeToken: entry.runtimeToken))
    }
}

@c @implementation
public func vtrn_all_reduce(_ comm: vtrn_comm_t?, _ rank: UInt32, _ dst: vtrn_memory_ref_t, _ src: vtrn_memory_ref_t, _ count: UInt64,
                            _ dtype: vtrn_dtype_t, _ op: vtrn_alu_op_t, _ fence: UnsafeMutablePointer<vtrn_fence_t?>?) -> vtrn_status_t {
    exported { try collective(comm, rank, .allReduce, dst, src, count, dtype, op, 0, fence) }
}

@c @implementation
public func vtrn_all_gather(_ comm: vtrn_comm_t?, _ rank: UInt32, _ dst: vtrn_memory_ref_t, _ src: vtrn_memory_ref_t, _ count: UInt64,
                            _ dtype: vtrn_dtype_t, _ fence: UnsafeMutablePointer<vtrn_fence_t?>?) -> vtrn_status_t {
    exported { try collective(comm, rank, .allGather, dst, src, count, dtype, nil, 0, fence) }
}

@c @implementation
public func vtrn_reduce_scatter(_ comm: vtrn_comm_t?, _ rank: UInt32, _ dst: vtrn_memory_ref_t, _ src: vtrn_memory_ref_t,
                                _ count: UInt64, _ dtype: vtrn_dtype_t, _ op: vtrn_alu_op_t,
                                _ fence: UnsafeMutablePointer<vtrn_fence_t?>?) -> vtrn_status_t {
    exported { try collective(comm, rank, .reduceScatter, dst, src, count, dtype, op, 0, fence) }
}

@c @implementation
public func vtrn_all_to_all(_ comm: vtrn_comm_t?, _ rank: UInt32, _ dst: vtrn_memory_ref_t, _ src: vtrn_memory_ref_t, _ count: UInt64,
                            _ dtype: vtrn_dtype_t, _ fence: UnsafeMutablePointer<vtrn_fence_t?>?) -> vtrn_status_t {
    exported { try collective(comm, rank, .allToAll, dst, src, count, dtype, nil, 0, fence) }
}

@c @implementation
public func vtrn_broadcast(_ comm: vtrn_comm_t?, _ rank: UInt32, _ dst: vtrn_memory_ref_t, _ src: vtrn_memory_ref_t, _ count: UInt64,
                           _ dtype: vtrn_dtype_t, _ root: UInt32, _ fence: UnsafeMutablePointer<vtrn_fence_t?>?) -> vtrn_status_t {
    exported { try collective(comm, rank, .broadcast, dst, src, count, dtype, nil, root, fence) }
}

@c @implementation
public func vtrn_send(_ comm: vtrn_comm_t?, _ rank: UInt32, _ src: vtrn_memory_ref_t, _ count: UInt64, _ dtype: vtrn_dtype_t,
                      _ peer: UInt32, _ fence: UnsafeMutablePointer<vtrn_fence_t?>?) -> vtrn_status_t {
    exported { try collective(comm, rank, .send, vtrn_memory_ref_t(), src, count, dtype, nil, peer, fence) }
}

@c @implementation
public func vtrn_recv(_ comm: vtrn_comm_t?, _ rank: UInt32, _ dst: vtrn_memory_ref_t, _ count: UInt64, _ dtype: vtrn_dtype_t,
                      _ peer: UInt32, _ fence: UnsafeMutablePointer<vtrn_fence_t?>?) -> vtrn_status_t {
    exported { try collective(comm, rank, .receive, dst, vtrn_memory_ref_t(), count, dtype, nil, peer, fence) }
}
