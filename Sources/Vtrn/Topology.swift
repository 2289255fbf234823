import VtrnDevice

/// The virtual devices of a runtime, as `VTRN_TOPOLOGY` spells them: entries separated by commas,
/// each `ARCH[:COUNT][@nodeN]`, e.g. "trn1", "trn2:2", "trn1,trn2@node1".
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

    public init(_ entries: [Entry]) { self.entries = entries }

    /// One element per device, in device order.
    public var devices: [Entry] {
        entries.flatMap { entry in
            Array(repeating: Entry(entry.architecture, count: 1, numaNode: entry.numaNode), count: entry.count)
        }
    }

    /// Canonical spelling: "trn1:2,trn2@node1". Equal topologies spell the same.
    public var description: String {
        entries.map { entry in
            var text = entry.architecture.description
            if entry.count != 1 { text += ":\(entry.count)" }
            if let node = entry.numaNode { text += "@node\(node)" }
            return text
        }.joined(separator: ",")
    }

    public static let acceptedForms =
        "entries ARCH[:COUNT][@nodeN] separated by commas, ARCH trn1 or trn2, COUNT 1-\(ChipPreset.maxDevices) "
        + "(at most \(ChipPreset.maxDevices) devices in all), e.g. \"trn1\", \"trn2:2\", \"trn1,trn2@node1\""

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
        for (position, rawEntry) in trimmed.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
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
