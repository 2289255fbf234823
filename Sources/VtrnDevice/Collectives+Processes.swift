import CVtrnSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Collectives whose ranks span processes. One thread per process (its lowest local rank's) does
/// the exchange for all of the process's ranks, through the world's transport; the arithmetic is
/// the single process's, step for step, so that results match it bit for bit:
///
/// - all-reduce and reduce-scatter: chunk c is still folded left from rank c+1 round to rank c,
///   rounded to the dtype at every step. The fold visits the processes in ring order (each folds
///   its consecutive ranks into the running value it received, in the dtype, and passes it on),
///   all chunks at once, one exchange per step: at most P+1 steps for P processes. A chunk ends in
///   the process of rank c; all-reduce then gathers the chunks around the ring of processes.
/// - all-gather: each process's ranks' inputs are one block of the output, passed around the ring.
/// - all-to-all: P-1 pairwise exchanges. Broadcast: down the ring of processes from the root's.
/// - send/receive and permute: one message per pair (after both ends agree on count and dtype).
///
/// Before a group collective, the processes exchange what their ranks asked for, so that a
/// process asking for something else fails every process with the same message.
extension CollectiveGroup {
    /// Tags: group collectives use 1 (one thread per process runs them, in order); a pair of
    /// ranks uses its own, so that concurrent sends of different ranks never cross.
    static let groupTag = 1
    func pairTag(from: Int, to: Int) -> Int { 2 + from * size + to }

    func crossProcess(_ operation: CollectiveOperation, key: Key, arrivals: [Int: Arrival], deadline: UInt64?,
                      dma: LocalDma) -> ExecutionOutcome.Failure? {
        guard let world else { return nil }
        do throws(TransportFailure) {
            switch operation.kind {
            case .send, .receive:
                try pointToPoint(operation, key: key, arrivals: arrivals, world: world, deadline: deadline)
            default:
                if let mismatch = try agree(operation, key: key, world: world, deadline: deadline) { return .invalidArgument(mismatch) }
                try groupCollective(operation, arrivals: arrivals, world: world, deadline: deadline, dma: dma)
            }
            return nil
        } catch {
            switch error {
            case .timeout(let message): return .timeout("\(name): \(message)")
            case .failed(let message): return .hardware("\(name): \(message)")
            case .mismatch(let message): return .invalidArgument("\(name): \(message)")
            }
        }
    }

    // MARK: Agreeing

    private func describe(_ operation: CollectiveOperation, sequence: UInt64) -> [Int64] {
        var hash: UInt64 = 14_695_981_039_346_656_037
        for target in operation.targets { hash = (hash ^ UInt64(bitPattern: Int64(target))) &* 1_099_511_628_211 }
        return [Int64(operation.kind.rawValue), Int64(operation.dtype.rawValue), Int64(operation.op.rawValue),
                Int64(operation.count), Int64(operation.peer), Int64(bitPattern: hash), Int64(bitPattern: sequence)]
    }

    /// Every process's description of the collective; a message if one differs from this one's.
    private func agree(_ operation: CollectiveOperation, key: Key, world: CollectiveWorld,
                       deadline: UInt64?) throws(TransportFailure) -> String? {
        guard case .group(let sequence) = key else { return nil }
        let mine = describe(operation, sequence: sequence)
        let fields = mine.count, processes = world.processCount, p = world.process
        let buffer = UnsafeMutablePointer<Int64>.allocate(capacity: fields * processes)
        defer { buffer.deallocate() }
        buffer.initialize(repeating: 0, count: fields * processes)
        for (index, value) in mine.enumerated() { buffer[p * fields + index] = value }
        let blocks = (0..<processes).map { ($0 * fields * 8)..<(($0 + 1) * fields * 8) }
        try ringGather(UnsafeMutableRawPointer(buffer), blocks: blocks, world: world, tag: Self.groupTag, deadline: deadline)
        let all = Array(UnsafeBufferPointer(start: buffer, count: fields * processes))
        for q in 0..<processes where Array(all[(q * fields)..<((q + 1) * fields)]) != mine {
            let theirs = all[(q * fields)..<((q + 1) * fields)].map { $0 }
            let kind = CollectiveKind(rawValue: Int(theirs[0]))?.name ?? "collective \(theirs[0])"
            let dtype = DataType(rawValue: Int(theirs[1]))?.description ?? "dtype \(theirs[1])"
            let ranks = world.ranks(of: q)
            return "collective \(sequence) of \(name): process \(q) (ranks \(ranks.lowerBound)-\(ranks.upperBound - 1)) asked for "
                + "\(kind) of \(theirs[3]) \(dtype) (its collective \(theirs[6])), but process \(p) (ranks \(localRanks.lowerBound)-"
                + "\(localRanks.upperBound - 1)) asked for \(operation.kind) of \(operation.count) \(operation.dtype) (its collective "
                + "\(sequence)); every rank must call the same collectives in the same order with the same count, dtype, op and root"
        }
        return nil
    }

    /// All-gather of byte ranges of `buffer` around the ring of processes: process q's range is
    /// `blocks[q]`, filled in by it beforehand; afterwards every range is filled everywhere.
    func ringGather(_ buffer: UnsafeMutableRawPointer, blocks: [Range<Int>], world: CollectiveWorld, tag: Int,
                    deadline: UInt64?) throws(TransportFailure) {
        let processes = world.processCount, p = world.process
        guard processes > 1 else { return }
        let next = (p + 1) % processes, previous = (p + processes - 1) % processes
        for step in 0..<(processes - 1) {
            let sending = blocks[(p - step + processes) % processes]
            let receiving = blocks[(p - step - 1 + 2 * processes) % processes]
            try world.transport.exchange(send: UnsafeRawBufferPointer(start: buffer + sending.lowerBound, count: sending.count), to: next,
                                         receive: UnsafeMutableRawBufferPointer(start: buffer + receiving.lowerBound,
                                                                                count: receiving.count),
                                         from: previous, tag: tag, deadline: deadline)
        }
    }

    // MARK: Group collectives

    private func groupCollective(_ operation: CollectiveOperation, arrivals: [Int: Arrival], world: CollectiveWorld,
                                 deadline: UInt64?, dma: LocalDma) throws(TransportFailure) {
        func move(_ destination: UnsafeMutableRawPointer, _ source: UnsafeRawPointer, _ bytes: Int) throws(TransportFailure) {
            try dma.move(destination, source, bytes)
        }
        let element = operation.dtype.size, count = operation.count
        let processes = world.processCount, p = world.process
        let local = localRanks
        func source(_ r: Int) -> UnsafeRawPointer { arrivals[r]!.source! }
        func destination(_ r: Int) -> UnsafeMutableRawPointer { arrivals[r]!.destination! }
        let transport = world.transport
        let next = (p + 1) % processes, previous = (p + processes - 1) % processes
        switch operation.kind {
        case .allReduce, .reduceScatter:
            let chunkCount = operation.kind == .allReduce ? count : count / size
            let work = UnsafeMutableRawPointer.allocate(byteCount: max(1, count * element), alignment: 64)
            defer { work.deallocate() }
            try chainReduce(operation, arrivals: arrivals, world: world, work: work, deadline: deadline, dma: dma)
            if operation.kind == .reduceScatter {
                // Chunk r (count/size elements at r * chunkCount) ends in the process of rank r.
                for r in local { try move(destination(r), work + r * chunkCount * element, chunkCount * element) }
                return
            }
            // Process q holds the final chunks of its ranks, one range of the buffer: gather them.
            let blocks = (0..<processes).map { q -> Range<Int> in
                let ranks = world.ranks(of: q)
                let start = ranks.isEmpty ? 0 : Self.chunk(ranks.lowerBound, of: count, parts: size).lowerBound
                let end = ranks.isEmpty ? 0 : Self.chunk(ranks.upperBound - 1, of: count, parts: size).upperBound
                return (start * element)..<(end * element)
            }
            try ringGather(work, blocks: blocks, world: world, tag: Self.groupTag, deadline: deadline)
            for r in local { try move(destination(r), work, count * element) }
        case .allGather:
            let bytes = count * element
            let work = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes * size), alignment: 64)
            defer { work.deallocate() }
            for r in local { try move(work + r * bytes, source(r), bytes) }
            let blocks = (0..<processes).map { q in (world.ranks(of: q).lowerBound * bytes)..<(world.ranks(of: q).upperBound * bytes) }
            try ringGather(work, blocks: blocks, world: world, tag: Self.groupTag, deadline: deadline)
            for r in local { try move(destination(r), work, bytes * size) }
        case .allToAll:
            let each = count / size, bytes = each * element
            for r in local { for j in local { try move(destination(j) + r * bytes, source(r) + j * bytes, bytes) } }
            for step in 1..<max(processes, 1) {
                let to = (p + step) % processes, from = (p - step + processes) % processes
                let toRanks = world.ranks(of: to), fromRanks = world.ranks(of: from)
                let outgoing = UnsafeMutableRawPointer.allocate(byteCount: max(1, local.count * toRanks.count * bytes), alignment: 64)
                let incoming = UnsafeMutableRawPointer.allocate(byteCount: max(1, fromRanks.count * local.count * bytes), alignment: 64)
                defer { outgoing.deallocate(); incoming.deallocate() }
                var offset = 0
                for r in local { for j in toRanks { try move(outgoing + offset, source(r) + j * bytes, bytes); offset += bytes } }
                try transport.exchange(send: UnsafeRawBufferPointer(start: outgoing, count: offset), to: to,
                                       receive: UnsafeMutableRawBufferPointer(start: incoming, count: fromRanks.count * local.count * bytes),
                                       from: from, tag: Self.groupTag, deadline: deadline)
                offset = 0
                for r in fromRanks { for j in local { try move(destination(j) + r * bytes, incoming + offset, bytes); offset += bytes } }
            }
        case .broadcast:
            let bytes = count * element
            let root = operation.peer, rootProcess = world.owner(root)
            let work = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes), alignment: 64)
            defer { work.deallocate() }
            let position = (p - rootProcess + processes) % processes
            if position == 0 {
                try move(work, source(root), bytes)
            } else {
                try transport.exchange(send: UnsafeRawBufferPointer(start: nil, count: 0), to: -1,
                                       receive: UnsafeMutableRawBufferPointer(start: work, count: bytes), from: previous,
                                       tag: Self.groupTag, deadline: deadline)
            }
            if position < processes - 1 {
                try transport.exchange(send: UnsafeRawBufferPointer(start: work, count: bytes), to: next,
                                       receive: UnsafeMutableRawBufferPointer(start: nil, count: 0), from: -1,
                                       tag: Self.groupTag, deadline: deadline)
            }
            for r in local { try move(destination(r), work, bytes) }
        case .permute:
            let bytes = count * element
            for (from, to) in operation.targets.enumerated() where to >= 0 {
                let fromLocal = local.contains(from), toLocal = local.contains(to)
                if fromLocal && toLocal {
                    try move(destination(to), source(from), bytes)
                } else if fromLocal {
                    try transport.exchange(send: UnsafeRawBufferPointer(start: source(from), count: bytes), to: world.owner(to),
                                           receive: UnsafeMutableRawBufferPointer(start: nil, count: 0), from: -1,
                                           tag: Self.groupTag, deadline: deadline)
                } else if toLocal {
                    try transport.exchange(send: UnsafeRawBufferPointer(start: nil, count: 0), to: -1,
                                           receive: UnsafeMutableRawBufferPointer(start: destination(to), count: bytes),
                                           from: world.owner(from), tag: Self.groupTag, deadline: deadline)
                }
            }
        case .send, .receive:
            break
        }
    }

    /// The fold of every chunk across the processes, into `work` (the whole buffer's layout):
    /// afterwards each process holds the final value of the chunks of its own ranks.
    private func chainReduce(_ operation: CollectiveOperation, arrivals: [Int: Arrival], world: CollectiveWorld,
                             work: UnsafeMutableRawPointer, deadline: UInt64?, dma: LocalDma) throws(TransportFailure) {
        func move(_ destination: UnsafeMutableRawPointer, _ source: UnsafeRawPointer, _ bytes: Int) throws(TransportFailure) {
            try dma.move(destination, source, bytes)
        }
        let element = operation.dtype.size, processes = world.processCount, p = world.process
        let size = self.size
        // Reduce-scatter's chunks are its ranks' outputs; all-reduce's split the buffer.
        let chunkElements = operation.kind == .reduceScatter ? operation.count / size : 0
        func chunkRange(_ c: Int) -> Range<Int> {
            operation.kind == .reduceScatter ? (c * chunkElements)..<((c + 1) * chunkElements) : Self.chunk(c, of: operation.count, parts: size)
        }
        // Each chunk's fold, in segments of consecutive ranks of one process.
        func segments(_ c: Int) -> [(process: Int, ranks: [Int])] {
            var result: [(process: Int, ranks: [Int])] = []
            for k in 1...size {
                let r = (c + k) % size, q = world.owner(r)
                if let last = result.last, last.process == q { result[result.count - 1].ranks.append(r) } else { result.append((q, [r])) }
            }
            return result
        }
        let plans = (0..<size).map(segments)
        let next = (p + 1) % processes, previous = (p + processes - 1) % processes
        // Step t: this process folds segment t of the chunks whose segment t is here.
        var step = 0
        while true {
            let here = (0..<size).filter { plans[$0].count > step && plans[$0][step].process == p }
            for c in here {
                let range = chunkRange(c)
                guard !range.isEmpty else { continue }
                let inputs = plans[c][step].ranks.map { arrivals[$0]!.source! + range.lowerBound * element }
                let partial = work + range.lowerBound * element
                try dma.fold(operation, inputs: step == 0 ? inputs : [UnsafeRawPointer(partial)] + inputs, into: partial,
                             count: range.count)
            }
            let onward = here.filter { plans[$0].count > step + 1 }
            let arriving = (0..<size).filter { plans[$0].count > step + 1 && plans[$0][step + 1].process == p }
            if onward.isEmpty && arriving.isEmpty && !(0..<size).contains(where: { plans[$0].count > step + 1 }) { break }
            let outgoingBytes = onward.reduce(0) { $0 + chunkRange($1).count * element }
            let incomingBytes = arriving.reduce(0) { $0 + chunkRange($1).count * element }
            let outgoing = UnsafeMutableRawPointer.allocate(byteCount: max(1, outgoingBytes), alignment: 64)
            let incoming = UnsafeMutableRawPointer.allocate(byteCount: max(1, incomingBytes), alignment: 64)
            defer { outgoing.deallocate(); incoming.deallocate() }
            var offset = 0
            for c in onward {
                let range = chunkRange(c)
                try move(outgoing + offset, work + range.lowerBound * element, range.count * element)
                offset += range.count * element
            }
            try world.transport.exchange(send: UnsafeRawBufferPointer(start: outgoing, count: outgoingBytes), to: onward.isEmpty ? -1 : next,
                                         receive: UnsafeMutableRawBufferPointer(start: incoming, count: incomingBytes),
                                         from: arriving.isEmpty ? -1 : previous, tag: Self.groupTag, deadline: deadline)
            offset = 0
            for c in arriving {
                let range = chunkRange(c)
                try move(work + range.lowerBound * element, incoming + offset, range.count * element)
                offset += range.count * element
            }
            step += 1
        }
    }

    // MARK: Point to point

    private func pointToPoint(_ operation: CollectiveOperation, key: Key, arrivals: [Int: Arrival], world: CollectiveWorld,
                              deadline: UInt64?) throws(TransportFailure) {
        guard case .pair(let from, let to, _) = key else { return }
        let element = operation.dtype.size
        let tag = pairTag(from: from, to: to)
        let mine: [Int64] = [Int64(operation.count), Int64(operation.dtype.rawValue)]
        let local = operation.kind == .send ? from : to
        let remote = operation.kind == .send ? to : from
        let headers = UnsafeMutablePointer<Int64>.allocate(capacity: 4)
        defer { headers.deallocate() }
        headers.initialize(repeating: 0, count: 4)
        headers[0] = mine[0]
        headers[1] = mine[1]
        try world.transport.exchange(send: UnsafeRawBufferPointer(start: headers, count: 16), to: world.owner(remote),
                                     receive: UnsafeMutableRawBufferPointer(start: headers + 2, count: 16), from: world.owner(remote),
                                     tag: tag, deadline: deadline)
        let theirs = [headers[2], headers[3]]
        guard theirs == mine else {
            let dtype = DataType(rawValue: Int(theirs[1]))?.description ?? "dtype \(theirs[1])"
            throw .mismatch("send/receive from rank \(from) to rank \(to): \(label(local)) posted \(operation.count) "
                          + "\(operation.dtype) but \(label(remote)) posted \(theirs[0]) \(dtype); both ends must agree on count and dtype")
        }
        let bytes = operation.count * element
        if operation.kind == .send {
            try world.transport.exchange(send: UnsafeRawBufferPointer(start: arrivals[from]!.source!, count: bytes), to: world.owner(to),
                                         receive: UnsafeMutableRawBufferPointer(start: nil, count: 0), from: -1, tag: tag,
                                         deadline: deadline)
        } else {
            try world.transport.exchange(send: UnsafeRawBufferPointer(start: nil, count: 0), to: -1,
                                         receive: UnsafeMutableRawBufferPointer(start: arrivals[to]!.destination!, count: bytes),
                                         from: world.owner(from), tag: tag, deadline: deadline)
        }
    }

}

/// A collective across processes moves its process's part on the CC ring of the rank that runs
/// it (the lowest local rank): copies between the ranks' memory and the buffers the transport
/// sends and receives, and the folds of the local ranks. A stop of the ring ends the collective
/// (`stop` says why; the transport's error only unwinds).
final class LocalDma {
    let ring: CollectiveRing
    private(set) var stop: DmaQueueHardware.Stop?

    init(ring: CollectiveRing) { self.ring = ring }

    func move(_ destination: UnsafeMutableRawPointer, _ source: UnsafeRawPointer, _ bytes: Int) throws(TransportFailure) {
        if let stop = ring.transfer(to: destination, from: source, bytes: bytes) { try failed(stop) }
    }

    func fold(_ operation: CollectiveOperation, inputs: [UnsafeRawPointer], into output: UnsafeMutableRawPointer,
              count: Int) throws(TransportFailure) {
        if let stop = ring.fold(inputs, into: [output], count: count, op: operation.op, dtype: operation.dtype) { try failed(stop) }
    }

    private func failed(_ stop: DmaQueueHardware.Stop) throws(TransportFailure) {
        self.stop = stop
        throw .failed("the CC ring stopped")
    }
}

/// A transport between communicators of one process, standing in for processes: each endpoint
/// is a "process" of the world. Sends are buffered (as MPI buffers small messages) and receives
/// wait for theirs. For tests that check the cross-process algorithms without MPI.
public final class InProcessTransport: CollectiveTransport, @unchecked Sendable {
    private struct Mailbox: Hashable {
        let from: Int
        let to: Int
        let tag: Int
    }

    private final class Hub: @unchecked Sendable {
        let mailboxes = Mutex<[Mailbox: [[UInt8]]]>([:])
    }

    public let processIndex: Int
    public let processCount: Int
    private let hub: Hub

    private init(processIndex: Int, processCount: Int, hub: Hub) {
        self.processIndex = processIndex
        self.processCount = processCount
        self.hub = hub
    }

    /// The endpoints of a world of `processes` "processes".
    public static func world(processes: Int) -> [InProcessTransport] {
        let hub = Hub()
        return (0..<processes).map { InProcessTransport(processIndex: $0, processCount: processes, hub: hub) }
    }

    public func exchange(send: UnsafeRawBufferPointer, to: Int, receive: UnsafeMutableRawBufferPointer, from: Int, tag: Int,
                         deadline: UInt64?) throws(TransportFailure) {
        if to >= 0 {
            let message = Array(send)
            hub.mailboxes.withLock { $0[Mailbox(from: processIndex, to: to, tag: tag), default: []].append(message) }
        }
        guard from >= 0 else { return }
        let box = Mailbox(from: from, to: processIndex, tag: tag)
        while true {
            let message: [UInt8]? = hub.mailboxes.withLock { boxes in
                guard var queue = boxes[box], !queue.isEmpty else { return nil }
                let first = queue.removeFirst()
                boxes[box] = queue
                return first
            }
            if let message {
                guard message.count == receive.count else {
                    throw .failed("process \(from) sent \(message.count) bytes where process \(processIndex) expected \(receive.count)")
                }
                if !message.isEmpty { message.withUnsafeBytes { receive.copyMemory(from: $0) } }
                return
            }
            if let deadline, vtrnsys_monotonic_ns() >= deadline {
                throw .timeout("process \(from) sent nothing to process \(processIndex) (tag \(tag)) before the execution timeout")
            }
            usleep(20)
        }
    }
}
