import Testing
import CVtrnSystem
import VtrnDevice
@testable import Vtrn

#if canImport(Glibc)
import Glibc
#endif

private let host = HostTopology.current()

/// Placement on a host with several NUMA nodes. This machine has one; Scripts/test runs these in
/// a VM with two (../shared/numa-vm), where they prove that pages land on node 1 for real.
@Suite(.enabled(if: host.nodes.count >= 2, "needs a host with 2 or more NUMA nodes; Scripts/test runs this suite in a 2-node VM"))
struct MultiNodeTests {
    /// The node of every resident page in [pointer, pointer + bytes), by move_pages(2).
    func nodes(of pointer: UnsafeMutableRawPointer, bytes: Int) -> [Int: Int] {
        let page = 4096
        let start = Int(bitPattern: pointer) / page * page
        var pages = stride(from: start, to: Int(bitPattern: pointer) + bytes, by: page).map { UnsafeMutableRawPointer(bitPattern: $0) }
        var status = [Int32](repeating: 0, count: pages.count)
        _ = move_pages(0, UInt(pages.count), &pages, nil, &status, 0)
        var counts: [Int: Int] = [:]
        for node in status where node >= 0 { counts[Int(node), default: 0] += 1 }
        return counts
    }

    @Test func devicesSpreadOverNodesAndPinsHold() throws {
        let runtime = try Runtime(options: .init(topology: "trn1:4,trn2@node1"))
        #expect(try runtime.devices.map { try $0.info.numaNode } == [host.nodes[0], host.nodes[0], host.nodes[1], host.nodes[1], 1])
        let error = #expect(throws: VtrnError.self) { try Runtime(options: .init(topology: "trn1@node9")) }
        #expect(error?.message.contains("online nodes are \(host.nodeList)") == true)
    }

    @Test func hostBuffersLandWhereAsked() throws {
        let runtime = try Runtime(options: .init(topology: "trn1@node0,trn1@node1"))
        let local = try runtime.makeHostBuffer(bytes: 8 << 20, options: .init(device: 1))
        #expect(try local.numaNode() == 1)
        #expect(nodes(of: local.data, bytes: local.bytes) == [1: 2048])
        let pinned = try runtime.makeHostBuffer(bytes: 1 << 20, options: .init(placement: .node, numaNode: 0))
        #expect(try pinned.numaNode() == 0)
        let interleaved = try runtime.makeHostBuffer(bytes: 8 << 20, options: .init(placement: .interleave))
        #expect(try interleaved.numaNode() == nil)
        let pages = try interleaved.pagesPerNode()
        // Interleaving is by page, or by 2 MiB page where transparent huge pages are on "always":
        // both nodes get a good share, not necessarily half.
        #expect(pages[0] + pages[1] == 2048, "\(pages)")
        #expect(pages[0] >= 512 && pages[1] >= 512, "\(pages)")
    }

    @Test func hbmAndDmaStayOnTheDevicesNode() throws {
        let runtime = try Runtime(options: .init(topology: "trn1@node1"))
        let device = runtime.devices[0]
        let bytes = 4 << 20
        let source = try runtime.makeHostBuffer(bytes: bytes)
        #expect(try source.numaNode() == 1)
        memset(source.data, 0x5a, bytes)
        let memory = try device.allocate(UInt64(bytes))
        try device.copy(to: .device(memory, offset: 0), from: .host(source, offset: 0), bytes: UInt64(bytes))
        // HBM pages committed by the DMA engine's writes are on node 1, where the device sits.
        #expect(nodes(of: memory.pointer, bytes: bytes).keys.sorted() == [1])
        #expect(memory.pointer.load(fromByteOffset: bytes - 1, as: UInt8.self) == 0x5a)
    }
}
