import CVtrnSystem
import Synchronization
import VtrnDevice

#if canImport(Glibc)
import Glibc
#endif

/// A runtime: the virtual devices of one topology, and everything made from them.
///
/// ```swift
/// let runtime = try Runtime(options: RuntimeOptions(topology: "trn1,trn2"))
/// for device in runtime.devices { print(device.info.name, device.info.coreCount) }
/// runtime.close()
/// ```
///
/// Creating a runtime claims no core, so several may live in one process. `close()` releases
/// everything the runtime owns; its objects then fail with `Status.invalidHandle`. A runtime that
/// is no longer referenced is closed too.
public final class Runtime: Sendable {
    public let configuration: RuntimeConfiguration
    /// The host's NUMA layout the runtime was built for.
    public let host: HostTopology
    let deviceRecords: [DeviceRecord]
    /// Collects the trace when VTRN_TRACE names a file.
    let tracer: Tracer?
    /// A number unique in this process, for messages ("runtime 3").
    public let serial: Int
    let state: RuntimeState
    /// Whether this runtime counts for the process's monitor segment (`vtrn top`).
    private let publishesCounters: Bool

    public var log: Logger { state.log }

    private static let serials = Atomic<Int>(0)

    /// Builds a runtime from options over the process environment over defaults.
    /// `environment` and `host` replace the process's own, for tests.
    public init(options: RuntimeOptions = RuntimeOptions(), environment: [String: String]? = nil,
                host: HostTopology? = nil) throws(VtrnError) {
        let host = host ?? HostTopology.current()
        let environment = environment ?? RuntimeConfiguration.processEnvironment()
        let configuration = try RuntimeConfiguration.resolve(options: options, environment: environment, host: host)
        let monitorPeriod = try MonitorPublisher.period(environment: environment)
        let serial = Runtime.serials.add(1, ordering: .relaxed).newValue
        let state = RuntimeState(serial: serial, log: Logger(level: configuration.logLevel, label: "runtime \(serial)"))
        var records: [DeviceRecord] = []
        var firstCore = 0
        for (index, entry) in configuration.topology.devices.enumerated() {
            let shared = try SharedDevice.device(index: index, preset: entry.architecture.preset,
                                                 numaNode: configuration.deviceNodes[index])
            records.append(DeviceRecord(shared: shared, firstCore: firstCore, configuration: configuration))
            firstCore += entry.architecture.preset.coresPerDevice
        }
        self.configuration = configuration
        self.host = host
        self.deviceRecords = records
        tracer = configuration.tracePath.map { Tracer(path: $0, serial: serial, devices: records.map(\.shared.hardware)) }
        self.serial = serial
        self.state = state
        MonitorPublisher.shared.runtimeOpened(periodMilliseconds: monitorPeriod)
        publishesCounters = monitorPeriod > 0
        state.log(.info, "created: topology \(configuration.topology), visible cores \(configuration.visibleCores), "
                  + "NUMA nodes \(configuration.deviceNodes)")
        for entry in configuration.faults {
            let armed = records[entry.device].shared.hardware.inject(entry.fault)
            state.log(.info, "device \(entry.device): \(armed.label) armed (VTRN_FAULTS)")
        }

    }

    /// Every object made from a runtime keeps it alive; when none is left, it closes itself.
    deinit { close() }

    /// The runtime's devices, in topology order. Each keeps the runtime alive.
    public var devices: [Device] { deviceRecords.map { Device(runtime: self, record: $0) } }

    /// Releases everything the runtime owns: waits for its queues' submitted transfers, closes the
    /// queues, frees its device memory, and gives up its cores. Its host buffers and memory blocks
    /// then refuse use; a buffer's pages are unmapped when it is no longer referenced. Idempotent.
    public func close() {
        guard state.close() else { return }
        // Submissions that saw the runtime open finish first, so that nothing is queued after the
        // queues below are drained.
        state.waitForSubmissions()
        for resource in state.takeResources() { resource.close() }
        for record in deviceRecords {
            // Executions on this runtime's cores use its memory: let them finish first. A hung one
            // stops hanging (it would wait for its timeout, or forever without one).
            for core in record.shared.cores(claimedBy: serial) {
                record.shared.hardware.commandQueues[core].cancelHangs()
                record.shared.hardware.commandQueues[core].drain()
            }
            record.shared.hardware.hbm.freeAll(owner: serial)
            record.shared.releaseClaims(of: serial)
        }
        if publishesCounters { MonitorPublisher.shared.runtimeClosed() }
        if let tracer {
            do {
                let path = try tracer.write()
                state.log(.info, "trace written to \(path)")
            } catch {
                state.log(.error, error.message)
            }
        }
        state.log(.info, "closed")
    }

    public var isClosed: Bool { state.isClosed }

    /// The device at `index`, or `Status.notFound` saying how many there are.
    public func device(_ index: Int) throws(VtrnError) -> Device {
        try state.checkOpen()
        guard index >= 0 && index < deviceRecords.count else {
            throw .notFound("device \(index) does not exist: the topology \"\(configuration.topology)\" has "
                            + "\(counted(deviceRecords.count, "device")) \(indexRange(deviceRecords.count, "device"))")
        }
        return Device(runtime: self, record: deviceRecords[index])
    }

    public var coreCount: Int { configuration.coreCount }
}

/// Something a runtime owns and releases when it closes.
protocol RuntimeResource: AnyObject, Sendable {
    /// Releases the resource; idempotent. Queues are closed before memory (see `order`).
    func close()
    /// Lower closes first.
    var closeOrder: Int { get }
}

struct WeakResource: @unchecked Sendable {
    weak var resource: (any RuntimeResource)?
}

/// What a runtime's objects share: whether it is still open, its log, and what it owns.
final class RuntimeState: Sendable {
    let serial: Int
    let log: Logger
    private let closed = Atomic<Bool>(false)
    /// Calls between their check that the runtime is open and the end of their submission.
    private let submissions = Atomic<Int>(0)
    /// Held weakly: each resource keeps the runtime alive, not the other way round.
    private let resources = Mutex<[ObjectIdentifier: WeakResource]>([:])

    /// Records a new resource, or fails if the runtime was closed meanwhile.
    func adopt(_ resource: any RuntimeResource) throws(VtrnError) {
        let adopted = resources.withLock { resources in
            guard !isClosed else { return false }
            resources[ObjectIdentifier(resource)] = WeakResource(resource: resource)
            return true
        }
        if !adopted { throw VtrnError(.invalidHandle, "runtime \(serial) was destroyed") }
    }

    func release(_ resource: any RuntimeResource) {
        resources.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(resource)) }
    }

    /// Everything owned, in close order, and forgets it (closing is the caller's).
    func takeResources() -> [any RuntimeResource] {
        resources.withLock { resources in
            defer { resources.removeAll() }
            return resources.values.compactMap(\.resource).sorted { $0.closeOrder < $1.closeOrder }
        }
    }

    init(serial: Int, log: Logger) {
        self.serial = serial
        self.log = log
    }

    var isClosed: Bool { closed.load(ordering: .acquiring) }

    /// True for the call that closed it. Taken under the resources lock, so that no resource is
    /// adopted after the runtime closed.
    func close() -> Bool { resources.withLock { _ in !closed.exchange(true, ordering: .acquiringAndReleasing) } }

    func checkOpen() throws(VtrnError) {
        if isClosed { throw VtrnError(.invalidHandle, "runtime \(serial) was destroyed") }
    }

    /// Runs `body`, which queues work on the runtime's memory (a transfer, an execution), only
    /// while the runtime is open, and keeps `close()` waiting until it is done: a submission
    /// either sees the runtime closed and fails, or is drained by the close (rundown protection).
    /// Both sides are sequentially consistent: the closer stores `closed` and then reads the
    /// count; the submitter adds to the count and then reads `closed`. One sees the other.
    @inline(__always)
    func submitting<Result>(_ body: () throws(VtrnError) -> Result) throws(VtrnError) -> Result {
        submissions.add(1, ordering: .sequentiallyConsistent)
        defer { submissions.subtract(1, ordering: .sequentiallyConsistent) }
        if closed.load(ordering: .sequentiallyConsistent) { throw VtrnError(.invalidHandle, "runtime \(serial) was destroyed") }
        return try body()
    }

    /// Returns once no submission that saw the runtime open is still running (after `close()`).
    func waitForSubmissions() {
        var spins = 0
        while submissions.load(ordering: .sequentiallyConsistent) > 0 {
            spins += 1
            if spins < 1000 { vtrnsys_cpu_relax() } else { usleep(20) }
        }
    }
}
