import Testing
import VtrnDevice
@testable import Vtrn

@Suite struct TopologyTests {
    @Test(arguments: [
        ("trn1", "trn1", 1), ("trn2", "trn2", 1), ("trn1:2", "trn1:2", 2), ("TRN2:3", "trn2:3", 3),
        ("trn1,trn2@node1", "trn1,trn2@node1", 2), (" trn1 , trn2:2@node0 ", "trn1,trn2:2@node0", 3),
        ("trn1:64", "trn1:64", 64),
        ("trn1.2xlarge", "trn1.2xlarge", 1), ("trn1.32xlarge", "trn1.32xlarge", 16),
        (" TRN1N.32xlarge ", "trn1n.32xlarge", 16), ("trn2.48xlarge@node1", "trn2.48xlarge@node1", 16),
        ("trn2u.48xlarge", "trn2u.48xlarge", 16),
    ])
    func parsesAndSpellsCanonically(text: String, canonical: String, devices: Int) throws {
        let topology = try Topology.parse(text)
        #expect(topology.description == canonical)
        #expect(topology.devices.count == devices)
        #expect(try Topology.parse(canonical) == topology)
    }

    @Test(arguments: [
        ("", "the topology is empty"),
        ("   ", "the topology is empty"),
        ("trn3", "names architecture \"trn3\", which is not trn1 or trn2"),
        ("trn1:0", "has count \"0\", which is not a number from 1 to 64"),
        ("trn1:65", "has count \"65\""),
        ("trn1:x", "has count \"x\""),
        ("trn1,,trn2", "entry 2 is empty"),
        ("trn1,", "entry 2 is empty"),
        ("trn1@nodeX", "has \"@nodeX\" where \"@nodeN\""),
        ("trn1@1", "has \"@1\" where \"@nodeN\""),
        ("trn1:40,trn2:25", "more than 64 devices"),
        ("trn3.48xlarge", "entry 1 (\"trn3.48xlarge\") names instance type \"trn3.48xlarge\", which vtrn does not model "
            + "(it models trn1.2xlarge, trn1.32xlarge, trn1n.32xlarge, trn2.48xlarge or trn2u.48xlarge)"),
        ("trn1.32xlarge:2", "entry 1 (\"trn1.32xlarge:2\") gives instance type trn1.32xlarge a count (\":2\"): an instance "
            + "has 16 devices; for more devices list them, e.g. \"trn1:32\""),
        ("trn1.32xlarge,trn1", "entry 1 (\"trn1.32xlarge\") is instance type trn1.32xlarge, which stands alone"),
        ("trn2,trn2.48xlarge@node0", "entry 2 (\"trn2.48xlarge@node0\") is instance type trn2.48xlarge, which stands alone"),
        ("trn1.32xlarge@nodeX", "has \"@nodeX\" where \"@nodeN\""),
    ])
    func rejectsWithMessageNamingSourceAndForms(text: String, problem: String) {
        let error = #expect(throws: VtrnError.self) { try Topology.parse(text, source: "VTRN_TOPOLOGY") }
        #expect(error?.status == .invalidArgument)
        #expect(error?.message.hasPrefix("VTRN_TOPOLOGY=\"\(text)\": ") == true)
        #expect(error?.message.contains(problem) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("accepted: entries ARCH[:COUNT][@nodeN]") == true)
        #expect(error?.message.hasSuffix("or one instance type alone, INSTANCE[@nodeN], INSTANCE trn1.2xlarge, "
                                          + "trn1.32xlarge, trn1n.32xlarge, trn2.48xlarge or trn2u.48xlarge") == true)
    }

    @Test func instanceTopologiesAreTheirDevicesAndNameTheInstance() throws {
        let topology = try Topology.parse("trn2.48xlarge@node1")
        #expect(topology.instance == .trn2_48xlarge)
        #expect(topology.entries == [.init(.trn2, count: 16, numaNode: 1)])
        #expect(topology.devices.allSatisfy { $0 == .init(.trn2, numaNode: 1) })
        // The same devices as a list are another topology (no torus, other serials).
        #expect(try Topology.parse("trn2:16@node1") != topology)
        #expect(try Topology.parse("trn1:16").instance == nil)
    }

    /// The driver's table, verbatim (aws-neuron-driver v2/neuron_dhal_v2.c, trn1_32xl_neigbor_ids).
    static let driverTorus: [[Int]] = [
        [12, 3, 4, 1], [13, 0, 5, 2], [14, 1, 6, 3], [15, 2, 7, 0], [0, 7, 8, 5], [1, 4, 9, 6], [2, 5, 10, 7],
        [3, 6, 11, 4], [4, 11, 12, 9], [5, 8, 13, 10], [6, 9, 14, 11], [7, 10, 15, 8], [8, 15, 0, 13], [9, 12, 1, 14],
        [10, 13, 2, 15], [11, 14, 3, 12],
    ]

    @Test(arguments: ["trn1.32xlarge", "trn1n.32xlarge", "trn2.48xlarge", "trn2u.48xlarge"])
    func sixteenDeviceInstancesAreTheDriversTorus(name: String) throws {
        let topology = try Topology.parse(name)
        #expect((0..<16).map(topology.neighbors(of:)) == Self.driverTorus)
        #expect(topology.links == Self.driverTorus)
        #expect(topology.rings.isEmpty)
    }

    @Test func torusHopsAreManhattanDistanceWithWrapAround() throws {
        let topology = try Topology.parse("trn1.32xlarge")
        for device in 0..<16 {
            #expect(topology.hops(from: device, to: device) == 0)
            for neighbor in Self.driverTorus[device] { #expect(topology.hops(from: device, to: neighbor) == 1) }
        }
        #expect(topology.hops(from: 0, to: 5) == 2)
        #expect(topology.hops(from: 0, to: 10) == 4)   // the farthest: 2 rows and 2 columns away
        #expect(topology.hops(from: 0, to: 15) == 2)   // wrap-around both ways
        #expect(topology.hops(from: 1, to: 7) == 3)   // 1 row and 2 columns away
        // Symmetric, and never more than 4 on a 4x4 torus; the hop count is the shortest path
        // over the links (breadth-first search over neighbors(of:)).
        for source in 0..<16 {
            var distance = [source: 0]
            var frontier = [source]
            while !frontier.isEmpty {
                frontier = frontier.flatMap { device in
                    topology.neighbors(of: device).filter { distance[$0] == nil }.map { next in
                        distance[next] = distance[device]! + 1
                        return next
                    }
                }
            }
            for destination in 0..<16 {
                #expect(topology.hops(from: source, to: destination) == distance[destination])
                #expect(topology.hops(from: source, to: destination) == topology.hops(from: destination, to: source))
            }
        }
    }

    @Test func singleDeviceInstanceHasNoLinks() throws {
        let topology = try Topology.parse("trn1.2xlarge")
        #expect(topology.neighbors(of: 0) == [])
        #expect(topology.hops(from: 0, to: 0) == 0)
        #expect(topology.interconnect(of: 0) == .neuronLinkV2)
    }

    @Test func deviceListsAreRingsPerArchitecture() throws {
        #expect(try Topology.parse("trn1").links == [[]])
        #expect(try Topology.parse("trn1:2").links == [[1], [0]])
        #expect(try Topology.parse("trn2:3").links == [[2, 1], [0, 2], [1, 0]])
        let four = try Topology.parse("trn1:4")
        #expect(four.links == [[3, 1], [0, 2], [1, 3], [2, 0]])
        #expect(four.hops(from: 0, to: 2) == 2 && four.hops(from: 0, to: 3) == 1 && four.hops(from: 1, to: 1) == 0)
        let eight = try Topology.parse("trn1:8")
        #expect((0..<8).map { eight.hops(from: 0, to: $0) } == [0, 1, 2, 3, 4, 3, 2, 1])
        // Mixed: each architecture its own ring, in device order; no link between them.
        let mixed = try Topology.parse("trn1,trn2:2,trn1,trn2,trn1")
        #expect(mixed.rings == [[0, 3, 5], [1, 2, 4]])
        #expect(mixed.links == [[5, 3], [4, 2], [1, 4], [0, 5], [2, 1], [3, 0]])
        #expect(mixed.hops(from: 0, to: 3) == 1 && mixed.hops(from: 1, to: 4) == 1)
        #expect(mixed.hops(from: 0, to: 1) == Topology.unreachable)
        #expect(try Topology.parse("trn1,trn2").links == [[], []])
        #expect(mixed.interconnect(of: 0) == .neuronLinkV2 && mixed.interconnect(of: 1) == .neuronLinkV3)
    }

    @Test func linksAreSymmetric() throws {
        for text in ["trn1:5", "trn1,trn2:2,trn1,trn2,trn1", "trn2u.48xlarge", "trn1:64"] {
            let topology = try Topology.parse(text)
            for (device, neighbors) in topology.links.enumerated() {
                for neighbor in neighbors { #expect(topology.neighbors(of: neighbor).contains(device), "\(text)") }
            }
        }
    }

    @Test func trn1nDoublesTheLinkBandwidth() throws {
        let gib = Double(1 << 30)
        #expect(try Topology.parse("trn1.32xlarge").interconnect(of: 3).linkBytesPerSecond == 96 * gib)
        #expect(try Topology.parse("trn1n.32xlarge").interconnect(of: 3).linkBytesPerSecond == 192 * gib)
        #expect(try Topology.parse("trn2.48xlarge").interconnect(of: 3).linkBytesPerSecond == 256e9)
    }

    @Test func devicesCarryTheirEntryPins() throws {
        let devices = try Topology.parse("trn1:2,trn2@node3").devices
        #expect(devices.map(\.architecture) == [.trn1, .trn1, .trn2])
        #expect(devices.map(\.numaNode) == [nil, nil, 3])
    }
}

@Suite struct CoreSetTests {
    @Test(arguments: [("0-3", [0, 1, 2, 3], "0-3"), ("5,0,2-3", [0, 2, 3, 5], "0,2-3,5"),
                      ("1", [1], "1"), ("0-1,1-2", [0, 1, 2], "0-2"), (" 7 ", [7], "7")])
    func parses(text: String, cores: [Int], canonical: String) throws {
        let set = try CoreSet.parse(text, coreCount: 8, topology: "trn2")
        #expect(set.cores == cores)
        #expect(set.description == canonical)
        for core in 0..<8 { #expect(set.contains(core) == cores.contains(core)) }
    }

    @Test(arguments: [
        ("9", "core 9 does not exist: the topology \"trn2\" has 8 cores (0-7)"),
        ("0-8", "core 8 does not exist"),
        ("3-1", "the range \"3-1\" ends before it starts"),
        ("a", "\"a\" is not a core number"),
        ("-1", "\"-1\" is not a core number"),
        ("1-2-3", "\"1-2-3\" is not a core number"),
        ("", "no core is listed"),
        ("1,,2", "\"\" is not a core number"),
    ])
    func rejects(text: String, problem: String) {
        let error = #expect(throws: VtrnError.self) {
            try CoreSet.parse(text, coreCount: 8, topology: "trn2")
        }
        #expect(error?.status == .invalidArgument)
        #expect(error?.message.hasPrefix("VTRN_VISIBLE_CORES=\"\(text)\": ") == true)
        #expect(error?.message.contains(problem) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("accepted: core numbers or ranges") == true)
    }
}

@Suite struct HostTopologyTests {
    let fourNodes = HostTopology(nodes: [0, 1, 2, 3])

    @Test func spreadsUnpinnedDevicesInBlocksOverAllNodes() throws {
        let nodes = try fourNodes.assignNodes(to: Topology.parse("trn1:8"))
        #expect(nodes == [0, 0, 1, 1, 2, 2, 3, 3])
        #expect(try HostTopology(nodes: [0, 1]).assignNodes(to: Topology.parse("trn1:16")) == Array(repeating: 0, count: 8) + Array(repeating: 1, count: 8))
        #expect(try fourNodes.assignNodes(to: Topology.parse("trn2")) == [0])
        #expect(try fourNodes.assignNodes(to: Topology.parse("trn2:3")) == [0, 1, 2])
    }

    @Test func honoursPinsAndNeverAssumesNodeZero() throws {
        let host = HostTopology(nodes: [2, 5])
        #expect(try host.assignNodes(to: Topology.parse("trn1:2")) == [2, 5])
        #expect(try host.assignNodes(to: Topology.parse("trn1@node5,trn2")) == [5, 2])
        #expect(try host.assignNodes(to: Topology.parse("trn1@node5,trn2:2,trn1@node2,trn1:2")) == [5, 2, 2, 2, 5, 5])
    }

    @Test func unknownNodeNamesTheOnlineOnes() throws {
        let error = #expect(throws: VtrnError.self) {
            try HostTopology(nodes: [0, 1, 3]).assignNodes(to: Topology.parse("trn1,trn2@node2"))
        }
        #expect(error?.status == .invalidArgument)
        #expect(error?.message.contains("device 1 (trn2@node2) asks for NUMA node 2") == true)
        #expect(error?.message.contains("online nodes are 0, 1 and 3") == true, "\(error?.message ?? "")")
        let single = #expect(throws: VtrnError.self) {
            try HostTopology(nodes: [0]).assignNodes(to: Topology.parse("trn1@node1"))
        }
        #expect(single?.message.contains("online node is 0") == true)
    }

    @Test func currentHostHasAtLeastOneNode() {
        let host = HostTopology.current()
        #expect(!host.nodes.isEmpty)
        #expect(host.nodes == host.nodes.sorted())
        #expect(host.cpusPerNode.count == host.nodes.count)
    }
}
