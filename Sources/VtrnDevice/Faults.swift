import CVtrnSystem
import Synchronization

/// A fault to inject into a device: what breaks, where, after how many events, and whether it
/// stays armed (sticky) or fires once (one-shot). `description` is its VTRN_FAULTS spelling.
///
/// ```swift
/// // The 11th descriptor on queue 2 of DMA engine 1 of core 0 fails, once.
/// Fault(.dmaAbort(.init(core: .core(0), engine: 1, queue: 2)), after: 10)
/// ```
public struct Fault: Sendable, Equatable, CustomStringConvertible {
    /// Which cores' DMA queues a DMA fault hits: one core's, the host engines' (vtrn_memcpy), or any.
    public enum DmaCore: Sendable, Equatable {
        case any, core(Int), host
    }

    /// The DMA queues a DMA fault hits; nil engine or queue: any.
    public struct DmaTarget: Sendable, Equatable {
        public var core: DmaCore
        public var engine: Int?
        public var queue: Int?

        public init(core: DmaCore = .any, engine: Int? = nil, queue: Int? = nil) {
            self.core = core
            self.engine = engine
            self.queue = queue
        }

        func matches(_ queue: DmaQueueHardware) -> Bool {
            switch core {
            case .any: break
            case .core(let index): if queue.core != index { return false }
            case .host: if queue.core >= 0 { return false }
            }
            if let engine, queue.engineIndex != engine { return false }
            // Host queues have no fixed number (any number of them may be open): only "any" matches.
            if let wanted = self.queue, queue.core < 0 || queue.queueIndex != wanted { return false }
            return true
        }
    }

    public enum Kind: Sendable, Equatable {
        /// A descriptor error: the queue aborts at the descriptor (Neuron's DMA abort).
        case dmaAbort(DmaTarget)
        /// The descriptor never completes: the queue stalls until a timeout or a reset.
        case dmaHang(DmaTarget)
        /// An uncorrectable HBM error over [address, address + bytes) of the HBM address space:
        /// every read that reaches it fails (writes do not).
        case hbmUncorrectable(address: UInt64, bytes: UInt64)
        /// An instruction on the engine never finishes; nil core or engine: any.
        case engineHang(core: Int?, engine: Engine?)
        /// The device falls off the bus: nothing on it works until a reset.
        case deviceLoss
    }

    public var kind: Kind
    /// Events that pass before the fault fires: descriptors (DMA faults) or instructions (engine
    /// hangs) on what it targets, counted from when it is armed. Unused by the other kinds.
    public var after: UInt64
    /// Sticky: every event after `after` fails, until a reset. One-shot: only the first.
    public var sticky: Bool

    public init(_ kind: Kind, after: UInt64 = 0, sticky: Bool = false) {
        self.kind = kind
        self.after = after
        self.sticky = sticky
    }

    public var kindName: String {
        switch kind {
        case .dmaAbort: "dma-abort"
        case .dmaHang: "dma-hang"
        case .hbmUncorrectable: "hbm-ue"
        case .engineHang: "engine-hang"
        case .deviceLoss: "device-loss"
        }
    }

    /// Whether `after` and `sticky` mean something for this kind.
    public var counts: Bool {
        switch kind {
        case .dmaAbort, .dmaHang, .engineHang: true
        case .hbmUncorrectable, .deviceLoss: false
        }
    }

    /// The VTRN_FAULTS spelling without the device: "dma-abort:core=0:engine=1:queue=2:after=10:sticky".
    public var description: String {
        var parts = [kindName]
        switch kind {
        case .dmaAbort(let target), .dmaHang(let target):
            switch target.core {
            case .any: break
            case .core(let index): parts.append("core=\(index)")
            case .host: parts.append("core=host")
            }
            if let engine = target.engine { parts.append("engine=\(engine)") }
            if let queue = target.queue { parts.append("queue=\(queue)") }
        case .hbmUncorrectable(let address, let bytes):
            parts.append("address=0x\(String(address, radix: 16))")
            parts.append("bytes=\(bytes)")
        case .engineHang(let core, let engine):
            if let core { parts.append("core=\(core)") }
            if let engine { parts.append("engine=\(engine.description.lowercased())") }
        case .deviceLoss:
            break
        }
        if counts && after > 0 { parts.append("after=\(after)") }
        if sticky { parts.append("sticky") }
        return parts.joined(separator: ":")
    }
}

/// A fault while it is armed: its counter of events and whether a one-shot fault has fired.
public final class ArmedFault: Sendable {
    public let fault: Fault
    /// 1 for the first fault injected into the device, and so on: messages name faults by it.
    public let number: Int
    private let events = Atomic<UInt64>(0)
    private let fired = Atomic<Bool>(false)

    init(fault: Fault, number: Int) {
        self.fault = fault
        self.number = number
    }

    /// Counts one event on what the fault targets; true when this one fails.
    func fires() -> Bool {
        if !fault.sticky && fired.load(ordering: .relaxed) { return false }
        let before = events.add(1, ordering: .relaxed).oldValue
        if before < fault.after { return false }
        if fault.sticky { return true }
        return !fired.exchange(true, ordering: .relaxed)
    }

    /// For a read of HBM: true when it fails (a one-shot fault fires once).
    func firesOnce() -> Bool { fault.sticky || !fired.exchange(true, ordering: .relaxed) }

    /// "injected fault 2 (hbm-ue:address=0x1000:bytes=4096:sticky)"
    public var label: String { "injected fault \(number) (\(fault))" }
}

/// A device's error counters, as the Neuron driver's sysfs counters keep them per core
/// (hw_dma_abort_error, hw_hbm_ue_error, timeout, reset_req_count): they only grow, except that a
/// reset may clear them.
public final class ErrorCounters: Sendable {
    public struct Snapshot: Sendable, Equatable {
        public var dmaAborts: UInt64 = 0
        public var hbmUncorrectableErrors: UInt64 = 0
        public var executionTimeouts: UInt64 = 0
        public var hangs: UInt64 = 0
        public var deviceLosses: UInt64 = 0
        public var resets: UInt64 = 0
        public var faultsInjected: UInt64 = 0
        public init() {}
    }

    let dmaAborts = Atomic<UInt64>(0)
    let hbmUncorrectableErrors = Atomic<UInt64>(0)
    let executionTimeouts = Atomic<UInt64>(0)
    let hangs = Atomic<UInt64>(0)
    let deviceLosses = Atomic<UInt64>(0)
    let resets = Atomic<UInt64>(0)
    let faultsInjected = Atomic<UInt64>(0)

    public var snapshot: Snapshot {
        var snapshot = Snapshot()
        snapshot.dmaAborts = dmaAborts.load(ordering: .relaxed)
        snapshot.hbmUncorrectableErrors = hbmUncorrectableErrors.load(ordering: .relaxed)
        snapshot.executionTimeouts = executionTimeouts.load(ordering: .relaxed)
        snapshot.hangs = hangs.load(ordering: .relaxed)
        snapshot.deviceLosses = deviceLosses.load(ordering: .relaxed)
        snapshot.resets = resets.load(ordering: .relaxed)
        snapshot.faultsInjected = faultsInjected.load(ordering: .relaxed)
        return snapshot
    }

    func clear() {
        dmaAborts.store(0, ordering: .relaxed)
        hbmUncorrectableErrors.store(0, ordering: .relaxed)
        executionTimeouts.store(0, ordering: .relaxed)
        hangs.store(0, ordering: .relaxed)
        deviceLosses.store(0, ordering: .relaxed)
        resets.store(0, ordering: .relaxed)
        faultsInjected.store(0, ordering: .relaxed)
    }
}

/// What the hardware of one device knows of faults: the armed ones, whether the device is lost,
/// how many resets it has been through, and its error counters.
///
/// The hot paths (a DMA engine's burst of descriptors, a core's instruction) read one atomic word,
/// `attention`, which is zero unless a fault is armed or the device is lost; only then do they
/// look closer (the armed list, under a lock).
public final class DeviceFaults: @unchecked Sendable {
    public let deviceIndex: Int
    /// The device's HBM, to tell its addresses from host memory in a descriptor.
    let hbmBase: UInt
    let hbmCapacity: UInt64
    public let counters = ErrorCounters()

    static let armedBit = 1
    static let lostBit = 2

    private struct State {
        var armed: [ArmedFault] = []
        /// Why the device is lost, or nil.
        var loss: String?
    }
    private let state = Mutex(State())
    /// Zero unless something is armed (`armedBit`) or the device is lost (`lostBit`).
    let attention = Atomic<Int>(0)
    /// Bumped by each reset: work submitted before it fails with the reset.
    private let generationCounter = Atomic<UInt64>(0)
    /// Hung instructions sleep on this word; a reset, a loss or a cancellation wakes them.
    private let wakeWord: UnsafeMutablePointer<UInt32>

    init(deviceIndex: Int, hbmBase: UnsafeMutableRawPointer, hbmCapacity: UInt64) {
        self.deviceIndex = deviceIndex
        self.hbmBase = UInt(bitPattern: hbmBase)
        self.hbmCapacity = hbmCapacity
        wakeWord = .allocate(capacity: 1)
        wakeWord.initialize(to: 0)
    }

    deinit { wakeWord.deallocate() }

    public var generation: UInt64 { generationCounter.load(ordering: .acquiring) }

    /// The armed faults, in the order they were injected.
    public var armed: [ArmedFault] { state.withLock { $0.armed } }

    /// Why the device is lost, or nil when it is not.
    public var loss: String? {
        if attention.load(ordering: .relaxed) & Self.lostBit == 0 { return nil }
        return state.withLock { $0.loss }
    }

    public var isLost: Bool { attention.load(ordering: .acquiring) & Self.lostBit != 0 }

    /// Arms a fault (the caller checked its targets against the device); returns it armed. A
    /// device loss takes effect here: the caller then stops the device's queues and cores.
    @discardableResult
    func arm(_ fault: Fault) -> ArmedFault {
        state.withLock { state in
            // Numbered by the counter, so that clearing the counters numbers faults from 1 again.
            let number = Int(counters.faultsInjected.add(1, ordering: .relaxed).newValue)
            let armed = ArmedFault(fault: fault, number: number)
            if case .deviceLoss = fault.kind {
                if state.loss == nil {
                    state.loss = "lost by \(armed.label)"
                    counters.deviceLosses.add(1, ordering: .relaxed)
                }
            } else {
                state.armed.append(armed)
            }
            updateAttention(state)
            return armed
        }
    }

    /// Disarms a one-shot fault that fired.
    func retire(_ fault: ArmedFault) {
        state.withLock { state in
            state.armed.removeAll { $0 === fault }
            updateAttention(state)
        }
    }

    /// A reset's part: disarms every fault, clears the loss and moves to the next generation.
    /// Returns the new generation.
    func clearForReset(clearingCounters: Bool) -> UInt64 {
        state.withLock { state in
            state.armed.removeAll()
            state.loss = nil
            updateAttention(state)
        }
        if clearingCounters { counters.clear() } else { counters.resets.add(1, ordering: .relaxed) }
        let generation = generationCounter.add(1, ordering: .acquiringAndReleasing).newValue
        wakeHungInstructions()
        return generation
    }

    private func updateAttention(_ state: State) {
        attention.store((state.armed.isEmpty ? 0 : Self.armedBit) | (state.loss == nil ? 0 : Self.lostBit),
                        ordering: .sequentiallyConsistent)
    }

    // MARK: Hangs

    /// Wakes every instruction hung in `hang(until:)`, to look again at why it waits.
    func wakeHungInstructions() {
        _ = vtrnsys_add_u32(wakeWord, 1)
        _ = vtrnsys_futex_wake(wakeWord, Int32.max)
    }

    public enum HangEnd: Sendable, Equatable { case deadline, reset, lost, cancelled }

    /// Sleeps like a hung engine: until `deadline` (nil: none), a reset past `generation`, the
    /// device's loss, or `cancelled()`.
    func hang(until deadline: UInt64?, generation: UInt64, cancelled: () -> Bool) -> HangEnd {
        while true {
            let word = vtrnsys_load_u32(wakeWord)
            if self.generation != generation { return .reset }
            if isLost { return .lost }
            if cancelled() { return .cancelled }
            let now = vtrnsys_monotonic_ns()
            if let deadline, now >= deadline { return .deadline }
            _ = vtrnsys_futex_wait(wakeWord, word, deadline.map { $0 - now } ?? .max)
        }
    }

    // MARK: HBM

    /// The armed uncorrectable HBM error that a read of host bytes [start, start + length) hits, if
    /// any (one-shot faults fire once). `start` is a host address; only HBM addresses can hit.
    func hbmError(in armed: [ArmedFault], reading start: UInt, length: Int) -> (ArmedFault, address: UInt64)? {
        guard start >= hbmBase, length > 0 else { return nil }
        let low = UInt64(start - hbmBase)
        guard low < hbmCapacity else { return nil }
        let high = low + UInt64(length)
        for fault in armed {
            guard case .hbmUncorrectable(let address, let bytes) = fault.fault.kind else { continue }
            if low < address + bytes && address < high && fault.firesOnce() {
                counters.hbmUncorrectableErrors.add(1, ordering: .relaxed)
                if !fault.fault.sticky { retire(fault) }
                return (fault, low)
            }
        }
        return nil
    }

    /// "[0x1000, 0x2000)"
    static func range(_ address: UInt64, _ bytes: UInt64) -> String {
        "[0x\(String(address, radix: 16)), 0x\(String(address + bytes, radix: 16)))"
    }
}
