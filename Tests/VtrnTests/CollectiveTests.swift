import Foundation
import Testing
@testable import Vtrn
import VtrnDevice

/// Host-called and in-kernel collectives over communicators of several devices.
@Suite(.serialized) struct CollectiveTests {
    /// Device memory holding `values`, and a reader of it back.
    func upload<T>(_ device: Device, _ values: [T]) throws -> DeviceMemory {
        let bytes = values.count * MemoryLayout<T>.stride
        let memory = try device.allocate(UInt64(max(bytes, 1)))
        values.withUnsafeBytes { memcpy(memory.pointer, $0.baseAddress!, bytes) }
        return memory
    }

    func download<T>(_ memory: DeviceMemory, _ count: Int, as: T.Type) -> [T] {
        Array(UnsafeBufferPointer(start: memory.pointer.assumingMemoryBound(to: T.self), count: count))
    }

    /// The ring's order for chunk c: ranks c+1, c+2, ..., c, folded left.
    func ringReference(_ inputs: [[Float]], round: (Float) -> Float = { $0 }) -> [Float] {
        let n = inputs.count, count = inputs[0].count
        var result = [Float](repeating: 0, count: count)
        for c in 0..<n {
            for i in CollectiveGroup.chunk(c, of: count, parts: n) {
                var acc = inputs[(c + 1) % n][i]
                for k in 2...n { acc = round(acc + inputs[(c + k) % n][i]) }
                result[i] = acc
            }
        }
        return result
    }

    /// Every data path (VTRN_CC_STEPS 0: each rank's share directly; 1: the ring's steps) gives
    /// the same bits.
    static let dataPaths = ["0", "1"]

    @Test(arguments: dataPaths) func allReduceMatchesTheRingOrderBitForBit(steps: String) throws {
        let (runtime, devices) = try isolatedDeviceGroup(4, first: 2, environment: ["VTRN_CC_STEPS": steps])
        defer { runtime.close() }
        let comm = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 0) })
        let count = 10_007
        var generator = SystemRandomNumberGenerator()
        let inputs = (0..<4).map { _ in (0..<count).map { _ in Float.random(in: -1000...1000, using: &generator) } }
        let sources = try zip(devices, inputs).map { try upload($0, $1) }
        let outputs = try devices.map { try $0.allocate(UInt64(count * 4)) }
        let fences = try (0..<4).map {
            try comm.allReduce(rank: $0, source: .init(sources[$0]), destination: .init(outputs[$0]), count: count, dtype: .fp32)
        }
        for fence in fences { try fence.wait() }
        let expected = ringReference(inputs)
        for output in outputs {
            #expect(download(output, count, as: Float.self).map(\.bitPattern) == expected.map(\.bitPattern))
        }
        // In place, max.
        let fences2 = try (0..<4).map {
            try comm.allReduce(rank: $0, source: .init(sources[$0]), destination: .init(sources[$0]), count: count, dtype: .fp32, op: .max)
        }
        for fence in fences2 { try fence.wait() }
        let maxima = (0..<count).map { i in inputs.map { $0[i] }.max()! }
        #expect(download(sources[2], count, as: Float.self) == maxima)
    }

    /// VTRN_CC_ALGORITHM=torus: rows of 4 ranks, then columns, in the documented order.
    @Test(arguments: dataPaths) func torusAllReduceFoldsRowsThenColumns(steps: String) throws {
        let (runtime, devices) = try isolatedDeviceGroup(4, first: 2, environment: ["VTRN_CC_ALGORITHM": "torus", "VTRN_CC_STEPS": steps])
        defer { runtime.close() }
        // 8 ranks: two cores of each device, rank order device-major.
        let members = devices.flatMap { device in [0, 1].map { Communicator.Member(device: device, core: $0) } }
        let comm = try runtime.makeCommunicator(members)
        #expect(comm.group.algorithm == .torus)
        let n = 8, columns = 4, rows = 2, count = 1001
        let inputs = (0..<n).map { r in (0..<count).map { i in Conversion.round(Float((i * 31 + r * 17) % 113) * 0.173 - 9, to: .bf16) } }
        let sources = try (0..<n).map { try upload(members[$0].device, inputs[$0].map { Conversion.bf16Bits($0) }) }
        let outputs = try (0..<n).map { try members[$0].device.allocate(UInt64(count * 2)) }
        for fence in try (0..<n).map({
            try comm.allReduce(rank: $0, source: .init(sources[$0]), destination: .init(outputs[$0]), count: count, dtype: .bf16)
        }) { try fence.wait() }
        func round(_ x: Float) -> Float { Conversion.round(x, to: .bf16) }
        var expected = [Float](repeating: 0, count: count)
        for i in 0..<count {
            let column = (0..<columns).first { CollectiveGroup.chunk($0, of: count, parts: columns).contains(i) }!
            let row = (0..<rows).first { CollectiveGroup.chunk($0, of: count, parts: rows).contains(i) }!
            let sums = (0..<rows).map { k -> Float in
                var value = inputs[k * columns + (column + 1) % columns][i]
                for m in 2...columns { value = round(value + inputs[k * columns + (column + m) % columns][i]) }
                return value
            }
            var value = sums[(row + 1) % rows]
            for m in 2...rows { value = round(value + sums[(row + m) % rows]) }
            expected[i] = value
        }
        for output in outputs { #expect(download(output, count, as: UInt16.self) == expected.map { Conversion.bf16Bits($0) }) }
        // Other operations keep the ring; a bad value is refused.
        #expect(throws: VtrnError.self) {
            try Runtime(options: .init(topology: "trn1"), environment: testEnvironment(["VTRN_CC_ALGORITHM": "tree"]))
        }
        let badSteps = #expect(throws: VtrnError.self) {
            try Runtime(options: .init(topology: "trn1"), environment: testEnvironment(["VTRN_CC_STEPS": "yes"]))
        }
        #expect(badSteps?.message.contains("VTRN_CC_STEPS=\"yes\" is neither 0") == true)
    }

    @Test(arguments: dataPaths) func allGatherReduceScatterAllToAllBroadcastSendReceive(steps: String) throws {
        let (runtime, devices) = try isolatedDeviceGroup(3, first: 2, environment: ["VTRN_CC_STEPS": steps])
        defer { runtime.close() }
        // Two ranks on one device: its two cores.
        let members: [Communicator.Member] = [.init(device: devices[0], core: 0), .init(device: devices[1], core: 1),
                                              .init(device: devices[2], core: 0), .init(device: devices[0], core: 1)]
        let comm = try runtime.makeCommunicator(members)
        let n = 4, count = 6
        let inputs = (0..<n).map { r in (0..<count * n).map { Int32(r * 1000 + $0) } }
        let sources = try (0..<n).map { try upload(members[$0].device, inputs[$0]) }
        let outputs = try (0..<n).map { try members[$0].device.allocate(UInt64(count * n * 4)) }
        func run(_ call: (Int) throws -> Fence) throws { for fence in try (0..<n).map(call) { try fence.wait() } }

        try run { try comm.allGather(rank: $0, source: .init(sources[$0]), destination: .init(outputs[$0]), count: count, dtype: .int32) }
        let gathered = (0..<n).flatMap { Array(inputs[$0][0..<count]) }
        for r in 0..<n { #expect(download(outputs[r], count * n, as: Int32.self) == gathered) }

        try run { try comm.reduceScatter(rank: $0, source: .init(sources[$0]), destination: .init(outputs[$0]), count: count, dtype: .int32) }
        for r in 0..<n {
            let expected = (0..<count).map { i in inputs.reduce(Int32(0)) { $0 &+ $1[r * count + i] } }
            #expect(download(outputs[r], count, as: Int32.self) == expected)
        }

        try run { try comm.allToAll(rank: $0, source: .init(sources[$0]), destination: .init(outputs[$0]), count: count, dtype: .int32) }
        for r in 0..<n {
            let expected = (0..<n).flatMap { j in Array(inputs[j][(r * count)..<((r + 1) * count)]) }
            #expect(download(outputs[r], count * n, as: Int32.self) == expected)
        }

        try run {
            try comm.broadcast(rank: $0, source: $0 == 2 ? .init(sources[$0]) : nil, destination: .init(outputs[$0]), count: count * n,
                               dtype: .int32, root: 2)
        }
        for r in 0..<n { #expect(download(outputs[r], count * n, as: Int32.self) == inputs[2]) }

        // A ring of sends: r sends to r+1, receives from r-1. A send waits for its receive (as
        // NCCL's outside a group), so even ranks send first and odd ranks receive first.
        var fences: [Fence] = []
        for r in 0..<n {
            let send = { try comm.send(rank: r, source: .init(sources[r]), count: count, dtype: .int32, peer: (r + 1) % n) }
            let receive = { try comm.receive(rank: r, destination: .init(outputs[r]), count: count, dtype: .int32, peer: (r + n - 1) % n) }
            fences += r % 2 == 0 ? [try send(), try receive()] : [try receive(), try send()]
        }
        for fence in fences { try fence.wait() }
        for r in 0..<n { #expect(download(outputs[r], count, as: Int32.self) == Array(inputs[(r + n - 1) % n][0..<count])) }
    }

    @Test(arguments: dataPaths) func permuteSendsEveryRankToItsTargetAtOnce(steps: String) throws {
        let (runtime, devices) = try isolatedDeviceGroup(4, first: 2, environment: ["VTRN_CC_STEPS": steps])
        defer { runtime.close() }
        let comm = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 0) })
        let inputs = (0..<4).map { r in (0..<8).map { Int32(r * 100 + $0) } }
        let sources = try (0..<4).map { try upload(devices[$0], inputs[$0]) }
        let outputs = try (0..<4).map { try upload(devices[$0], [Int32](repeating: -1, count: 8)) }
        // Rank 0 and 1 swap, rank 2 keeps its own, rank 3 sends to nobody and nobody sends to it.
        let targets = [1, 0, 2, -1]
        for fence in try (0..<4).map({
            try comm.permute(rank: $0, source: .init(sources[$0]), destination: .init(outputs[$0]), count: 8, dtype: .int32,
                             targets: targets)
        }) { try fence.wait() }
        #expect(download(outputs[0], 8, as: Int32.self) == inputs[1])
        #expect(download(outputs[1], 8, as: Int32.self) == inputs[0])
        #expect(download(outputs[2], 8, as: Int32.self) == inputs[2])
        #expect(download(outputs[3], 8, as: Int32.self) == [Int32](repeating: -1, count: 8))
        let twice = #expect(throws: VtrnError.self) {
            try comm.permute(rank: 0, source: .init(sources[0]), destination: .init(outputs[0]), count: 8, dtype: .int32,
                             targets: [1, 1, -1, -1])
        }
        #expect(twice?.message.contains("ranks 0 and 1 both send to rank 1") == true)
        // Ranks that disagree on the pairs all fail.
        let fences = try (0..<4).map {
            try comm.permute(rank: $0, source: .init(sources[$0]), destination: .init(outputs[$0]), count: 8, dtype: .int32,
                             targets: $0 == 3 ? [1, 2, 3, 0] : [3, 0, 1, 2])
        }
        for fence in fences {
            let error = #expect(throws: VtrnError.self) { try fence.wait() }
            #expect(error?.message.contains("with pairs") == true)
        }
    }

    @Test(arguments: dataPaths) func bf16ReductionRoundsAtEveryStep(steps: String) throws {
        let (runtime, devices) = try isolatedDeviceGroup(4, first: 2, environment: ["VTRN_CC_STEPS": steps])
        defer { runtime.close() }
        let comm = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 1) })
        let count = 257
        let inputs = (0..<4).map { r in (0..<count).map { Conversion.round(Float($0) * 0.37 + Float(r) * 1.01, to: .bf16) } }
        let sources = try (0..<4).map { r in try upload(devices[r], inputs[r].map { Conversion.bf16Bits($0) }) }
        let outputs = try devices.map { try $0.allocate(UInt64(count * 2)) }
        for fence in try (0..<4).map({
            try comm.allReduce(rank: $0, source: .init(sources[$0]), destination: .init(outputs[$0]), count: count, dtype: .bf16)
        }) { try fence.wait() }
        let expected = ringReference(inputs) { Conversion.round($0, to: .bf16) }.map { Conversion.bf16Bits($0) }
        #expect(download(outputs[3], count, as: UInt16.self) == expected)
    }

    @Test func mismatchedCallsFailEveryRankNamingThem() throws {
        let (runtime, devices) = try isolatedDeviceGroup(2, first: 2)
        defer { runtime.close() }
        let comm = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 0) })
        let a = try devices[0].allocate(64), b = try devices[1].allocate(64)
        let f0 = try comm.allReduce(rank: 0, source: .init(a), destination: .init(a), count: 16, dtype: .fp32)
        let f1 = try comm.allReduce(rank: 1, source: .init(b), destination: .init(b), count: 8, dtype: .fp32)
        for fence in [f0, f1] {
            let error = #expect(throws: VtrnError.self) { try fence.wait() }
            #expect(error?.status == .invalidArgument)
            #expect(error?.message.contains("rank 1 (device \(devices[1].index) core 0) asked for ALL_REDUCE of 8 fp32") == true)
        }
    }

    @Test func aRankThatNeverJoinsIsNamedAtTheTimeout() throws {
        let (runtime, devices) = try isolatedDeviceGroup(3, first: 2, environment: ["VTRN_EXEC_TIMEOUT_MS": "200"])
        defer { runtime.close() }
        let comm = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 0) })
        let memory = try devices.map { try $0.allocate(64) }
        let fences = try (0..<2).map { try comm.allReduce(rank: $0, source: .init(memory[$0]), destination: .init(memory[$0]), count: 16, dtype: .fp32) }
        for fence in fences {
            let error = #expect(throws: VtrnError.self) { try fence.wait() }
            #expect(error?.status == .timeout)
            #expect(error?.message.contains("rank 2 (device \(devices[2].index) core 0) never joined") == true)
        }
        // The late rank meets the others' failure at once.
        let late = try comm.allReduce(rank: 2, source: .init(memory[2]), destination: .init(memory[2]), count: 16, dtype: .fp32)
        let error = #expect(throws: VtrnError.self) { try late.wait() }
        #expect(error?.message.contains("joined too late") == true)
    }

    @Test func sendsThatWaitForEachOtherAreReportedAtTheTimeout() throws {
        let (runtime, devices) = try isolatedDeviceGroup(2, first: 2, environment: ["VTRN_EXEC_TIMEOUT_MS": "200"])
        defer { runtime.close() }
        let comm = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 0) })
        let memory = try devices.map { try $0.allocate(64) }
        let sends = try (0..<2).map { try comm.send(rank: $0, source: .init(memory[$0]), count: 4, dtype: .fp32, peer: 1 - $0) }
        let receives = try (0..<2).map { try comm.receive(rank: $0, destination: .init(memory[$0]), count: 4, dtype: .fp32, peer: 1 - $0) }
        // The first send to give up breaks the cycle: its core goes on to its receive, which
        // meets the other send. Which one gives up first is the machine's timing.
        var failures: [VtrnError] = []
        for fence in sends {
            do { try fence.wait() } catch { failures.append(error) }
        }
        // The other send then meets its receive, unless (on a loaded host) that too ends past its
        // own deadline, which fails its execution as any instruction's would.
        #expect((1...2).contains(failures.count))
        #expect(failures.allSatisfy { $0.status == .timeout })
        let message = failures.first { $0.message.contains("never joined") }?.message ?? ""
        #expect(message.contains("never joined within the execution timeout of 200 ms"))
        #expect(message.contains("send/receive 0 from rank 0 to rank 1") || message.contains("send/receive 0 from rank 1 to rank 0"))
        for fence in sends + receives { _ = try? fence.wait() }
    }

    @Test func aLostDeviceFailsTheCollectiveOnEveryRank() throws {
        let (runtime, devices) = try isolatedDeviceGroup(2, first: 2, environment: ["VTRN_EXEC_TIMEOUT_MS": "5000"])
        defer { runtime.close() }
        let comm = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 0) })
        let memory = try devices.map { try $0.allocate(64) }
        let first = try comm.allReduce(rank: 0, source: .init(memory[0]), destination: .init(memory[0]), count: 16, dtype: .fp32)
        usleep(20_000)
        _ = try devices[1].injectFault(Fault(.deviceLoss))
        let error = #expect(throws: VtrnError.self) { try first.wait() }
        #expect(error?.status == .deviceLost)
        #expect(error?.message.contains("rank 1 (device \(devices[1].index) core 0) is on device \(devices[1].index), which was lost") == true)
        try devices[1].reset()
    }

    @Test func badArgumentsAreRefusedAtTheCall() throws {
        let (runtime, devices) = try isolatedDeviceGroup(2, first: 2)
        defer { runtime.close() }
        #expect(throws: VtrnError.self) { try runtime.makeCommunicator([]) }
        let duplicate = #expect(throws: VtrnError.self) {
            try runtime.makeCommunicator([.init(device: devices[0], core: 0), .init(device: devices[0], core: 0)])
        }
        #expect(duplicate?.message.contains("is rank 0 already") == true)
        let comm = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 0) })
        let small = try devices[0].allocate(16), other = try devices[1].allocate(64)
        let bounds = #expect(throws: VtrnError.self) {
            try comm.allReduce(rank: 0, source: .init(small), destination: .init(small), count: 8, dtype: .fp32)
        }
        #expect(bounds?.status == .outOfBounds)
        let wrongDevice = #expect(throws: VtrnError.self) {
            try comm.allReduce(rank: 0, source: .init(other), destination: .init(other), count: 4, dtype: .fp32)
        }
        #expect(wrongDevice?.message.contains("rank 0 is on device \(devices[0].index)") == true)
        #expect(throws: VtrnError.self) { try comm.allReduce(rank: 2, source: .init(small), destination: .init(small), count: 1, dtype: .fp32) }
        #expect(throws: VtrnError.self) {
            try comm.allReduce(rank: 0, source: .init(small), destination: .init(small), count: 1, dtype: .fp32, op: .subtract)
        }
        #expect(throws: VtrnError.self) { try comm.send(rank: 0, source: .init(small), count: 1, dtype: .fp32, peer: 0) }
    }

    @Test func kernelsRunCollectivesOnTheCCEngineBetweenComputeSteps() throws {
        let (runtime, devices) = try isolatedDeviceGroup(2, first: 2)
        defer { runtime.close() }
        let comm = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 0) })
        // x (HBM) -> SBUF, doubled on DVE, all-reduced SBUF -> SBUF on CC, out to HBM.
        let program = runtime.makeProgram()
        let x = try program.addParameter("x", bytes: 128 * 16 * 4)
        let y = try program.addParameter("y", bytes: 128 * 16 * 4)
        let hbmX = AccessPattern(space: .hbm, dtype: .fp32, partitions: 128, parameter: x, sizes: [16], partitionStride: 16)
        let hbmY = AccessPattern(space: .hbm, dtype: .fp32, partitions: 128, parameter: y, sizes: [16], partitionStride: 16)
        let tile = AccessPattern(space: .sbuf, dtype: .fp32, partitions: 128, sizes: [16])
        let reduced = AccessPattern(space: .sbuf, dtype: .fp32, partitions: 128, offset: 64, sizes: [16])
        try program.append(Instruction(engine: .dma, operation: .dmaCopy(destination: tile, source: hbmX),
                                       sync: .init(signalSemaphore: 0, signalValue: 1)))
        try program.append(Instruction(engine: .dve, operation: .tensorScalar(destination: tile, source: tile, op0: .multiply,
                                                                              x0: .immediate(2), op1: .bypass, x1: nil, reverse: 0),
                                       sync: .init(waitSemaphore: 0, waitValue: 1, signalSemaphore: 1, signalValue: 1)))
        try program.append(Instruction(engine: .cc, operation: .collective(.init(group: comm.group, kind: .allReduce, op: .add,
                                                                                  destination: reduced, source: tile)),
                                       sync: .init(waitSemaphore: 1, waitValue: 1, signalSemaphore: 2, signalValue: 1)))
        try program.append(Instruction(engine: .dma, operation: .dmaCopy(destination: hbmY, source: reduced),
                                       sync: .init(waitSemaphore: 2, waitValue: 1)))
        let inputs = (0..<2).map { r in (0..<2048).map { Float($0 + r) } }
        let xs = try (0..<2).map { try upload(devices[$0], inputs[$0]) }
        let ys = try devices.map { try $0.allocate(2048 * 4) }
        let kernels = try devices.map { try $0.load(program, core: 0) }
        let fences = try (0..<2).map { try kernels[$0].execute([.init(name: "x", memory: xs[$0]), .init(name: "y", memory: ys[$0])]) }
        for fence in fences { try fence.wait() }
        let expected = (0..<2048).map { Float(2 * $0) + Float(2 * ($0 + 1)) }
        for y in ys { #expect(download(y, 2048, as: Float.self) == expected) }
        let info = fences[0].info
        #expect(info.instructions[Engine.cc.rawValue] == 1)
        #expect(info.busyNanoseconds[Engine.cc.rawValue] > 0)
        // A core outside the communicator cannot load it.
        let error = #expect(throws: VtrnError.self) { try devices[0].load(program, core: 1) }
        #expect(error?.status == .invalidProgram)
        #expect(error?.message.contains("is not a member of communicator") == true)
    }

    // MARK: The CC rings: collectives' data go through DMA

    /// Four ranks, a communicator, and inputs in device memory.
    func ringSetup(count: Int, steps: String = "0") throws -> (Runtime, [Device], Communicator, [[Float]], [DeviceMemory], [DeviceMemory]) {
        let (runtime, devices) = try isolatedDeviceGroup(4, first: 2, environment: ["VTRN_EXEC_TIMEOUT_MS": "2000", "VTRN_CC_STEPS": steps])
        let comm = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 0) })
        let inputs = (0..<4).map { r in (0..<count).map { Float(r * 1000 + $0 % 97) } }
        let sources = try zip(devices, inputs).map { try upload($0, $1) }
        let outputs = try devices.map { try $0.allocate(UInt64(count * 4)) }
        return (runtime, devices, comm, inputs, sources, outputs)
    }

    func allReduce(_ comm: Communicator, _ sources: [DeviceMemory], _ outputs: [DeviceMemory], count: Int) throws -> [Fence] {
        try (0..<4).map {
            try comm.allReduce(rank: $0, source: .init(sources[$0]), destination: .init(outputs[$0]), count: count, dtype: .fp32)
        }
    }

    @Test(arguments: dataPaths) func collectivesMoveTheirDataOnEachCoresCCRing(steps: String) throws {
        let count = 100_000
        let (runtime, devices, comm, inputs, sources, outputs) = try ringSetup(count: count, steps: steps)
        defer { runtime.close() }
        let engine = devices[0].hardware.preset.dmaEnginesPerCore - 1
        let before = devices.map { $0.hardware.dmaBytesPerEngine }
        let collectivesBefore = devices.map { $0.hardware.commandQueues[0].counters.collectives }
        for fence in try allReduce(comm, sources, outputs, count: count) { try fence.wait() }
        // The monitor's per-core count.
        #expect(devices.enumerated().allSatisfy { $0.element.hardware.commandQueues[0].counters.collectives == collectivesBefore[$0.offset] + 1 })
        #expect(devices[0].hardware.commandQueues[0].counters.collectiveNanoseconds > 0)
        // Directly, each rank's ring folds its quarter: one copy into its accumulator, 3 compute
        // descriptors, 4 copies out. In steps: its source to its destination, then a quarter in
        // each of the 2 x 3 steps. No other engine moves anything.
        let expectedBytes = steps == "1" ? count * 4 + 6 * count : 8 * count
        for (r, device) in devices.enumerated() {
            let after = device.hardware.dmaBytesPerEngine
            #expect(after[engine] - before[r][engine] == UInt64(expectedBytes))
            #expect(zip(after, before[r]).enumerated().allSatisfy { $0.offset == engine || $0.element.0 == $0.element.1 })
        }
        let expected = ringReference(inputs)
        for output in outputs { #expect(download(output, count, as: Float.self) == expected) }
    }

    @Test(arguments: dataPaths) func aDmaAbortOnOneRanksRingFailsEveryRankAndTheNextCollectiveWorks(steps: String) throws {
        let count = 100_000
        let (runtime, devices, comm, inputs, sources, outputs) = try ringSetup(count: count, steps: steps)
        defer { runtime.close() }
        let engine = devices[0].hardware.preset.dmaEnginesPerCore - 1
        // Directly, rank 2's ring folds 2 blocks of its quarter, 8 descriptors each: the 8th is the
        // last copy out of the first block. In steps, it copies its 400,000-byte source in 7
        // descriptors; the 8th is the first of the reduce-scatter's first step.
        // Counters and fault numbers count since the process made the device (other tests share it).
        let aborts = try devices[2].errorCounters.counters.dmaAborts
        _ = try devices[2].injectFault(Fault(.dmaAbort(.init(core: .core(0))), after: 7))
        for fence in try allReduce(comm, sources, outputs, count: count) {
            let error = #expect(throws: VtrnError.self) { try fence.wait() }
            #expect(error?.status == .dmaFault)
            #expect(error?.message.contains("DMA abort on the CC ring of rank 2 (device \(devices[2].index) core 0) (DMA engine \(engine) "
                                            + "of core 0) at descriptor 7 of collective 0 of communicator") == true, "\(error?.message ?? "")")
            #expect(error?.message.contains("(ALL_REDUCE), in step 2 of 7: a descriptor error") == (steps == "1"))
            #expect(error?.message.contains("(dma-abort:core=0:after=7))") == true)
        }
        #expect(try devices[2].errorCounters.counters.dmaAborts == aborts + 1)
        // One-shot: the ring starts again, and the same all-reduce comes out right.
        for fence in try allReduce(comm, sources, outputs, count: count) { try fence.wait() }
        let expected = ringReference(inputs)
        for output in outputs { #expect(download(output, count, as: Float.self) == expected) }
    }

    @Test(arguments: dataPaths) func aHungRingHoldsTheCollectiveUntilAResetAndThenEveryRankFails(steps: String) throws {
        let count = 4096
        let (runtime, devices, comm, inputs, sources, outputs) = try ringSetup(count: count, steps: steps)
        defer { runtime.close() }
        _ = try devices[1].injectFault(Fault(.dmaHang(.init(core: .core(0))), after: 1))
        let fences = try allReduce(comm, sources, outputs, count: count)
        usleep(100_000)
        for fence in fences { #expect(fence.status == .notReady) }
        try devices[1].reset()
        for fence in fences {
            let error = #expect(throws: VtrnError.self) { try fence.wait() }
            #expect(error?.status == .reset)
            #expect(error?.message.contains("the CC ring of rank 1 (device \(devices[1].index) core 0)") == true)
            #expect(error?.message.contains("hung at descriptor 1 of collective 0 of communicator") == true)
            #expect(error?.message.contains("until device \(devices[1].index) was reset") == true)
        }
        for fence in try allReduce(comm, sources, outputs, count: count) { try fence.wait() }
        for output in outputs { #expect(download(output, count, as: Float.self) == ringReference(inputs)) }
    }

    @Test func aHungRingEndsAtTheExecutionTimeout() throws {
        let count = 4096
        let (runtime, devices, comm, _, sources, outputs) = try ringSetup(count: count)
        defer { runtime.close() }
        _ = try devices[3].injectFault(Fault(.dmaHang(.init(core: .core(0)))))
        for fence in try allReduce(comm, sources, outputs, count: count) {
            let error = #expect(throws: VtrnError.self) { try fence.wait() }
            #expect(error?.status == .timeout)
            #expect(error?.message.contains("the CC ring of rank 3") == true)
            #expect(error?.message.contains("the execution timeout of 2000 ms (VTRN_EXEC_TIMEOUT_MS) ended it") == true)
        }
    }

    /// Directly, rank 0's ring reads chunk 0 of every rank's source, rank 3's too.
    @Test func anUncorrectableHbmErrorUnderASourceFailsEveryRankAtOnce() throws {
        let count = 4096
        let (runtime, devices, comm, _, sources, outputs) = try ringSetup(count: count)
        defer { runtime.close() }
        _ = try devices[3].injectFault(Fault(.hbmUncorrectable(address: sources[3].address + 1024, bytes: 64)))
        let start = Date()
        for fence in try allReduce(comm, sources, outputs, count: count) {
            let error = #expect(throws: VtrnError.self) { try fence.wait() }
            #expect(error?.status == .hardware)
            #expect(error?.message.contains("uncorrectable HBM error: the CC ring of rank 0 (device \(devices[0].index) core 0)") == true)
            #expect(error?.message.contains("in the HBM of device \(devices[3].index)") == true)
        }
        // Not the other ranks waiting out the timeout for one that never came.
        #expect(Date().timeIntervalSince(start) < 1.5)
    }
}
