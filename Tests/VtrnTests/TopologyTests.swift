import Testing
import VtrnDevice
@testable import Vtrn

@Suite struct TopologyTests {
    @Test(arguments: [
        ("trn1", "trn1", 1), ("trn2", "trn2", 1), ("trn1:2", "trn1:2", 2), ("TRN2:3", "trn2:3", 3),
        ("trn1,trn2@node1", "trn1,trn2@node1", 2), (" trn1 , trn2:2@node0 ", "trn1,trn2:2@node0", 3),
        ("trn1:64", "trn1:64", 64),
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
    ])
    func rejectsWithMessageNamingSourceAndForms(text: String, problem: String) {
        let error = #expect(throws: VtrnError.self) { try Topology.parse(text, source: "VTRN_TOPOLOGY") }
        #expect(error?.status == .invalidArgument)
        #expect(error?.message.hasPrefix("VTRN_TOPOLOGY=\"\(text)\": ") == true)
        #expect(error?.message.contains(problem) == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("accepted: entries ARCH[:COUNT][@nodeN]") == true)
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
