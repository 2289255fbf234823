import VtrnDevice

/// The virtual devices of a runtime, as `VTRN_TOPOLOGY` spells them: entries separated by commas,
/// each `ARCH[:COUNT][@nodeN]`, e.g. "trn1", "trn2:2", "trn1,trn2@node1"; or one EC2 instance type
/// alone, `INSTANCE[@nodeN]`, e.g. "trn1.32xlarge" (16 trn1 devices in a 4x4 torus).
///
/// NeuronLinks (`neighbors(of:)`, `hops(from:to:)`):
/// - An instance type is wired as the driver wires it: the 16-device types are a 4x4 2D torus,
///   devices numbered row-major, each linked to its north, west, south and east neighbours with
///   wrap-around, listed in that order (the driver's `trn1_32xl_neigbor_ids`, the order
///   `neuron-ls` prints for trn1 and trn2 alike); trn1.2xlarge has no link. A trn2u.48xlarge's Z
///   links go to other hosts, so they are not among a device's neighbours here.
/// - A device list is vtrn's own choice: the devices of each architecture form a ring in device
///   order (each linked to the previous and the next device of its architecture, the last to the
///   first); a ring of 2 is one link, a lone device has none. Devices of different architectures
///   are never linked (NeuronLink-v2 and -v3 do not meet), so in "trn1,trn2,trn1" devices 0 and
///   2 are linked and device 1 is alone.
public struct Topology: Sendable, Equatable, CustomStringConvertible {
    public struct Entry: Sendable, Equatable {
        public var architecture: Architecture
        public var count: Int
        /// The NUMA node the entry's devices are pinned to; nil spreads them over the host's nodes.
        public var numaNode: Int?

        public init(_ architecture: Architecture, count: Int = 1, numaNode: Int? = nil) {
            self.architecture = architecture
            self.count = count
            self.numaNode = numaNode
        }
    }

    public var entries: [Entry]
    /// The EC2 instance type the topology names, nil for a device list. Its devices are `entries`
    /// (one entry of the instance's architecture and device count).
    public var instance: InstanceType?

    public init(_ entries: [Entry]) {
        self.entries = entries
        self.instance = nil
    }

    /// The devices of one host of `instance`, all pinned to `numaNode` when it is given.
    public init(instance: InstanceType, numaNode: Int? = nil) {
        self.entries = [Entry(instance.architecture, count: instance.deviceCount, numaNode: numaNode)]
        self.instance = instance
    }

    /// One element per device, in device order.
    public var devices: [Entry] {
        entries.flatMap { entry in
            Array(repeating: Entry(entry.architecture, count: 1, numaNode: entry.numaNode), count: entry.count)
        }
    }

    /// Canonical spelling: "trn1:2,trn2@node1", or the instance type, "trn1.32xlarge@node1".
    /// Equal topologies spell the same.
    public var description: String {
        if let instance {
            return instance.name + (entries.first?.numaNode.map { "@node\($0)" } ?? "")
        }
        return entries.map { entry in
            var text = entry.architecture.description
            if entry.count != 1 { text += ":\(entry.count)" }
            if let node = entry.numaNode { text += "@node\(node)" }
            return text
        }.joined(separator: ",")
    }

    /// The number of devices.
    public var deviceCount: Int { entries.reduce(0) { $0 + $1.count } }

    /// The NeuronLinks of the devices: device i's neighbours, in the driver's order (see the type's
    /// comment). Symmetric: j is among i's neighbours exactly when i is among j's.
    public var links: [[Int]] {
        let count = deviceCount
        if let torus = instance?.torus {
            return (0..<count).map { device in
                let (row, column) = device.quotientAndRemainder(dividingBy: torus.columns)
                let north = ((row + torus.rows - 1) % torus.rows) * torus.columns + column
                let west = row * torus.columns + (column + torus.columns - 1) % torus.columns
                let south = ((row + 1) % torus.rows) * torus.columns + column
                let east = row * torus.columns + (column + 1) % torus.columns
                return [north, west, south, east]
            }
        }
        var result = Array(repeating: [Int](), count: count)
        for ring in rings {
            guard ring.count > 1 else { continue }
            for (position, device) in ring.enumerated() {
                let previous = ring[(position + ring.count - 1) % ring.count]
                let next = ring[(position + 1) % ring.count]
                result[device] = previous == next ? [next] : [previous, next]
            }
        }
        return result
    }

    /// A device list's rings: the devices of each architecture in device order, in the order the
    /// architectures first appear (trn1.2xlarge: its one device). Empty for a torus instance.
    public var rings: [[Int]] {
        guard instance == nil || instance?.torus == nil else { return [] }
        let architectures = devices.map(\.architecture)
        var order: [Architecture] = []
        for architecture in architectures where !order.contains(architecture) { order.append(architecture) }
        return order.map { architecture in architectures.indices.filter { architectures[$0] == architecture } }
    }

    /// The devices `device` has a NeuronLink to, in the driver's order (see the type's comment):
    /// on a 4x4 torus `[north, west, south, east]`; on a ring `[previous, next]` (one device for a
    /// ring of 2, none alone). `device` must be 0 ..< deviceCount.
    public func neighbors(of device: Int) -> [Int] {
        precondition(device >= 0 && device < deviceCount, "device \(device) of a topology of \(deviceCount) devices")
        return links[device]
    }

    /// The distance of two devices in NeuronLink hops: 0 for the same device, 1 for neighbours;
    /// on a torus the Manhattan distance with wrap-around, on a ring the shorter way round.
    /// Devices with no NeuronLink path between them (different architectures of a device list)
    /// are `Topology.unreachable` (Int.max) hops apart: data between them goes through the host.
    /// Both devices must be 0 ..< deviceCount.
    public func hops(from source: Int, to destination: Int) -> Int {
        let count = deviceCount
        precondition(source >= 0 && source < count && destination >= 0 && destination < count,
                     "devices \(source) and \(destination) of a topology of \(count) devices")
        if source == destination { return 0 }
        if let torus = instance?.torus {
            func around(_ a: Int, _ b: Int, _ size: Int) -> Int { let d = abs(a - b); return min(d, size - d) }
            let (sourceRow, sourceColumn) = source.quotientAndRemainder(dividingBy: torus.columns)
            let (destinationRow, destinationColumn) = destination.quotientAndRemainder(dividingBy: torus.columns)
            return around(sourceRow, destinationRow, torus.rows) + around(sourceColumn, destinationColumn, torus.columns)
        }
        guard let ring = rings.first(where: { $0.contains(source) }),
              let from = ring.firstIndex(of: source), let to = ring.firstIndex(of: destination) else {
            return Topology.unreachable
        }
        let distance = abs(from - to)
        return min(distance, ring.count - distance)
    }

    /// What `hops(from:to:)` answers for devices no chain of NeuronLinks joins: Int.max.
    public static let unreachable = Int.max

    /// The NeuronLinks' figures for `device`: its chip's (`ChipPreset.interconnect`), or the
    /// instance type's where it differs (trn1n.32xlarge has twice trn1's bandwidth).
    public func interconnect(of device: Int) -> Interconnect {
        if let instance { return instance.interconnect }
        return devices[device].architecture.preset.interconnect
    }

    public static let acceptedForms =
        "entries ARCH[:COUNT][@nodeN] separated by commas, ARCH trn1 or trn2, COUNT 1-\(ChipPreset.maxDevices) "
        + "(at most \(ChipPreset.maxDevices) devices in all), e.g. \"trn1\", \"trn2:2\", \"trn1,trn2@node1\"; "
        + "or one instance type alone, INSTANCE[@nodeN], INSTANCE \(InstanceType.namesText)"

    /// Parses a topology. `source` names where the text came from ("VTRN_TOPOLOGY",
    /// "options.topology") so that the error message can point at it.
    public static func parse(_ text: String, source: String = "VTRN_TOPOLOGY") throws(VtrnError) -> Topology {
        func failure(_ problem: String) -> VtrnError {
            .invalidArgument("\(source)=\"\(text)\": \(problem); accepted: \(acceptedForms)")
        }
        let trimmed = text.trimmingSpaces
        if trimmed.isEmpty { throw failure("the topology is empty") }
        var entries: [Entry] = []
        var total = 0
        let rawEntries = trimmed.split(separator: ",", omittingEmptySubsequences: false)
        for (position, rawEntry) in rawEntries.enumerated() {
            let entryText = String(rawEntry).trimmingSpaces
            let label = "entry \(position + 1) (\"\(entryText)\")"
            if entryText.isEmpty { throw failure("entry \(position + 1) is empty") }
            var rest = Substring(entryText)
            var node: Int?
            if let at = rest.firstIndex(of: "@") {
                let nodeText = rest[rest.index(after: at)...]
                let number = nodeText.dropFirst(4)
                guard nodeText.hasPrefix("node"), !number.isEmpty, number.allSatisfy(\.isASCIIDigit),
                      let value = Int(number), value < 1024 else {
                    throw failure("\(label) has \"@\(nodeText)\" where \"@nodeN\" (N a NUMA node number) belongs")
                }
                node = value
                rest = rest[..<at]
            }
            if rest.contains(".") {
                // An instance type: "trn1.32xlarge[@nodeN]", alone.
                let name = rest.firstIndex(of: ":").map { rest[..<$0] } ?? rest
                guard let instance = InstanceType(name: name) else {
                    throw failure("\(label) names instance type \"\(name)\", which vtrn does not model (it models "
                                  + "\(InstanceType.namesText))")
                }
                if let colon = rest.firstIndex(of: ":") {
                    throw failure("\(label) gives instance type \(instance) a count (\"\(rest[colon...])\"): an instance "
                                  + "has \(counted(instance.deviceCount, "device")); for more devices list them, e.g. "
                                  + "\"\(instance.architecture):\(2 * instance.deviceCount)\"")
                }
                guard rawEntries.count == 1 else {
                    throw failure("\(label) is instance type \(instance), which stands alone: an instance type cannot be "
                                  + "combined with other entries")
                }
                return Topology(instance: instance, numaNode: node)
            }
            var count = 1
            if let colon = rest.firstIndex(of: ":") {
                let countText = rest[rest.index(after: colon)...]
                guard countText.allSatisfy(\.isASCIIDigit), let value = Int(countText),
                      (1...ChipPreset.maxDevices).contains(value) else {
                    throw failure("\(label) has count \"\(countText)\", which is not a number from 1 to \(ChipPreset.maxDevices)")
                }
                count = value
                rest = rest[..<colon]
            }
            guard let architecture = Architecture(name: rest) else {
                throw failure("\(label) names architecture \"\(rest)\", which is not trn1 or trn2")
            }
            total += count
            if total > ChipPreset.maxDevices {
                throw failure("it has more than \(ChipPreset.maxDevices) devices, the most one host can have")
            }
            entries.append(Entry(architecture, count: count, numaNode: node))
        }
        return Topology(entries)
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}

extension Character {
    /// 0-9 only (`isNumber` also accepts other scripts' digits and fractions).
    var isASCIIDigit: Bool { isASCII && ("0"..."9").contains(self) }
}
