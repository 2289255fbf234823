import Testing
@testable import VtrnDevice

#if canImport(Glibc)
import Glibc
#endif

/// The core executor driven directly: programs of a few instructions, their virtual timelines.
@Suite struct ExecutorTests {
    let executor = CoreExecutor(preset: .trn1)

    func tile(_ elements: Int, offset: Int = 0) -> AccessPattern {
        AccessPattern(space: .sbuf, dtype: .fp32, partitions: 1, offset: offset, sizes: [elements])
    }

    /// Runs `instructions` traced; each instruction's start on the timeline, by index.
    func starts(_ instructions: [Instruction]) throws -> [Int: Double] {
        let program = try LoadedProgram(instructions: instructions, parameters: [], preset: .trn1)
        let outcome = executor.run(program, bindings: [], deadline: nil, trace: true)
        #expect(outcome.failure == nil)
        return Dictionary(uniqueKeysWithValues: outcome.trace.filter { $0.waitedFor == nil }.map { ($0.instruction, $0.start) })
    }

    func end(of instruction: Instruction, startingAt start: Double) -> Double { start + executor.cost(of: instruction) }

    @Test func aWaitStartsWhenTheSemaphoreFirstReachedItsValue() throws {
        // DVE signals semaphore 0 twice: early (a short memset) and late (a long one). ACT's second
        // instruction waits for the first signal only, so it starts when ACT is free, not after
        // DVE's second signal (the executor runs DVE's second instruction before it).
        let short = Instruction(engine: .dve, operation: .memset(destination: tile(1), value: 1),
                                sync: Synchronization(signalSemaphore: 0, signalValue: 1))
        let long = Instruction(engine: .dve, operation: .memset(destination: tile(16_384, offset: 64), value: 2),
                               sync: Synchronization(signalSemaphore: 0, signalValue: 1))
        let busy = Instruction(engine: .act, operation: .tensorCopy(destination: tile(2048, offset: 65_600),
                                                                      source: tile(2048, offset: 65_600)))
        let first = Instruction(engine: .act, operation: .tensorCopy(destination: tile(1, offset: 80_000), source: tile(1)),
                                sync: Synchronization(waitSemaphore: 0, waitValue: 1))
        let second = Instruction(engine: .pool, operation: .tensorCopy(destination: tile(1, offset: 80_064), source: tile(1)),
                                 sync: Synchronization(waitSemaphore: 0, waitValue: 2))
        let start = try starts([busy, short, long, first, second])
        let busyEnd = end(of: busy, startingAt: 0), shortEnd = end(of: short, startingAt: 0)
        let longEnd = end(of: long, startingAt: shortEnd)
        #expect(shortEnd < busyEnd && busyEnd < longEnd)
        #expect(start[2] == shortEnd)
        #expect(start[3] == busyEnd)  // the latest signal's time would be longEnd
        #expect(start[4] == longEnd)
    }

    @Test func aSignalEndingBeforeOneAppliedEarlierCountsFromItsOwnTime() throws {
        // DVE and POOL both signal semaphore 1. Both start at 0, and the executor applies DVE's
        // (ending late) first, then POOL's (ending early): the value 1 was first reached at POOL's end.
        let late = Instruction(engine: .dve, operation: .memset(destination: tile(16_384), value: 1),
                               sync: Synchronization(signalSemaphore: 1, signalValue: 1))
        let early = Instruction(engine: .pool, operation: .memset(destination: tile(2000, offset: 65_536), value: 1),
                                sync: Synchronization(signalSemaphore: 1, signalValue: 1))
        let quick = Instruction(engine: .act, operation: .tensorCopy(destination: tile(1, offset: 80_000), source: tile(1, offset: 80_000)))
        let one = Instruction(engine: .act, operation: .tensorCopy(destination: tile(1, offset: 80_064), source: tile(1)),
                              sync: Synchronization(waitSemaphore: 1, waitValue: 1))
        let two = Instruction(engine: .act, operation: .tensorCopy(destination: tile(1, offset: 80_128), source: tile(1)),
                              sync: Synchronization(waitSemaphore: 1, waitValue: 2))
        let start = try starts([quick, late, early, one, two])
        let earlyEnd = end(of: early, startingAt: 0), lateEnd = end(of: late, startingAt: 0)
        #expect(end(of: quick, startingAt: 0) < earlyEnd && earlyEnd < lateEnd)
        #expect(start[3] == earlyEnd)
        #expect(start[4] == lateEnd)
    }

    @Test func aSetStartsTheHistoryAgain() throws {
        // Four adds reach 4; a SET to 5 then gives the value the waiter wants: it starts when the SET ends.
        var instructions: [Instruction] = []
        for index in 0..<4 {
            instructions.append(Instruction(engine: .dve, operation: .memset(destination: tile(512, offset: index * 2048), value: 0),
                                            sync: Synchronization(signalSemaphore: 2, signalValue: 1)))
        }
        let set = Instruction(engine: .dve, operation: .semaphoreSignal(semaphore: 2, op: .set, value: 5))
        let waiter = Instruction(engine: .act, operation: .semaphoreWait(semaphore: 2, value: 5))
        let start = try starts(instructions + [set, waiter])
        let setEnd = end(of: set, startingAt: start[4]!)
        #expect(start[5] == setEnd)
    }

    @Test func semaphoreHistoryAnswersTheFirstTimeAValueWasReached() {
        var history = SemaphoreHistory()
        #expect(history.firstTime(reaching: 0) == 0)
        var value: UInt32 = 0
        value = history.add(1, to: value, at: 10)
        value = history.add(2, to: value, at: 30)
        value = history.add(1, to: value, at: 20)  // out of order: 1 at 10, 2 at 20, 4 at 30
        #expect(value == 4)
        #expect(history.firstTime(reaching: 1) == 10)
        #expect(history.firstTime(reaching: 2) == 20)
        #expect(history.firstTime(reaching: 3) == 30 && history.firstTime(reaching: 4) == 30)
        value = history.add(3, to: value, at: 5)  // before every other: 3 at 5, 4 at 10, 5 at 20, 7 at 30
        #expect(history.firstTime(reaching: 3) == 5 && history.firstTime(reaching: 5) == 20)
        value = history.add(0, to: value, at: 1)
        #expect(value == 7 && history.firstTime(reaching: 3) == 5)
        value = history.add(.max, to: value, at: 40)  // wraps: starts again
        #expect(value == 6 && history.firstTime(reaching: 1) == 40)
        history.set(2, at: 50)
        #expect(history.firstTime(reaching: 1) == 50)
    }
}

/// The integer (bitvec) path: exact on 32 bits, whatever fp32 could hold.
@Suite struct BitvecTests {
    let executor = CoreExecutor(preset: .trn1)

    func int32s(_ count: Int, offset: Int) -> AccessPattern {
        AccessPattern(space: .sbuf, dtype: .int32, partitions: 1, offset: offset, sizes: [count])
    }

    func write(_ values: [Int32], at offset: Int) {
        let pointer = executor.sbufPointer(partition: 0, offset: offset).assumingMemoryBound(to: Int32.self)
        for (index, value) in values.enumerated() { pointer[index] = value }
    }

    func read(_ count: Int, at offset: Int) -> [Int32] {
        let pointer = executor.sbufPointer(partition: 0, offset: offset).assumingMemoryBound(to: Int32.self)
        return (0..<count).map { pointer[$0] }
    }

    func run(_ operations: [Operation]) throws {
        let program = try LoadedProgram(instructions: operations.map { Instruction(engine: .dve, operation: $0) }, parameters: [],
                                        preset: .trn1)
        #expect(executor.run(program, bindings: [], deadline: nil).failure == nil)
    }

    @Test func bitwiseOpsKeepEveryBit() throws {
        write([0x7fff_ffff, -8, .min, 0x1234_5679], at: 0)
        write([0x1234_5679, 1, 31, 33], at: 64)
        let a = int32s(4, offset: 0), b = int32s(4, offset: 64)
        try run([
            .tensorTensor(destination: int32s(4, offset: 128), a: a, b: b, op: .bitwiseAnd),
            .tensorTensor(destination: int32s(4, offset: 192), a: a, b: b, op: .shiftRight),
            .tensorScalar(destination: int32s(4, offset: 256), source: a, op0: .bitwiseXor, x0: .integer(-1), op1: .shiftLeft,
                          x1: .integer(4), reverse: 0),
        ])
        #expect(read(4, at: 128) == [0x1234_5679, 0, 0, 0x1234_5679 & 33])
        // Logical right shifts by 0x1234_5679 & 31 = 25, 1, 31 and 33 & 31 = 1.
        let shifted: [Int32] = [0x7fff_ffff >> 25, 0x7fff_fffc, 1, 0x1234_5679 >> 1]
        #expect(read(4, at: 192) == shifted)
        let expected: [Int32] = [(~0x7fff_ffff) &<< 4, 7 &<< 4, 0x7fff_ffff &<< 4, (~0x1234_5679) &<< 4]
        #expect(read(4, at: 256) == expected)
    }

    @Test func int32ConversionsSignExtendAndWrap() {
        var loaded = [Int32](repeating: 0, count: 4)
        let bytes: [UInt8] = [0x80, 0xff, 0x7f, 0x01]
        bytes.withUnsafeBytes { Conversion.loadInt32(.int8, from: $0.baseAddress!, stride: 1, count: 4, into: &loaded) }
        #expect(loaded == [-128, -1, 127, 1])
        bytes.withUnsafeBytes { Conversion.loadInt32(.uint8, from: $0.baseAddress!, stride: 1, count: 4, into: &loaded) }
        #expect(loaded == [128, 255, 127, 1])
        let floats: [Float] = [2.5, -3.5, 3e9, .nan]
        floats.withUnsafeBytes { Conversion.loadInt32(.fp32, from: $0.baseAddress!, stride: 1, count: 4, into: &loaded) }
        #expect(loaded == [2, -4, .max, 0])
        var stored = [UInt8](repeating: 0, count: 4)
        let values: [Int32] = [0x1ff, -129, 256, -1]
        stored.withUnsafeMutableBytes { Conversion.storeInt32Bits(.int8, from: values, count: 4, to: $0.baseAddress!, stride: 1) }
        #expect(stored == [0xff, 0x7f, 0x00, 0xff])
    }
}

@Suite struct LogicalOpTests {
    @Test func nonzeroIsTrueAndNaNIsNonzero() {
        let values: [Float] = [0, -0.0, 1, -2.5, .nan, .infinity, .leastNonzeroMagnitude]
        for x in values {
            for y in values {
                let (a, b) = (x != 0, y != 0)
                #expect(Kernels.apply(.logicalAnd, x, y) == (a && b ? 1 : 0))
                #expect(Kernels.apply(.logicalOr, x, y) == (a || b ? 1 : 0))
                #expect(Kernels.apply(.logicalXor, x, y) == (a != b ? 1 : 0))
            }
            #expect(Kernels.apply(.logicalNot, x, 0) == (x == 0 ? 1 : 0))
        }
        #expect(Kernels.integerApply(.invert, 0x0f0f_0f0f, 0) == ~0x0f0f_0f0f)
        #expect(AluOp.invert.isBitwise && AluOp.invert.isUnary && !AluOp.logicalNot.isBitwise && AluOp.logicalNot.isUnary)
    }
}

@Suite struct ReductionTests {
    let executor = CoreExecutor(preset: .trn1)

    @Test func eachDestinationElementReducesAConsecutiveGroup() throws {
        let values: [Float] = (0..<12).map { Float($0) }
        let floats = executor.sbufPointer(partition: 0, offset: 0).assumingMemoryBound(to: Float.self)
        for (index, value) in values.enumerated() { floats[index] = value }
        let ints = executor.sbufPointer(partition: 0, offset: 64).assumingMemoryBound(to: Int32.self)
        for index in 0..<12 { ints[index] = Int32(bitPattern: 0x8000_0000 | UInt32(1 << index)) }
        let source = AccessPattern(space: .sbuf, dtype: .fp32, partitions: 1, sizes: [12])
        let intSource = AccessPattern(space: .sbuf, dtype: .int32, partitions: 1, offset: 64, sizes: [12])
        let sums = AccessPattern(space: .sbuf, dtype: .fp32, partitions: 1, offset: 128, sizes: [3])
        let ors = AccessPattern(space: .sbuf, dtype: .int32, partitions: 1, offset: 192, sizes: [2])
        // The middle axis of a [1, 3, 4] view kept, its last reduced: groups (0,1,2,3), (4,...), (8,...).
        let program = try LoadedProgram(instructions: [
            Instruction(engine: .dve, operation: .tensorReduce(destination: sums, source: source, op: .add, negate: true)),
            Instruction(engine: .dve, operation: .tensorReduce(destination: ors, source: intSource, op: .bitwiseOr, negate: false)),
        ], parameters: [], preset: .trn1)
        #expect(executor.run(program, bindings: [], deadline: nil).failure == nil)
        let result = executor.sbufPointer(partition: 0, offset: 128).assumingMemoryBound(to: Float.self)
        #expect([result[0], result[1], result[2]] == [-6, -22, -38])
        let bits = executor.sbufPointer(partition: 0, offset: 192).assumingMemoryBound(to: Int32.self)
        #expect([UInt32(bitPattern: bits[0]), UInt32(bitPattern: bits[1])] == [0x8000_003f, 0x8000_0fc0])
    }
}

@Suite struct ActivationTests {
    func activate(_ function: ActivationFunction, _ x: Float) -> Float {
        var input = x, output: Float = 0
        Kernels.activate(function, &input, count: 1, scale: 1, bias: 0, into: &output)
        return output
    }

    @Test func geluDoesNotCancelForNegativeInputs() {
        // 0.5 x (1 + erf(x / sqrt 2)) is exactly 0 in fp32 at -10; the true value is -7.6e-23.
        let exact = 0.5 * -10 * erfc(10 / 2.0.squareRoot())
        #expect(Swift.abs(Double(activate(.gelu, -10)) - exact) <= 1e-7 * Swift.abs(exact))
        let u = 0.7978845608028654 * (-5 - 0.044715 * 125)
        let tanhForm = -5 / (1 + Glibc.exp(-2 * u))
        #expect(Swift.abs(Double(activate(.geluTanh, -5)) - tanhForm) <= 1e-7 * Swift.abs(tanhForm))
    }

    @Test func signAndDerivatives() {
        #expect(activate(.sign, -0.0).bitPattern == Float(0).bitPattern && activate(.sign, -3) == -1 && activate(.sign, 2) == 1)
        #expect(activate(.sign, .nan).isNaN)
        #expect(activate(.siluDx, 0) == 0.5 && activate(.geluDx, 0) == 0.5 && activate(.geluApprxSigmoidDx, 0) == 0.5)
        #expect(Swift.abs(activate(.erfDx, 0) - 1.1283791) < 1e-6)
        #expect(activate(.softplus, 100) == 100 && activate(.softplus, -100) > 0)
        #expect(activate(.mish, -0.0) == 0)
    }
}

@Suite struct DmaCopyTests {
    @Test func readModifyWriteAddsThroughFp32() throws {
        let executor = CoreExecutor(preset: .trn1)
        let host = UnsafeMutableRawPointer.allocate(byteCount: 300 * 4, alignment: 64)
        defer { host.deallocate() }
        let values = host.bindMemory(to: Float.self, capacity: 300)
        for index in 0..<300 { values[index] = Float(index) }
        let rows = AccessPattern(space: .hbm, dtype: .fp32, partitions: 300, sizes: [1], partitionStride: 1)
        let tile = AccessPattern(space: .sbuf, dtype: .bf16, partitions: 100, sizes: [3])
        let program = try LoadedProgram(instructions: [
            Instruction(engine: .dve, operation: .memset(destination: tile, value: 0.5)),
            Instruction(engine: .dma, operation: .dmaCopy(destination: rows, source: tile, readModifyWrite: .add),
                        sync: Synchronization(waitSemaphore: nil)),
        ].enumerated().map { index, instruction in
            var ordered = instruction
            ordered.sync = index == 0 ? Synchronization(signalSemaphore: 0, signalValue: 1) : Synchronization(waitSemaphore: 0, waitValue: 1)
            return ordered
        }, parameters: [Parameter(name: "rows", bytes: 1200)], preset: .trn1)
        let outcome = executor.run(program, bindings: [ParameterBinding(base: host, bytes: 1200)], deadline: nil)
        #expect(outcome.failure == nil)
        #expect((0..<300).allSatisfy { values[$0] == Float($0) + 0.5 })
        // The cost counts the destination's bytes too (large enough to exceed the 64-cycle minimum).
        let wideRows = AccessPattern(space: .hbm, dtype: .fp32, partitions: 128, sizes: [4096], partitionStride: 4096)
        let wideTile = AccessPattern(space: .sbuf, dtype: .bf16, partitions: 128, sizes: [4096])
        let copy = executor.cost(of: Instruction(engine: .dma, operation: .dmaCopy(destination: wideRows, source: wideTile)))
        let accumulate = executor.cost(of: Instruction(engine: .dma, operation: .dmaCopy(destination: wideRows, source: wideTile,
                                                                                     readModifyWrite: .add)))
        #expect(abs(accumulate - copy * 3) < 1e-6 * copy)   // bf16 read (2 bytes) + fp32 dst read (4), against 2
    }

    @Test func gatherAndScatterRowsByIndex() throws {
        let executor = CoreExecutor(preset: .trn1)
        let host = UnsafeMutableRawPointer.allocate(byteCount: 200 * 2 * 4, alignment: 64)
        defer { host.deallocate() }
        let values = host.bindMemory(to: Int32.self, capacity: 400)
        for index in 0..<400 { values[index] = Int32(index) }
        let table = AccessPattern(space: .hbm, dtype: .int32, partitions: 200, sizes: [2], partitionStride: 2)
        let index = AccessPattern(space: .sbuf, dtype: .int32, partitions: 4, sizes: [1])
        let rows = AccessPattern(space: .sbuf, dtype: .int32, partitions: 4, offset: 64, sizes: [2])
        let indices: [Int32] = [199, -1, 3, 200]
        for (p, value) in indices.enumerated() {
            executor.sbufPointer(partition: p, offset: 0).storeBytes(of: value, as: Int32.self)
            executor.sbufPointer(partition: p, offset: 64).storeBytes(of: Int32(-7), as: Int32.self)
            executor.sbufPointer(partition: p, offset: 68).storeBytes(of: Int32(-7), as: Int32.self)
        }
        let gather = Instruction(engine: .dma, operation: .dmaCopy(
            destination: rows, source: table, indirection: DmaIndirection(operand: .source, index: index, outOfBounds: .skip)),
            sync: Synchronization(signalSemaphore: 0, signalValue: 1))
        // Scatter-add the gathered rows to rows index + 1: 200, 0, 4, 201; 200 and 201 are out of
        // bounds and skipped.
        let shifted = AccessPattern(space: .sbuf, dtype: .int32, partitions: 4, offset: 128, sizes: [1])
        for (p, value) in indices.enumerated() { executor.sbufPointer(partition: p, offset: 128).storeBytes(of: value &+ 1, as: Int32.self) }
        let scatter = Instruction(engine: .dma, operation: .dmaCopy(
            destination: table, source: rows, readModifyWrite: .add,
            indirection: DmaIndirection(operand: .destination, index: shifted, outOfBounds: .skip)))
        let program = try LoadedProgram(instructions: [gather, scatter], parameters: [Parameter(name: "table", bytes: 1600)],
                                        preset: .trn1)
        #expect(executor.run(program, bindings: [ParameterBinding(base: host, bytes: 1600)], deadline: nil).failure == nil)
        let gathered = (0..<4).flatMap { p in
            (0..<2).map { executor.sbufPointer(partition: p, offset: 64 + 4 * $0).load(as: Int32.self) }
        }
        #expect(gathered == [398, 399, -7, -7, 6, 7, -7, -7])
        // Row 0 gets partition 1's -7s (its gather was skipped), row 4 gets table row 3.
        #expect([values[0], values[1]] == [-7, -6] && [values[8], values[9]] == [8 + 6, 9 + 7])
        #expect([values[398], values[399]] == [398, 399])
    }
}

extension ExecutorTests {
    /// A traced execution shows the time an engine sat idle on a semaphore as a wait event, from
    /// when the engine was free to when its instruction started.
    @Test func aTraceShowsSemaphoreWaitsAsTheirOwnEvents() throws {
        let long = Instruction(engine: .dve, operation: .memset(destination: tile(16_384), value: 2),
                               sync: Synchronization(signalSemaphore: 3, signalValue: 1))
        let waiting = Instruction(engine: .act, operation: .tensorCopy(destination: tile(1, offset: 80_000), source: tile(1)),
                                  sync: Synchronization(waitSemaphore: 3, waitValue: 1))
        let program = try LoadedProgram(instructions: [long, waiting], parameters: [], preset: .trn1)
        let outcome = executor.run(program, bindings: [], deadline: nil, trace: true)
        let waits = outcome.trace.filter { $0.waitedFor != nil }
        #expect(waits.count == 1)
        let wait = try #require(waits.first)
        #expect(wait.engine == .act && wait.instruction == 1 && wait.start == 0)
        #expect(wait.duration == executor.cost(of: long))
        #expect(wait.waitedFor?.semaphore == 3 && wait.waitedFor?.value == 1)
    }
}
