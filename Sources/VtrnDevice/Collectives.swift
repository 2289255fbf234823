import CVtrnSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The collective operations, as NCCL and Neuron's collectives name them; raw values are the C
/// header's `vtrn_collective_t`.
public enum CollectiveKind: Int, Sendable, CaseIterable, CustomStringConvertible {
    case allReduce = 1, allGather, reduceScatter, allToAll, broadcast, send, receive
    /// Every rank sends its source to the rank its pair names and receives from the rank that
    /// names it (HLO's collective-permute, NKI's `collective_permute`), all ranks at once.
    case permute

    /// The opcode, as traces and messages name it.
    public var name: String {
        ["ALL_REDUCE", "ALL_GATHER", "REDUCE_SCATTER", "ALL_TO_ALL", "BROADCAST", "SEND", "RECV", "COLLECTIVE_PERMUTE"][rawValue - 1]
    }
    public var description: String { name }
    /// Whether the operation combines values with a reduction op.
    public var reduces: Bool { self == .allReduce || self == .reduceScatter }
    /// Whether only two ranks take part (send and receive), matched in order per pair.
    public var isPointToPoint: Bool { self == .send || self == .receive }
    public var readsSource: Bool { self != .receive }
    public var writesDestination: Bool { self != .send }
}

/// What one rank asks of a collective: every rank of the group must ask the same (point-to-point:
/// both ends the same count and dtype), or all of them fail with a message naming the difference.
public struct CollectiveOperation: Sendable, Equatable {
    public var kind: CollectiveKind
    public var dtype: DataType
    /// `.add`, `.max` or `.min` for the reducing kinds; `.bypass` otherwise.
    public var op: AluOp
    /// Elements of the source (all-reduce, all-gather, reduce-scatter, all-to-all, broadcast,
    /// send) or of the destination (receive).
    public var count: Int
    /// The root of a broadcast, the destination of a send, the source of a receive; else 0.
    public var peer: Int
    /// A permute's pairs: `targets[r]` is the rank that rank r sends to, or -1.
    public var targets: [Int]

    public init(kind: CollectiveKind, dtype: DataType, op: AluOp = .bypass, count: Int, peer: Int = 0, targets: [Int] = []) {
        self.kind = kind
        self.dtype = dtype
        self.op = op
        self.count = count
        self.peer = peer
        self.targets = targets
    }

    /// Elements of the destination, for a group of `size` ranks.
    public func destinationCount(groupSize size: Int) -> Int {
        switch kind {
        case .allGather: count * size
        case .reduceScatter: count / size
        case .send: 0
        default: count
        }
    }

    public static let reductionOps: [AluOp] = [.add, .max, .min]
}

/// A collective as an instruction of the CC engine (Neuron's collective-communication cores):
/// the group it joins, what it does, and its operands.
public struct CollectiveInstruction: Sendable, Equatable {
    public var group: CollectiveGroup
    public var kind: CollectiveKind
    public var op: AluOp
    /// The root of a broadcast, the peer of a send or receive.
    public var peer: Int
    /// A permute's pairs (`CollectiveOperation.targets`).
    public var targets: [Int]
    public var destination: AccessPattern?
    public var source: AccessPattern?

    public init(group: CollectiveGroup, kind: CollectiveKind, op: AluOp = .bypass, peer: Int = 0, targets: [Int] = [],
                destination: AccessPattern?, source: AccessPattern?) {
        self.group = group
        self.kind = kind
        self.op = op
        self.peer = peer
        self.targets = targets
        self.destination = destination
        self.source = source
    }

    public var operation: CollectiveOperation {
        let dtype = (source ?? destination)?.dtype ?? .fp32
        // A receive has no source, nor a broadcast's non-root ranks (which count their destination).
        let count = source?.elementCount ?? destination?.elementCount ?? 0
        return CollectiveOperation(kind: kind, dtype: dtype, op: op, count: count, peer: peer, targets: targets)
    }
}

/// One member of a collective group: a core of a device.
public struct CollectiveMember: Sendable {
    public let device: VirtualDevice
    public let core: Int
    public init(device: VirtualDevice, core: Int) {
        self.device = device
        self.core = core
    }
    public var label: String { "device \(device.index) core \(core)" }
}

/// The links between the ranks of a group, for the cost model: per ordered pair of ranks, the
/// latency of a message (hops times the per-hop latency) and the bandwidth of the path.
public struct CollectiveLinks: Sendable {
    public var latencyNanoseconds: [[Double]]
    public var bytesPerNanosecond: [[Double]]
    public init(latencyNanoseconds: [[Double]], bytesPerNanosecond: [[Double]]) {
        self.latencyNanoseconds = latencyNanoseconds
        self.bytesPerNanosecond = bytesPerNanosecond
    }
}

/// The algorithm of all-reduce (`VTRN_CC_ALGORITHM`), as `NCCL_ALGO` chooses NCCL's.
public enum CollectiveAlgorithm: String, Sendable, CaseIterable {
    /// One ring over every rank, in rank order.
    case ring
    /// The 2D torus: rows of 4 consecutive ranks (a torus row of a 16-device instance) reduce
    /// within the row, then across the rows, then gather within the row; groups of 8, 12 or 16
    /// ranks in one process (others, and the other operations, use the ring).
    case torus
}

/// How a process reaches the other processes of a communicator that spans several: the only
/// primitive collectives need is a tagged exchange with two (or the same) other processes, as
/// MPI_Sendrecv. Implemented over MPI between processes (`MPITransport` in the runtime), and in
/// memory between groups of one process (`InProcessTransport`, for tests).
public protocol CollectiveTransport: AnyObject, Sendable {
    /// This process's index among the communicator's processes, and how many there are.
    var processIndex: Int { get }
    var processCount: Int { get }
    /// Sends `send` to process `to` (none when `to` is -1) and receives exactly `receive.count`
    /// bytes from process `from` (none when -1), with `tag`, until `deadline` (monotonic ns).
    func exchange(send: UnsafeRawBufferPointer, to: Int, receive: UnsafeMutableRawBufferPointer, from: Int, tag: Int,
                  deadline: UInt64?) throws(TransportFailure)
}

public enum TransportFailure: Error, Sendable {
    /// The peer did not answer in time: the message names it.
    case timeout(String)
    /// The transport failed (a peer process died, MPI returned an error): the message says how.
    case failed(String)
    /// The two ends disagree (a send's count against its receive's): the message names both.
    case mismatch(String)
}

/// A communicator's ranks across processes: process q holds the `counts[q]` consecutive global
/// ranks from `firstRanks[q]`; between processes the cost model charges `latencyNanoseconds` and
/// `bytesPerNanosecond` per message (the inter-host network, EFA on a real cluster).
public struct CollectiveWorld: Sendable {
    public let transport: any CollectiveTransport
    public let firstRanks: [Int]
    public let counts: [Int]
    public let latencyNanoseconds: Double
    public let bytesPerNanosecond: Double

    public init(transport: any CollectiveTransport, counts: [Int], latencyNanoseconds: Double = 15_000,
                bytesPerNanosecond: Double = 12.5) {
        self.transport = transport
        self.counts = counts
        var first: [Int] = []
        var total = 0
        for count in counts { first.append(total); total += count }
        firstRanks = first
        self.latencyNanoseconds = latencyNanoseconds
        self.bytesPerNanosecond = bytesPerNanosecond
    }

    public var size: Int { counts.reduce(0, +) }
    public var process: Int { transport.processIndex }
    public var processCount: Int { counts.count }

    /// The process that holds global rank `rank`.
    public func owner(_ rank: Int) -> Int {
        var q = 0
        while q + 1 < firstRanks.count && firstRanks[q + 1] <= rank { q += 1 }
        return q
    }

    public func ranks(of process: Int) -> Range<Int> { firstRanks[process]..<(firstRanks[process] + counts[process]) }
}

/// A replica group's meeting place in one process: ranks arrive with their operation and buffers,
/// the operations are matched in order (the k-th collective of every rank together; sends and
/// receives in order per pair), checked against each other, and carried out together.
///
/// The arithmetic is the ring's. Data are split into `size` chunks (the first `count % size` one
/// element longer); chunk c of a reduction is folded left in ring order from rank c+1 to rank c,
/// `((x[c+1] + x[c+2]) + ...) + x[c]` (indices mod size), rounded to the dtype at every step, as a
/// ring that transmits in the dtype computes it: the same order run to run, so results are
/// deterministic. Every transfer is DMA, descriptors on a core's CC ring (`CollectiveRing`),
/// reductions DMA with compute. In one process the data take one of two paths with the same
/// bits (`run`): each rank moves its share directly (the default), or the ranks run the ring's
/// steps with a barrier between steps (`stepwise`). The cost model charges the ring's steps over
/// the modelled links.
public final class CollectiveGroup: @unchecked Sendable, Equatable {
    /// This process's members, global ranks `firstRank ..< firstRank + members.count`.
    public let members: [CollectiveMember]
    public let links: CollectiveLinks
    /// For messages: "communicator 3".
    public let name: String
    /// The other processes, for a communicator that spans several; nil in one process.
    public let world: CollectiveWorld?
    /// Ranks in all: the world's, or this process's.
    public let size: Int
    /// The global rank of `members[0]`.
    public let firstRank: Int
    /// For the 2D-torus all-reduce, the ranks of a row (4); nil when all-reduce uses the ring.
    public let torusColumns: Int?
    public var algorithm: CollectiveAlgorithm { torusColumns == nil ? .ring : .torus }
    /// Whether one process's collectives run the algorithm's steps one by one (`VTRN_CC_STEPS=1`),
    /// or move each rank's share directly (the default; see `run`).
    public let stepwise: Bool
    public var localRanks: Range<Int> { firstRank..<(firstRank + members.count) }

    public static func == (a: CollectiveGroup, b: CollectiveGroup) -> Bool { a === b }

    struct Arrival: @unchecked Sendable {
        var operation: CollectiveOperation
        var source: UnsafeRawPointer?
        var destination: UnsafeMutableRawPointer?
        var virtualTime: Double
    }

    /// Guarded by `state`'s lock.
    private final class Round: @unchecked Sendable {
        let expected: [Int]
        var arrivals: [Int: Arrival] = [:]
        var failure: ExecutionOutcome.Failure?
        /// What a rank arriving after the others gave up meets, and which ranks did.
        var lateFailure: ExecutionOutcome.Failure?
        var late: Set<Int> = []
        var ready = false
        /// Set by the first rank that begins the steps: from then on every rank finishes the round.
        var started = false
        var latest = 0.0
        var finished = 0
        var left = 0
        /// The step barrier: ranks arrived at the current one, and barriers every rank has passed.
        var barrierArrivals = 0
        var barriersPassed = 0
        /// Ranks' scratch buffers (a reduce-scatter's running values), freed as they leave.
        var scratch: [Int: UnsafeMutableRawPointer] = [:]
        init(expected: [Int]) { self.expected = expected }
        var done: Bool { finished == expected.count }
    }

    enum Key: Hashable {
        case group(UInt64)
        case pair(from: Int, to: Int, sequence: UInt64)
    }

    private struct State {
        var rounds: [Key: Round] = [:]
        var nextSequence: [UInt64]
        var sendSequence: [Int: UInt64] = [:]
        var receiveSequence: [Int: UInt64] = [:]
        var collectivesCompleted: UInt64 = 0
    }

    private let state: Mutex<State>
    /// How long a rank spins for the others before it sleeps on the futex: ranks are core threads,
    /// many more than the host's CPUs, and a spinning rank takes the CPU a late one needs.
    static let spinNanoseconds: UInt64 = 20_000

    /// Bumped and woken at every change a waiting rank may care about.
    private let word: UnsafeMutablePointer<UInt32>
    private let memberIndex: [MemberKey: Int]
    /// The members' devices' faults, each once: the HBM a collective's DMA may read.
    private let memberFaults: [DeviceFaults]

    private struct MemberKey: Hashable {
        let device: ObjectIdentifier
        let core: Int
    }

    public init(members: [CollectiveMember], links: CollectiveLinks, name: String, world: CollectiveWorld? = nil,
                algorithm: CollectiveAlgorithm = .ring, stepwise: Bool = false) {
        self.members = members
        self.stepwise = stepwise
        self.links = links
        self.name = name
        self.world = world
        size = world?.size ?? members.count
        torusColumns = algorithm == .torus && world == nil && members.count % 4 == 0 && members.count >= 8 ? 4 : nil
        firstRank = world.map { $0.firstRanks[$0.process] } ?? 0
        state = Mutex(State(nextSequence: Array(repeating: 0, count: members.count)))
        word = .allocate(capacity: 1)
        word.initialize(to: 0)
        var index: [MemberKey: Int] = [:]
        for (rank, member) in members.enumerated() {
            index[MemberKey(device: ObjectIdentifier(member.device.faults), core: member.core)] = firstRank + rank
        }
        memberIndex = index
        var seen = Set<ObjectIdentifier>()
        memberFaults = members.map(\.device.faults).filter { seen.insert(ObjectIdentifier($0)).inserted }
    }

    deinit { word.deallocate() }

    /// The rank of a core of a device in the group, if it is a member.
    public func rank(device: VirtualDevice, core: Int) -> Int? { rank(faults: device.faults, core: core) }

    func rank(faults: DeviceFaults, core: Int) -> Int? { memberIndex[MemberKey(device: ObjectIdentifier(faults), core: core)] }

    public func label(_ rank: Int) -> String {
        if localRanks.contains(rank) { return "rank \(rank) (\(members[rank - firstRank].label))" }
        return "rank \(rank) (process \(world.map { $0.owner(rank) } ?? -1))"
    }

    private func labels(_ ranks: [Int]) -> String { ranks.map(label).joined(separator: ", ") }

    /// How many collectives every rank has finished (group operations, not sends and receives).
    public var completedCollectives: UInt64 { state.withLock { $0.collectivesCompleted } }

    // MARK: Taking part

    /// Carries out `rank`'s part of a collective: waits for the other ranks (until `deadline`, a
    /// reset or loss of any member's device, or `cancelled`), checks that they asked the same,
    /// computes, and waits until every rank's part is written. Returns the virtual nanoseconds
    /// the collective kept the rank's CC engine busy, or the failure.
    public func perform(rank: Int, operation: CollectiveOperation, source: UnsafeRawPointer?,
                        destination: UnsafeMutableRawPointer?, virtualTime: Double, deadline: UInt64?,
                        timeoutNanoseconds: UInt64?, generations: [UInt64], cancelled: () -> Bool)
        -> Result<Double, ExecutionOutcome.Failure> {
        let arrival = Arrival(operation: operation, source: source, destination: destination, virtualTime: virtualTime)
        let (key, round) = arrive(rank: rank, arrival)
        defer { leave(key, round, rank: rank) }
        // Wait for every expected rank, or a failure.
        let waited = waitFor(round, rank: rank, key: key, deadline: deadline, timeoutNanoseconds: timeoutNanoseconds,
                             generations: generations, cancelled: cancelled) { $0.ready || $0.failure != nil }
        if let failure = waited { return .failure(failure) }
        // A failure before the round started (a mismatch, a rank that never came) ends every rank
        // here; once it has started, every rank finishes it (the others may still be writing into
        // this rank's buffers), running its steps unless it has already failed.
        let (failed, alreadyFailed): (ExecutionOutcome.Failure?, Bool) = state.withLock { _ in
            if round.late.contains(rank) { return (round.lateFailure, false) }
            if let failure = round.failure, !round.started { return (failure, false) }
            round.started = true
            return (nil, round.failure != nil)
        }
        if let failure = failed { return .failure(failure) }
        let (arrivals, latest) = state.withLock { _ in (round.arrivals, round.latest) }
        if world != nil && (round.expected.count == 1 && operation.kind.isPointToPoint || !operation.kind.isPointToPoint) {
            // Across processes: the lowest local rank does the whole exchange for this process,
            // the others wait for it (their buffers stay theirs until it is done).
            if rank == round.expected.min() && !alreadyFailed {
                let ring = preparedRing(rank)
                let dma = LocalDma(ring: ring)
                var failure = crossProcess(operation, key: key, arrivals: arrivals, deadline: deadline, dma: dma)
                if let stop = dma.stop {
                    failure = ringFailure(stop, rank: rank, ring: ring, operation: operation, key: key, step: 0, of: 0, deadline: deadline,
                                          timeoutNanoseconds: timeoutNanoseconds, generations: generations, cancelled: cancelled)
                }
                state.withLock { _ in
                    if let failure { round.failure = failure }
                    round.finished = round.expected.count
                }
                wakeAll()
            }
        } else {
            let failure = alreadyFailed ? nil : run(rank: rank, operation: operation, arrivals: arrivals, round: round, key: key,
                                                    deadline: deadline, timeoutNanoseconds: timeoutNanoseconds,
                                                    generations: generations, cancelled: cancelled)
            state.withLock { _ in
                if let failure, round.failure == nil { round.failure = failure }
                round.finished += 1
            }
            wakeAll()
        }
        _ = waitFor(round, rank: rank, key: key, deadline: nil, timeoutNanoseconds: nil, generations: [], cancelled: { false }) {
            $0.done
        }
        if let failure = state.withLock({ _ in round.failure }) { return .failure(failure) }
        let cost = self.cost(operation, rank: rank)
        return .success(max(0, latest - virtualTime) + cost)
    }

    private func arrive(rank: Int, _ arrival: Arrival) -> (Key, Round) {
        let operation = arrival.operation
        let result: (Key, Round) = state.withLock { state in
            let key: Key
            let expected: [Int]
            switch operation.kind {
            case .send:
                let sequence = state.sendSequence[rank * size + operation.peer, default: 0]
                state.sendSequence[rank * size + operation.peer] = sequence + 1
                key = .pair(from: rank, to: operation.peer, sequence: sequence)
                expected = localRanks.contains(operation.peer) ? [rank, operation.peer] : [rank]
            case .receive:
                let sequence = state.receiveSequence[operation.peer * size + rank, default: 0]
                state.receiveSequence[operation.peer * size + rank] = sequence + 1
                key = .pair(from: operation.peer, to: rank, sequence: sequence)
                expected = localRanks.contains(operation.peer) ? [operation.peer, rank] : [rank]
            default:
                key = .group(state.nextSequence[rank - firstRank])
                state.nextSequence[rank - firstRank] += 1
                expected = Array(localRanks)
            }
            let round: Round
            if let existing = state.rounds[key] {
                round = existing
            } else {
                round = Round(expected: expected)
                state.rounds[key] = round
            }
            if round.lateFailure != nil { round.late.insert(rank) }
            if round.failure == nil, let mismatch = mismatch(arrival, rank: rank, in: round, key: key) {
                round.failure = .invalidArgument(mismatch)
            }
            round.arrivals[rank] = arrival
            round.latest = max(round.latest, arrival.virtualTime)
            if round.arrivals.count == round.expected.count { round.ready = true }
            return (key, round)
        }
        wakeAll()
        return result
    }

    private func leave(_ key: Key, _ round: Round, rank: Int) {
        state.withLock { state in
            round.scratch.removeValue(forKey: rank)?.deallocate()
            round.left += 1
            if round.left == round.arrivals.count {
                // The last rank out forgets the round, unless ranks that gave up left it unfinished:
                // a late rank then meets their failure instead of waiting alone.
                if round.failure == nil || round.arrivals.count == round.expected.count { state.rounds[key] = nil }
                if case .group = key, round.done { state.collectivesCompleted += 1 }
            }
        }
    }

    private func describe(_ operation: CollectiveOperation) -> String {
        var text = "\(operation.kind) of \(operation.count) \(operation.dtype)"
        if operation.kind.reduces { text += " (\(operation.op))" }
        if operation.kind == .broadcast { text += " from root \(operation.peer)" }
        if operation.kind == .permute {
            text += " with pairs " + operation.targets.enumerated().filter { $0.element >= 0 }.map { "(\($0.offset), \($0.element))" }
                .joined(separator: ", ")
        }
        return text
    }

    private func what(_ key: Key, _ operation: CollectiveOperation) -> String {
        switch key {
        case .group(let sequence): "collective \(sequence) of \(name) (\(operation.kind))"
        case .pair(let from, let to, let sequence): "send/receive \(sequence) from rank \(from) to rank \(to) of \(name)"
        }
    }

    /// Why an arrival does not fit the ones before it, if it does not.
    private func mismatch(_ arrival: Arrival, rank: Int, in round: Round, key: Key) -> String? {
        guard let (otherRank, other) = round.arrivals.min(by: { $0.key < $1.key }) else { return nil }
        let mine = arrival.operation, theirs = other.operation
        let subject = what(key, theirs)
        if mine.kind.isPointToPoint {
            guard mine.count == theirs.count, mine.dtype == theirs.dtype else {
                return "\(subject): \(label(rank)) posted \(mine.kind) of \(mine.count) \(mine.dtype) but \(label(otherRank)) "
                    + "posted \(theirs.kind) of \(theirs.count) \(theirs.dtype); both ends must agree on count and dtype"
            }
            return nil
        }
        if mine.kind != theirs.kind || mine.dtype != theirs.dtype || mine.count != theirs.count
            || (mine.kind.reduces && mine.op != theirs.op) || (mine.kind == .broadcast && mine.peer != theirs.peer)
            || (mine.kind == .permute && mine.targets != theirs.targets) {
            return "\(subject): \(label(rank)) asked for \(describe(mine)) but \(label(otherRank)) asked for \(describe(theirs)); "
                + "every rank must call the same collectives in the same order with the same count, dtype and op"
        }
        return nil
    }

    /// Waits until `condition` holds for the round; a failure if the deadline passes, a member's
    /// device is reset or lost, or the caller gives up.
    private func waitFor(_ round: Round, rank: Int, key: Key, deadline: UInt64?, timeoutNanoseconds: UInt64?,
                         generations: [UInt64], cancelled: () -> Bool, _ condition: (Round) -> Bool) -> ExecutionOutcome.Failure? {
        // Spin only with a slot of the spin budget (released before any return).
        let slot = SpinBudget.enter()
        var spinUntil = slot ? vtrnsys_monotonic_ns() + Self.spinNanoseconds : 0
        var holding = slot
        defer { if holding { SpinBudget.leave() } }
        while true {
            let observed = vtrnsys_load_u32(word)
            let now = vtrnsys_monotonic_ns()
            let problem = generations.isEmpty ? nil : memberFailure(generations: generations, rank: rank)
            let timedOut = deadline.map { now >= $0 } ?? false
            let gaveUp = cancelled()
            // Decided under the lock: once the round is ready, nobody may fail it (the others
            // already read and write this rank's buffers).
            let outcome: (met: Bool, failure: ExecutionOutcome.Failure?) = state.withLock { _ in
                if condition(round) { return (true, nil) }
                if round.ready { return (false, nil) }
                if let problem {
                    if round.failure == nil { round.failure = problem }
                    return (false, problem)
                }
                if timedOut {
                    let missing = round.expected.filter { round.arrivals[$0] == nil }
                    let joined = round.expected.filter { round.arrivals[$0] != nil }
                    let subject = round.arrivals[rank].map { what(key, $0.operation) } ?? name
                    let milliseconds = (timeoutNanoseconds ?? 0) / 1_000_000
                    let failure = ExecutionOutcome.Failure.timeout(
                        "\(subject): \(labels(missing)) never joined within the execution timeout of \(milliseconds) ms "
                        + "(VTRN_EXEC_TIMEOUT_MS); \(labels(joined)) joined")
                    if round.failure == nil {
                        round.failure = failure
                        round.lateFailure = .timeout("\(subject): \(label(rank)) gave up after waiting \(milliseconds) ms for "
                                                     + "\(labels(missing)); this rank joined too late")
                    }
                    return (false, failure)
                }
                if gaveUp {
                    if round.failure == nil {
                        round.failure = .timeout("\(name): \(label(rank))'s runtime was destroyed while it waited in a collective")
                    }
                    return (false, .timeout("\(name): the runtime was destroyed while \(label(rank)) waited in a collective"))
                }
                return (false, nil)
            }
            if outcome.met { return nil }
            if let failure = outcome.failure {
                wakeAll()
                return failure
            }
            if now < spinUntil {
                vtrnsys_cpu_relax()
                continue
            }
            if holding {
                SpinBudget.leave()
                holding = false
                spinUntil = 0
            }
            // Sleep until a change, waking every 10 ms to look at the members' devices.
            var slice: UInt64 = 10_000_000
            if let deadline { slice = min(slice, deadline - now) }
            _ = vtrnsys_futex_wait(word, observed, slice)
        }
    }

    /// A reset or loss of a member's device since the collective began.
    private func memberFailure(generations: [UInt64], rank: Int) -> ExecutionOutcome.Failure? {
        for (index, member) in members.enumerated() {
            let other = firstRank + index
            let faults = member.device.faults
            if faults.isLost, let loss = faults.loss {
                return .deviceLost("\(name): \(label(other)) is on device \(member.device.index), which was lost (\(loss)) while "
                                   + "\(label(rank)) took part in a collective; vtrn_device_reset brings the device back")
            }
            if faults.generation != generations[index] {
                return .reset("\(name): device \(member.device.index) of \(label(other)) was reset (vtrn_device_reset) while "
                              + "\(label(rank)) took part in a collective")
            }
        }
        return nil
    }

    /// The members' devices' generations, to detect resets during a collective.
    public var generations: [UInt64] { members.map { $0.device.faults.generation } }

    private func wakeAll() {
        _ = vtrnsys_add_u32(word, 1)
        _ = vtrnsys_futex_wake(word, Int32.max)
    }

    // MARK: The arithmetic

    /// Chunk `index` of `count` elements split `parts` ways: the first `count % parts` chunks
    /// have one element more.
    public static func chunk(_ index: Int, of count: Int, parts: Int) -> Range<Int> {
        let base = count / parts, extra = count % parts
        let start = index * base + min(index, extra)
        return start..<(start + base + (index < extra ? 1 : 0))
    }

    /// This rank's part of a collective in one process: the algorithm's steps, every transfer
    /// the sending rank's DMA on its core's CC ring (`CollectiveRing`), reductions as DMA with
    /// compute into the receiver's buffer, and a barrier of the local ranks between steps (a
    /// rank's buffer is read in a step only after the step that wrote it). Nil, or the failure
    /// that stops this rank (and, through the round, every rank).
    private func run(rank: Int, operation: CollectiveOperation, arrivals: [Int: Arrival], round: Round, key: Key,
                     deadline: UInt64?, timeoutNanoseconds: UInt64?, generations: [UInt64], cancelled: () -> Bool)
        -> ExecutionOutcome.Failure? {
        let n = size, r = rank, element = operation.dtype.size, count = operation.count
        let ring = preparedRing(rank)
        func source(_ q: Int) -> UnsafeRawPointer { arrivals[q]!.source! }
        func destination(_ q: Int) -> UnsafeMutableRawPointer { arrivals[q]!.destination! }
        let reduce = operation.kind.reduces ? (op: operation.op, dtype: operation.dtype) : nil
        var failure: ExecutionOutcome.Failure?
        var step = 0
        var steps = 0
        func failed(_ stop: DmaQueueHardware.Stop) -> ExecutionOutcome.Failure {
            ringFailure(stop, rank: rank, ring: ring, operation: operation, key: key, step: step, of: steps,
                        deadline: deadline, timeoutNanoseconds: timeoutNanoseconds, generations: generations, cancelled: cancelled)
        }
        guard stepwise else { return direct(rank: rank, operation: operation, arrivals: arrivals, ring: ring).map(failed) }
        /// Moves (or with `combining`, reduces) `elements` elements on this rank's CC ring.
        func move(_ to: UnsafeMutableRawPointer, _ from: UnsafeRawPointer, _ elements: Int, combining: Bool = false) -> Bool {
            guard let stop = ring.transfer(to: to, from: from, bytes: elements * element, reduce: combining ? reduce : nil) else {
                return true
            }
            failure = failed(stop)
            return false
        }
        func barrier() -> Bool {
            step += 1
            if let stopped = self.barrier(round, passed: step - 1, rank: rank, cancelled: cancelled) {
                failure = stopped
                return false
            }
            return true
        }
        /// The ring's reduce-scatter of `chunks` over `ringSize` ranks (this one at `position`):
        /// in step s the rank sends its running value of chunk (position - 1 - s) to the next.
        func ringReduce(position: Int, ringSize: Int, chunk: (Int) -> Range<Int>,
                        from: (Int, Int) -> UnsafeRawPointer, into: (Int, Int) -> UnsafeMutableRawPointer) -> Bool {
            for s in 0..<max(0, ringSize - 1) {
                let k = ((position - 1 - s) % ringSize + ringSize) % ringSize
                let range = chunk(k)
                guard move(into(s, k) + range.lowerBound * element, from(s, k) + range.lowerBound * element, range.count,
                           combining: true), barrier() else { return false }
            }
            return true
        }
        /// The ring's all-gather: in step s the rank passes chunk (position - s) to the next.
        func ringGather(position: Int, ringSize: Int, next: Int, chunk: (Int) -> Range<Int>, last: Bool) -> Bool {
            for s in 0..<max(0, ringSize - 1) {
                let k = ((position - s) % ringSize + ringSize) % ringSize
                let range = chunk(k)
                guard move(destination(next) + range.lowerBound * element, destination(r) + range.lowerBound * element, range.count)
                else { return false }
                if !(last && s == ringSize - 2) { guard barrier() else { return false } }
            }
            return true
        }
        switch operation.kind {
        case .allReduce:
            if let columns = torusColumns {
                // Rows of `columns` ranks: reduce-scatter along the row over column chunks, all-reduce
                // of the column chunk down the column over its row sub-chunks, all-gather along the row.
                let rows = n / columns, i = r / columns, j = r % columns
                steps = 1 + 2 * (columns - 1) + 2 * (rows - 1)
                let rowNext = i * columns + (j + 1) % columns, columnNext = ((i + 1) % rows) * columns + j
                let columnChunk = { (k: Int) in Self.chunk(k, of: count, parts: columns) }
                let mine = columnChunk(j)
                let subChunk = { (k: Int) -> Range<Int> in
                    let rowChunk = Self.chunk(k, of: count, parts: rows)
                    let low = min(max(mine.lowerBound, rowChunk.lowerBound), mine.upperBound)
                    return low..<max(low, min(mine.upperBound, rowChunk.upperBound))
                }
                guard move(destination(r), source(r), count), barrier(),
                      ringReduce(position: j, ringSize: columns, chunk: columnChunk,
                                 from: { _, _ in UnsafeRawPointer(destination(r)) }, into: { _, _ in destination(rowNext) }),
                      ringReduce(position: i, ringSize: rows, chunk: subChunk,
                                 from: { _, _ in UnsafeRawPointer(destination(r)) }, into: { _, _ in destination(columnNext) }),
                      ringGather(position: i, ringSize: rows, next: columnNext, chunk: subChunk, last: false),
                      ringGather(position: j, ringSize: columns, next: rowNext, chunk: columnChunk, last: true) else { break }
            } else {
                let next = (r + 1) % n
                let chunk = { (k: Int) in Self.chunk(k, of: count, parts: n) }
                steps = 1 + 2 * (n - 1)
                guard move(destination(r), source(r), count), barrier(),
                      ringReduce(position: r, ringSize: n, chunk: chunk,
                                 from: { _, _ in UnsafeRawPointer(destination(r)) }, into: { _, _ in destination(next) }),
                      ringGather(position: r, ringSize: n, next: next, chunk: chunk, last: true) else { break }
            }
        case .reduceScatter:
            // The running values live in a copy of the source (`scratch`), except the chunk each
            // rank keeps, which starts in its destination and takes the last step's reduction.
            let each = count / n, next = (r + 1) % n
            steps = 1 + (n - 1)
            let scratch = n > 2 ? self.scratch(round, rank: r, bytes: count * element) : nil
            guard move(destination(r), source(r) + r * each * element, each),
                  scratch.map({ move($0, source(r), count) }) ?? true, barrier() else { break }
            let working = n > 2 ? state.withLock { _ in round.scratch } : [:]
            _ = ringReduce(position: r, ringSize: n, chunk: { $0 * each..<($0 + 1) * each },
                           from: { s, k in s == 0 ? source(r) : UnsafeRawPointer(working[r]!) },
                           into: { s, k in s == n - 2 ? destination(next) - k * each * element : working[next]! })
        case .allGather:
            let next = (r + 1) % n
            steps = 1 + (n - 1)
            guard move(destination(r) + r * count * element, source(r), count), barrier() else { break }
            _ = ringGather(position: r, ringSize: n, next: next, chunk: { $0 * count..<($0 + 1) * count }, last: true)
        case .allToAll:
            // Pairwise: in step s each rank writes its block for rank r+s straight into that rank's
            // destination (every block has its own place: no step waits for another).
            let each = count / n
            steps = n
            for s in 0..<n {
                let q = (r + s) % n
                step = s
                guard move(destination(q) + r * each * element, source(r) + q * each * element, each) else { break }
            }
        case .broadcast:
            // Pipelined down the ring from the root in n chunks: in step t the rank at distance i
            // from the root passes chunk t - i on.
            let root = operation.peer, i = (r - root + n) % n, next = (r + 1) % n
            let chunks = n
            steps = max(1, (n - 1) + (chunks - 1))
            if r == root { guard move(destination(r), source(r), count) else { break } }
            guard n > 1 else { break }
            for t in 0..<steps {
                let j = t - i
                if i < n - 1 && j >= 0 && j < chunks {
                    let range = Self.chunk(j, of: count, parts: chunks)
                    let from = i == 0 ? source(r) : UnsafeRawPointer(destination(r))
                    guard move(destination(next) + range.lowerBound * element, from + range.lowerBound * element, range.count) else { break }
                }
                if t < steps - 1 { guard barrier() else { break } }
            }
        case .send:
            // The sender's DMA writes into the receiver's destination.
            steps = 1
            _ = move(destination(operation.peer), source(r), count)
        case .receive:
            break
        case .permute:
            steps = 1
            if operation.targets.indices.contains(r), operation.targets[r] >= 0 {
                _ = move(destination(operation.targets[r]), source(r), count)
            }
        }
        return failure
    }

    /// The CC ring of `rank`'s core, ready for a collective that may read every member's HBM.
    private func preparedRing(_ rank: Int) -> CollectiveRing {
        let member = members[rank - firstRank]
        let ring = member.device.collectiveRings[member.core]
        ring.prepare(peers: memberFaults)
        return ring
    }

    /// The default data path in one process: every rank's memory is in reach of every rank's DMA
    /// (as every device's HBM is of a peer's DMA over NeuronLink), so each rank moves its share
    /// of the result directly, with no hand-offs between ranks: for a reduction, rank c folds
    /// chunk c of every rank's input in the ring's order (from rank c+1 round to rank c, DMA with
    /// compute into its engine's accumulator, rounded to the dtype at every step: the ring's
    /// arithmetic exactly) and writes it to every rank; for the others, rank r writes its own
    /// piece wherever it belongs. The host moves a third of the bytes the ring's steps would.
    private func direct(rank: Int, operation: CollectiveOperation, arrivals: [Int: Arrival],
                        ring: CollectiveRing) -> DmaQueueHardware.Stop? {
        let n = size, element = operation.dtype.size, count = operation.count
        func source(_ r: Int) -> UnsafeRawPointer { arrivals[r]!.source! }
        func destination(_ r: Int) -> UnsafeMutableRawPointer { arrivals[r]!.destination! }
        func move(_ to: UnsafeMutableRawPointer, _ from: UnsafeRawPointer, _ elements: Int) -> DmaQueueHardware.Stop? {
            ring.transfer(to: to, from: from, bytes: elements * element)
        }
        switch operation.kind {
        case .allReduce where torusColumns != nil:
            return torusAllReduce(rank: rank, operation: operation, source: source, destination: destination, ring: ring)
        case .allReduce:
            let chunk = Self.chunk(rank, of: count, parts: n)
            let order = (1...n).map { (rank + $0) % n }
            return ring.fold(order.map { source($0) + chunk.lowerBound * element },
                             into: (0..<n).map { destination($0) + chunk.lowerBound * element }, count: chunk.count,
                             op: operation.op, dtype: operation.dtype)
        case .reduceScatter:
            let each = count / n
            let order = (1...n).map { (rank + $0) % n }
            return ring.fold(order.map { source($0) + rank * each * element }, into: [destination(rank)], count: each,
                             op: operation.op, dtype: operation.dtype)
        case .allGather:
            for r in 0..<n {
                if let stop = move(destination((rank + r) % n) + rank * count * element, source(rank), count) { return stop }
            }
        case .allToAll:
            let each = count / n
            for s in 0..<n {
                let q = (rank + s) % n
                if let stop = move(destination(q) + rank * each * element, source(rank) + q * each * element, each) { return stop }
            }
        case .broadcast:
            let chunk = Self.chunk(rank, of: count, parts: n)
            let root = source(operation.peer) + chunk.lowerBound * element
            for r in 0..<n {
                if let stop = move(destination(r) + chunk.lowerBound * element, root, chunk.count) { return stop }
            }
        case .send:
            return move(destination(operation.peer), source(rank), count)
        case .receive:
            break
        case .permute:
            if operation.targets.indices.contains(rank), operation.targets[rank] >= 0 {
                return move(destination(operation.targets[rank]), source(rank), count)
            }
        }
        return nil
    }

    /// The 2D-torus all-reduce's arithmetic, for rank (i, j) = (row, column) of R rows of C: the
    /// elements of column chunk j (C chunks of the buffer) that fall in row chunk i (R chunks).
    /// Each row k folds its C ranks in ring order from column j+1 round to column j; then the R
    /// row sums are folded in ring order from row i+1 round to row i; every step rounded to the
    /// dtype. Every element has exactly one (i, j), so every element is computed once.
    private func torusAllReduce(rank: Int, operation: CollectiveOperation, source: (Int) -> UnsafeRawPointer,
                                destination: (Int) -> UnsafeMutableRawPointer, ring: CollectiveRing) -> DmaQueueHardware.Stop? {
        guard let columns = torusColumns else { return nil }
        let rows = size / columns, element = operation.dtype.size
        let row = rank / columns, column = rank % columns
        let columnChunk = Self.chunk(column, of: operation.count, parts: columns)
        let rowChunk = Self.chunk(row, of: operation.count, parts: rows)
        let low = max(columnChunk.lowerBound, rowChunk.lowerBound)
        let range = low..<max(low, min(columnChunk.upperBound, rowChunk.upperBound))
        guard !range.isEmpty else { return nil }
        let bytes = range.count * element
        let partials = (0..<rows).map { _ in UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64) }
        defer { for partial in partials { partial.deallocate() } }
        for k in 0..<rows {
            let order = (1...columns).map { k * columns + (column + $0) % columns }
            if let stop = ring.fold(order.map { source($0) + range.lowerBound * element }, into: [partials[k]], count: range.count,
                                    op: operation.op, dtype: operation.dtype) { return stop }
        }
        let rowOrder = (1...rows).map { UnsafeRawPointer(partials[(row + $0) % rows]) }
        return ring.fold(rowOrder, into: (0..<size).map { destination($0) + range.lowerBound * element }, count: range.count,
                         op: operation.op, dtype: operation.dtype)
    }

    /// A rank's scratch buffer for the round, seen by the others after the next barrier; freed
    /// when the rank leaves the round (after every rank has finished).
    private func scratch(_ round: Round, rank: Int, bytes: Int) -> UnsafeMutableRawPointer {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes), alignment: 64)
        state.withLock { _ in round.scratch[rank] = buffer }
        return buffer
    }

    /// Waits until every rank of the round has passed barrier `passed` (counting from 0), or
    /// the round failed.
    private func barrier(_ round: Round, passed: Int, rank: Int, cancelled: () -> Bool) -> ExecutionOutcome.Failure? {
        let arrived: (released: Bool, failure: ExecutionOutcome.Failure?) = state.withLock { _ in
            if let failure = round.failure { return (false, failure) }
            round.barrierArrivals += 1
            guard round.barrierArrivals == round.expected.count else { return (false, nil) }
            round.barrierArrivals = 0
            round.barriersPassed += 1
            return (true, nil)
        }
        if let failure = arrived.failure { return failure }
        if arrived.released {
            wakeAll()
            return nil
        }
        let slot = SpinBudget.enter()
        var holding = slot
        let spinUntil = slot ? vtrnsys_monotonic_ns() + Self.spinNanoseconds : 0
        defer { if holding { SpinBudget.leave() } }
        while true {
            let observed = vtrnsys_load_u32(word)
            let (passedNow, failure) = state.withLock { _ in (round.barriersPassed > passed, round.failure) }
            if passedNow { return nil }
            if let failure { return failure }
            if cancelled() {
                let failure = ExecutionOutcome.Failure.timeout("\(name): the runtime was destroyed while \(label(rank)) took part in a collective")
                state.withLock { _ in if round.failure == nil { round.failure = failure } }
                wakeAll()
                return failure
            }
            if holding && vtrnsys_monotonic_ns() < spinUntil {
                vtrnsys_cpu_relax()
                continue
            }
            if holding {
                SpinBudget.leave()
                holding = false
            }
            _ = vtrnsys_futex_wait(word, observed, 10_000_000)
        }
    }

    /// What a stop of a rank's CC ring means for the collective, in words that name the rank,
    /// its device, the ring and the step. A hang holds the rank until the execution's deadline,
    /// a reset, a loss or its runtime's end, as a hung DMA on the chip would.
    func ringFailure(_ stop: DmaQueueHardware.Stop, rank: Int, ring: CollectiveRing, operation: CollectiveOperation, key: Key,
                             step: Int, of steps: Int, deadline: UInt64?, timeoutNanoseconds: UInt64?, generations: [UInt64],
                             cancelled: () -> Bool) -> ExecutionOutcome.Failure {
        let member = members[rank - firstRank]
        let generation = generations.isEmpty ? member.device.faults.generation : generations[rank - firstRank]
        let device = member.device.index
        let ringName = "the CC ring of \(label(rank)) (DMA engine \(ring.engineIndex) of core \(member.core))"
        let at = "at descriptor \(stop.position - ring.collectiveStart) of \(what(key, operation))"
            + (stepwise && steps > 0 ? ", in step \(step + 1) of \(max(steps, step + 1))" : "")
        let after = "; every rank of the collective failed with it, and the ring starts again with the next collective"
        switch stop.reason {
        case .descriptorError:
            return .dmaFault("DMA abort on \(ringName): the engine refused a descriptor \(at)\(after)")
        case .aborted(let fault):
            return .dmaFault("DMA abort on \(ringName) \(at): a descriptor error (\(fault))\(after)")
        case .hbmUncorrectable(let address, let length, let fault):
            return .hardware("uncorrectable HBM error: \(ringName) read HBM bytes \(DeviceFaults.range(address, UInt64(length))) "
                             + "\(at), over \(fault)\(after)")
        case .hung(let fault):
            let hung = "\(ringName) hung \(at) (\(fault))"
            switch member.device.faults.hang(until: deadline, generation: generation, cancelled: cancelled) {
            case .deadline:
                return .timeout("\(hung); the execution timeout of \((timeoutNanoseconds ?? 0) / 1_000_000) ms (VTRN_EXEC_TIMEOUT_MS) "
                                + "ended it\(after)")
            case .reset: return .reset("\(hung) until device \(device) was reset (vtrn_device_reset)\(after)")
            case .lost: return .deviceLost("\(hung) until device \(device) was lost (\(member.device.faults.loss ?? "lost"))\(after)")
            case .cancelled: return .timeout("\(hung) until its runtime was destroyed\(after)")
            }
        case .reset:
            return .reset("device \(device) of \(label(rank)) was reset (vtrn_device_reset) while \(ringName) moved data "
                          + "\(at)\(after)")
        case .deviceLost(let why):
            return .deviceLost("device \(device) of \(label(rank)) was lost (\(why)) while \(ringName) moved data \(at); "
                               + "vtrn_device_reset brings the device back\(after)")
        }
    }

    // MARK: Cost model

    /// Virtual nanoseconds of the collective on the modelled links: the ring's steps, each the
    /// slowest hop's latency plus its bytes over the hop's bandwidth.
    /// A message's latency and bandwidth between two global ranks: the links between this
    /// process's ranks, the world's network between processes.
    func link(_ from: Int, _ to: Int) -> (latency: Double, bytesPerNanosecond: Double) {
        if localRanks.contains(from) && localRanks.contains(to) {
            return (links.latencyNanoseconds[from - firstRank][to - firstRank], links.bytesPerNanosecond[from - firstRank][to - firstRank])
        }
        guard let world else { return (0, 1) }
        return (world.latencyNanoseconds, world.bytesPerNanosecond)
    }

    private func cost(_ operation: CollectiveOperation, rank: Int) -> Double {
        let size = self.size
        let bytes = Double(operation.count * operation.dtype.size)
        func ringStep(_ stepBytes: Double) -> Double {
            var slowest = 0.0
            for r in 0..<size {
                let next = (r + 1) % size
                let hop = link(r, next)
                slowest = max(slowest, hop.latency + stepBytes / hop.bytesPerNanosecond)
            }
            return slowest
        }
        let n = Double(size)
        switch operation.kind {
        case .allReduce where torusColumns != nil:
            // Reduce-scatter and all-gather along the rows, all-reduce of 1/C along the columns.
            let columns = torusColumns!, rows = size / columns
            func step(_ stepBytes: Double, _ next: (Int) -> Int) -> Double {
                (0..<size).map { r in let hop = link(r, next(r)); return hop.latency + stepBytes / hop.bytesPerNanosecond }.max() ?? 0
            }
            let rowStep = step(bytes / Double(columns)) { ($0 / columns) * columns + ($0 % columns + 1) % columns }
            let columnStep = step(bytes / Double(columns * rows)) { ($0 + columns) % self.size }
            return 2 * Double(columns - 1) * rowStep + 2 * Double(rows - 1) * columnStep
        case .allReduce:
            guard size > 1 else { return 0 }
            return 2 * (n - 1) * ringStep(bytes / n)
        case .reduceScatter:
            guard size > 1 else { return 0 }
            return (n - 1) * ringStep(bytes / n)
        case .allGather:
            guard size > 1 else { return 0 }
            return (n - 1) * ringStep(bytes)
        case .allToAll:
            guard size > 1 else { return 0 }
            return (n - 1) * ringStep(bytes / n)
        case .broadcast:
            guard size > 1 else { return 0 }
            // Pipelined down the ring: every hop's latency once, the bytes once at the slowest hop.
            return (n - 1) * ringStep(0) + ringStep(bytes) - ringStep(0)
        case .permute:
            var slowest = 0.0
            for (from, to) in operation.targets.enumerated() where to >= 0 && to != from {
                let hop = link(from, to)
                slowest = max(slowest, hop.latency + bytes / hop.bytesPerNanosecond)
            }
            return slowest
        case .send, .receive:
            let from = operation.kind == .send ? rank : operation.peer
            let to = operation.kind == .send ? operation.peer : rank
            let hop = link(from, to)
            return hop.latency + bytes / hop.bytesPerNanosecond
        }
    }
}

/// Reductions in the ring's order, rounding to the dtype after every step.
enum Reduction {
    static let block = 4096

    static func fold(_ operation: CollectiveOperation, inputs: [UnsafeRawPointer], outputs: [UnsafeMutableRawPointer], count: Int) {
        guard count > 0 else { return }
        let dtype = operation.dtype, element = dtype.size
        if dtype.isFloat {
            let accumulator = UnsafeMutablePointer<Float>.allocate(capacity: block)
            let value = UnsafeMutablePointer<Float>.allocate(capacity: block)
            defer { accumulator.deallocate(); value.deallocate() }
            var start = 0
            while start < count {
                let n = min(block, count - start)
                Conversion.load(dtype, from: inputs[0] + start * element, stride: 1, count: n, into: accumulator)
                for input in inputs.dropFirst() {
                    Conversion.load(dtype, from: input + start * element, stride: 1, count: n, into: value)
                    combine(operation.op, accumulator, value, n)
                    if dtype != .fp32 { for i in 0..<n { accumulator[i] = Conversion.round(accumulator[i], to: dtype) } }
                }
                for output in outputs { Conversion.store(dtype, from: accumulator, count: n, to: output + start * element, stride: 1) }
                start += n
            }
        } else {
            let accumulator = UnsafeMutablePointer<Int32>.allocate(capacity: block)
            let value = UnsafeMutablePointer<Int32>.allocate(capacity: block)
            defer { accumulator.deallocate(); value.deallocate() }
            var start = 0
            while start < count {
                let n = min(block, count - start)
                loadIntegers(dtype, inputs[0] + start * element, n, accumulator)
                for input in inputs.dropFirst() {
                    loadIntegers(dtype, input + start * element, n, value)
                    combineIntegers(operation.op, dtype, accumulator, value, n)
                }
                for output in outputs { storeIntegers(dtype, accumulator, n, output + start * element) }
                start += n
            }
        }
    }

    /// a[i] = a[i] op b[i] (the running value first), or with `reversed` b[i] op a[i]. NaN in
    /// max and min gives NaN (x + y: the first operand's payload, as the engines give it).
    @inline(__always)
    static func combine(_ op: AluOp, _ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int, reversed: Bool = false) {
        switch (op, reversed) {
        case (.max, false): for i in 0..<n { let x = a[i], y = b[i]; a[i] = x.isNaN || y.isNaN ? x + y : (y > x ? y : x) }
        case (.max, true): for i in 0..<n { let x = b[i], y = a[i]; a[i] = x.isNaN || y.isNaN ? x + y : (y > x ? y : x) }
        case (.min, false): for i in 0..<n { let x = a[i], y = b[i]; a[i] = x.isNaN || y.isNaN ? x + y : (y < x ? y : x) }
        case (.min, true): for i in 0..<n { let x = b[i], y = a[i]; a[i] = x.isNaN || y.isNaN ? x + y : (y < x ? y : x) }
        case (_, false): for i in 0..<n { a[i] += b[i] }
        case (_, true): for i in 0..<n { a[i] = b[i] + a[i] }
        }
    }

    static func loadIntegers(_ dtype: DataType, _ source: UnsafeRawPointer, _ n: Int, _ into: UnsafeMutablePointer<Int32>) {
        switch dtype {
        case .int8: for i in 0..<n { into[i] = Int32(source.load(fromByteOffset: i, as: Int8.self)) }
        case .uint8: for i in 0..<n { into[i] = Int32(source.load(fromByteOffset: i, as: UInt8.self)) }
        default: for i in 0..<n { into[i] = source.loadUnaligned(fromByteOffset: i * 4, as: Int32.self) }
        }
    }

    static func storeIntegers(_ dtype: DataType, _ values: UnsafePointer<Int32>, _ n: Int, _ to: UnsafeMutableRawPointer) {
        switch dtype {
        case .int8: for i in 0..<n { to.storeBytes(of: Int8(truncatingIfNeeded: values[i]), toByteOffset: i, as: Int8.self) }
        case .uint8: for i in 0..<n { to.storeBytes(of: UInt8(truncatingIfNeeded: values[i]), toByteOffset: i, as: UInt8.self) }
        default: for i in 0..<n { to.storeBytes(of: values[i], toByteOffset: i * 4, as: Int32.self) }
        }
    }

    /// Integer adds wrap in the dtype's width, as the running value is sent in the dtype.
    static func combineIntegers(_ op: AluOp, _ dtype: DataType, _ a: UnsafeMutablePointer<Int32>, _ b: UnsafePointer<Int32>, _ n: Int) {
        switch op {
        case .max: for i in 0..<n { a[i] = Swift.max(a[i], b[i]) }
        case .min: for i in 0..<n { a[i] = Swift.min(a[i], b[i]) }
        default:
            switch dtype {
            case .int8: for i in 0..<n { a[i] = Int32(Int8(truncatingIfNeeded: a[i] &+ b[i])) }
            case .uint8: for i in 0..<n { a[i] = Int32(UInt8(truncatingIfNeeded: a[i] &+ b[i])) }
            default: for i in 0..<n { a[i] = a[i] &+ b[i] }
            }
        }
    }
}
