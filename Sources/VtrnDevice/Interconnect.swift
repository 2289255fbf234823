/// The chip-to-chip links of a Trainium generation: NeuronLink-v2 (trn1) or NeuronLink-v3 (trn2).
///
/// AWS publishes only per-device aggregates ("NeuronLink-v2 device-to-device 384 GiB/s/device",
/// trn1-arch.rst; "1,024 GB/s/chip intra-instance", trn2-arch.rst) and the number of ports per chip
/// (4, the NKI architecture guides). The per-link figure is OURS: the aggregate split evenly over
/// the ports (384 GiB/s / 4 = 96 GiB/s, 1024 GB/s / 4 = 256 GB/s). Neither source says whether an
/// aggregate counts one direction or both; vtrn takes it as the rate of one direction of a link.
public struct Interconnect: Sendable, Equatable, CustomStringConvertible {
    /// "NeuronLink-v2" or "NeuronLink-v3".
    public let name: String
    /// NeuronLink ports per chip: 4 on trn1 and trn2 (an UltraServer's Z links are extra, see
    /// `InstanceType.ultraServer`).
    public let linksPerDevice: Int
    /// The published per-device aggregate, bytes per second.
    public let deviceBytesPerSecond: Double
    /// One link's bandwidth, bytes per second: `deviceBytesPerSecond / linksPerDevice` (DERIVED,
    /// see above; not an AWS figure).
    public let linkBytesPerSecond: Double
    /// The latency of one hop between neighbouring devices, nanoseconds: the intranode collectives
    /// guide gives "about 1-2 us (HBM load dependent)" per hop; vtrn takes the middle, 1500.
    public let hopLatencyNanoseconds: Double

    public init(name: String, linksPerDevice: Int, deviceBytesPerSecond: Double, hopLatencyNanoseconds: Double = 1500) {
        self.name = name
        self.linksPerDevice = linksPerDevice
        self.deviceBytesPerSecond = deviceBytesPerSecond
        self.linkBytesPerSecond = deviceBytesPerSecond / Double(linksPerDevice)
        self.hopLatencyNanoseconds = hopLatencyNanoseconds
    }

    /// The same links at `factor` times the bandwidth (trn1n.32xlarge doubles trn1's).
    public func scaled(by factor: Double) -> Interconnect {
        Interconnect(name: name, linksPerDevice: linksPerDevice, deviceBytesPerSecond: deviceBytesPerSecond * factor,
                     hopLatencyNanoseconds: hopLatencyNanoseconds)
    }

    public var description: String {
        "\(name), \(linksPerDevice) links of \(formatRate(linkBytesPerSecond)) (\(formatRate(deviceBytesPerSecond)) per device), "
            + "\(Int(hopLatencyNanoseconds)) ns per hop"
    }

    private static let gib = Double(1 << 30)

    /// trn1: 384 GiB/s per device (trn1-arch.rst), 4 ports, so 96 GiB/s per link.
    public static let neuronLinkV2 = Interconnect(name: "NeuronLink-v2", linksPerDevice: 4, deviceBytesPerSecond: 384 * gib)
    /// trn2: 1,024 GB/s per chip within an instance (trn2-arch.rst), 4 ports, so 256 GB/s per link.
    public static let neuronLinkV3 = Interconnect(name: "NeuronLink-v3", linksPerDevice: 4, deviceBytesPerSecond: 1024e9)
}

/// "96 GiB/s" or "256 GB/s": binary units when the rate is a whole number of GiB/s.
func formatRate(_ bytesPerSecond: Double) -> String {
    let gib = bytesPerSecond / Double(1 << 30)
    if gib == gib.rounded() { return "\(Int(gib)) GiB/s" }
    let gb = bytesPerSecond / 1e9
    return gb == gb.rounded() ? "\(Int(gb)) GB/s" : "\(gb) GB/s"
}

/// The EC2 instance types vtrn models, as `VTRN_TOPOLOGY` names them (trn1-arch.rst,
/// trn2-arch.rst). Each is one host's devices and how the driver wires them: trn1.2xlarge has one
/// device and no NeuronLink; the 32xlarge and 48xlarge types have 16 devices in a 4x4 2D torus
/// (the driver's `trn1_32xl_neigbor_ids` table).
public enum InstanceType: String, Sendable, CaseIterable, CustomStringConvertible {
    case trn1_2xlarge = "trn1.2xlarge"
    case trn1_32xlarge = "trn1.32xlarge"
    case trn1n_32xlarge = "trn1n.32xlarge"
    case trn2_48xlarge = "trn2.48xlarge"
    /// One host of a Trn2 UltraServer: 16 devices in a 4x4 torus, each also linked (Z links, see
    /// `ultraServer`) to the devices at the same position in the 3 other hosts, which are other
    /// processes' and are not modelled.
    case trn2u_48xlarge = "trn2u.48xlarge"

    /// The spelling of EC2 and `neuron-ls`'s `instance-type:` line, e.g. "trn1.32xlarge".
    public var name: String { rawValue }
    public var description: String { rawValue }

    /// Accepts any case; nil for a name vtrn does not model.
    public init?(name: some StringProtocol) {
        self.init(rawValue: name.lowercased())
    }

    public var architecture: Architecture {
        switch self {
        case .trn1_2xlarge, .trn1_32xlarge, .trn1n_32xlarge: .trn1
        case .trn2_48xlarge, .trn2u_48xlarge: .trn2
        }
    }

    public var deviceCount: Int { self == .trn1_2xlarge ? 1 : 16 }

    /// Rows and columns of the 2D torus the devices form (row-major device numbering); nil for a
    /// single device.
    public var torus: (rows: Int, columns: Int)? { self == .trn1_2xlarge ? nil : (4, 4) }

    /// The devices' NeuronLinks: the chip's, except trn1n.32xlarge, whose published figure is twice
    /// trn1.32xlarge's (768 GiB/s/device) on the same chip. trn1.2xlarge has the chip's figures
    /// and no link connected.
    public var interconnect: Interconnect {
        self == .trn1n_32xlarge ? architecture.preset.interconnect.scaled(by: 2) : architecture.preset.interconnect
    }

    /// EFA network bandwidth of the whole instance, bits per second (up to 25 Gbps on
    /// trn1.2xlarge; 800 Gbps trn1.32xlarge; 1,600 Gbps trn1n.32xlarge; 3,200 Gbps trn2, i.e.
    /// 200 Gbps per device).
    public var efaBitsPerSecond: Double {
        switch self {
        case .trn1_2xlarge: 25e9
        case .trn1_32xlarge: 800e9
        case .trn1n_32xlarge: 1600e9
        case .trn2_48xlarge, .trn2u_48xlarge: 3200e9
        }
    }

    /// What a Trn2 UltraServer adds to its hosts: 4 hosts, and per device 2 Z links (a ring over
    /// the 4 hosts) sharing 256 GB/s (128 GB/s per link, DERIVED like `Interconnect`).
    public struct UltraServer: Sendable, Equatable {
        public let hosts: Int
        public let linksPerDevice: Int
        public let linkBytesPerSecond: Double
    }

    /// nil except for trn2u.48xlarge.
    public var ultraServer: UltraServer? {
        self == .trn2u_48xlarge ? UltraServer(hosts: 4, linksPerDevice: 2, linkBytesPerSecond: 128e9) : nil
    }

    /// "trn1.2xlarge, trn1.32xlarge, trn1n.32xlarge, trn2.48xlarge or trn2u.48xlarge".
    public static var namesText: String {
        let names = allCases.map(\.name)
        return names.dropLast().joined(separator: ", ") + " or " + names.last!
    }
}
