/// A set of NeuronCores numbered across a runtime's devices (device 0's cores first), as
/// `VTRN_VISIBLE_CORES` and Neuron's `NEURON_RT_VISIBLE_CORES` spell it: "0-3", "0,2,5-6".
public struct CoreSet: Sendable, Equatable, CustomStringConvertible {
    /// Sorted, without duplicates.
    public let cores: [Int]

    public init(_ cores: some Sequence<Int>) { self.cores = Array(Set(cores)).sorted() }

    public func contains(_ core: Int) -> Bool {
        var low = 0, high = cores.count
        while low < high {
            let middle = (low + high) / 2
            if cores[middle] < core { low = middle + 1 } else { high = middle }
        }
        return low < cores.count && cores[low] == core
    }

    public var count: Int { cores.count }

    /// Ranges folded: "0-3,5".
    public var description: String {
        var parts: [String] = []
        var index = 0
        while index < cores.count {
            var end = index
            while end + 1 < cores.count && cores[end + 1] == cores[end] + 1 { end += 1 }
            parts.append(end == index ? "\(cores[index])" : "\(cores[index])-\(cores[end])")
            index = end + 1
        }
        return parts.joined(separator: ",")
    }

    public static let acceptedForms =
        "core numbers or ranges separated by commas, counted across all devices, e.g. \"0\", \"0-3\", \"0,2,5-6\""

    /// Parses a core list and checks it against the `coreCount` cores of the topology.
    public static func parse(_ text: String, coreCount: Int, topology: String,
                             source: String = "VTRN_VISIBLE_CORES") throws(VtrnError) -> CoreSet {
        func failure(_ problem: String) -> VtrnError {
            .invalidArgument("\(source)=\"\(text)\": \(problem); accepted: \(acceptedForms)")
        }
        let trimmed = text.trimmingSpaces
        if trimmed.isEmpty { throw failure("no core is listed") }
        var cores: [Int] = []
        for rawPart in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            let part = rawPart.trimmingSpaces
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            func number(_ text: Substring) -> Int? {
                let digits = text.trimmingSpaces
                return digits.isEmpty || !digits.allSatisfy(\.isASCIIDigit) ? nil : Int(digits)
            }
            guard (1...2).contains(bounds.count), let first = number(bounds[0]),
                  let last = bounds.count == 2 ? number(bounds[1]) : first
            else { throw failure("\"\(part)\" is not a core number or a range like 0-3") }
            if last < first { throw failure("the range \"\(part)\" ends before it starts") }
            if last >= coreCount {
                throw failure("core \(last) does not exist: the topology \"\(topology)\" has \(coreCount) cores (0-\(coreCount - 1))")
            }
            cores.append(contentsOf: first...last)
        }
        return CoreSet(cores)
    }
}
