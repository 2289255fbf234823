import Synchronization

/// One virtual Trainium chip: the hardware side that the runtime drives. It knows nothing of
/// handles, C, or runtimes; it is told its preset and where on the host it sits, and offers what
/// a driver sees of a chip: HBM, DMA engines with their queues' rings and doorbells.
public final class VirtualDevice: Sendable {
    public let preset: ChipPreset
    /// Position on the virtual PCI bus, as `/dev/neuron<index>`.
    public let index: Int
    /// The host NUMA node whose memory backs this device's HBM and whose CPUs run its engines.
    public let numaNode: Int
    public let hbm: HighBandwidthMemory
    /// The engines of every core (core * dmaEnginesPerCore + engine), then the host engines.
    private let engines: [DmaEngineHardware]
    /// Open hardware queues, by `queueKey`.
    private let openQueues = Mutex<Set<Int>>([])
    /// Every open queue, the host engines' too: a reset or a loss stops them all.
    private let liveQueues = Mutex<[ObjectIdentifier: DmaQueueHardware]>([:])
    /// Armed faults, loss, resets and error counters.
    public let faults: DeviceFaults
    private let nextHostQueue = Atomic<Int>(0)
    /// Each core's command queue, for kernel executions.
    public let commandQueues: [CoreCommandQueue]
    /// Each core's CC ring, the DMA queue its collectives move data with.
    public let collectiveRings: [CollectiveRing]

    /// Engines that move data between host and device for the runtime itself (tensor reads and
    /// writes), beside the cores' own: trn1 has 2 per chip.
    public static let hostEngineCount = 2

    public struct CreationError: Error, Sendable { public let message: String }

    public init(preset: ChipPreset, index: Int, numaNode: Int) throws(CreationError) {
        guard let hbm = HighBandwidthMemory(capacity: preset.hbmBytes, numaNode: numaNode) else {
            throw CreationError(message: "cannot reserve \(preset.hbmBytes >> 30) GiB of address space for device \(index)'s HBM "
                                + "(check `ulimit -v` and vm.overcommit_memory)")
        }
        self.preset = preset
        self.index = index
        self.numaNode = numaNode
        self.hbm = hbm
        let faults = DeviceFaults(deviceIndex: index, hbmBase: hbm.base, hbmCapacity: hbm.capacity)
        self.faults = faults
        var engines: [DmaEngineHardware] = []
        for core in 0..<preset.coresPerDevice {
            for engine in 0..<preset.dmaEnginesPerCore {
                engines.append(DmaEngineHardware(name: "vtrn\(index)c\(core)e\(engine)", numaNode: numaNode))
            }
        }
        for engine in 0..<Self.hostEngineCount {
            engines.append(DmaEngineHardware(name: "vtrn\(index)h\(engine)", numaNode: numaNode))
        }
        self.engines = engines
        var rings: [CollectiveRing] = []
        for core in 0..<preset.coresPerDevice {
            let engine = preset.dmaEnginesPerCore - 1
            let hardware = DmaQueueHardware(core: core, engine: engine, queue: CollectiveRing.queueIndex, entries: CollectiveRing.entries,
                                            faults: faults)
            // Not served by the engine's thread (the rank's thread serves it), but counted with its bytes.
            hardware.setEngine(engines[core * preset.dmaEnginesPerCore + engine])
            rings.append(CollectiveRing(hardware: hardware))
        }
        collectiveRings = rings
        liveQueues.withLock { live in for ring in rings { live[ObjectIdentifier(ring.hardware)] = ring.hardware } }
        commandQueues = (0..<preset.coresPerDevice).map {
            CoreCommandQueue(preset: preset, name: "vtrn\(index)core\($0)", numaNode: numaNode, core: $0, faults: faults)
        }
    }

    deinit {
        for queue in commandQueues { queue.shutdown() }
    }

    /// PCI bus/device/function, one bus per device like a trn1.32xlarge's: "0000:10:1e.0".
    public var busAddress: String {
        let bus = 0x10 + index
        return "0000:" + hex(bus, width: 2) + ":1e.0"
    }

    private func queueKey(core: Int, engine: Int, queue: Int) -> Int {
        (core * preset.dmaEnginesPerCore + engine) * preset.queuesPerDmaEngine + queue
    }

    /// Sets up hardware queue (core, engine, queue) with rings of `entries` descriptors; nil when it
    /// is set up already (udma_q_init's -EIO). Arguments must be in range.
    public func openQueue(core: Int, engine: Int, queue: Int, entries: Int) -> DmaQueueHardware? {
        precondition(core < preset.coresPerDevice && engine < preset.dmaEnginesPerCore && queue < preset.queuesPerDmaEngine)
        let key = queueKey(core: core, engine: engine, queue: queue)
        guard openQueues.withLock({ $0.insert(key).inserted }) else { return nil }
        let hardware = DmaQueueHardware(core: core, engine: engine, queue: queue, entries: entries, faults: faults)
        liveQueues.withLock { $0[ObjectIdentifier(hardware)] = hardware }
        guard engines[core * preset.dmaEnginesPerCore + engine].attach(hardware) else {
            liveQueues.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(hardware)) }
            openQueues.withLock { _ = $0.remove(key) }
            return nil
        }
        return hardware
    }

    /// A queue on one of the host engines, for the runtime's own copies; any number may be open.
    public func openHostQueue(entries: Int) -> DmaQueueHardware? {
        let number = nextHostQueue.add(1, ordering: .relaxed).newValue
        let engine = number % Self.hostEngineCount
        let hardware = DmaQueueHardware(core: -1, engine: engine, queue: number, entries: entries, faults: faults)
        liveQueues.withLock { $0[ObjectIdentifier(hardware)] = hardware }
        guard engines[preset.coresPerDevice * preset.dmaEnginesPerCore + engine].attach(hardware) else {
            liveQueues.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(hardware)) }
            return nil
        }
        return hardware
    }

    /// Bytes moved by each DMA engine since the device was made: the cores' engines (core *
    /// dmaEnginesPerCore + engine), then the host engines. For monitors.
    public var dmaBytesPerEngine: [UInt64] { engines.map { $0.bytesServed.load(ordering: .relaxed) } }

    /// Tears a queue down; its submitted work must have completed (or the queue stopped).
    public func closeQueue(_ queue: DmaQueueHardware) {
        liveQueues.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(queue)) }
        if queue.core < 0 {
            engines[preset.coresPerDevice * preset.dmaEnginesPerCore + queue.engineIndex].detach(queue)
            return
        }
        engines[queue.core * preset.dmaEnginesPerCore + queue.engineIndex].detach(queue)
        openQueues.withLock { _ = $0.remove(queueKey(core: queue.core, engine: queue.engineIndex, queue: queue.queueIndex)) }
    }
}

extension VirtualDevice {
    /// Arms `fault` (its targets checked against the device by the caller). A device loss stops
    /// every queue at once; running executions stop at their next instruction, queued ones never
    /// run, and hung ones wake to fail.
    @discardableResult
    public func inject(_ fault: Fault) -> ArmedFault {
        let armed = faults.arm(fault)
        if case .deviceLoss = fault.kind, let loss = faults.loss {
            for queue in liveQueues.withLock({ Array($0.values) }) { queue.stop(at: queue.head, .deviceLost(loss)) }
            faults.wakeHungInstructions()
        }
        return armed
    }

    /// Resets the device: faults are disarmed and a loss is cleared; every DMA queue stops (its
    /// driver fails the sequences in flight and restarts it on its next use); executions queued or
    /// running fail at their next instruction (a hung one at once), and SBUF and PSUM read as NaN
    /// again. Returns once no engine touches a stopped queue and no execution from before the
    /// reset is left. HBM and its allocations are untouched.
    public func reset(clearingCounters: Bool) {
        let generation = faults.clearForReset(clearingCounters: clearingCounters)
        for queue in liveQueues.withLock({ Array($0.values) }) { queue.stop(at: queue.head, .reset) }
        for engine in engines { engine.quiesce() }
        for queue in commandQueues { queue.waitForExecutions(before: generation) }
    }
}

func hex(_ value: Int, width: Int) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}
