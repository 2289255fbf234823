import Foundation
import Testing
import VtrnDevice
import VtrnKernels
@testable import Vtrn

#if canImport(Glibc)
import Glibc
#endif

@Suite struct KernelTests {
    /// Fills a block with values from `make`, through a host buffer and DMA.
    func upload(_ values: [Float], to device: Device) throws -> DeviceMemory {
        let memory = try device.allocate(UInt64(values.count * 4))
        let host = try device.runtime.makeHostBuffer(bytes: values.count * 4)
        values.withUnsafeBytes { host.data.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        try device.copy(to: .device(memory, offset: 0), from: .host(host, offset: 0), bytes: UInt64(values.count * 4))
        return memory
    }

    func download(_ memory: DeviceMemory, count: Int) throws -> [Float] {
        let host = try memory.device.runtime.makeHostBuffer(bytes: count * 4)
        try memory.device.copy(to: .host(host, offset: 0), from: .device(memory, offset: 0), bytes: UInt64(count * 4))
        return Array(UnsafeBufferPointer(start: host.data.assumingMemoryBound(to: Float.self), count: count))
    }

    @Test(arguments: [(200, 300, 700), (128, 128, 512), (1, 1, 1), (257, 129, 513)])
    func gemmMatchesAHostReference(m: Int, k: Int, n: Int) throws {
        let (runtime, device) = try isolatedDevice()
        let a = (0..<m * k).map { Float(($0 * 7) % 13) / 13 - 0.5 }
        let b = (0..<k * n).map { Float(($0 * 5) % 11) / 11 - 0.5 }
        let program = runtime.makeProgram()
        try StandardKernels.gemm(program, m: m, k: k, n: n)
        let kernel = try device.load(program, core: 0)
        let c = try device.allocate(UInt64(m * n * 4))
        let fence = try kernel.execute([.init(name: "a", memory: try upload(a, to: device)),
                                        .init(name: "b", memory: try upload(b, to: device)), .init(name: "c", memory: c)])
        try fence.wait()
        let result = try download(c, count: m * n)
        var worst: Float = 0
        for row in 0..<m {
            for column in 0..<n {
                var sum: Float = 0
                for index in 0..<k { sum += a[row * k + index] * b[index * n + column] }
                worst = max(worst, abs(sum - result[row * n + column]))
            }
        }
        #expect(worst < 1e-3, "largest error \(worst)")
        let info = fence.info
        #expect(info.status == .success && info.deviceNanoseconds > 0)
        #expect(info.instructions[Engine.pe.rawValue] >= (m + 127) / 128 * ((n + 511) / 512) * ((k + 127) / 128))
    }

    @Test func softmaxMatchesAHostReference() throws {
        let (runtime, device) = try isolatedDevice()
        let rows = 300, columns = 257
        let x = (0..<rows * columns).map { Float(($0 * 37) % 101) / 10 - 5 }
        let program = runtime.makeProgram()
        try StandardKernels.softmax(program, rows: rows, columns: columns)
        let kernel = try device.load(program, core: 1)
        let y = try device.allocate(UInt64(rows * columns * 4))
        try kernel.execute([.init(name: "x", memory: try upload(x, to: device)), .init(name: "y", memory: y)]).wait()
        let result = try download(y, count: rows * columns)
        for row in 0..<rows {
            let slice = x[row * columns..<(row + 1) * columns]
            let largest = slice.max()!
            let exps = slice.map { expf($0 - largest) }
            let total = exps.reduce(0, +)
            for column in 0..<columns {
                #expect(abs(result[row * columns + column] - exps[column] / total) < 1e-6)
            }
        }
    }

    @Test func executionsAreDeterministic() throws {
        let (runtime, device) = try isolatedDevice()
        let program = runtime.makeProgram()
        try StandardKernels.gemm(program, m: 130, k: 140, n: 600)
        let kernel = try device.load(program, core: 0)
        let a = try upload((0..<130 * 140).map { Float($0 % 17) }, to: device)
        let b = try upload((0..<140 * 600).map { Float($0 % 19) }, to: device)
        var results: [[Float]] = [], times: [UInt64] = []
        for _ in 0..<3 {
            let c = try device.allocate(130 * 600 * 4)
            let fence = try kernel.execute([.init(name: "a", memory: a), .init(name: "b", memory: b), .init(name: "c", memory: c)])
            try fence.wait()
            results.append(try download(c, count: 130 * 600))
            times.append(fence.info.deviceNanoseconds)
        }
        #expect(results[0] == results[1] && results[1] == results[2])
        #expect(times[0] == times[1] && times[1] == times[2])
    }

    @Test func deadlockNamesEveryBlockedEngine() throws {
        let (runtime, device) = try isolatedDevice()
        let program = runtime.makeProgram()
        try program.append(Instruction(engine: .act, operation: .semaphoreWait(semaphore: 3, value: 1)))
        try program.append(Instruction(engine: .pool, operation: .semaphoreSignal(semaphore: 4, op: .add, value: 1)))
        try program.append(Instruction(engine: .pe, operation: .semaphoreWait(semaphore: 4, value: 2)))
        let fence = try device.load(program, core: 0).execute([])
        let error = #expect(throws: VtrnError.self) { try fence.wait() }
        #expect(error?.status == .deadlock)
        #expect(error?.message == "every unfinished engine waits on a semaphore that nothing pending can raise: PE at instruction 2 "
                + "(SEM_WAIT) waits for semaphore 4 >= 2, which is 1; ACT at instruction 0 (SEM_WAIT) waits for semaphore 3 >= 1, which is 0")
        #expect(fence.status == .deadlock)
    }

    @Test func validationNamesInstructionOperandAndRule() throws {
        let (runtime, device) = try isolatedDevice()
        let program = runtime.makeProgram()
        let tile = AccessPattern(space: .sbuf, dtype: .fp32, startPartition: 16, partitions: 16, sizes: [8])
        try program.append(Instruction(engine: .dve, operation: .memset(destination: tile, value: 0)))
        let error = #expect(throws: VtrnError.self) { try device.load(program, core: 0) }
        #expect(error == VtrnError(.invalidProgram, "instruction 0 (MEMSET on DVE): dst: starts at partition 16; compute engines start at partition 0, 32, 64 or 96"))
    }

    @Test func aShortBindingFailsOnlyItsExecution() throws {
        let (runtime, device) = try isolatedDevice()
        let program = runtime.makeProgram()
        let x = try program.addParameter("x", bytes: 128 * 64 * 4)
        try program.append(Instruction(engine: .dma, operation: .dmaCopy(
            destination: AccessPattern(space: .sbuf, dtype: .fp32, partitions: 128, sizes: [64]),
            source: AccessPattern(space: .hbm, dtype: .fp32, partitions: 128, parameter: x, sizes: [64], partitionStride: 64))))
        let kernel = try device.load(program, core: 0)
        let short = try device.allocate(1000), enough = try device.allocate(128 * 64 * 4)
        let failing = try kernel.execute([.init(name: "x", memory: short)])
        let passing = try kernel.execute([.init(name: "x", memory: enough)])
        #expect(#expect(throws: VtrnError.self) { try failing.wait() }?.message
                == "instruction 0 (DMA_COPY on DMA): src reaches byte 32768 of parameter \"x\", but its binding leaves 1000 bytes")
        try passing.wait()
        let missing = #expect(throws: VtrnError.self) { try kernel.execute([.init(name: "y", memory: enough)]) }
        #expect(missing == VtrnError(.notFound, "the kernel has no parameter \"y\"; its parameters are \"x\""))
        #expect(#expect(throws: VtrnError.self) { try kernel.execute([]) } == .invalidArgument("parameter \"x\" is not bound"))
    }

    @Test func timeoutStopsALongExecution() throws {
        let index = isolatedIndex()
        let runtime = try Runtime(options: .init(topology: "trn1:\(index + 1)"), environment: testEnvironment(["VTRN_EXEC_TIMEOUT_MS": "20"]))
        let device = runtime.devices[index]
        let program = runtime.makeProgram()
        let tile = AccessPattern(space: .sbuf, dtype: .fp32, partitions: 128, sizes: [32768])
        for _ in 0..<4000 {
            try program.append(Instruction(engine: .act, operation: .activate(destination: tile, function: .exp, source: tile,
                                                                              scale: .immediate(0.5), bias: nil, accumulateOut: nil)))
        }
        let fence = try device.load(program, core: 0).execute([])
        let error = #expect(throws: VtrnError.self) { try fence.wait() }
        #expect(error?.status == .timeout)
        #expect(error?.message.contains("was still running when the execution reached its timeout") == true)
    }
}

@Suite struct TraceTests {
    @Test func traceShowsEveryEngineOnATimeline() throws {
        let path = "/tmp/vtrn-trace-\(getpid())-%r.json"
        let index = isolatedIndex()
        let runtime = try Runtime(options: .init(topology: "trn1:\(index + 1)"), environment: testEnvironment(["VTRN_TRACE": path]))
        let device = runtime.devices[index]
        let program = runtime.makeProgram()
        try StandardKernels.softmax(program, rows: 200, columns: 64)
        let kernel = try device.load(program, core: 1)
        let x = try device.allocate(200 * 64 * 4), y = try device.allocate(200 * 64 * 4)
        try kernel.execute([.init(name: "x", memory: x), .init(name: "y", memory: y)]).wait()
        let written = path.replacing("%r", with: String(runtime.serial))
        runtime.close()
        defer { unlink(written) }
        guard let file = fopen(written, "r") else {
            Issue.record("no trace at \(written)")
            return
        }
        var text = ""
        var buffer = [CChar](repeating: 0, count: 65536)
        while fgets(&buffer, Int32(buffer.count), file) != nil { text += buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } }
        fclose(file)
        #expect(text.hasPrefix("{\"displayTimeUnit\":\"ns\",\"traceEvents\":["))
        #expect(text.contains(#""name":"device \#(index) (Trainium1, \#(device.hardware.busAddress)) — device clock""#))
        #expect(text.contains(#""name":"core 1 ACT""#))
        for opcode in ["DMA_COPY", "TENSOR_REDUCE", "ACTIVATE", "TENSOR_SCALAR"] {
            #expect(text.contains(#""name":"\#(opcode)","cat":"instruction","pid":\#(index)"#), "\(opcode)")
        }
        #expect(text.contains(#""name":"execution","cat":"host","pid":\#(index),"tid":15"#))
        // One span per executed instruction, plus the execution's own.
        let spans = text.components(separatedBy: #""cat":"instruction""#).count - 1
        #expect(spans == program.instructionCount)
    }
}

@Suite struct IntegerEdgeTests {
    @Test func bitwiseOpsOnTheEdgesOfInt32DoNotTrap() throws {
        let (runtime, device) = try isolatedDevice()
        let program = runtime.makeProgram()
        let out = try program.addParameter("out", bytes: 4 * 4)
        let tile = AccessPattern(space: .sbuf, dtype: .int32, partitions: 4, sizes: [1])
        func add(_ engine: Engine, _ operation: VtrnDevice.Operation, wait: Int? = nil, signal: Int? = nil) throws {
            try program.append(Instruction(engine: engine, operation: operation, sync: Synchronization(
                waitSemaphore: wait, waitValue: 1, signalSemaphore: signal, signalOp: .add, signalValue: 1)))
        }
        try add(.dve, .memset(destination: tile, value: 3e9), signal: 0)            // saturates to Int32.max
        try add(.dve, .tensorScalar(destination: tile, source: tile, op0: .bitwiseAnd, x0: .immediate(255), op1: .shiftLeft,
                                    x1: .immediate(40), reverse: 0), wait: 0, signal: 1)  // shift counts wrap at 32
        try add(.dma, .dmaCopy(destination: AccessPattern(space: .hbm, dtype: .int32, partitions: 4, parameter: out, sizes: [1],
                                                          partitionStride: 1), source: tile), wait: 1)
        let memory = try device.allocate(16)
        try device.load(program, core: 0).execute([.init(name: "out", memory: memory)]).wait()
        let values = Array(UnsafeBufferPointer(start: memory.pointer.assumingMemoryBound(to: Int32.self), count: 4))
        #expect(values == Array(repeating: 255 << 8, count: 4))
    }
}

@Suite struct KernelTeardownTests {
    /// A finished execution stayed in its core's command queue, and its completion held the
    /// runtime: a cycle through the device that kept the runtime, the device's HBM reservation and
    /// the core's thread alive after the runtime closed (found by the fuzzer's leak check).
    @Test func aRuntimeThatRanAKernelReleasesItsDeviceWhenClosed() throws {
        weak var hardware: VirtualDevice?
        weak var weakRuntime: Runtime?
        try {
            let (runtime, device) = try isolatedDevice()
            hardware = device.hardware
            weakRuntime = runtime
            let program = runtime.makeProgram()
            let steps = AccessPattern(space: .sbuf, dtype: .int32, partitions: 4, sizes: [8])
            try program.append(Instruction(engine: .pool, operation: .iota(destination: steps, steps: [1], offset: 0,
                                                                           channelMultiplier: 8)))
            let kernel = try device.load(program, core: 0)
            for _ in 0..<3 { try kernel.execute([]).wait() }
            runtime.close()
        }()
        // The core's thread lets go of its last execution just after the fence completes.
        let deadline = ContinuousClock.now + .seconds(5)
        while (hardware != nil || weakRuntime != nil) && ContinuousClock.now < deadline { usleep(1000) }
        #expect(weakRuntime == nil, "the runtime outlived its close() and every reference")
        #expect(hardware == nil, "the device outlived every runtime that had it")
    }
}
