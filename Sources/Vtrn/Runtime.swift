import Synchronization
import VtrnDevice

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
    public let devices: [Device]
    /// A number unique in this process, for messages ("runtime 3").
    public let serial: Int
    let state: RuntimeState

    public var log: Logger { state.log }

    private static let serials = Atomic<Int>(0)

    /// Builds a runtime from options over the process environment over defaults.
    /// `environment` and `host` replace the process's own, for tests.
    public init(options: RuntimeOptions = RuntimeOptions(), environment: [String: String]? = nil,
                host: HostTopology? = nil) throws(VtrnError) {
        let configuration = try RuntimeConfiguration.resolve(
            options: options, environment: environment ?? RuntimeConfiguration.processEnvironment(),
            host: host ?? HostTopology.current())
        let serial = Runtime.serials.add(1, ordering: .relaxed).newValue
        let state = RuntimeState(serial: serial, log: Logger(level: configuration.logLevel, label: "runtime \(serial)"))
        var devices: [Device] = []
        var firstCore = 0
        for (index, entry) in configuration.topology.devices.enumerated() {
            let hardware = VirtualDevice(preset: entry.architecture.preset, index: index,
                                         numaNode: configuration.deviceNodes[index])
            devices.append(Device(hardware: hardware, firstCore: firstCore, configuration: configuration, state: state))
            firstCore += hardware.preset.coresPerDevice
        }
        self.configuration = configuration
        self.devices = devices
        self.serial = serial
        self.state = state
        state.log(.info, "created: topology \(configuration.topology), visible cores \(configuration.visibleCores), "
                  + "NUMA nodes \(configuration.deviceNodes)")
        if let trace = configuration.tracePath {
            state.log(.warning, "VTRN_TRACE=\"\(trace)\": this version does not write traces yet")
        }
    }

    deinit { close() }

    /// Releases everything the runtime owns. Idempotent.
    public func close() {
        guard state.close() else { return }
        state.log(.info, "closed")
    }

    public var isClosed: Bool { state.isClosed }

    /// The device at `index`, or `Status.notFound` saying how many there are.
    public func device(_ index: Int) throws(VtrnError) -> Device {
        try state.checkOpen()
        guard index >= 0 && index < devices.count else {
            throw .notFound("device \(index) does not exist: the topology \"\(configuration.topology)\" has "
                            + "\(devices.count) device\(devices.count == 1 ? "" : "s") (0-\(devices.count - 1))")
        }
        return devices[index]
    }

    public var coreCount: Int { configuration.coreCount }
}

/// What a runtime's objects share: whether it is still open, and its log.
final class RuntimeState: Sendable {
    let serial: Int
    let log: Logger
    private let closed = Atomic<Bool>(false)

    init(serial: Int, log: Logger) {
        self.serial = serial
        self.log = log
    }

    var isClosed: Bool { closed.load(ordering: .acquiring) }

    /// True for the call that closed it.
    func close() -> Bool { !closed.exchange(true, ordering: .acquiringAndReleasing) }

    func checkOpen() throws(VtrnError) {
        if isClosed { throw VtrnError(.invalidHandle, "runtime \(serial) was destroyed") }
    }
}
