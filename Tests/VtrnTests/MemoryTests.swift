import Testing
import VtrnDevice
@testable import Vtrn

@Suite struct MemoryPolicyTests {
    let host = HostTopology(nodes: [0, 1, 2, 3])

    @Test func deviceLocalFollowsTheDevicesNode() throws {
        #expect(try MemoryPolicy.resolve(.init(), deviceNodes: [2, 3], host: host) == .bind(2))
        #expect(try MemoryPolicy.resolve(.init(device: 1), deviceNodes: [2, 3], host: host) == .bind(3))
        let error = #expect(throws: VtrnError.self) { try MemoryPolicy.resolve(.init(device: 2), deviceNodes: [2, 3], host: host) }
        #expect(error == .invalidArgument("options.device is 2, but the runtime has 2 devices (0-1)"))
    }

    @Test func nodeMustBeOnline() throws {
        #expect(try MemoryPolicy.resolve(.init(placement: .node, numaNode: 3), deviceNodes: [0], host: host) == .bind(3))
        let error = #expect(throws: VtrnError.self) {
            try MemoryPolicy.resolve(.init(placement: .node, numaNode: 7), deviceNodes: [0], host: host)
        }
        #expect(error == .invalidArgument("options.numa_node is 7, but this host's online NUMA nodes are 0, 1, 2 and 3"))
        #expect(throws: VtrnError.self) { try MemoryPolicy.resolve(.init(placement: .node), deviceNodes: [0], host: host) }
    }

    @Test func interleaveSpansEveryNodeAndAnyHasNoPolicy() throws {
        #expect(try MemoryPolicy.resolve(.init(placement: .interleave), deviceNodes: [0], host: host) == .interleave([0, 1, 2, 3]))
        #expect(try MemoryPolicy.resolve(.init(placement: .any), deviceNodes: [0], host: host) == .firstTouch)
    }
}

@Suite struct HostBufferTests {
    @Test func placedBuffersAreResidentOnTheirNode() throws {
        let runtime = try Runtime(options: .init(topology: "trn1"), environment: testEnvironment())
        let node = runtime.configuration.deviceNodes[0]
        let local = try runtime.makeHostBuffer(bytes: 1 << 20)
        #expect(try local.numaNode() == node)
        #expect(try local.pagesPerNode().reduce(0, +) == 256)
        for online in runtime.host.nodes {
            let pinned = try runtime.makeHostBuffer(bytes: 12345, options: .init(placement: .node, numaNode: online))
            #expect(try pinned.numaNode() == online)
        }
        let interleaved = try runtime.makeHostBuffer(bytes: 1 << 20, options: .init(placement: .interleave))
        let pages = try interleaved.pagesPerNode()
        #expect(pages.reduce(0, +) == 256)
        #expect(pages.filter { $0 > 0 }.count == runtime.host.nodes.count)
        let lazy = try runtime.makeHostBuffer(bytes: 1 << 20, options: .init(placement: .any))
        #expect(try lazy.numaNode() == nil)
        lazy.data.storeBytes(of: 1, as: UInt8.self)
        #expect(try lazy.pagesPerNode().reduce(0, +) == 1)
    }

    @Test func hugePagesAreGrantedOrExplained() throws {
        let runtime = try Runtime(options: .init(topology: "trn1"), environment: testEnvironment())
        let buffer = try runtime.makeHostBuffer(bytes: 4 << 20, options: .init(hugePages: true))
        if transparentHugePageSetting() == "never" {
            #expect(!buffer.hugePages && buffer.note.contains("[never]"))
        } else {
            #expect(buffer.hugePages && buffer.note.isEmpty)
        }
    }

    @Test func closedBuffersAndRuntimesRefuseUse() throws {
        let runtime = try Runtime(options: .init(topology: "trn1"), environment: testEnvironment())
        let buffer = try runtime.makeHostBuffer(bytes: 64)
        buffer.close()
        #expect(#expect(throws: VtrnError.self) { try buffer.numaNode() }?.message == "the host buffer was destroyed")
        runtime.close()
        #expect(throws: VtrnError.self) { try runtime.makeHostBuffer(bytes: 64) }
        #expect(#expect(throws: VtrnError.self) { try runtime.makeHostBuffer(bytes: 0) }?.status == .invalidHandle)
    }

    @Test func zeroBytesIsRefused() throws {
        let runtime = try Runtime(options: .init(topology: "trn1"), environment: testEnvironment())
        let error = #expect(throws: VtrnError.self) { try runtime.makeHostBuffer(bytes: 0) }
        #expect(error == .invalidArgument("bytes is 0; a host buffer holds at least 1 byte"))
    }
}

@Suite struct DeviceMemoryTests {
    @Test func allocationsAreAccountedAndCoalesce() throws {
        let (_, device) = try isolatedDevice()
        let before = try device.info.hbmUsedBytes
        let blocks = try (0..<4).map { _ in try device.allocate(8 << 30) }
        #expect(try device.info.hbmUsedBytes == before + (32 << 30))
        for block in blocks { block.free() }
        let whole = try device.allocate(32 << 30)
        #expect(whole.address == 0)
        whole.free()
        #expect(try device.info.hbmUsedBytes == before)
    }

    @Test func outOfMemoryReportsLikeNeuron() throws {
        let (_, device) = try isolatedDevice()
        let held = try device.allocate(1 << 30)
        let error = #expect(throws: VtrnError.self) { try device.allocate(32 << 30) }
        #expect(error?.status == .outOfDeviceMemory)
        #expect(error?.message == "device \(device.index) (Trainium1) cannot allocate 32 GiB (34359738368 bytes) (alignment 64): "
                + "31 GiB (33285996544 bytes) of 32 GiB (34359738368 bytes) free, largest free block 31 GiB (33285996544 bytes); "
                + "in use: tensors 1 GiB (1073741824 bytes), kernels 0 bytes in 1 blocks")
        held.free()
    }

    @Test func alignmentRules() throws {
        let (_, device) = try isolatedDevice()
        let aligned = try device.allocate(10, alignment: 1 << 20)
        #expect(aligned.address % (1 << 20) == 0 && aligned.alignment == 1 << 20)
        #expect(try device.allocate(10).alignment == 64)
        for bad: UInt64 in [3, 96, 1 << 31] {
            let error = #expect(throws: VtrnError.self) { try device.allocate(10, alignment: bad) }
            #expect(error?.message.contains("alignment \(bad) is not a power of two up to 1 GiB") == true)
        }
    }

    @Test func runtimeCloseFreesItsMemory() throws {
        let (first, device) = try isolatedDevice()
        let second = try Runtime(options: .init(topology: first.configuration.topology.description), environment: testEnvironment())
        let base = try second.devices[device.index].info.hbmUsedBytes
        let block = try device.allocate(1 << 30)
        // The device is the process's: the other runtime sees the use.
        #expect(try second.devices[device.index].info.hbmUsedBytes == base + (1 << 30))
        first.close()
        #expect(block.isFreed)
        #expect(try second.devices[device.index].info.hbmUsedBytes == base)
    }

    @Test func droppedObjectsReleaseTheirResources() throws {
        var (runtime, device): (Runtime?, Device?) = try isolatedDevice()
        let shared = device!.hardware
        weak let weakRuntime = runtime
        _ = try device!.allocate(1 << 20)
        #expect(shared.hbm.usage.used == 0, "a block nobody holds is freed")
        var block: DeviceMemory? = try device!.allocate(1 << 20)
        let queue = try device!.openQueue(core: 0, engine: 0, queue: 0)
        runtime = nil
        device = nil
        #expect(weakRuntime != nil, "the block and the queue keep the runtime alive")
        #expect(shared.hbm.usage.used == 1 << 20)
        block = nil
        _ = block
        #expect(shared.hbm.usage.used == 0)
        queue.close()
    }
}
