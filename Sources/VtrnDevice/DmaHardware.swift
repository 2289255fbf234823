import CVtrnSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One 16-byte udma descriptor (aws-neuron-driver `union udma_desc`): a length/control word, a
/// metadata word and a buffer address. A copy is a pair: the M2S (source) descriptor says where to
/// read, the S2M (destination) one where to write, in the same slot of the two rings.
public struct DmaDescriptor: Sendable, Equatable {
    public var lengthControl: UInt32
    public var metadata: UInt32
    public var address: UInt64

    public init(lengthControl: UInt32 = 0, metadata: UInt32 = 0, address: UInt64 = 0) {
        self.lengthControl = lengthControl
        self.metadata = metadata
        self.address = address
    }

    // Bits of lengthControl, as udma.h has them.
    public static let lengthMask: UInt32 = 0xffff      // 0 encodes 65536
    public static let ringIdShift: UInt32 = 24
    public static let ringIdMask: UInt32 = 0x3 << 24    // the phase of the lap the descriptor was written in
    public static let first: UInt32 = 1 << 26
    public static let last: UInt32 = 1 << 27
    public static let interruptEnable: UInt32 = 1 << 28
    public static let maximumBytes = 65536
    /// vtrn's DMA with compute, in bits udma leaves free: set in the S2M descriptor, the engine
    /// reads the destination, combines the arriving data into it with the ALU op of bits 16-19 in
    /// the dtype of bits 20-23, and writes it back (`incoming op destination`, rounded to the
    /// dtype). It is how the collective engine reduces as data arrive, and NKI's
    /// `dma_copy(dst_rmw_op=...)`. The length must be whole elements.
    public static let compute: UInt32 = 1 << 29
    /// With `compute`: the running value is the destination's, `destination op incoming` (a
    /// fold into an accumulator) rather than `incoming op destination`.
    public static let accumulate: UInt32 = 1 << 30
    public static func compute(_ op: AluOp, _ dtype: DataType, accumulating: Bool = false) -> UInt32 {
        compute | (accumulating ? accumulate : 0) | UInt32(op.rawValue & 0xf) << 16 | UInt32(dtype.rawValue & 0xf) << 20
    }

    public var length: Int { let field = Int(lengthControl & Self.lengthMask); return field == 0 ? 65536 : field }

    /// The ring id the hardware expects at ring position `position` (udma starts at 1).
    @inline(__always)
    public static func ringId(position: UInt64, entries: Int) -> UInt32 {
        UInt32(truncatingIfNeeded: (position / UInt64(entries) + 1) & 0x3)
    }
}

/// The registers and rings of one hardware DMA queue. The driver writes descriptors into the
/// rings and then rings the doorbell with the new tail; the engine copies, advances the head and
/// publishes the completed sequence. Positions count descriptors since the queue was set up, so
/// they never wrap; the ring slot is position modulo `entries`.
public final class DmaQueueHardware: @unchecked Sendable {
    public let core: Int
    public let engineIndex: Int
    public let queueIndex: Int
    public let entries: Int
    /// Source (M2S) and destination (S2M) rings, written only by the driver, read by the engine.
    public let sourceRing: UnsafeMutablePointer<DmaDescriptor>
    public let destinationRing: UnsafeMutablePointer<DmaDescriptor>

    // Doorbell registers (driver writes, engine reads).
    private let doorbellTail = Atomic<UInt64>(0)
    private let doorbellSequence = Atomic<UInt64>(0)
    // Completion registers (engine writes, driver reads).
    private let headRegister = Atomic<UInt64>(0)
    private let completedRegister = Atomic<UInt64>(0)
    private let bytesCompletedRegister = Atomic<UInt64>(0)
    /// Set when the queue stops (see `Stop`); the engine then leaves it alone until `restart`.
    private let stoppedRegister = Atomic<Bool>(false)
    private let stopRecord = Mutex<Stop?>(nil)
    /// The device's faults: the engine consults them once per burst (one atomic load when none is armed).
    let faults: DeviceFaults
    /// Bumped when the engine publishes a completion and someone waits: the futex word.
    private let completionWord: UnsafeMutablePointer<UInt32>
    private let waiters = Atomic<Int>(0)

    /// Set while attached; the engine outlives its queues (the device holds both).
    private(set) var engine: Unmanaged<DmaEngineHardware>?

    func setEngine(_ engine: DmaEngineHardware?) {
        self.engine = engine.map { Unmanaged.passUnretained($0) }
    }

    init(core: Int, engine: Int, queue: Int, entries: Int, faults: DeviceFaults) {
        self.faults = faults
        self.core = core
        self.engineIndex = engine
        self.queueIndex = queue
        self.entries = entries
        sourceRing = .allocate(capacity: entries)
        sourceRing.initialize(repeating: DmaDescriptor(), count: entries)
        destinationRing = .allocate(capacity: entries)
        destinationRing.initialize(repeating: DmaDescriptor(), count: entries)
        completionWord = .allocate(capacity: 1)
        completionWord.initialize(to: 0)
    }

    deinit {
        sourceRing.deallocate()
        destinationRing.deallocate()
        completionWord.deallocate()
    }

    // MARK: Driver side

    /// Publishes descriptors up to `tail` (a position) as sequence `sequence`, and wakes the engine.
    public func ringDoorbell(tail: UInt64, sequence: UInt64) {
        doorbellTail.store(tail, ordering: .sequentiallyConsistent)
        doorbellSequence.store(sequence, ordering: .sequentiallyConsistent)
        engine?._withUnsafeGuaranteedRef { $0.notify() }
    }

    /// Descriptors the engine has finished (a position).
    public var head: UInt64 { headRegister.load(ordering: .acquiring) }
    public var completedSequence: UInt64 { completedRegister.load(ordering: .acquiring) }
    public var bytesCompleted: UInt64 { bytesCompletedRegister.load(ordering: .relaxed) }
    /// Why and where a queue stopped. The engine stops a queue at a descriptor it refuses or that
    /// an injected fault hits; the device stops every queue when it is reset or lost. A stopped
    /// queue does nothing until the driver restarts it (`restart`).
    public struct Stop: Sendable, Equatable {
        public enum Reason: Sendable, Equatable {
            /// A descriptor from another lap, or a mismatched pair: udma aborts the queue.
            case descriptorError
            /// An injected descriptor error (`Fault.Kind.dmaAbort`); the fault's label.
            case aborted(fault: String)
            /// The descriptor read HBM bytes [address, address + length) over an uncorrectable error.
            case hbmUncorrectable(address: UInt64, length: Int, fault: String)
            /// The descriptor never completes (`Fault.Kind.dmaHang`).
            case hung(fault: String)
            /// The device was reset.
            case reset
            /// The device was lost; why.
            case deviceLost(String)
        }
        /// The descriptor it stopped at (for a reset or a loss, the first one not done).
        public let position: UInt64
        public let reason: Reason
        /// When it stopped (CLOCK_MONOTONIC, ns): a hang counts from here.
        public let time: UInt64
    }

    public var isStopped: Bool { stoppedRegister.load(ordering: .acquiring) }
    public var stop: Stop? { isStopped ? stopRecord.withLock { $0 } : nil }

    /// Stops the queue (engine or device side) and wakes its waiters. The first stop stands, but a
    /// reset replaces a hang (it ends the hang). True if this call stopped it or changed why.
    @discardableResult
    func stop(at position: UInt64, _ reason: Stop.Reason) -> Bool {
        // The register changes with the record, under its lock, so that a restart racing a stop
        // leaves the two agreeing.
        let changed = stopRecord.withLock { record in
            if let existing = record {
                guard case .hung = existing.reason, reason == .reset else { return false }
            }
            record = Stop(position: position, reason: reason, time: vtrnsys_monotonic_ns())
            stoppedRegister.store(true, ordering: .sequentiallyConsistent)
            return true
        }
        guard changed else { return false }
        wakeWaiters()
        return true
    }

    /// The driver's queue reset (udma_q_reset) of a stopped queue: the engine resumes with an
    /// empty queue whose head is `position`, and sequence `sequence` counts as completed (the
    /// driver fails the sequences that did not complete). The engine is waited out of any burst
    /// it may still be in, so it never sees a half-set queue.
    public func restart(at position: UInt64, sequence: UInt64, quiesce: Bool = true) {
        precondition(isStopped, "restart of a queue that has not stopped")
        if quiesce { engine?._withUnsafeGuaranteedRef { $0.quiesce() } }
        headRegister.store(position, ordering: .releasing)
        doorbellTail.store(position, ordering: .sequentiallyConsistent)
        doorbellSequence.store(sequence, ordering: .sequentiallyConsistent)
        completedRegister.store(sequence, ordering: .sequentiallyConsistent)
        stopRecord.withLock { record in
            record = nil
            stoppedRegister.store(false, ordering: .sequentiallyConsistent)
        }
    }

    public enum WaitResult: Sendable { case completed, timedOut, stopped }

    /// Waits until `sequence` completes or the queue stops: spins briefly (completions of short
    /// transfers arrive in microseconds, and waking a sleeping thread costs tens), then sleeps on
    /// the futex. A hung queue counts as stopped once it has hung for `hangTimeoutNanoseconds`
    /// (nil: never; a reset still ends the hang), as the driver's DMA completion timeout.
    public func wait(for sequence: UInt64, timeoutNanoseconds: UInt64, hangTimeoutNanoseconds: UInt64? = nil) -> WaitResult {
        // Whether the stop ends the wait now, and if not, when a hang will.
        func stopEnds(at now: UInt64) -> (ends: Bool, hangExpiry: UInt64?) {
            guard let stop else { return (false, nil) } // restarted meanwhile
            guard case .hung = stop.reason else { return (true, nil) }
            guard let hang = hangTimeoutNanoseconds else { return (false, nil) }
            let expiry = stop.time &+ hang < stop.time ? UInt64.max : stop.time &+ hang
            return (now >= expiry, expiry)
        }
        if completedSequence >= sequence { return .completed }
        let start = vtrnsys_monotonic_ns()
        if isStopped && stopEnds(at: start).ends { return .stopped }
        if timeoutNanoseconds == 0 { return .timedOut }
        let deadline = timeoutNanoseconds == .max ? UInt64.max : start &+ timeoutNanoseconds
        let spinUntil = min(deadline, start + DmaEngineHardware.waiterSpinNanoseconds)
        var spins = 0
        while !isStopped {
            if completedSequence >= sequence { return .completed }
            spins += 1
            if spins & 63 == 0 && vtrnsys_monotonic_ns() >= spinUntil { break }
            vtrnsys_cpu_relax()
        }
        waiters.add(1, ordering: .sequentiallyConsistent)
        defer { waiters.subtract(1, ordering: .sequentiallyConsistent) }
        while true {
            let word = vtrnsys_load_u32(completionWord)
            if completedSequence >= sequence { return .completed }
            let now = vtrnsys_monotonic_ns()
            var wakeAt = deadline
            if isStopped {
                let (ends, hangExpiry) = stopEnds(at: now)
                if ends { return .stopped }
                if let hangExpiry { wakeAt = min(wakeAt, hangExpiry) }
            }
            if now >= deadline { return .timedOut }
            _ = vtrnsys_futex_wait(completionWord, word, wakeAt == .max ? .max : wakeAt - now)
        }
    }

    // MARK: Engine side

    /// Whether the doorbell has published work the engine has not done.
    var hasWork: Bool {
        if stoppedRegister.load(ordering: .sequentiallyConsistent) { return false }
        return doorbellTail.load(ordering: .sequentiallyConsistent) != headRegister.load(ordering: .relaxed)
            || doorbellSequence.load(ordering: .sequentiallyConsistent) != completedRegister.load(ordering: .relaxed)
    }

    /// Copies up to `burst` descriptors; true if it did anything.
    func serve(burst: Int) -> Bool {
        // Sequentially consistent: a reset stops the queue, then waits for the engine's serving
        // epoch (`DmaEngineHardware.quiesce`); one of the two sees the other.
        if stoppedRegister.load(ordering: .sequentiallyConsistent) { return false }
        // Zero unless a fault is armed or the device is lost: then the armed list, once per burst.
        var armed: [ArmedFault] = []
        let attention = faults.attention.load(ordering: .sequentiallyConsistent)
        if attention != 0 {
            if attention & DeviceFaults.lostBit != 0 {
                // A lost device moves nothing; its waiters learn it from the stop.
                if hasWork { stop(at: head, .deviceLost(faults.loss ?? "lost")) }
                return false
            }
            armed = faults.armed
        }
        let sequence = doorbellSequence.load(ordering: .acquiring)
        let tail = doorbellTail.load(ordering: .acquiring)
        var position = headRegister.load(ordering: .relaxed)
        if position == tail {
            if completedRegister.load(ordering: .relaxed) != sequence { publish(sequence) ; return true }
            return false
        }
        let end = min(tail, position + UInt64(burst))
        var slot = Int(position % UInt64(entries))
        var bytes: UInt64 = 0
        while position < end {
            let source = sourceRing[slot], destination = destinationRing[slot]
            let ringId = DmaDescriptor.ringId(position: position, entries: entries)
            guard (source.lengthControl & DmaDescriptor.ringIdMask) >> DmaDescriptor.ringIdShift == ringId,
                  (destination.lengthControl & DmaDescriptor.ringIdMask) >> DmaDescriptor.ringIdShift == ringId,
                  source.length == destination.length,
                  let to = UnsafeMutableRawPointer(bitPattern: UInt(destination.address)),
                  let from = UnsafeRawPointer(bitPattern: UInt(source.address))
            else {
                // A descriptor from another lap, or a mismatched pair: udma aborts the queue.
                faults.counters.dmaAborts.add(1, ordering: .relaxed)
                return stopMidBurst(at: position, bytes: bytes, .descriptorError)
            }
            let length = source.length
            if !armed.isEmpty, let reason = injectedFault(armed, reading: from, length: length) {
                return stopMidBurst(at: position, bytes: bytes, reason)
            }
            if !peers.isEmpty, let reason = peerHbmError(reading: from, length: length,
                                                         destination: destination.lengthControl & DmaDescriptor.compute != 0 ? to : nil) {
                return stopMidBurst(at: position, bytes: bytes, reason)
            }
            if destination.lengthControl & DmaDescriptor.compute != 0 {
                guard Self.combine(destination.lengthControl, into: to, from, length) else {
                    faults.counters.dmaAborts.add(1, ordering: .relaxed)
                    return stopMidBurst(at: position, bytes: bytes, .descriptorError)
                }
            } else {
                memcpy(to, from, length)
            }
            bytes += UInt64(length)
            position += 1
            slot += 1
            if slot == entries { slot = 0 }
        }
        bytesCompletedRegister.add(bytes, ordering: .relaxed)
        _ = engine?._withUnsafeGuaranteedRef { $0.bytesServed.add(bytes, ordering: .relaxed) }
        headRegister.store(position, ordering: .releasing)
        if position == tail { publish(sequence) }
        return true
    }

    /// A compute descriptor's work: false when its op, dtype or length is not one the engine does.
    private static func combine(_ control: UInt32, into destination: UnsafeMutableRawPointer, _ source: UnsafeRawPointer,
                                _ length: Int) -> Bool {
        guard let op = AluOp(rawValue: Int(control >> 16 & 0xf)), CollectiveOperation.reductionOps.contains(op),
              let dtype = DataType(rawValue: Int(control >> 20 & 0xf)), length % dtype.size == 0 else { return false }
        let accumulating = control & DmaDescriptor.accumulate != 0
        if dtype == .fp32 {
            // In place, no conversions: the common case, at memory speed.
            Reduction.combine(op, destination.assumingMemoryBound(to: Float.self), source.assumingMemoryBound(to: Float.self),
                              length / 4, reversed: !accumulating)
            return true
        }
        let inputs = accumulating ? [UnsafeRawPointer(destination), source] : [source, UnsafeRawPointer(destination)]
        Reduction.fold(CollectiveOperation(kind: .allReduce, dtype: dtype, op: op, count: 0), inputs: inputs, outputs: [destination],
                       count: length / dtype.size)
        return true
    }

    /// For a queue its submitter serves itself (a core's CC ring, `CollectiveRing`): publishes the
    /// descriptors up to `tail` as `sequence` and runs them on the calling thread, with the same
    /// code as an engine, until they are done or the queue stops.
    func serveInline(tail: UInt64, sequence: UInt64) {
        doorbellTail.store(tail, ordering: .sequentiallyConsistent)
        doorbellSequence.store(sequence, ordering: .sequentiallyConsistent)
        while !isStopped && completedSequence != sequence {
            _ = serve(burst: DmaEngineHardware.burst)
        }
    }

    private func publish(_ sequence: UInt64) {
        completedRegister.store(sequence, ordering: .sequentiallyConsistent)
        wakeWaiters()
    }

    private func wakeWaiters() {
        if waiters.load(ordering: .sequentiallyConsistent) > 0 {
            _ = vtrnsys_add_u32(completionWord, 1)
            _ = vtrnsys_futex_wake(completionWord, Int32.max)
        }
    }

    /// Stops at `position` after the burst's descriptors before it (`bytes` of them) completed.
    private func stopMidBurst(at position: UInt64, bytes: UInt64, _ reason: Stop.Reason) -> Bool {
        bytesCompletedRegister.add(bytes, ordering: .relaxed)
        headRegister.store(position, ordering: .releasing)
        stop(at: position, reason)
        return true
    }

    /// The armed fault that the descriptor at hand hits, if any: a DMA abort or hang that targets
    /// this queue and whose count is reached, or an uncorrectable HBM error under its source.
    private func injectedFault(_ armed: [ArmedFault], reading source: UnsafeRawPointer, length: Int) -> Stop.Reason? {
        for fault in armed {
            switch fault.fault.kind {
            case .dmaAbort(let target) where target.matches(self):
                guard fault.fires() else { continue }
                faults.counters.dmaAborts.add(1, ordering: .relaxed)
                if !fault.fault.sticky { faults.retire(fault) }
                return .aborted(fault: fault.label)
            case .dmaHang(let target) where target.matches(self):
                guard fault.fires() else { continue }
                faults.counters.hangs.add(1, ordering: .relaxed)
                if !fault.fault.sticky { faults.retire(fault) }
                return .hung(fault: fault.label)
            default:
                continue
            }
        }
        if peers.isEmpty, let (fault, address) = faults.hbmError(in: armed, reading: UInt(bitPattern: source), length: length) {
            return .hbmUncorrectable(address: address, length: length, fault: fault.label)
        }
        return nil
    }

    /// For a CC ring: the devices whose HBM its descriptors read (every member's of the
    /// collective, its own too), whose uncorrectable errors hit it. Set by its one user.
    var peers: [DeviceFaults] = []

    /// An uncorrectable error of a peer's HBM under the descriptor's source (or, for a compute
    /// descriptor, its destination, which it reads too).
    private func peerHbmError(reading source: UnsafeRawPointer, length: Int, destination: UnsafeMutableRawPointer?) -> Stop.Reason? {
        for peer in peers where peer.attention.load(ordering: .relaxed) != 0 {
            let armed = peer.armed
            let hit = peer.hbmError(in: armed, reading: UInt(bitPattern: source), length: length)
                ?? destination.flatMap { peer.hbmError(in: armed, reading: UInt(bitPattern: $0), length: length) }
            if let (fault, address) = hit {
                return .hbmUncorrectable(address: address, length: length, fault: "\(fault.label) in the HBM of device \(peer.deviceIndex)")
            }
        }
        return nil
    }
}

/// One DMA engine: a host thread that serves its queues round robin, started when its first queue
/// is attached and stopped when its last one is detached. It spins briefly after work (more is
/// likely to follow) and then sleeps on a futex until a doorbell wakes it, so an idle engine costs
/// no CPU.
public final class DmaEngineHardware: @unchecked Sendable {
    public let name: String
    public let numaNode: Int
    /// How long an idle engine spins before sleeping, and how long a waiter spins. Waking a
    /// sleeping thread costs 40-60 us on these VMs (SWIFT-C-ABI.md): a waiter must outlast one
    /// wake-up, and the engine must outlast the waiter's reaction to a completion plus one
    /// wake-up, or the two settle into waking each other every time.
    public static let engineSpinNanoseconds: UInt64 = 250_000
    public static let waiterSpinNanoseconds: UInt64 = 100_000
    /// Descriptors served from one queue before moving to the next (1 MiB at 64 KiB each).
    static let burst = 16

    /// Guarded by the mutex. Each thread serves the generation it was started for and exits when
    /// the generation moves on, so a thread being stopped and one being started never mix up.
    private struct State {
        var queues: [DmaQueueHardware] = []
        var thread: UInt64?
        var running = false
        var generation = 0
    }

    private let state = Mutex(State())
    /// Bytes this engine has moved since the device was made, over all its queues (for monitors).
    public let bytesServed = Atomic<UInt64>(0)
    /// Serialises attach and detach, which start and join threads outside `state`'s lock.
    private let lifecycle = Mutex(())
    private let epoch = Atomic<Int>(0)
    /// Odd while the thread is in a round over its queues, even between rounds: `quiesce` waits
    /// on it. Two atomic increments per round.
    private let servingEpoch = Atomic<UInt64>(0)
    private let sleeping = Atomic<Bool>(false)
    private let wakeWord: UnsafeMutablePointer<UInt32>

    init(name: String, numaNode: Int) {
        self.name = name
        self.numaNode = numaNode
        wakeWord = .allocate(capacity: 1)
        wakeWord.initialize(to: 0)
    }

    deinit { wakeWord.deallocate() }

    /// Adds a queue; starts the engine's thread for its first one. Attach and detach are
    /// serialised (a thread is started and recorded, or stopped and joined, under one lock).
    func attach(_ queue: DmaQueueHardware) -> Bool {
        queue.setEngine(self)
        return lifecycle.withLock { _ in
            let start: Int? = state.withLock { state in
                state.queues.append(queue)
                guard !state.running else { return nil }
                state.running = true
                state.generation += 1
                return state.generation
            }
            epoch.add(1, ordering: .sequentiallyConsistent)
            guard let generation = start else {
                notify()
                return true
            }
            let context = Unmanaged.passRetained(Start(engine: self, generation: generation)).toOpaque()
            var thread: UInt64 = 0
            let result = vtrnsys_thread_start({ context in
                let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
                start.engine.run(generation: start.generation)
            }, context, name, &thread)
            guard result == 0 else {
                Unmanaged<Start>.fromOpaque(context).release()
                state.withLock { state in
                    state.queues.removeAll { $0 === queue }
                    state.running = false
                }
                return false
            }
            state.withLock { $0.thread = thread }
            return true
        }
    }

    private final class Start: Sendable {
        let engine: DmaEngineHardware
        let generation: Int
        init(engine: DmaEngineHardware, generation: Int) {
            self.engine = engine
            self.generation = generation
        }
    }

    /// Removes a queue (its submitted work must be finished); stops and joins the thread after the last one.
    func detach(_ queue: DmaQueueHardware) {
        lifecycle.withLock { _ in
            let thread: UInt64? = state.withLock { state in
                state.queues.removeAll { $0 === queue }
                guard state.queues.isEmpty, state.running, let thread = state.thread else { return nil }
                state.thread = nil
                state.running = false
                state.generation += 1
                return thread
            }
            epoch.add(1, ordering: .sequentiallyConsistent)
            notify(force: true)
            if let thread { _ = vtrnsys_thread_join(thread) }
        }
    }

    /// Returns once the thread is outside the round it may be in: a queue stopped before the call
    /// is not touched by the engine after it (its next round sees the stop).
    func quiesce() {
        let seen = servingEpoch.load(ordering: .sequentiallyConsistent)
        if seen & 1 == 0 { return }
        var spins = 0
        while servingEpoch.load(ordering: .sequentiallyConsistent) == seen {
            spins += 1
            if spins < 4096 { vtrnsys_cpu_relax() } else { usleep(20) }
        }
    }

    /// Called after a doorbell: wakes the thread if it sleeps.
    @inline(__always)
    func notify(force: Bool = false) {
        if force || sleeping.load(ordering: .sequentiallyConsistent) {
            _ = vtrnsys_add_u32(wakeWord, 1)
            _ = vtrnsys_futex_wake(wakeWord, 1)
        }
    }

    private func run(generation: Int) {
        _ = vtrnsys_run_on_node(Int32(numaNode))
        // Unretained: the state's array holds the queues while the epoch is unchanged, and the
        // engine loop must not pay a retain and release per queue per round.
        var queues: [Unmanaged<DmaQueueHardware>] = []
        var holding: [DmaQueueHardware] = []
        var seenEpoch = -1
        var next = 0
        var idleSince: UInt64 = 0
        var idleRounds = 0
        while true {
            let currentEpoch = epoch.load(ordering: .sequentiallyConsistent)
            if currentEpoch != seenEpoch {
                let (current, live) = state.withLock { ($0.queues, $0.generation == generation) }
                if !live { return }
                holding = current
                queues = holding.map { Unmanaged.passUnretained($0) }
                seenEpoch = currentEpoch
            }
            var didWork = false
            if !queues.isEmpty {
                servingEpoch.add(1, ordering: .sequentiallyConsistent)
                for offset in 0..<queues.count {
                    let queue = queues[(next + offset) % queues.count]
                    if queue._withUnsafeGuaranteedRef({ $0.serve(burst: Self.burst) }) { didWork = true }
                }
                servingEpoch.add(1, ordering: .sequentiallyConsistent)
                next = (next + 1) % queues.count
            }
            if didWork {
                idleRounds = 0
                continue
            }
            // Idle: spin for a while, since a doorbell usually follows a completion soon.
            if idleRounds == 0 { idleSince = vtrnsys_monotonic_ns() }
            idleRounds += 1
            if idleRounds & 63 != 0 || vtrnsys_monotonic_ns() - idleSince < Self.engineSpinNanoseconds {
                vtrnsys_cpu_relax()
                continue
            }
            // Sleep until a doorbell or a change of queues. The flag is set before the last check
            // and the doorbell stores before it reads the flag, so one of the two sees the other.
            let word = vtrnsys_load_u32(wakeWord)
            sleeping.store(true, ordering: .sequentiallyConsistent)
            if epoch.load(ordering: .sequentiallyConsistent) == seenEpoch
                && !queues.contains(where: { $0._withUnsafeGuaranteedRef(\.hasWork) }) {
                _ = vtrnsys_futex_wait(wakeWord, word, .max)
            }
            sleeping.store(false, ordering: .sequentiallyConsistent)
            idleRounds = 0
        }
    }
}
