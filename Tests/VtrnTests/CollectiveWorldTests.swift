import Foundation
import Testing
@testable import Vtrn
import VtrnDevice

/// Communicators that span "processes" (communicators of one process joined by an in-memory
/// transport, standing in for MPI): the results equal a one-process communicator's, bit for bit.
@Suite(.serialized) struct CollectiveWorldTests {
    func upload<T>(_ device: Device, _ values: [T]) throws -> DeviceMemory {
        let bytes = values.count * MemoryLayout<T>.stride
        let memory = try device.allocate(UInt64(max(bytes, 1)))
        values.withUnsafeBytes { memcpy(memory.pointer, $0.baseAddress!, bytes) }
        return memory
    }

    func bytes(_ memory: DeviceMemory, _ count: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: memory.pointer, count: count))
    }

    /// Runs `call` for every rank: once over one communicator of all devices, once over one
    /// communicator per "process" (`counts` ranks each); returns both sets of outputs' bytes.
    func compare(_ runtime: Runtime, _ devices: [Device], counts: [Int], outputBytes: Int, inputs: [[Float]],
                 _ call: (Communicator, Int, Communicator.Buffer, Communicator.Buffer) throws -> Fence) throws -> ([[UInt8]], [[UInt8]]) {
        let total = counts.reduce(0, +)
        func run(_ communicators: [(Communicator, Range<Int>)]) throws -> [[UInt8]] {
            let sources = try (0..<total).map { try upload(devices[$0], inputs[$0]) }
            let outputs = try (0..<total).map { try devices[$0].allocate(UInt64(outputBytes)) }
            var fences: [Fence] = []
            for (comm, ranks) in communicators {
                for rank in ranks { fences.append(try call(comm, rank, .init(sources[rank]), .init(outputs[rank]))) }
            }
            for fence in fences { try fence.wait() }
            return outputs.map { bytes($0, outputBytes) }
        }
        let single = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 0) })
        let expected = try run([(single, 0..<total)])
        let endpoints = InProcessTransport.world(processes: counts.count)
        var communicators: [(Communicator, Range<Int>)] = []
        var first = 0
        for (process, count) in counts.enumerated() {
            let world = CollectiveWorld(transport: endpoints[process], counts: counts)
            let members = devices[first..<(first + count)].map { Communicator.Member(device: $0, core: 1) }
            let comm = try runtime.makeCommunicator(Array(members), world: world)
            #expect(comm.size == total && comm.localRanks == first..<(first + count))
            communicators.append((comm, first..<(first + count)))
            first += count
        }
        return (expected, try run(communicators))
    }

    func inputs(_ ranks: Int, _ count: Int) -> [[Float]] {
        (0..<ranks).map { r -> [Float] in
            (0..<count).map { i -> Float in
                let spread = Float((i * 7919 + r * 104_729) % 2000) / 3.7
                return spread - 270 + Float(r) / 1000
            }
        }
    }

    @Test(arguments: [[2, 2], [1, 2, 1], [3, 1], [1, 1, 1, 1]])
    func allReduceAndReduceScatterMatchOneProcess(counts: [Int]) throws {
        let total = counts.reduce(0, +), count = 1003
        let data = inputs(total, count)
        let (runtime, devices) = try isolatedDeviceGroup(total, first: 6)
        defer { runtime.close() }
        let (one, many) = try compare(runtime, devices, counts: counts, outputBytes: count * 4, inputs: data) { comm, rank, source, destination in
            try comm.allReduce(rank: rank, source: source, destination: destination, count: count, dtype: .fp32)
        }
        #expect(one == many)
        let each = count / total
        let (one2, many2) = try compare(runtime, devices, counts: counts, outputBytes: each * 4, inputs: data) { comm, rank, source, destination in
            try comm.reduceScatter(rank: rank, source: source, destination: destination, count: each, dtype: .fp32, op: .add)
        }
        #expect(one2 == many2)
        // bf16 rounds at every step: the order matters, and must be the same.
        let halves = data.map { $0.map { Float(bitPattern: UInt32(Conversion.bf16Bits($0)) << 16) } }
        let packed = halves.map { values in values.map { Conversion.bf16Bits($0) } }
        let (one3, many3) = try compare(runtime, devices, counts: counts, outputBytes: count * 2, inputs: packed.map { $0.map { Float($0) } }) {
            comm, rank, source, destination in
            // Re-upload as bf16 bits: the Float inputs above are only carriers of the sizes.
            let device = source.memory.device
            let memory = try upload(device, packed[rank])
            return try comm.allReduce(rank: rank, source: .init(memory), destination: destination, count: count, dtype: .bf16)
        }
        #expect(one3 == many3)
    }

    @Test(arguments: [[2, 2], [1, 2, 1]])
    func gatherAllToAllBroadcastPermuteMatchOneProcess(counts: [Int]) throws {
        let total = counts.reduce(0, +), each = 5
        let data = inputs(total, each * total)
        let (runtime, devices) = try isolatedDeviceGroup(total, first: 6)
        defer { runtime.close() }
        let (a, b) = try compare(runtime, devices, counts: counts, outputBytes: each * total * 4, inputs: data) { comm, rank, source, destination in
            try comm.allGather(rank: rank, source: source, destination: destination, count: each, dtype: .fp32)
        }
        #expect(a == b)
        let (c, d) = try compare(runtime, devices, counts: counts, outputBytes: each * total * 4, inputs: data) { comm, rank, source, destination in
            try comm.allToAll(rank: rank, source: source, destination: destination, count: each, dtype: .fp32)
        }
        #expect(c == d)
        let (e, f) = try compare(runtime, devices, counts: counts, outputBytes: each * total * 4, inputs: data) { comm, rank, source, destination in
            try comm.broadcast(rank: rank, source: source, destination: destination, count: each * total, dtype: .fp32, root: total - 1)
        }
        #expect(e == f)
        let targets = (0..<total).map { ($0 + 1) % total }
        let (g, h) = try compare(runtime, devices, counts: counts, outputBytes: each * 4, inputs: data) { comm, rank, source, destination in
            try comm.permute(rank: rank, source: source, destination: destination, count: each, dtype: .fp32, targets: targets)
        }
        #expect(g == h)
    }

    @Test func sendAndReceiveCrossTheTransport() throws {
        let (runtime, devices) = try isolatedDeviceGroup(2, first: 6)
        defer { runtime.close() }
        let endpoints = InProcessTransport.world(processes: 2)
        let comms = try (0..<2).map {
            try runtime.makeCommunicator([.init(device: devices[$0], core: 0)],
                                         world: CollectiveWorld(transport: endpoints[$0], counts: [1, 1]))
        }
        let source = try upload(devices[0], (0..<64).map { Int32($0 * 3) })
        let destination = try devices[1].allocate(256)
        let send = try comms[0].send(rank: 0, source: .init(source), count: 64, dtype: .int32, peer: 1)
        let receive = try comms[1].receive(rank: 1, destination: .init(destination), count: 64, dtype: .int32, peer: 0)
        try send.wait()
        try receive.wait()
        #expect(Array(UnsafeBufferPointer(start: destination.pointer.assumingMemoryBound(to: Int32.self), count: 64)) == (0..<64).map { Int32($0 * 3) })
        // A rank of the other process is not this one's to call.
        let error = #expect(throws: VtrnError.self) {
            try comms[0].send(rank: 1, source: .init(source), count: 1, dtype: .int32, peer: 0)
        }
        #expect(error?.message.contains("rank 1 of communicator \(comms[0].serial) is in process 1; this process has ranks 0-0") == true)
        // Counts that differ between the ends fail both.
        let bad = try comms[0].send(rank: 0, source: .init(source), count: 8, dtype: .int32, peer: 1)
        let other = try comms[1].receive(rank: 1, destination: .init(destination), count: 4, dtype: .int32, peer: 0)
        for fence in [bad, other] {
            let failure = #expect(throws: VtrnError.self) { try fence.wait() }
            #expect(failure?.status == .invalidArgument)
            #expect(failure?.message.contains("both ends must agree on count and dtype") == true)
        }
    }

    @Test func processesThatAskForDifferentCollectivesAllFail() throws {
        let (runtime, devices) = try isolatedDeviceGroup(2, first: 6)
        defer { runtime.close() }
        let endpoints = InProcessTransport.world(processes: 2)
        let comms = try (0..<2).map {
            try runtime.makeCommunicator([.init(device: devices[$0], core: 0)],
                                         world: CollectiveWorld(transport: endpoints[$0], counts: [1, 1]))
        }
        let memory = try devices.map { try $0.allocate(64) }
        let f0 = try comms[0].allReduce(rank: 0, source: .init(memory[0]), destination: .init(memory[0]), count: 16, dtype: .fp32)
        let f1 = try comms[1].allReduce(rank: 1, source: .init(memory[1]), destination: .init(memory[1]), count: 8, dtype: .fp32)
        for fence in [f0, f1] {
            let failure = #expect(throws: VtrnError.self) { try fence.wait() }
            #expect(failure?.status == .invalidArgument)
            #expect(failure?.message.contains("asked for ALL_REDUCE of") == true)
        }
    }

    @Test func aProcessThatNeverComesIsNamedAtTheTimeout() throws {
        let (runtime, devices) = try isolatedDeviceGroup(2, first: 6, environment: ["VTRN_EXEC_TIMEOUT_MS": "200"])
        defer { runtime.close() }
        let endpoints = InProcessTransport.world(processes: 2)
        let comm = try runtime.makeCommunicator([.init(device: devices[0], core: 0)],
                                                world: CollectiveWorld(transport: endpoints[0], counts: [1, 1]))
        let memory = try devices[0].allocate(64)
        let fence = try comm.allReduce(rank: 0, source: .init(memory), destination: .init(memory), count: 16, dtype: .fp32)
        let failure = #expect(throws: VtrnError.self) { try fence.wait() }
        #expect(failure?.status == .timeout)
        #expect(failure?.message.contains("process 1 sent nothing to process 0") == true)
    }

    /// A process's part of the collective moves on its lowest rank's CC ring: a DMA abort there
    /// fails that process with the ring's message; the process waiting for it meets the timeout.
    @Test func aDmaAbortOnAProcesssRingFailsItsCollective() throws {
        let (runtime, devices) = try isolatedDeviceGroup(4, first: 6, environment: ["VTRN_EXEC_TIMEOUT_MS": "500"])
        defer { runtime.close() }
        let endpoints = InProcessTransport.world(processes: 2)
        let comms = try (0..<2).map { process in
            try runtime.makeCommunicator(devices[(2 * process)..<(2 * process + 2)].map { .init(device: $0, core: 0) },
                                         world: CollectiveWorld(transport: endpoints[process], counts: [2, 2]))
        }
        let memories = try devices.map { try upload($0, [Float](repeating: 1, count: 4096)) }
        _ = try devices[2].injectFault(Fault(.dmaAbort(.init(core: .core(0)))))
        let fences = try (0..<4).map {
            try comms[$0 / 2].allReduce(rank: $0, source: .init(memories[$0]), destination: .init(memories[$0]), count: 4096, dtype: .fp32)
        }
        for rank in 2..<4 {
            let failure = #expect(throws: VtrnError.self) { try fences[rank].wait() }
            #expect(failure?.status == .dmaFault)
            #expect(failure?.message.contains("DMA abort on the CC ring of rank 2 (device \(devices[2].index) core 0)") == true,
                    "\(failure?.message ?? "")")
        }
        for rank in 0..<2 {
            let failure = #expect(throws: VtrnError.self) { try fences[rank].wait() }
            #expect(failure?.status == .timeout)
        }
    }
}
