import Testing
@testable import VtrnDevice

/// The device model driven directly, as a driver would: descriptors, doorbell, completion.
@Suite struct DmaHardwareTests {
    func makeDevice() throws -> VirtualDevice { try VirtualDevice(preset: .trn1, index: 0, numaNode: 0) }

    @Test func copiesPairedDescriptorsAndPublishesTheSequence() throws {
        let device = try makeDevice()
        let queue = try #require(device.openQueue(core: 0, engine: 0, queue: 0, entries: 32))
        defer { device.closeQueue(queue) }
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: 70_000, alignment: 64)
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: 70_000, alignment: 64)
        defer { source.deallocate(); destination.deallocate() }
        for index in 0..<70_000 { source[index] = UInt8(truncatingIfNeeded: index * 31) }
        // 70000 bytes = a 65536-byte FIRST descriptor and a 4464-byte LAST one.
        for (position, (offset, length)) in [(0, 65536), (65536, 4464)].enumerated() {
            var control = UInt32(length) & DmaDescriptor.lengthMask
            control |= DmaDescriptor.ringId(position: UInt64(position), entries: 32) << DmaDescriptor.ringIdShift
            control |= position == 0 ? DmaDescriptor.first : DmaDescriptor.last
            queue.sourceRing[position] = DmaDescriptor(lengthControl: control, address: UInt64(UInt(bitPattern: source.baseAddress! + offset)))
            queue.destinationRing[position] = DmaDescriptor(lengthControl: control, address: UInt64(UInt(bitPattern: destination.baseAddress! + offset)))
        }
        #expect(queue.wait(for: 1, timeoutNanoseconds: 0) == .timedOut)
        queue.ringDoorbell(tail: 2, sequence: 1)
        #expect(queue.wait(for: 1, timeoutNanoseconds: .max) == .completed)
        #expect(queue.head == 2 && queue.bytesCompleted == 70_000)
        #expect(memcmp(source.baseAddress!, destination.baseAddress!, 70_000) == 0)
    }

    @Test func refusesADescriptorFromAnotherLap() throws {
        let device = try makeDevice()
        let queue = try #require(device.openQueue(core: 1, engine: 15, queue: 15, entries: 32))
        defer { device.closeQueue(queue) }
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 128, alignment: 64)
        defer { memory.deallocate() }
        // Ring id 0 where the first lap expects 1: the engine must stop, as udma aborts.
        let control = UInt32(64) | DmaDescriptor.first | DmaDescriptor.last
        queue.sourceRing[0] = DmaDescriptor(lengthControl: control, address: UInt64(UInt(bitPattern: memory.baseAddress!)))
        queue.destinationRing[0] = DmaDescriptor(lengthControl: control, address: UInt64(UInt(bitPattern: memory.baseAddress! + 64)))
        queue.ringDoorbell(tail: 1, sequence: 1)
        #expect(queue.wait(for: 1, timeoutNanoseconds: 5_000_000_000) == .stopped)
        #expect(queue.stop?.position == 0 && queue.stop?.reason == .descriptorError)
        #expect(device.faults.counters.snapshot.dmaAborts == 1)
    }

    @Test func aQueueOpensOnceAndTheEngineStopsWithItsLastQueue() throws {
        let device = try makeDevice()
        let queue = try #require(device.openQueue(core: 0, engine: 3, queue: 7, entries: 64))
        #expect(device.openQueue(core: 0, engine: 3, queue: 7, entries: 64) == nil)
        device.closeQueue(queue)
        let again = try #require(device.openQueue(core: 0, engine: 3, queue: 7, entries: 64))
        device.closeQueue(again)
    }

    @Test func hbmIsReservedNotCommitted() throws {
        let device = try VirtualDevice(preset: .trn2, index: 5, numaNode: 0)
        #expect(device.hbm.capacity == 96 << 30)
        #expect(device.hbm.residentBytes == 0)
        guard case .success(let block) = device.hbm.allocate(1 << 20, alignment: 64, category: .tensor, owner: 7) else {
            Issue.record("allocation failed")
            return
        }
        #expect(device.hbm.residentBytes == 0)
        device.hbm.pointer(block.address).initializeMemory(as: UInt8.self, repeating: 1, count: 1 << 20)
        #expect(device.hbm.residentBytes >= 1 << 20)
        device.hbm.free(block)
        #expect(device.hbm.usage.used == 0)
        #expect(device.hbm.residentBytes == 0)
    }

    @Test func lateFreesOfReclaimedBlocksAreHarmless() throws {
        let device = try VirtualDevice(preset: .trn1, index: 6, numaNode: 0)
        guard case .success(let mine) = device.hbm.allocate(4096, alignment: 64, category: .tensor, owner: 1) else { return }
        device.hbm.freeAll(owner: 1)
        // The same space, handed to someone else, must survive the first owner's late free.
        guard case .success(let theirs) = device.hbm.allocate(4096, alignment: 64, category: .tensor, owner: 2) else { return }
        #expect(theirs.address == mine.address && theirs.id != mine.id)
        device.hbm.free(mine)
        #expect(device.hbm.usage.used == 4096)
        device.hbm.free(theirs)
        #expect(device.hbm.usage.used == 0)
    }
}

#if canImport(Glibc)
import Glibc
#endif
