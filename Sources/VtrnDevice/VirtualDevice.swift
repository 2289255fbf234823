/// One virtual Trainium chip: the hardware side that the runtime drives. It knows nothing of
/// handles, C, or runtimes; it is told its preset and where on the host it sits.
public final class VirtualDevice: Sendable {
    public let preset: ChipPreset
    /// Position on the virtual PCI bus, as `/dev/neuron<index>`.
    public let index: Int
    /// The host NUMA node whose memory backs this device's HBM and host-side DMA buffers.
    public let numaNode: Int

    public init(preset: ChipPreset, index: Int, numaNode: Int) {
        self.preset = preset
        self.index = index
        self.numaNode = numaNode
    }

    /// PCI bus/device/function, one bus per device like a trn1.32xlarge's: "0000:10:1e.0".
    public var busAddress: String {
        let bus = 0x10 + index
        return "0000:" + hex(bus, width: 2) + ":1e.0"
    }
}

func hex(_ value: Int, width: Int) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}
