/// The two Trainium generations vtrn models, with the numbers of AWS's public Neuron
/// documentation (DESIGN.md, "presets"). Everything the device model sizes or times comes from
/// here, so a preset is the one place to change when a number turns out wrong.
public enum Architecture: Int, Sendable, CaseIterable, CustomStringConvertible {
    case trn1 = 1
    case trn2 = 2

    /// The spelling used in topologies and by `neuron-ls`: "trn1", "trn2".
    public var description: String { self == .trn1 ? "trn1" : "trn2" }

    public init?(name: some StringProtocol) {
        switch name.lowercased() {
        case "trn1": self = .trn1
        case "trn2": self = .trn2
        default: return nil
        }
    }

    public var preset: ChipPreset { self == .trn1 ? .trn1 : .trn2 }
}

public struct ChipPreset: Sendable, Equatable {
    public let architecture: Architecture
    /// Marketing name, as `neuron-ls` prints it.
    public let name: String
    /// The NeuronCore generation, "NeuronCore-v2" or "NeuronCore-v3".
    public let coreGeneration: String
    public let coresPerDevice: Int
    public let sbufPartitions: Int
    public let sbufBytesPerPartition: Int
    public let psumBytesPerPartition: Int
    public let psumBanks: Int
    public let semaphoresPerCore: Int
    public let hbmBytes: UInt64
    /// HBM bandwidth, bytes per second.
    public let hbmBandwidth: UInt64
    public let dmaEnginesPerCore: Int
    public let queuesPerDmaEngine: Int
    /// Bandwidth of one DMA engine, bytes per second.
    public let dmaEngineBandwidth: UInt64
    public let peClockHz: UInt64
    public let actClockHz: UInt64
    public let dveClockHz: UInt64
    public let poolClockHz: UInt64
    public let pciVendorId: UInt16
    public let pciDeviceId: UInt16
    /// The chip's NeuronLinks (chip-to-chip), as published per device; per link is derived.
    /// An instance type may change the figures (trn1n.32xlarge): see `InstanceType.interconnect`.
    public let interconnect: Interconnect

    /// What a kernel's DMA_COPY moves per second: Neuron's compiler spreads each DMA of a kernel
    /// over the core's 16 DMA engines, up to the core's share of HBM bandwidth (trn1 410 GB/s,
    /// trn2 362 GB/s).
    public var kernelDmaBandwidth: UInt64 {
        min(dmaEngineBandwidth * UInt64(dmaEnginesPerCore), hbmBandwidth / UInt64(coresPerDevice))
    }
    public var sbufBytesPerCore: UInt64 { UInt64(sbufPartitions * sbufBytesPerPartition) }
    public var psumBytesPerCore: UInt64 { UInt64(sbufPartitions * psumBytesPerPartition) }

    private static let kib = 1024
    private static let gib: UInt64 = 1 << 30

    public static let trn1 = ChipPreset(
        architecture: .trn1, name: "Trainium1", coreGeneration: "NeuronCore-v2",
        coresPerDevice: 2, sbufPartitions: 128, sbufBytesPerPartition: 192 * kib,
        psumBytesPerPartition: 16 * kib, psumBanks: 8, semaphoresPerCore: 256,
        hbmBytes: 32 * gib, hbmBandwidth: 820_000_000_000,
        dmaEnginesPerCore: 16, queuesPerDmaEngine: 16, dmaEngineBandwidth: 27_000_000_000,
        peClockHz: 2_800_000_000, actClockHz: 1_400_000_000, dveClockHz: 1_120_000_000,
        poolClockHz: 1_400_000_000, pciVendorId: 0x1d0f, pciDeviceId: 0x7164,
        interconnect: .neuronLinkV2)

    public static let trn2 = ChipPreset(
        architecture: .trn2, name: "Trainium2", coreGeneration: "NeuronCore-v3",
        coresPerDevice: 8, sbufPartitions: 128, sbufBytesPerPartition: 224 * kib,
        psumBytesPerPartition: 16 * kib, psumBanks: 8, semaphoresPerCore: 256,
        hbmBytes: 96 * gib, hbmBandwidth: 2_900_000_000_000,
        dmaEnginesPerCore: 16, queuesPerDmaEngine: 16, dmaEngineBandwidth: 27_000_000_000,
        peClockHz: 2_400_000_000, actClockHz: 1_200_000_000, dveClockHz: 960_000_000,
        poolClockHz: 1_200_000_000, pciVendorId: 0x1d0f, pciDeviceId: 0x7364,
        interconnect: .neuronLinkV3)

    /// The most devices one host can have, as the driver allows (`/dev/neuron0` .. `neuron63`).
    public static let maxDevices = 64
}
