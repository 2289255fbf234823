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
/// The algorithm is the ring's. Data are split into `size` chunks (the first `count % size` one
/// element longer); chunk c of a reduction is folded left in ring order from rank c+1 to rank c,
/// `((x[c+1] + x[c+2]) + ...) + x[c]` (indices mod size), with the running value rounded to the
/// dtype after every step, as a ring that transmits in the dtype computes it. The same order run
/// to run, so results are deterministic. In one process every rank's memory is in reach, so each
/// rank's thread computes its own chunk straight from every input (no per-step hand-offs), with
/// the ring's exact arithmetic; the cost model charges the ring's steps over the modelled links.
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
        var latest = 0.0
        var finished = 0
        var left = 0
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

    private struct MemberKey: Hashable {
        let device: ObjectIdentifier
        let core: Int
    }

    public init(members: [CollectiveMember], links: CollectiveLinks, name: String, world: CollectiveWorld? = nil,
                algorithm: CollectiveAlgorithm = .ring) {
        self.members = members
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
        defer { leave(key, round) }
        // Wait for every expected rank, or a failure.
        let waited = waitFor(round, rank: rank, key: key, deadline: deadline, timeoutNanoseconds: timeoutNanoseconds,
                             generations: generations, cancelled: cancelled) { $0.ready || $0.failure != nil }
        if let failure = waited { return .failure(failure) }
        let failed: ExecutionOutcome.Failure? = state.withLock { _ in
            round.late.contains(rank) ? round.lateFailure : round.failure
        }
        if let failure = failed { return .failure(failure) }
        let (arrivals, latest) = state.withLock { _ in (round.arrivals, round.latest) }
        if world != nil && (round.expected.count == 1 && operation.kind.isPointToPoint || !operation.kind.isPointToPoint) {
            // Across processes: the lowest local rank does the whole exchange for this process,
            // the others wait for it (their buffers stay theirs until it is done).
            if rank == round.expected.min() {
                let failure = crossProcess(operation, key: key, arrivals: arrivals, deadline: deadline)
                state.withLock { _ in
                    if let failure { round.failure = failure }
                    round.finished = round.expected.count
                }
                wakeAll()
            }
        } else {
            compute(rank: rank, operation: operation, arrivals: arrivals, expected: round.expected)
            state.withLock { _ in
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

    private func leave(_ key: Key, _ round: Round) {
        state.withLock { state in
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

    private func compute(rank: Int, operation: CollectiveOperation, arrivals: [Int: Arrival], expected: [Int]) {
        let size = self.size
        let element = operation.dtype.size
        let count = operation.count
        func source(_ r: Int) -> UnsafeRawPointer { arrivals[r]!.source! }
        func destination(_ r: Int) -> UnsafeMutableRawPointer { arrivals[r]!.destination! }
        switch operation.kind {
        case .allReduce where torusColumns != nil:
            torusAllReduce(rank: rank, operation: operation, source: source, destination: destination)
        case .allReduce:
            let chunk = Self.chunk(rank, of: count, parts: size)
            let order = (1...size).map { (rank + $0) % size }
            Reduction.fold(operation, inputs: order.map { source($0) + chunk.lowerBound * element },
                           outputs: (0..<size).map { destination($0) + chunk.lowerBound * element }, count: chunk.count)
        case .reduceScatter:
            let each = count / size
            let order = (1...size).map { (rank + $0) % size }
            Reduction.fold(operation, inputs: order.map { source($0) + rank * each * element },
                           outputs: [destination(rank)], count: each)
        case .allGather:
            for r in 0..<size { move(destination(r) + rank * count * element, source(rank), count * element) }
        case .allToAll:
            let each = count / size
            for r in 0..<size { move(destination(r) + rank * each * element, source(rank) + r * each * element, each * element) }
        case .broadcast:
            let chunk = Self.chunk(rank, of: count, parts: size)
            let root = source(operation.peer) + chunk.lowerBound * element
            for r in 0..<size { move(destination(r) + chunk.lowerBound * element, root, chunk.count * element) }
        case .send:
            break
        case .receive:
            move(destination(rank), source(operation.peer), count * element)
        case .permute:
            if let from = operation.targets.firstIndex(of: rank) { move(destination(rank), source(from), count * element) }
        }
    }


    // MARK: The 2D torus

    /// The 2D-torus all-reduce's arithmetic, for rank (i, j) = (row, column) of R rows of C: the
    /// elements of column chunk j (C chunks of the buffer) that fall in row chunk i (R chunks).
    /// Each row k folds its C ranks in ring order from column j+1 round to column j; then the R
    /// row sums are folded in ring order from row i+1 round to row i; every step rounded to the
    /// dtype. Every element has exactly one (i, j), so every element is computed once.
    private func torusAllReduce(rank: Int, operation: CollectiveOperation, source: (Int) -> UnsafeRawPointer,
                                destination: (Int) -> UnsafeMutableRawPointer) {
        guard let columns = torusColumns else { return }
        let rows = size / columns, element = operation.dtype.size
        let row = rank / columns, column = rank % columns
        let columnChunk = Self.chunk(column, of: operation.count, parts: columns)
        let rowChunk = Self.chunk(row, of: operation.count, parts: rows)
        let range = max(columnChunk.lowerBound, rowChunk.lowerBound)..<max(max(columnChunk.lowerBound, rowChunk.lowerBound),
                                                                            min(columnChunk.upperBound, rowChunk.upperBound))
        guard !range.isEmpty else { return }
        let bytes = range.count * element
        let partials = (0..<rows).map { _ in UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64) }
        defer { for partial in partials { partial.deallocate() } }
        for k in 0..<rows {
            let order = (1...columns).map { k * columns + (column + $0) % columns }
            Reduction.fold(operation, inputs: order.map { source($0) + range.lowerBound * element }, outputs: [partials[k]],
                           count: range.count)
        }
        let rowOrder = (1...rows).map { UnsafeRawPointer(partials[(row + $0) % rows]) }
        Reduction.fold(operation, inputs: rowOrder, outputs: (0..<size).map { destination($0) + range.lowerBound * element },
                       count: range.count)
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

    @inline(__always)
    static func combine(_ op: AluOp, _ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
        switch op {
        case .max: for i in 0..<n { let x = a[i], y = b[i]; a[i] = x.isNaN || y.isNaN ? x + y : (y > x ? y : x) }
        case .min: for i in 0..<n { let x = a[i], y = b[i]; a[i] = x.isNaN || y.isNaN ? x + y : (y < x ? y : x) }
        default: for i in 0..<n { a[i] += b[i] }
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
