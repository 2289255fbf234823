import VtrnDevice

/// What `Device.info` reports; the fields of `vtrn_device_info_t`.
public struct DeviceInfo: Sendable, Equatable {
    public var index: Int
    public var architecture: Architecture
    public var name: String
    public var coreCount: Int
    public var firstCore: Int
    public var hbmBytes: UInt64
    public var hbmUsedBytes: UInt64
    public var hbmBandwidth: UInt64
    public var numaNode: Int
    public var pciVendorId: UInt16
    public var pciDeviceId: UInt16
    public var busAddress: String
    public var uuid: String
    public var dmaEnginesPerCore: Int
    public var queuesPerDmaEngine: Int
    public var sbufBytesPerCore: UInt64
    public var psumBytesPerCore: UInt64
    public var semaphoresPerCore: Int
    public var visibleCoreCount: Int
    /// The devices this one has a NeuronLink to, in the driver's order (`Topology.neighbors(of:)`).
    public var connectedDevices: [Int]
    /// Its NeuronLinks' figures in this topology (`Topology.interconnect(of:)`).
    public var interconnect: Interconnect
}

/// What `Device.coreInfo(_:)` reports; the fields of `vtrn_core_info_t`.
public struct CoreInfo: Sendable, Equatable {
    public struct Engines: OptionSet, Sendable, Equatable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let pe = Engines(rawValue: 1 << 0)
        public static let act = Engines(rawValue: 1 << 1)
        public static let dve = Engines(rawValue: 1 << 2)
        public static let pool = Engines(rawValue: 1 << 3)
        public static let all: Engines = [.pe, .act, .dve, .pool]
    }

    public var deviceIndex: Int
    public var index: Int
    public var globalIndex: Int
    public var visible: Bool
    public var engines: Engines
    public var sbufPartitions: Int
    public var sbufBytesPerPartition: Int
    public var psumBytesPerPartition: Int
    public var psumBanks: Int
    public var semaphores: Int
    public var dmaEngines: Int
    public var queuesPerDmaEngine: Int
    public var peClockHz: UInt64
    public var actClockHz: UInt64
    public var dveClockHz: UInt64
    public var poolClockHz: UInt64
}

/// A virtual Trainium device as one runtime sees it. It keeps its runtime alive.
public final class Device: Sendable {
    public let runtime: Runtime
    let record: DeviceRecord

    init(runtime: Runtime, record: DeviceRecord) {
        self.runtime = runtime
        self.record = record
    }

    var shared: SharedDevice { record.shared }
    var state: RuntimeState { runtime.state }
    public var hardware: VirtualDevice { record.shared.hardware }
    /// Global index of this device's core 0, as `VTRN_VISIBLE_CORES` counts.
    public var firstCore: Int { record.firstCore }
    public var cores: [CoreInfo] { record.cores }
    private var staticInfo: DeviceInfo { record.staticInfo }

    public var index: Int { hardware.index }

    /// The devices of the runtime this one has a NeuronLink to, in the driver's order: on a 4x4
    /// torus instance `[north, west, south, east]`, on a device list its ring neighbours
    /// (`Topology.neighbors(of:)`). As `neuron-ls` prints under CONNECTED DEVICES.
    public var links: [Int] { staticInfo.connectedDevices }

    /// The figures of this device's NeuronLinks in the runtime's topology (`Topology.interconnect(of:)`).
    public var interconnect: Interconnect { staticInfo.interconnect }

    /// A snapshot of the device's description and usage.
    public var info: DeviceInfo {
        get throws(VtrnError) {
            try state.checkOpen()
            var info = staticInfo
            info.hbmUsedBytes = hardware.hbm.usage.used
            return info
        }
    }

    /// The runtime's serial, for messages.
    var runtimeSerial: Int { state.serial }

    /// Checks that this runtime may use `core` and claims it (the first queue or kernel on a core
    /// does) until the runtime closes: `.invalidArgument` for a core out of range or hidden by
    /// VTRN_VISIBLE_CORES, or a lock directory that cannot be written; `.busy` when another runtime,
    /// of this process or another, holds it (the message names the holder's pid and command line).
    func claim(core: Int) throws(VtrnError) {
        try state.checkOpen()
        guard core >= 0 && core < cores.count else {
            throw .invalidArgument("device \(index) has \(cores.count) cores (0-\(cores.count - 1)); core \(core) requested")
        }
        guard cores[core].visible else {
            throw .invalidArgument("core \(core) of device \(index) (global core \(firstCore + core)) is not visible to "
                                   + "runtime \(state.serial): its visible cores are \(runtime.configuration.visibleCores) "
                                   + "(options.visible_cores or VTRN_VISIBLE_CORES)")
        }
        try shared.claim(core: core, for: state.serial, lockDirectory: runtime.configuration.lockDirectory)
    }

    /// Who holds `core` of this device, whichever core it is (visible or not): a runtime of this
    /// process or of another one (through the core's lock file in the lock directory); nil when
    /// the core is free. Asking takes no lock, so it never makes a claim fail.
    /// `Status.notFound` for a core the device lacks; `.invalidArgument` when the lock file
    /// exists but cannot be read.
    public func coreHolder(_ core: Int) throws(VtrnError) -> CoreHolder? {
        try state.checkOpen()
        guard core >= 0 && core < cores.count else {
            throw .notFound("device \(index) has \(cores.count) cores (0-\(cores.count - 1)); core \(core) requested")
        }
        return try shared.holder(of: core, lockDirectory: runtime.configuration.lockDirectory)
    }

    /// One core's description, or `Status.notFound` naming how many cores the device has.
    public func coreInfo(_ core: Int) throws(VtrnError) -> CoreInfo {
        try state.checkOpen()
        guard core >= 0 && core < cores.count else {
            throw .notFound("device \(index) has \(cores.count) cores (0-\(cores.count - 1)); core \(core) requested")
        }
        return cores[core]
    }
}

/// What a runtime knows of one of its devices: the shared hardware and the static description.
struct DeviceRecord: Sendable {
    let shared: SharedDevice
    let firstCore: Int
    let cores: [CoreInfo]
    let staticInfo: DeviceInfo

    init(shared: SharedDevice, firstCore: Int, configuration: RuntimeConfiguration) {
        let hardware = shared.hardware
        let preset = hardware.preset
        self.shared = shared
        self.firstCore = firstCore
        self.cores = (0..<preset.coresPerDevice).map { core in
            CoreInfo(deviceIndex: hardware.index, index: core, globalIndex: firstCore + core,
                     visible: configuration.visibleCores.contains(firstCore + core), engines: .all,
                     sbufPartitions: preset.sbufPartitions, sbufBytesPerPartition: preset.sbufBytesPerPartition,
                     psumBytesPerPartition: preset.psumBytesPerPartition, psumBanks: preset.psumBanks,
                     semaphores: preset.semaphoresPerCore, dmaEngines: preset.dmaEnginesPerCore,
                     queuesPerDmaEngine: preset.queuesPerDmaEngine, peClockHz: preset.peClockHz,
                     actClockHz: preset.actClockHz, dveClockHz: preset.dveClockHz, poolClockHz: preset.poolClockHz)
        }
        self.staticInfo = DeviceInfo(
            index: hardware.index, architecture: preset.architecture, name: preset.name,
            coreCount: preset.coresPerDevice, firstCore: firstCore, hbmBytes: preset.hbmBytes, hbmUsedBytes: 0,
            hbmBandwidth: preset.hbmBandwidth, numaNode: hardware.numaNode, pciVendorId: preset.pciVendorId,
            pciDeviceId: preset.pciDeviceId, busAddress: hardware.busAddress,
            uuid: stableUUID(of: "vtrn|\(configuration.topology)|\(hardware.index)|\(preset.architecture)"),
            dmaEnginesPerCore: preset.dmaEnginesPerCore, queuesPerDmaEngine: preset.queuesPerDmaEngine,
            sbufBytesPerCore: preset.sbufBytesPerCore, psumBytesPerCore: preset.psumBytesPerCore,
            semaphoresPerCore: preset.semaphoresPerCore,
            visibleCoreCount: (0..<preset.coresPerDevice).count { configuration.visibleCores.contains(firstCore + $0) },
            connectedDevices: configuration.topology.neighbors(of: hardware.index),
            interconnect: configuration.topology.interconnect(of: hardware.index))
    }
}
