import CVtrnSystem
import Synchronization
import VtrnDevice

/// A communicator: a replica group of cores that run collectives together, each core a rank in
/// the order given (NCCL's communicator, libnrt's replica group, NKI's `ReplicaGroup`).
///
/// Collectives are called per rank, from the host (`allReduce(rank:...)` and the others return a
/// fence, like an execution, queued on the rank's core in order with its kernels) or from inside
/// kernels (the CC engine's instructions, `Program.collective`). The k-th collective of every rank
/// meet; sends and receives meet in order per pair of ranks. A rank that asks for something else
/// than the others fails them all with `.invalidArgument`; a rank that never comes fails the
/// others with `.timeout` at the execution timeout, naming it.
///
/// ```swift
/// let comm = try runtime.makeCommunicator(devices.map { Communicator.Member(device: $0, core: 0) })
/// let fences = try (0..<comm.size).map { rank in
///     try comm.allReduce(rank: rank, source: .init(inputs[rank]), destination: .init(outputs[rank]),
///                        count: n, dtype: .fp32, op: .add)
/// }
/// for fence in fences { try fence.wait() }
/// ```
public final class Communicator: Sendable {
    public struct Member: Sendable {
        public var device: Device
        public var core: Int
        public init(device: Device, core: Int) {
            self.device = device
            self.core = core
        }
    }

    /// Where a host-called collective reads or writes: device memory and an offset into it.
    public struct Buffer: Sendable {
        public var memory: DeviceMemory
        public var offset: UInt64
        public init(_ memory: DeviceMemory, offset: UInt64 = 0) {
            self.memory = memory
            self.offset = offset
        }
    }

    public let runtime: Runtime
    public let members: [Member]
    public let group: CollectiveGroup
    public let serial: Int
    private let destroyed = Atomic<Bool>(false)
    private static let serials = Atomic<Int>(0)

    /// Ranks in all (across processes for a communicator that spans several).
    public var size: Int { group.size }
    /// The ranks of this process's members: `members[i]` is rank `localRanks.lowerBound + i`.
    public var localRanks: Range<Int> { group.localRanks }

    init(runtime: Runtime, members: [Member], world: CollectiveWorld? = nil) throws(VtrnError) {
        try runtime.state.checkOpen()
        guard !members.isEmpty else { throw .invalidArgument("a communicator needs at least 1 member; 0 given") }
        var seen: [String: Int] = [:]
        for (rank, member) in members.enumerated() {
            let device = member.device
            guard device.runtime === runtime else {
                throw .invalidArgument("rank \(rank): device \(device.index) belongs to runtime \(device.runtime.serial), not to "
                                       + "runtime \(runtime.serial)")
            }
            guard member.core >= 0 && member.core < device.cores.count else {
                throw .invalidArgument("rank \(rank): device \(device.index) has \(device.cores.count) cores "
                                       + "(0-\(device.cores.count - 1)); core \(member.core) requested")
            }
            let key = "device \(device.index) core \(member.core)"
            if let earlier = seen[key] {
                throw .invalidArgument("rank \(rank): \(key) is rank \(earlier) already; a core takes one rank of a communicator")
            }
            seen[key] = rank
            let first = members[0].device.hardware.preset.architecture
            guard device.hardware.preset.architecture == first else {
                throw .invalidArgument("rank \(rank) is on device \(device.index), a \(device.hardware.preset.architecture), but "
                                       + "rank 0 is on a \(first); NeuronLink joins devices of one architecture")
            }
        }
        if let world {
            guard world.process >= 0 && world.process < world.processCount, world.counts[world.process] == members.count else {
                throw .invalidArgument("this process (\(world.process) of \(world.processCount)) has \(members.count) members, but the "
                                       + "world gives it \(world.process < world.counts.count ? world.counts[world.process] : 0) ranks")
            }
        }
        for member in members { try member.device.claim(core: member.core) }
        self.runtime = runtime
        self.members = members
        let serial = Self.serials.add(1, ordering: .relaxed).newValue
        self.serial = serial
        group = CollectiveGroup(members: members.map { CollectiveMember(device: $0.device.hardware, core: $0.core) },
                                links: Self.links(members, topology: runtime.configuration.topology),
                                name: "communicator \(serial)", world: world,
                                algorithm: runtime.configuration.collectiveAlgorithm,
                                stepwise: runtime.configuration.collectiveSteps)
    }

    /// The cost model's links between every two ranks: two cores of one device share its HBM
    /// (the core's DMA bandwidth, a DMA's latency); cores of two devices go over NeuronLink, hop
    /// by hop (each hop's latency; the link's bandwidth, a path being as fast as its links).
    static func links(_ members: [Member], topology: Topology) -> CollectiveLinks {
        let n = members.count
        var latency = Array(repeating: Array(repeating: 0.0, count: n), count: n)
        var bandwidth = Array(repeating: Array(repeating: 1.0, count: n), count: n)
        for a in 0..<n {
            for b in 0..<n {
                let preset = members[a].device.hardware.preset
                let from = members[a].device.index, to = members[b].device.index
                if from == to {
                    latency[a][b] = 500
                    bandwidth[a][b] = Double(preset.kernelDmaBandwidth) / 1e9
                } else {
                    // Ranks are of one architecture, so a path exists (a ring or the torus).
                    let interconnect = topology.interconnect(of: from)
                    let hops = topology.hops(from: from, to: to)
                    latency[a][b] = Double(hops == Topology.unreachable ? members.count : hops) * interconnect.hopLatencyNanoseconds
                    bandwidth[a][b] = interconnect.linkBytesPerSecond / 1e9
                }
            }
        }
        return CollectiveLinks(latencyNanoseconds: latency, bytesPerNanosecond: bandwidth)
    }

    /// The rank of a core, if it is a member.
    public func rank(of device: Device, core: Int) -> Int? {
        members.firstIndex { $0.device.hardware === device.hardware && $0.core == core }.map { $0 + localRanks.lowerBound }
    }

    public var isDestroyed: Bool { destroyed.load(ordering: .acquiring) || runtime.isClosed }

    /// Collectives already queued finish; new ones are refused. Cores stay claimed until the
    /// runtime closes, as a loaded kernel's do.
    public func destroy() { destroyed.store(true, ordering: .releasing) }

    /// `.invalidHandle` once the communicator or its runtime is destroyed.
    public func checkUsable() throws(VtrnError) {
        try runtime.state.checkOpen()
        if destroyed.load(ordering: .acquiring) { throw VtrnError(.invalidHandle, "communicator \(serial) was destroyed") }
    }

    // MARK: Host-called collectives (NCCL's shapes)

    /// Every rank's `count` elements reduced with `op`; each rank gets the result.
    public func allReduce(rank: Int, source: Buffer, destination: Buffer, count: Int, dtype: DataType,
                          op: AluOp = .add) throws(VtrnError) -> Fence {
        try submit(rank: rank, targets: [], kind: .allReduce, op: op, peer: 0, source: source, destination: destination,
                   sourceCount: count, destinationCount: count, dtype: dtype)
    }

    /// Each rank's `count` elements, concatenated in rank order into every rank's destination
    /// (`count * size` elements).
    public func allGather(rank: Int, source: Buffer, destination: Buffer, count: Int, dtype: DataType) throws(VtrnError) -> Fence {
        try submit(rank: rank, targets: [], kind: .allGather, op: .bypass, peer: 0, source: source, destination: destination,
                   sourceCount: count, destinationCount: count * size, dtype: dtype)
    }

    /// Every rank's `count * size` elements reduced with `op`; rank r gets chunk r (`count` elements).
    public func reduceScatter(rank: Int, source: Buffer, destination: Buffer, count: Int, dtype: DataType,
                              op: AluOp = .add) throws(VtrnError) -> Fence {
        try submit(rank: rank, targets: [], kind: .reduceScatter, op: op, peer: 0, source: source, destination: destination,
                   sourceCount: count * size, destinationCount: count, dtype: dtype)
    }

    /// Chunk j (`count` elements) of rank r's source goes to chunk r of rank j's destination.
    public func allToAll(rank: Int, source: Buffer, destination: Buffer, count: Int, dtype: DataType) throws(VtrnError) -> Fence {
        try submit(rank: rank, targets: [], kind: .allToAll, op: .bypass, peer: 0, source: source, destination: destination,
                   sourceCount: count * size, destinationCount: count * size, dtype: dtype)
    }

    /// The root's `count` elements into every rank's destination; only the root's source is read
    /// (other ranks may pass nil).
    public func broadcast(rank: Int, source: Buffer?, destination: Buffer, count: Int, dtype: DataType,
                          root: Int) throws(VtrnError) -> Fence {
        try submit(rank: rank, targets: [], kind: .broadcast, op: .bypass, peer: root, source: source, destination: destination,
                   sourceCount: count, destinationCount: count, dtype: dtype)
    }

    /// Sends `count` elements to rank `peer`, which receives them with `receive`.
    public func send(rank: Int, source: Buffer, count: Int, dtype: DataType, peer: Int) throws(VtrnError) -> Fence {
        try submit(rank: rank, targets: [], kind: .send, op: .bypass, peer: peer, source: source, destination: nil,
                   sourceCount: count, destinationCount: 0, dtype: dtype)
    }

    /// Receives `count` elements that rank `peer` sends.
    public func receive(rank: Int, destination: Buffer, count: Int, dtype: DataType, peer: Int) throws(VtrnError) -> Fence {
        try submit(rank: rank, targets: [], kind: .receive, op: .bypass, peer: peer, source: nil, destination: destination,
                   sourceCount: 0, destinationCount: count, dtype: dtype)
    }

    /// Every rank sends `count` elements to `targets[rank]` (a rank, or -1 for none) and receives
    /// into its destination from the rank whose target it is (if any; else the destination is left
    /// as it was). Every rank passes the same `targets`: one entry per rank, no rank targeted twice.
    public func permute(rank: Int, source: Buffer, destination: Buffer, count: Int, dtype: DataType,
                        targets: [Int]) throws(VtrnError) -> Fence {
        try Validator.checkPermutePairs(targets, size: size, groupName: "communicator \(serial)") { problem in
            VtrnError.invalidArgument("COLLECTIVE_PERMUTE on rank \(rank) of communicator \(serial): pairs \(problem)")
        }
        return try submit(rank: rank, targets: targets, kind: .permute, op: .bypass, peer: 0, source: source,
                          destination: destination, sourceCount: count, destinationCount: count, dtype: dtype)
    }

    /// Any collective by kind, as `vtrn_comm_collective` takes it: `count` is per rank as in the
    /// functions above.
    public func collective(_ kind: CollectiveKind, rank: Int, source: Buffer?, destination: Buffer?, count: Int,
                           dtype: DataType, op: AluOp = .bypass, peer: Int = 0) throws(VtrnError) -> Fence {
        switch kind {
        case .allReduce: try allReduce(rank: rank, source: try need(source, "source", kind), destination: try need(destination, "destination", kind),
                                       count: count, dtype: dtype, op: op)
        case .allGather: try allGather(rank: rank, source: try need(source, "source", kind), destination: try need(destination, "destination", kind),
                                       count: count, dtype: dtype)
        case .reduceScatter: try reduceScatter(rank: rank, source: try need(source, "source", kind),
                                               destination: try need(destination, "destination", kind), count: count, dtype: dtype, op: op)
        case .allToAll: try allToAll(rank: rank, source: try need(source, "source", kind), destination: try need(destination, "destination", kind),
                                     count: count, dtype: dtype)
        case .broadcast: try broadcast(rank: rank, source: source, destination: try need(destination, "destination", kind), count: count,
                                       dtype: dtype, root: peer)
        case .send: try send(rank: rank, source: try need(source, "source", kind), count: count, dtype: dtype, peer: peer)
        case .receive: try receive(rank: rank, destination: try need(destination, "destination", kind), count: count, dtype: dtype, peer: peer)
        case .permute: throw .invalidArgument("COLLECTIVE_PERMUTE takes its pairs: call permute (vtrn_collective_permute)")
        }
    }

    private func need(_ buffer: Buffer?, _ what: String, _ kind: CollectiveKind) throws(VtrnError) -> Buffer {
        guard let buffer else { throw .invalidArgument("\(kind) needs a \(what)") }
        return buffer
    }

    private func submit(rank: Int, targets: [Int], kind: CollectiveKind, op: AluOp, peer: Int, source: Buffer?, destination: Buffer?,
                        sourceCount: Int, destinationCount: Int, dtype: DataType) throws(VtrnError) -> Fence {
        let device = try checkRank(rank).device
        return try device.state.submitting { () throws(VtrnError) in
            try submitOpen(rank: rank, targets: targets, kind: kind, op: op, peer: peer, source: source, destination: destination,
                           sourceCount: sourceCount, destinationCount: destinationCount, dtype: dtype)
        }
    }

    private func checkRank(_ rank: Int) throws(VtrnError) -> Member {
        try checkUsable()
        guard rank >= 0 && rank < size else {
            throw .invalidArgument("rank \(rank) does not exist: communicator \(serial) has \(size) ranks (0-\(size - 1))")
        }
        guard localRanks.contains(rank) else {
            throw .invalidArgument("rank \(rank) of communicator \(serial) is in process \(group.world.map { $0.owner(rank) } ?? 0); this "
                                   + "process has ranks \(localRanks.lowerBound)-\(localRanks.upperBound - 1)")
        }
        return members[rank - localRanks.lowerBound]
    }

    private func submitOpen(rank: Int, targets: [Int], kind: CollectiveKind, op: AluOp, peer: Int, source: Buffer?, destination: Buffer?,
                            sourceCount: Int, destinationCount: Int, dtype: DataType) throws(VtrnError) -> Fence {
        let member = try checkRank(rank)
        try member.device.checkUsable()
        let what = "\(kind) on rank \(rank) of communicator \(serial)"
        guard sourceCount >= 0, destinationCount >= 0, (kind.readsSource ? sourceCount : destinationCount) > 0 else {
            throw .invalidArgument("\(what): count must be at least 1")
        }
        if kind.reduces && !CollectiveOperation.reductionOps.contains(op) {
            throw .invalidArgument("\(what): op \(op) is not a reduction of collectives; they take add, max or min")
        }
        if kind == .broadcast || kind.isPointToPoint {
            let role = kind == .broadcast ? "root" : "peer"
            guard peer >= 0 && peer < size else {
                throw .invalidArgument("\(what): \(role) rank \(peer) does not exist: the communicator has \(size) ranks (0-\(size - 1))")
            }
            if kind.isPointToPoint && peer == rank {
                throw .invalidArgument("\(what): a rank cannot \(kind == .send ? "send to" : "receive from") itself")
            }
        }
        var parameters: [Parameter] = []
        var bindings: [ParameterBinding] = []
        var leases: [BlockLease] = []
        func operand(_ buffer: Buffer?, _ name: String, count: Int) throws(VtrnError) -> AccessPattern? {
            guard let buffer else { return nil }
            let memory = buffer.memory
            if memory.isFreed { throw VtrnError(.invalidHandle, "\(what): the \(name) memory was freed") }
            guard memory.device.hardware === member.device.hardware, memory.device.runtime === runtime else {
                throw .invalidArgument("\(what): the \(name) is memory of device \(memory.device.index); rank \(rank) is on device "
                                       + "\(member.device.index) (a collective reads and writes its own rank's device memory)")
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.size)
            guard !overflow, buffer.offset <= memory.bytes, UInt64(bytes) <= memory.bytes - buffer.offset else {
                throw VtrnError(.outOfBounds, "\(what): the \(name) needs \(count) \(dtype) elements (\(count &* dtype.size) bytes) "
                                + "from offset \(buffer.offset) of a \(memory.bytes)-byte block")
            }
            parameters.append(Parameter(name: name, bytes: UInt64(bytes)))
            bindings.append(ParameterBinding(base: memory.pointer + Int(buffer.offset), bytes: bytes))
            leases.append(memory.lease)
            return AccessPattern(space: .hbm, dtype: dtype, partitions: 1, parameter: parameters.count - 1, sizes: [count])
        }
        let readsSource = kind.readsSource && (kind != .broadcast || rank == peer)
        if readsSource && source == nil { throw .invalidArgument("\(what): a source is needed") }
        let sourceAccess = try operand(readsSource ? source : nil, "source", count: sourceCount)
        let destinationAccess = try operand(destination, "destination", count: destinationCount)
        if kind == .allToAll, let source, let destination, source.memory === destination.memory {
            let a = source.offset, b = destination.offset, length = UInt64(sourceCount * dtype.size)
            if a < b + length && b < a + length {
                throw .invalidArgument("\(what): source and destination overlap; ALL_TO_ALL is not done in place")
            }
        }
        let instruction = Instruction(engine: .cc, operation: .collective(
            CollectiveInstruction(group: group, kind: kind, op: kind.reduces ? op : .bypass, peer: peer, targets: targets,
                                  destination: destinationAccess, source: sourceAccess)))
        let program = LoadedProgram(unvalidated: [instruction], parameters: parameters)
        let kernel = Kernel(device: member.device, core: member.core, program: program)
        return try kernel.submit(bindings: bindings, leases: leases, flow: Int?.none)
    }
}

extension Runtime {
    /// A communicator over `members`, rank i being `members[i]`: claims their cores for this
    /// runtime (`.busy` when another runtime or process holds one).
    public func makeCommunicator(_ members: [Communicator.Member]) throws(VtrnError) -> Communicator {
        try Communicator(runtime: self, members: members)
    }

    /// A communicator whose ranks span processes: this process's `members` are the world's ranks
    /// of this process (`world.ranks(of: world.process)`), and the transport reaches the others.
    public func makeCommunicator(_ members: [Communicator.Member], world: CollectiveWorld) throws(VtrnError) -> Communicator {
        try Communicator(runtime: self, members: members, world: world)
    }
}

extension Program {
    /// Appends a collective of `communicator` on the CC engine (`vtrn_program_collective`): every
    /// member's kernel runs the matching instruction; a core that is not a member cannot load it.
    /// `targets` are a permute's pairs (`Communicator.permute`).
    public func appendCollective(_ kind: CollectiveKind, communicator: Communicator, destination: AccessPattern?,
                                 source: AccessPattern?, op: AluOp = .add, peer: Int = 0, targets: [Int] = [],
                                 sync: Synchronization = .none) throws(VtrnError) {
        try communicator.checkUsable()
        try append(Instruction(engine: .cc, operation: .collective(CollectiveInstruction(
            group: communicator.group, kind: kind, op: kind.reduces ? op : .bypass, peer: peer, targets: targets,
            destination: destination,
            source: source)), sync: sync))
    }
}
