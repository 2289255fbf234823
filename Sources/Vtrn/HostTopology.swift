import CVtrnSystem

/// The host's NUMA layout as the runtime needs it: which nodes are online with memory, and
/// how many CPUs each has. `current()` asks libnuma; tests build fake ones with many nodes.
public struct HostTopology: Sendable, Equatable {
    /// Online nodes that have memory this process may use, ascending. Never empty.
    public let nodes: [Int]
    /// CPUs per node, same order as `nodes`.
    public let cpusPerNode: [Int]

    public init(nodes: [Int], cpusPerNode: [Int]? = nil) {
        precondition(!nodes.isEmpty, "a host has at least one NUMA node")
        self.nodes = nodes
        self.cpusPerNode = cpusPerNode ?? Array(repeating: 1, count: nodes.count)
    }

    /// The topology libnuma reports; one node 0 where the kernel has no NUMA support.
    public static func current() -> HostTopology {
        guard numa_available() >= 0 else { return HostTopology(nodes: [0]) }
        var nodes: [Int] = []
        var cpus: [Int] = []
        let maxNode = numa_max_node()
        guard maxNode >= 0 else { return HostTopology(nodes: [0]) }
        // The nodes this process may allocate on (cpusets included), each with its CPUs.
        guard let allowed = numa_get_mems_allowed() else { return HostTopology(nodes: [0]) }
        defer { numa_bitmask_free(allowed) }
        let cpuMask = numa_allocate_cpumask()
        defer { numa_free_cpumask(cpuMask) }
        for node in 0...maxNode where numa_bitmask_isbitset(allowed, UInt32(node)) != 0 {
            nodes.append(Int(node))
            var count = 0
            if numa_node_to_cpus(node, cpuMask) == 0 {
                count = Int(numa_bitmask_weight(cpuMask))
            }
            cpus.append(count)
        }
        return nodes.isEmpty ? HostTopology(nodes: [0]) : HostTopology(nodes: nodes, cpusPerNode: cpus)
    }

    /// "0" or "0, 1 and 3" — for messages.
    public var nodeList: String {
        let names = nodes.map(String.init)
        guard names.count > 1 else { return names.joined() }
        return names.dropLast().joined(separator: ", ") + " and " + names.last!
    }

    /// The NUMA node of each device of `topology`: its pinned node, which must be online, or else
    /// a share of the online nodes in contiguous blocks (the first unpinned devices on the first
    /// node, and so on), the way a trn1.32xlarge hangs half its devices off each socket.
    public func assignNodes(to topology: Topology, source: String = "VTRN_TOPOLOGY") throws(VtrnError) -> [Int] {
        let devices = topology.devices
        let unpinned = devices.count { $0.numaNode == nil }
        var spread = 0
        var assigned: [Int] = []
        assigned.reserveCapacity(devices.count)
        for (index, device) in devices.enumerated() {
            if let node = device.numaNode {
                guard nodes.contains(node) else {
                    let plural = nodes.count == 1 ? "node is" : "nodes are"
                    throw .invalidArgument(
                        "\(source)=\"\(topology)\": device \(index) (\(device.architecture)@node\(node)) asks for NUMA node \(node), "
                        + "but this host's online \(plural) \(nodeList); accepted: @nodeN with N one of those")
                }
                assigned.append(node)
            } else {
                assigned.append(nodes[spread * nodes.count / unpinned])
                spread += 1
            }
        }
        return assigned
    }
}
