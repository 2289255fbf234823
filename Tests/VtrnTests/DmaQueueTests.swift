import Testing
import VtrnDevice
@testable import Vtrn

#if canImport(Glibc)
import Glibc
#endif

@Suite struct DmaQueueTests {
    func fill(_ buffer: HostBuffer, seed: Int) {
        let bytes = buffer.data.assumingMemoryBound(to: UInt8.self)
        for index in 0..<buffer.bytes { bytes[index] = UInt8(truncatingIfNeeded: index &* 131 &+ seed) }
    }

    @Test func hostToHbmToHbmToHostIsExact() throws {
        let (runtime, device) = try isolatedDevice()
        let bytes = 3 << 20 + 7
        let input = try runtime.makeHostBuffer(bytes: bytes), output = try runtime.makeHostBuffer(bytes: bytes)
        fill(input, seed: 5)
        let first = try device.allocate(UInt64(bytes)), second = try device.allocate(UInt64(bytes))
        let queue = try device.openQueue(core: 0, engine: 0, queue: 0)
        try queue.enqueue([DmaTransfer(destination: .device(first, offset: 0), source: .host(input, offset: 0), bytes: UInt64(bytes))])
        try queue.wait(for: try queue.submit())
        try queue.enqueue([DmaTransfer(destination: .device(second, offset: 0), source: .device(first, offset: 0), bytes: UInt64(bytes)),
                           DmaTransfer(destination: .host(output, offset: 0), source: .device(second, offset: 0), bytes: UInt64(bytes))])
        let sequence = try queue.submit()
        #expect(sequence == 2)
        try queue.wait(for: sequence)
        #expect(memcmp(input.data, output.data, bytes) == 0)
        let info = try queue.info
        #expect(info.completedSequence == 2 && info.bytesCompleted == 3 * UInt64(bytes))
        #expect(info.descriptorsCompleted == 3 * 49)
    }

    @Test(arguments: [1, 63, 65535, 65536, 65537, 200_003])
    func oddSizesAndOffsets(bytes: Int) throws {
        let (runtime, device) = try isolatedDevice()
        let input = try runtime.makeHostBuffer(bytes: bytes + 3), output = try runtime.makeHostBuffer(bytes: bytes + 5)
        fill(input, seed: bytes)
        let memory = try device.allocate(UInt64(bytes) + 11)
        try device.copy(to: .device(memory, offset: 11), from: .host(input, offset: 3), bytes: UInt64(bytes))
        try device.copy(to: .host(output, offset: 5), from: .device(memory, offset: 11), bytes: UInt64(bytes))
        #expect(memcmp(input.data + 3, output.data + 5, bytes) == 0)
    }

    @Test func aBadTransferFailsTheWholeBatchNamingItsIndex() throws {
        let (runtime, device) = try isolatedDevice()
        let buffer = try runtime.makeHostBuffer(bytes: 4096)
        let memory = try device.allocate(4096)
        let queue = try device.openQueue(core: 0, engine: 1, queue: 2, ringEntries: 32)
        let good = DmaTransfer(destination: .device(memory, offset: 0), source: .host(buffer, offset: 0), bytes: 4096)
        let bad = DmaTransfer(destination: .device(memory, offset: 1), source: .host(buffer, offset: 0), bytes: 4096)
        let error = #expect(throws: VtrnError.self) { try queue.enqueue([good, good, bad]) }
        #expect(error == VtrnError(.outOfBounds, "transfer 2: dst range [1, 1 + 4096) runs past the end of the 4096-byte device memory block"))
        #expect(try queue.info.freeEntries == 32)
        let overlap = DmaTransfer(destination: .host(buffer, offset: 10), source: .host(buffer, offset: 0), bytes: 100)
        #expect(#expect(throws: VtrnError.self) { try queue.enqueue([overlap]) }?.message.contains("transfer 0: dst and src overlap") == true)
        let empty = DmaTransfer(destination: .host(buffer, offset: 0), source: .device(memory, offset: 0), bytes: 0)
        #expect(#expect(throws: VtrnError.self) { try queue.enqueue([empty]) } == .invalidArgument("transfer 0: bytes is 0"))
        #expect(#expect(throws: VtrnError.self) { try queue.wait(for: 1) }?.message.contains("was never submitted") == true)
    }

    @Test func aFullRingTakesNothing() throws {
        let (_, device) = try isolatedDevice()
        let source = try device.allocate(33 << 16), destination = try device.allocate(33 << 16)
        let queue = try device.openQueue(core: 0, engine: 0, queue: 0, ringEntries: 32)
        let tooBig = DmaTransfer(destination: .device(destination, offset: 0), source: .device(source, offset: 0), bytes: 33 << 16)
        let error = #expect(throws: VtrnError.self) { try queue.enqueue([tooBig]) }
        #expect(error?.status == .queueFull)
        #expect(error?.message.hasPrefix("the batch needs 33 descriptors and the ring has 32 free of 32") == true)
        #expect(try queue.info.freeEntries == 32)
        let fits = DmaTransfer(destination: .device(destination, offset: 0), source: .device(source, offset: 0), bytes: 32 << 16)
        try queue.enqueue([fits])
        #expect(try queue.info.freeEntries == 0)
        try queue.wait(for: try queue.submit())
        #expect(try queue.info.freeEntries == 32)
    }

    @Test func queuesAndCoresAreOwned() throws {
        let (first, device) = try isolatedDevice()
        let second = try Runtime(options: .init(topology: first.configuration.topology.description), environment: testEnvironment())
        let other = second.devices[device.index]
        let queue = try device.openQueue(core: 1, engine: 0, queue: 0)
        let twice = #expect(throws: VtrnError.self) { try device.openQueue(core: 1, engine: 0, queue: 0) }
        #expect(twice?.status == .busy && twice?.message.contains("is open already") == true)
        let claimed = #expect(throws: VtrnError.self) { try other.openQueue(core: 1, engine: 5, queue: 0) }
        #expect(claimed == VtrnError(.busy, "core 1 of device \(device.index) is claimed by runtime \(first.serial) until it is destroyed"))
        _ = try other.openQueue(core: 0, engine: 0, queue: 0)
        queue.close()
        first.close()
        _ = try other.openQueue(core: 1, engine: 0, queue: 0)
    }

    @Test func rangesAndVisibilityAreChecked() throws {
        let (_, device) = try isolatedDevice(visibleCores: "1")
        let hidden = #expect(throws: VtrnError.self) { try device.openQueue(core: 0, engine: 0, queue: 0) }
        #expect(hidden?.message.contains("is not visible to runtime") == true)
        #expect(#expect(throws: VtrnError.self) { try device.openQueue(core: 2, engine: 0, queue: 0) }?.message.contains("core 2 requested") == true)
        #expect(#expect(throws: VtrnError.self) { try device.openQueue(core: 1, engine: 16, queue: 0) }?.message.contains("engine 16 requested") == true)
        #expect(#expect(throws: VtrnError.self) { try device.openQueue(core: 1, engine: 0, queue: 16) }?.message.contains("queue 16 requested") == true)
        for entries in [31, 1 << 24] {
            #expect(#expect(throws: VtrnError.self) { try device.openQueue(core: 1, engine: 0, queue: 0, ringEntries: entries) }?
                .message.contains("ring_entries is \(entries)") == true)
        }
    }

    @Test func pollingAndConcurrentQueues() async throws {
        let (runtime, devices) = try isolatedDeviceGroup(1, first: 10)
        let device = devices[0]
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for engine in 0..<4 {
                let queue = try device.openQueue(core: engine % 2, engine: engine, queue: 0)
                let input = try runtime.makeHostBuffer(bytes: 1 << 20), output = try runtime.makeHostBuffer(bytes: 1 << 20)
                let memory = try device.allocate(1 << 20)
                fill(input, seed: engine)
                group.addTask {
                    for round in 0..<20 {
                        let size = UInt64(1 << 20) - UInt64(round * 4099)
                        try queue.enqueue([DmaTransfer(destination: .device(memory, offset: 0), source: .host(input, offset: 0), bytes: size),
                                           DmaTransfer(destination: .host(output, offset: 0), source: .device(memory, offset: 0), bytes: size)])
                        let sequence = try queue.submit()
                        do { try queue.wait(for: sequence, timeoutNanoseconds: 0) } catch let error as VtrnError where error.status == .notReady {}
                        try queue.wait(for: sequence, timeoutNanoseconds: 10_000_000_000)
                        #expect(queue.completedSequence == sequence)
                        if memcmp(input.data, output.data, Int(size)) != 0 { return false }
                    }
                    return true
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results == [true, true, true, true])
    }

    @Test func closingABufferInFlightIsSafe() throws {
        let (runtime, device) = try isolatedDevice()
        let memory = try device.allocate(64 << 20)
        let queue = try device.openQueue(core: 0, engine: 0, queue: 0)
        var buffer: HostBuffer? = try runtime.makeHostBuffer(bytes: 64 << 20)
        try queue.enqueue([DmaTransfer(destination: .device(memory, offset: 0), source: .host(buffer!, offset: 0), bytes: 64 << 20)])
        let sequence = try queue.submit()
        buffer!.close()
        buffer = nil
        try queue.wait(for: sequence)
        runtime.close()
        #expect(queue.isClosed)
        #expect(#expect(throws: VtrnError.self) { try queue.submit() }?.status == .invalidHandle)
    }
}
