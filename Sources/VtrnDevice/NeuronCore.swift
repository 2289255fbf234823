import CVtrnSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A program validated for a core: its instructions split into the engines' streams.
public struct LoadedProgram: Sendable {
    public let instructions: [Instruction]
    public let parameters: [Parameter]
    /// For each engine, the indices of its instructions in program order.
    public let streams: [[Int]]

    public init(instructions: [Instruction], parameters: [Parameter], preset: ChipPreset) throws(ValidationError) {
        try Validator.validate(instructions, parameters: parameters, preset: preset)
        self.instructions = instructions
        self.parameters = parameters
        var streams = Array(repeating: [Int](), count: Engine.allCases.count)
        for (index, instruction) in instructions.enumerated() { streams[instruction.engine.rawValue].append(index) }
        self.streams = streams
    }

    /// A program the runtime builds itself (a host-called collective), valid by construction:
    /// its operands may be longer than a kernel's access patterns allow.
    package init(unvalidated instructions: [Instruction], parameters: [Parameter]) {
        self.instructions = instructions
        self.parameters = parameters
        var streams = Array(repeating: [Int](), count: Engine.allCases.count)
        for (index, instruction) in instructions.enumerated() { streams[instruction.engine.rawValue].append(index) }
        self.streams = streams
    }
}

/// Where each parameter lives for one execution: host memory backing HBM.
public struct ParameterBinding: Sendable {
    public let base: UnsafeSendablePointer
    public let bytes: Int
    public init(base: UnsafeMutableRawPointer, bytes: Int) {
        self.base = UnsafeSendablePointer(base)
        self.bytes = bytes
    }
}

public struct UnsafeSendablePointer: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public init(_ pointer: UnsafeMutableRawPointer) { self.pointer = pointer }
}

/// How an execution ended, and what it cost.
public struct ExecutionOutcome: Sendable {
    public enum Failure: Error, Sendable, Equatable {
        case outOfBounds(String)
        /// Ranks of a collective asked for different things.
        case invalidArgument(String)
        case deadlock(String)
        case timeout(String)
        /// An uncorrectable error of the hardware (an HBM read over an uncorrectable error).
        case hardware(String)
        /// A DMA abort on a queue the execution used (a collective's CC ring).
        case dmaFault(String)
        /// The device was reset before or while the execution ran.
        case reset(String)
        /// The device was lost before or while the execution ran.
        case deviceLost(String)
    }
    public var failure: Failure?
    /// Estimated device time: the latest engine's end, nanoseconds.
    public var deviceNanoseconds: Double = 0
    public var instructions = [Int](repeating: 0, count: Engine.allCases.count)
    public var busyNanoseconds = [Double](repeating: 0, count: Engine.allCases.count)
    /// Each instruction's place on the virtual timeline, when the execution was traced.
    public var trace: [TraceEvent] = []
}

/// One instruction on its engine's virtual timeline (nanoseconds from the execution's start), or,
/// with `waitedFor`, the time its engine sat idle before it because its semaphore wait was not met.
public struct TraceEvent: Sendable {
    public let engine: Engine
    public let instruction: Int
    public let start: Double
    public let duration: Double
    public let waitedFor: (semaphore: Int, value: UInt32)?

    public init(engine: Engine, instruction: Int, start: Double, duration: Double, waitedFor: (semaphore: Int, value: UInt32)? = nil) {
        self.engine = engine
        self.instruction = instruction
        self.start = start
        self.duration = duration
        self.waitedFor = waitedFor
    }
}

/// The compute state of one NeuronCore: SBUF, PSUM, semaphores, and the engines that execute a
/// program's streams. One execution at a time (the core's command queue serialises them).
///
/// The streams interleave deterministically: at each step the engine whose next instruction can
/// start earliest on the virtual timeline goes (ties to the lower engine), an instruction whose
/// semaphore wait is not met cannot go, and an instruction's semaphore signal lands when it ends.
/// So results and timelines are the same every run, and when no unfinished engine can go, the
/// execution has deadlocked: that is reported, where hardware would hang.
public final class CoreExecutor: @unchecked Sendable {
    public let preset: ChipPreset
    let sbuf: UnsafeMutableRawPointer
    let psum: UnsafeMutableRawPointer
    let sbufPitch: Int
    let psumPitch: Int
    private var semaphores = [UInt32](repeating: 0, count: 256)
    /// Per semaphore, how it reached its value: see `SemaphoreHistory`.
    private var semaphoreHistories = [SemaphoreHistory](repeating: SemaphoreHistory(), count: 256)
    /// The semaphores signalled in this execution, whose histories the next one clears.
    private var signalledSemaphores: [Int] = []
    private var scratch: [UnsafeMutablePointer<Float>] = []
    /// The same for the integer (bitvec) path; untouched pages cost nothing until a program uses it.
    private var integerScratch: [UnsafeMutablePointer<Int32>] = []
    private let scratchCount: Int

    public init(preset: ChipPreset) {
        self.preset = preset
        sbufPitch = preset.sbufBytesPerPartition
        psumPitch = preset.psumBytesPerPartition
        let sbufBytes = sbufPitch * 128, psumBytes = psumPitch * 128
        sbuf = mmap(nil, sbufBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        psum = mmap(nil, psumBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)!
        // New memory reads as NaN (as nki.simulate fills it), so reads of what was never written show.
        memset(sbuf, 0xff, sbufBytes)
        memset(psum, 0xff, psumBytes)
        // Enough for any operand: a whole partition of SBUF in fp32, or a 128 x 512 matrix.
        scratchCount = max(sbufPitch, 128 * 512) * 2
        for _ in 0..<4 { scratch.append(.allocate(capacity: scratchCount)) }
        for _ in 0..<3 { integerScratch.append(.allocate(capacity: scratchCount)) }
    }

    deinit {
        munmap(sbuf, sbufPitch * 128)
        munmap(psum, psumPitch * 128)
        for buffer in scratch { buffer.deallocate() }
        for buffer in integerScratch { buffer.deallocate() }
    }

    /// SBUF and PSUM read as NaN again, as after power-on (a reset's part).
    public func clear() {
        memset(sbuf, 0xff, sbufPitch * 128)
        memset(psum, 0xff, psumPitch * 128)
    }

    public func sbufPointer(partition: Int, offset: Int) -> UnsafeMutableRawPointer { sbuf + partition * sbufPitch + offset }
    public func psumPointer(partition: Int, offset: Int) -> UnsafeMutableRawPointer { psum + partition * psumPitch + offset }

    // MARK: Running a program

    public func run(_ program: LoadedProgram, bindings: [ParameterBinding], deadline: UInt64?, trace: Bool = false,
                    context: ExecutionContext? = nil) -> ExecutionOutcome {
        var outcome = ExecutionOutcome()
        for index in semaphores.indices { semaphores[index] = 0 }
        for semaphore in signalledSemaphores { semaphoreHistories[semaphore].clear() }
        signalledSemaphores.removeAll(keepingCapacity: true)
        let engineCount = Engine.allCases.count
        var position = [Int](repeating: 0, count: engineCount)
        var time = [Double](repeating: 0, count: engineCount)
        while true {
            var chosen = -1
            var chosenStart = Double.infinity
            var unfinished = 0
            for engine in 0..<engineCount where position[engine] < program.streams[engine].count {
                unfinished += 1
                let instruction = program.instructions[program.streams[engine][position[engine]]]
                var start = time[engine]
                if let (semaphore, value) = Self.wait(of: instruction) {
                    if semaphores[semaphore] < value { continue }
                    start = max(start, semaphoreHistories[semaphore].firstTime(reaching: value))
                }
                if start < chosenStart {
                    chosen = engine
                    chosenStart = start
                }
            }
            if unfinished == 0 { break }
            guard chosen >= 0 else {
                outcome.failure = .deadlock(deadlockReport(program, position: position))
                break
            }
            let index = program.streams[chosen][position[chosen]]
            let instruction = program.instructions[index]
            // Two plain loads per instruction while nothing is armed and no reset happened.
            if let context, context.faults.attention.load(ordering: .relaxed) != 0 || context.faults.generation != context.generation,
               let failure = context.check(instruction, index: index, bindings: bindings, parameters: program.parameters,
                                           deadline: deadline) {
                outcome.failure = failure
                break
            }
            let duration: Double
            if case .collective(let collective) = instruction.operation {
                let result = runCollective(collective, index: index, start: chosenStart, bindings: bindings,
                                           parameters: program.parameters, deadline: deadline, context: context)
                guard case .success(let nanoseconds) = result else {
                    if case .failure(let failure) = result { outcome.failure = failure }
                    break
                }
                duration = max(nanoseconds, cost(of: instruction))
            } else {
                if let failure = execute(instruction, index: index, bindings: bindings, parameters: program.parameters) {
                    outcome.failure = failure
                    break
                }
                duration = cost(of: instruction)
            }
            let engineFree = time[chosen]
            time[chosen] = chosenStart + duration
            outcome.busyNanoseconds[chosen] += duration
            if trace {
                if chosenStart > engineFree, let (semaphore, value) = Self.wait(of: instruction) {
                    outcome.trace.append(TraceEvent(engine: instruction.engine, instruction: index, start: engineFree,
                                                    duration: chosenStart - engineFree, waitedFor: (semaphore, value)))
                }
                outcome.trace.append(TraceEvent(engine: instruction.engine, instruction: index, start: chosenStart, duration: duration))
            }
            outcome.instructions[chosen] += 1
            var signal: (Int, SemaphoreOp, UInt32)?
            if let semaphore = instruction.sync.signalSemaphore {
                signal = (semaphore, instruction.sync.signalOp, instruction.sync.signalValue)
            }
            if case .semaphoreSignal(let semaphore, let op, let value) = instruction.operation { signal = (semaphore, op, value) }
            if let (semaphore, op, value) = signal {
                if semaphoreHistories[semaphore].isEmpty { signalledSemaphores.append(semaphore) }
                if op == .add {
                    semaphores[semaphore] = semaphoreHistories[semaphore].add(value, to: semaphores[semaphore], at: time[chosen])
                } else {
                    semaphoreHistories[semaphore].set(value, at: time[chosen])
                    semaphores[semaphore] = value
                }
            }
            position[chosen] += 1
            if let deadline, vtrnsys_monotonic_ns() > deadline {
                outcome.failure = .timeout("instruction \(index) (\(instruction.operation.name) on \(instruction.engine)) was still "
                                           + "running when the execution reached its timeout")
                break
            }
        }
        outcome.deviceNanoseconds = time.max() ?? 0
        return outcome
    }

    private static func wait(of instruction: Instruction) -> (Int, UInt32)? {
        if case .semaphoreWait(let semaphore, let value) = instruction.operation { return (semaphore, value) }
        if let semaphore = instruction.sync.waitSemaphore { return (semaphore, instruction.sync.waitValue) }
        return nil
    }

    private func deadlockReport(_ program: LoadedProgram, position: [Int]) -> String {
        var blocked: [String] = []
        for engine in Engine.allCases where position[engine.rawValue] < program.streams[engine.rawValue].count {
            let index = program.streams[engine.rawValue][position[engine.rawValue]]
            let instruction = program.instructions[index]
            if let (semaphore, value) = Self.wait(of: instruction) {
                blocked.append("\(engine) at instruction \(index) (\(instruction.operation.name)) waits for semaphore \(semaphore) "
                               + ">= \(value), which is \(semaphores[semaphore])")
            }
        }
        return "every unfinished engine waits on a semaphore that nothing pending can raise: " + blocked.joined(separator: "; ")
    }

    // MARK: Collectives

    /// A collective instruction: this core's rank joins the group's collective with its operands
    /// (staged through contiguous buffers when they are not contiguous HBM). The virtual time it
    /// takes is the wait for the last rank plus the ring's steps on the links.
    private func runCollective(_ collective: CollectiveInstruction, index: Int, start: Double, bindings: [ParameterBinding],
                               parameters: [Parameter], deadline: UInt64?,
                               context: ExecutionContext?) -> Result<Double, ExecutionOutcome.Failure> {
        let what = "instruction \(index) (\(collective.kind) on CC)"
        guard let context, let rank = collective.group.rank(faults: context.faults, core: context.core) else {
            return .failure(.invalidArgument("\(what): this core is not a member of \(collective.group.name)"))
        }
        for (name, access, _) in Operation.collective(collective).operands where access.space == .hbm {
            let range = Validator.hbmByteRange(access)
            if range.high > bindings[access.parameter].bytes {
                return .failure(.outOfBounds("\(what): \(name) reaches byte \(range.high) of parameter "
                                             + "\"\(parameters[access.parameter].name)\", but its binding leaves "
                                             + "\(bindings[access.parameter].bytes) bytes"))
            }
        }
        var staged: [UnsafeMutableRawPointer] = []
        defer { for buffer in staged { buffer.deallocate() } }
        func contiguous(_ access: AccessPattern) -> UnsafeMutableRawPointer {
            if access.space == .hbm && access.isContiguous && (access.partitions == 1 || access.partitionStride == access.elementsPerPartition) {
                return base(access, 0, bindings)
            }
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(1, access.elementCount * access.dtype.size), alignment: 64)
            staged.append(buffer)
            return buffer
        }
        let source = collective.source.map { access -> UnsafeMutableRawPointer in
            let pointer = contiguous(access)
            if !staged.isEmpty && staged.last == pointer { gather(access, bindings, into: pointer) }
            return pointer
        }
        let destination = collective.destination.map { contiguous($0) }
        let destinationStaged = destination.map { pointer in staged.contains(pointer) } ?? false
        let timeout = context.execution.timeout
        let result = collective.group.perform(rank: rank, operation: collective.operation, source: source.map { UnsafeRawPointer($0) },
                                              destination: destination, virtualTime: start, deadline: deadline,
                                              timeoutNanoseconds: timeout, generations: collective.group.generations,
                                              cancelled: { context.execution.cancelled.load(ordering: .relaxed) })
        if case .success = result, destinationStaged, let access = collective.destination, let destination {
            scatter(access, bindings, from: destination)
        }
        return result.mapError { failure in
            switch failure {
            case .invalidArgument(let message): .invalidArgument("\(what): \(message)")
            default: failure
            }
        }
    }

    /// An operand's elements, partition by partition, into a contiguous buffer.
    private func gather(_ access: AccessPattern, _ bindings: [ParameterBinding], into buffer: UnsafeMutableRawPointer) {
        let size = access.dtype.size, perPartition = access.elementsPerPartition
        for p in 0..<access.partitions {
            let start = base(access, p, bindings)
            let out = buffer + p * perPartition * size
            forEachRun(access) { offset, element in
                Self.moveElements(to: out + element * size, toStride: size, from: start + offset, fromStride: access.strides[0] * size,
                                  count: access.sizes[0], size: size)
            }
        }
    }

    /// The reverse of `gather`.
    private func scatter(_ access: AccessPattern, _ bindings: [ParameterBinding], from buffer: UnsafeRawPointer) {
        let size = access.dtype.size, perPartition = access.elementsPerPartition
        for p in 0..<access.partitions {
            let start = base(access, p, bindings)
            let from = buffer + p * perPartition * size
            forEachRun(access) { offset, element in
                Self.moveElements(to: start + offset, toStride: access.strides[0] * size, from: from + element * size, fromStride: size,
                                  count: access.sizes[0], size: size)
            }
        }
    }

    // MARK: Cost model

    /// Nanoseconds an instruction keeps its engine busy: cycles of the engine's clock (at least
    /// 64), or for DMA the bytes at the core's DMA bandwidth (its 16 engines, within its share of
    /// HBM's).
    public func cost(of instruction: Instruction) -> Double {
        let clock: UInt64
        switch instruction.engine {
        case .pe: clock = preset.peClockHz
        case .act: clock = preset.actClockHz
        case .dve: clock = preset.dveClockHz
        case .pool: clock = preset.poolClockHz
        case .dma, .cc: clock = preset.actClockHz
        }
        var cycles = 64.0
        switch instruction.operation {
        case .matmul(_, let stationary, let moving, _):
            let widen = stationary.dtype == .fp32 || moving.dtype == .fp32 ? 4.0 : 1.0
            cycles = Double(max(moving.elementsPerPartition, 64)) * widen
        case .transpose(_, let source) where instruction.engine == .dve:
            cycles = max(64, Double(source.elementsPerPartition))
        case .transpose(_, let source):
            cycles = Double(max(source.elementsPerPartition, 64)) * (source.dtype == .fp32 ? 4 : 1)
        case .dmaCopy(let destination, let source, let readModifyWrite, let indirection):
            // The elements moved (an indexed HBM tensor moves only the rows the index picks), and
            // for a read-modify-write the destination's read too.
            let moved = indirection?.operand == .source ? destination : source
            let read = readModifyWrite == .bypass ? 0 : moved.elementCount * destination.dtype.size
            let nanoseconds = Double(moved.elementCount * source.dtype.size + read) / Double(preset.kernelDmaBandwidth) * 1e9
            return max(64.0 / Double(clock) * 1e9, nanoseconds)
        case .tensorTensor(let destination, _, _, _):
            cycles = max(64, Double(2 * destination.elementsPerPartition))
        case .activate(_, _, let source, _, _, _), .tensorScalar(_, let source, _, _, _, _, _),
             .tensorReduce(_, let source, _, _), .tensorCopy(_, let source):
            cycles = max(64, Double(source.elementsPerPartition))
        case .memset(let destination, _), .iota(let destination, _, _, _), .affineSelect(let destination, _, _, _, _, _, _):
            cycles = max(64, Double(destination.elementsPerPartition))
        case .semaphoreSignal, .semaphoreWait, .collective:
            cycles = 64
        }
        return cycles / Double(clock) * 1e9
    }

    // MARK: Operand access

    /// The first byte of partition `p` (0-based within the access) of an operand.
    @inline(__always)
    private func base(_ access: AccessPattern, _ p: Int, _ bindings: [ParameterBinding]) -> UnsafeMutableRawPointer {
        switch access.space {
        case .sbuf: return sbuf + (access.startPartition + p) * sbufPitch + access.offset
        case .psum: return psum + (access.startPartition + p) * psumPitch + access.offset
        case .hbm: return bindings[access.parameter].base.pointer + access.offset + p * access.partitionStride * access.dtype.size
        }
    }

    /// Calls `run(byteOffset, elementIndex)` for each innermost run of an operand's free elements.
    @inline(__always)
    private func forEachRun(_ access: AccessPattern, _ run: (Int, Int) -> Void) {
        let sizes = access.sizes, strides = access.strides, size = access.dtype.size
        let dims = sizes.count
        let s1 = dims > 1 ? sizes[1] : 1, s2 = dims > 2 ? sizes[2] : 1, s3 = dims > 3 ? sizes[3] : 1
        let t1 = dims > 1 ? strides[1] : 0, t2 = dims > 2 ? strides[2] : 0, t3 = dims > 3 ? strides[3] : 0
        var element = 0
        for i3 in 0..<s3 {
            for i2 in 0..<s2 {
                for i1 in 0..<s1 {
                    run((i1 * t1 + i2 * t2 + i3 * t3) * size, element)
                    element += sizes[0]
                }
            }
        }
    }

    /// Partition `p`'s elements of an operand, as fp32, into `destination`.
    private func load(_ access: AccessPattern, _ p: Int, _ bindings: [ParameterBinding], into destination: UnsafeMutablePointer<Float>) {
        let start = base(access, p, bindings)
        forEachRun(access) { offset, element in
            Conversion.load(access.dtype, from: start + offset, stride: access.strides[0], count: access.sizes[0],
                            into: destination + element)
        }
    }

    /// Writes fp32 values to partition `p` of an operand, rounding to its dtype.
    private func store(_ access: AccessPattern, _ p: Int, _ bindings: [ParameterBinding], from source: UnsafePointer<Float>) {
        let start = base(access, p, bindings)
        forEachRun(access) { offset, element in
            Conversion.store(access.dtype, from: source + element, count: access.sizes[0], to: start + offset,
                             stride: access.strides[0])
        }
    }

    /// Partition `p`'s elements of an integer operand as Int32, for the bitvec ops (`Conversion.loadInt32`).
    private func loadIntegers(_ access: AccessPattern, _ p: Int, _ bindings: [ParameterBinding],
                              into destination: UnsafeMutablePointer<Int32>) {
        let start = base(access, p, bindings)
        forEachRun(access) { offset, element in
            Conversion.loadInt32(access.dtype, from: start + offset, stride: access.strides[0], count: access.sizes[0],
                                 into: destination + element)
        }
    }

    /// Writes Int32 results of the bitvec ops to partition `p` as bit patterns (`Conversion.storeInt32Bits`).
    private func storeIntegers(_ access: AccessPattern, _ p: Int, _ bindings: [ParameterBinding], from source: UnsafePointer<Int32>) {
        let start = base(access, p, bindings)
        forEachRun(access) { offset, element in
            Conversion.storeInt32Bits(access.dtype, from: source + element, count: access.sizes[0], to: start + offset,
                                      stride: access.strides[0])
        }
    }

    /// Copies the raw bytes of every element of `source` to `destination` (same dtype), in flat
    /// partition-major order: bit exact, NaN payloads included.
    private func copyRaw(to destination: AccessPattern, from source: AccessPattern, _ bindings: [ParameterBinding]) {
        let size = source.dtype.size
        let total = source.elementCount * size
        let owned = total > scratchCount * 4 ? UnsafeMutableRawPointer.allocate(byteCount: total, alignment: 16) : nil
        defer { owned?.deallocate() }
        let bytes = owned ?? UnsafeMutableRawPointer(scratch[3])
        var written = 0
        for p in 0..<source.partitions {
            let start = base(source, p, bindings)
            let stride = source.strides[0] * size
            forEachRun(source) { offset, element in
                Self.moveElements(to: bytes + (written + element) * size, toStride: size, from: start + offset, fromStride: stride,
                                  count: source.sizes[0], size: size)
            }
            written += source.elementsPerPartition
        }
        var read = 0
        for p in 0..<destination.partitions {
            let start = base(destination, p, bindings)
            let stride = destination.strides[0] * size
            forEachRun(destination) { offset, element in
                Self.moveElements(to: start + offset, toStride: stride, from: bytes + (read + element) * size, fromStride: size,
                                  count: destination.sizes[0], size: size)
            }
            read += destination.elementsPerPartition
        }
    }

    /// A DMA that loads a matrix transposed: partition p of the destination takes the source's
    /// column p (consecutive partitions start one element apart, elements `stride` apart), as a
    /// GEMM loads Aᵀ. Worth its own path: element by element it would touch a new cache line and
    /// often a new page per element.
    static func isTransposedGather(_ destination: AccessPattern, _ source: AccessPattern) -> Bool {
        source.sizes.count == 1 && destination.sizes.count == 1 && source.partitionStride == 1 && source.strides[0] > 1
            && destination.strides[0] == 1 && destination.partitions == source.partitions
            && destination.sizes[0] == source.sizes[0] && source.dtype.size == 4
    }

    /// The copy for `isTransposedGather`, in 16 x 16 blocks so that each source row segment and
    /// each destination partition segment stays in cache while it is used.
    private func transposedGather(to destination: AccessPattern, from source: AccessPattern, _ bindings: [ParameterBinding]) {
        let partitions = source.partitions, elements = source.sizes[0], step = source.strides[0]
        let from = base(source, 0, bindings).assumingMemoryBound(to: UInt32.self)
        let block = 16
        for p0 in stride(from: 0, to: partitions, by: block) {
            let p1 = min(p0 + block, partitions)
            for e0 in stride(from: 0, to: elements, by: block) {
                let e1 = min(e0 + block, elements)
                for p in p0..<p1 {
                    let to = base(destination, p, bindings).assumingMemoryBound(to: UInt32.self)
                    for e in e0..<e1 { to[e] = from[e * step + p] }
                }
            }
        }
    }

    /// Copies `count` elements of `size` bytes between strided places (strides in bytes).
    @inline(__always)
    static func moveElements(to destination: UnsafeMutableRawPointer, toStride: Int, from source: UnsafeRawPointer, fromStride: Int,
                             count: Int, size: Int) {
        if toStride == size && fromStride == size {
            memcpy(destination, source, count * size)
            return
        }
        func move<T>(_: T.Type) {
            for i in 0..<count {
                (destination + i * toStride).storeBytes(of: (source + i * fromStride).loadUnaligned(as: T.self), as: T.self)
            }
        }
        switch size {
        case 4: move(UInt32.self)
        case 2: move(UInt16.self)
        case 1: move(UInt8.self)
        default: for i in 0..<count { memcpy(destination + i * toStride, source + i * fromStride, size) }
        }
    }

    // MARK: Executing one instruction

    /// Runs an instruction's data work; a failure for an HBM access past its binding.
    private func execute(_ instruction: Instruction, index: Int, bindings: [ParameterBinding],
                         parameters: [Parameter]) -> ExecutionOutcome.Failure? {
        let operation = instruction.operation
        // HBM accesses against what the execution actually bound (validation checked the declared sizes).
        for (name, access, _) in operation.operands where access.space == .hbm {
            let range = Validator.hbmByteRange(access)
            if range.high > bindings[access.parameter].bytes {
                return .outOfBounds("instruction \(index) (\(operation.name) on \(instruction.engine)): \(name) reaches byte "
                                    + "\(range.high) of parameter \"\(parameters[access.parameter].name)\", but its binding "
                                    + "leaves \(bindings[access.parameter].bytes) bytes")
            }
        }
        let a = scratch[0], b = scratch[1], c = scratch[2]
        switch operation {
        case .dmaCopy(let destination, let source, let readModifyWrite, let indirection?):
            if let failure = indirectCopy(to: destination, from: source, readModifyWrite, indirection, index: index, bindings) {
                return failure
            }
        case .dmaCopy(let destination, let source, let readModifyWrite, nil) where readModifyWrite != .bypass:
            accumulateFlat(readModifyWrite, to: destination, from: source, bindings)
        case .dmaCopy(let destination, let source, _, nil):
            if destination.dtype == source.dtype && Self.isTransposedGather(destination, source) {
                transposedGather(to: destination, from: source, bindings)
            } else if destination.dtype == source.dtype && destination.partitions == source.partitions
                && destination.isContiguous && source.isContiguous && destination.elementsPerPartition == source.elementsPerPartition {
                let bytes = source.elementsPerPartition * source.dtype.size
                for p in 0..<source.partitions { memcpy(base(destination, p, bindings), base(source, p, bindings), bytes) }
            } else if destination.dtype == source.dtype {
                copyRaw(to: destination, from: source, bindings)
            } else {
                elementwiseFlat(to: destination, from: source, bindings)
            }
        case .matmul(let destination, let stationary, let moving, let accumulate):
            matmul(destination, stationary, moving, accumulate, bindings)
        case .transpose(let destination, let source):
            // Through a [columns][partitions] staging buffer, with typed strided moves (not a
            // memcpy call per element).
            let size = source.dtype.size
            let columns = source.elementsPerPartition
            let partitions = source.partitions
            let bytes = UnsafeMutableRawPointer(c)
            for p in 0..<partitions {
                let start = base(source, p, bindings)
                forEachRun(source) { offset, element in
                    Self.moveElements(to: bytes + (element * partitions + p) * size, toStride: partitions * size,
                                      from: start + offset, fromStride: source.strides[0] * size, count: source.sizes[0], size: size)
                }
            }
            for f in 0..<columns {
                let start = base(destination, f, bindings)
                forEachRun(destination) { offset, element in
                    Self.moveElements(to: start + offset, toStride: destination.strides[0] * size,
                                      from: bytes + (f * partitions + element) * size, fromStride: size,
                                      count: destination.sizes[0], size: size)
                }
            }
        case .activate(let destination, let function, let source, let scale, let bias, let accumulateOut):
            let count = source.elementsPerPartition
            var sums = [Float](repeating: 0, count: source.partitions)
            for p in 0..<source.partitions {
                load(source, p, bindings, into: a)
                let multiplier = scalar(scale, p, bindings)
                var offset: Float = 0
                if let bias { load(bias, p, bindings, into: b); offset = b[0] }
                Kernels.activate(function, a, count: count, scale: multiplier, bias: offset, into: c)
                if accumulateOut != nil { sums[p] = Kernels.reduce(.add, c, count: count) }
                store(destination, p, bindings, from: c)
            }
            if let accumulateOut {
                for p in 0..<source.partitions {
                    var value = sums[p]
                    store(accumulateOut, p, bindings, from: &value)
                }
            }
        case .tensorTensor(let destination, let first, let second, let op) where op.isBitwise:
            let count = destination.elementsPerPartition
            let (x, y, z) = (integerScratch[0], integerScratch[1], integerScratch[2])
            for p in 0..<destination.partitions {
                loadIntegers(first, p, bindings, into: x)
                loadIntegers(second, p, bindings, into: y)
                Kernels.integerBinary(op, x, y, count: count, into: z)
                storeIntegers(destination, p, bindings, from: z)
            }
        case .tensorTensor(let destination, let first, let second, let op):
            let count = destination.elementsPerPartition
            for p in 0..<destination.partitions {
                load(first, p, bindings, into: a)
                load(second, p, bindings, into: b)
                Kernels.binary(op, a, b, count: count, into: c)
                store(destination, p, bindings, from: c)
            }
        case .tensorScalar(let destination, let source, let op0, let x0, let op1, let x1, let reverse) where op0.isBitwise || op1.isBitwise:
            // Validation keeps both stages bitvec (or one of them bypass).
            let count = source.elementsPerPartition
            let (x, z) = (integerScratch[0], integerScratch[2])
            for p in 0..<source.partitions {
                loadIntegers(source, p, bindings, into: x)
                Kernels.integerScalar(op0, x, integerScalar(x0, p, bindings), reversed: reverse & 1 != 0, count: count, into: z)
                if op1 != .bypass, let x1 {
                    Kernels.integerScalar(op1, z, integerScalar(x1, p, bindings), reversed: reverse & 2 != 0, count: count, into: z)
                }
                storeIntegers(destination, p, bindings, from: z)
            }
        case .tensorScalar(let destination, let source, let op0, let x0, let op1, let x1, let reverse):
            let count = source.elementsPerPartition
            for p in 0..<source.partitions {
                load(source, p, bindings, into: a)
                Kernels.scalar(op0, a, scalar(x0, p, bindings), reversed: reverse & 1 != 0, count: count, into: c)
                if op1 != .bypass, let x1 {
                    Kernels.scalar(op1, c, scalar(x1, p, bindings), reversed: reverse & 2 != 0, count: count, into: c)
                }
                store(destination, p, bindings, from: c)
            }
        case .tensorReduce(let destination, let source, let op, _) where op.isBitwise:
            // Each dst element reduces a consecutive group of src's elements (validation: they divide).
            let groups = destination.elementsPerPartition, size = source.elementsPerPartition / groups
            let (x, z) = (integerScratch[0], integerScratch[2])
            for p in 0..<source.partitions {
                loadIntegers(source, p, bindings, into: x)
                for group in 0..<groups { z[group] = Kernels.integerReduce(op, x + group * size, count: size) }
                storeIntegers(destination, p, bindings, from: z)
            }
        case .tensorReduce(let destination, let source, let op, let negate):
            let groups = destination.elementsPerPartition, size = source.elementsPerPartition / groups
            for p in 0..<source.partitions {
                load(source, p, bindings, into: a)
                for group in 0..<groups {
                    let value = Kernels.reduce(op, a + group * size, count: size)
                    c[group] = negate ? -value : value
                }
                store(destination, p, bindings, from: c)
            }
        case .tensorCopy(let destination, let source):
            if destination.dtype == source.dtype {
                copyRaw(to: destination, from: source, bindings)
            } else {
                for p in 0..<source.partitions {
                    load(source, p, bindings, into: a)
                    store(destination, p, bindings, from: a)
                }
            }
        case .memset(let destination, let value):
            let count = destination.elementsPerPartition
            for i in 0..<count { a[i] = value }
            for p in 0..<destination.partitions { store(destination, p, bindings, from: a) }
        case .iota(let destination, let steps, let offset, let channelMultiplier):
            for p in 0..<destination.partitions {
                let values = affineValues(destination, steps: steps, offset: offset, channelMultiplier: channelMultiplier, partition: p)
                storeAffineValues(destination, p, bindings, values)
            }
        case .affineSelect(let destination, let steps, let offset, let channelMultiplier, let compare, let onTrue, let onFalse):
            let count = destination.elementsPerPartition
            for p in 0..<destination.partitions {
                let values = affineValues(destination, steps: steps, offset: offset, channelMultiplier: channelMultiplier, partition: p)
                load(onTrue, p, bindings, into: a)
                for i in 0..<count { b[i] = Float(values[i]) }
                Kernels.scalar(compare, b, 0, reversed: false, count: count, into: b)
                for i in 0..<count { c[i] = b[i] != 0 ? a[i] : onFalse }
                store(destination, p, bindings, from: c)
            }
        case .semaphoreSignal, .semaphoreWait, .collective:
            break
        }
        return nil
    }

    private func scalar(_ operand: ScalarOperand, _ p: Int, _ bindings: [ParameterBinding]) -> Float {
        switch operand {
        case .immediate(let value): return value
        case .integer(let value): return Float(value)
        case .tile(let access):
            var value: Float = 0
            Conversion.load(access.dtype, from: base(access, p, bindings), stride: 1, count: 1, into: &value)
            return value
        }
    }

    /// A scalar operand of a bitvec op: an fp32 immediate or tile element stands for the int32 it rounds to.
    private func integerScalar(_ operand: ScalarOperand, _ p: Int, _ bindings: [ParameterBinding]) -> Int32 {
        switch operand {
        case .immediate(let value): return Conversion.int32(value)
        case .integer(let value): return value
        case .tile(let access):
            var value: Int32 = 0
            Conversion.loadInt32(access.dtype, from: base(access, p, bindings), stride: 1, count: 1, into: &value)
            return value
        }
    }

    /// offset + p * cm + sum(steps[d] * i_d) for each element of partition p, in int32.
    private func affineValues(_ access: AccessPattern, steps: [Int32], offset: Int32, channelMultiplier: Int32,
                              partition: Int) -> [Int32] {
        var values = [Int32](repeating: 0, count: access.elementsPerPartition)
        let sizes = access.sizes
        var indices = [Int](repeating: 0, count: sizes.count)
        for element in 0..<values.count {
            var value = offset &+ Int32(truncatingIfNeeded: partition) &* channelMultiplier
            for d in 0..<sizes.count { value = value &+ steps[d] &* Int32(truncatingIfNeeded: indices[d]) }
            values[element] = value
            var d = 0
            while d < sizes.count {
                indices[d] += 1
                if indices[d] < sizes[d] { break }
                indices[d] = 0
                d += 1
            }
        }
        return values
    }

    /// IOTA's values: int32 exactly, other dtypes through fp32 (rounded and saturated).
    private func storeAffineValues(_ access: AccessPattern, _ p: Int, _ bindings: [ParameterBinding], _ values: [Int32]) {
        if access.dtype == .int32 {
            let start = base(access, p, bindings)
            forEachRun(access) { offset, element in
                for i in 0..<access.sizes[0] {
                    (start + offset + i * access.strides[0] * 4).storeBytes(of: values[element + i], as: Int32.self)
                }
            }
        } else {
            let floats = scratch[2]
            for i in values.indices { floats[i] = Float(values[i]) }
            store(access, p, bindings, from: floats)
        }
    }

    /// dst = src element by element in flat (partition-major) order, through fp32.
    private func elementwiseFlat(to destination: AccessPattern, from source: AccessPattern, _ bindings: [ParameterBinding]) {
        let all = UnsafeMutablePointer<Float>.allocate(capacity: source.elementCount)
        defer { all.deallocate() }
        for p in 0..<source.partitions { load(source, p, bindings, into: all + p * source.elementsPerPartition) }
        for p in 0..<destination.partitions { store(destination, p, bindings, from: all + p * destination.elementsPerPartition) }
    }

    /// An indirect DMA_COPY, row by row in index order: row p of the other operand and row index[p]
    /// of the indexed HBM tensor. A row index outside the tensor's rows fails the execution (rows
    /// before it are done) or, with oob_mode skip, is skipped. Same dtypes without accumulation
    /// copy bits; otherwise through fp32, as a direct copy.
    private func indirectCopy(to destination: AccessPattern, from source: AccessPattern, _ readModifyWrite: AluOp,
                              _ indirection: DmaIndirection, index: Int, _ bindings: [ParameterBinding]) -> ExecutionOutcome.Failure? {
        let gather = indirection.operand == .source
        let table = gather ? source : destination
        let count = source.elementsPerPartition
        // Rows of HBM-to-HBM copies may exceed the scratch buffers.
        let owned = count > scratchCount ? (UnsafeMutablePointer<Float>.allocate(capacity: count),
                                            UnsafeMutablePointer<Float>.allocate(capacity: count)) : nil
        defer {
            owned?.0.deallocate()
            owned?.1.deallocate()
        }
        let (a, b) = owned ?? (scratch[0], scratch[1])
        for p in 0..<indirection.index.partitions {
            var row: Int32 = 0
            loadIntegers(indirection.index, p, bindings, into: &row)
            guard row >= 0 && Int(row) < table.partitions else {
                if indirection.outOfBounds == .skip { continue }
                return .outOfBounds("instruction \(index) (DMA_COPY on DMA): index[\(p)] is \(row), outside the \(table.partitions) "
                                    + "rows of \(gather ? "src" : "dst") (oob_mode error; the rows before it were copied)")
            }
            let (to, from) = gather ? (p, Int(row)) : (Int(row), p)
            if readModifyWrite == .bypass && destination.dtype == source.dtype {
                copyRow(to: destination, to, from: source, from, through: UnsafeMutableRawPointer(a), bindings)
                continue
            }
            load(source, from, bindings, into: a)
            if readModifyWrite != .bypass {
                load(destination, to, bindings, into: b)
                Kernels.binary(readModifyWrite, b, a, count: count, into: a)
            }
            store(destination, to, bindings, from: a)
        }
        return nil
    }

    /// Copies row `from` of `source` to row `to` of `destination` (same dtype, same element count)
    /// bit for bit, through `bytes`.
    private func copyRow(to destination: AccessPattern, _ to: Int, from source: AccessPattern, _ from: Int,
                         through bytes: UnsafeMutableRawPointer, _ bindings: [ParameterBinding]) {
        let size = source.dtype.size
        let start = base(source, from, bindings)
        forEachRun(source) { offset, element in
            Self.moveElements(to: bytes + element * size, toStride: size, from: start + offset, fromStride: source.strides[0] * size,
                              count: source.sizes[0], size: size)
        }
        let target = base(destination, to, bindings)
        forEachRun(destination) { offset, element in
            Self.moveElements(to: target + offset, toStride: destination.strides[0] * size, from: bytes + element * size,
                              fromStride: size, count: destination.sizes[0], size: size)
        }
    }

    /// dst = dst op src element by element in flat (partition-major) order, through fp32: src is
    /// read whole before dst is written, so overlapping operands read their old values.
    private func accumulateFlat(_ op: AluOp, to destination: AccessPattern, from source: AccessPattern,
                                _ bindings: [ParameterBinding]) {
        let count = source.elementCount
        let incoming = UnsafeMutablePointer<Float>.allocate(capacity: count)
        let existing = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer {
            incoming.deallocate()
            existing.deallocate()
        }
        for p in 0..<source.partitions { load(source, p, bindings, into: incoming + p * source.elementsPerPartition) }
        for p in 0..<destination.partitions { load(destination, p, bindings, into: existing + p * destination.elementsPerPartition) }
        Kernels.binary(op, existing, incoming, count: count, into: existing)
        for p in 0..<destination.partitions { store(destination, p, bindings, from: existing + p * destination.elementsPerPartition) }
    }

    private func matmul(_ destination: AccessPattern, _ stationary: AccessPattern, _ moving: AccessPattern, _ accumulate: Bool,
                        _ bindings: [ParameterBinding]) {
        let k = Int32(stationary.partitions), m = Int32(stationary.elementsPerPartition), n = Int32(moving.elementsPerPartition)
        if stationary.dtype == .fp32 && moving.dtype == .fp32 && stationary.isContiguous && moving.isContiguous
            && destination.isContiguous {
            // SBUF rows are matrices with a leading dimension of the partition pitch: no copies at all.
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, 1,
                        base(stationary, 0, bindings).assumingMemoryBound(to: Float.self), Int32(sbufPitch / 4),
                        base(moving, 0, bindings).assumingMemoryBound(to: Float.self), Int32(sbufPitch / 4),
                        accumulate ? 1 : 0,
                        base(destination, 0, bindings).assumingMemoryBound(to: Float.self), Int32(psumPitch / 4))
            return
        }
        // Widen both inputs to fp32, multiply, then add to (or overwrite) the PSUM tile.
        let a = scratch[0], b = scratch[1], c = scratch[2]
        for p in 0..<Int(k) {
            load(stationary, p, bindings, into: a + p * Int(m))
            load(moving, p, bindings, into: b + p * Int(n))
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, 1, a, m, b, n, 0, c, n)
        for row in 0..<Int(m) {
            if accumulate {
                let existing = scratch[3]
                load(destination, row, bindings, into: existing)
                for column in 0..<Int(n) { c[row * Int(n) + column] += existing[column] }
            }
            store(destination, row, bindings, from: c + row * Int(n))
        }
    }
}

/// How one semaphore reached its value during an execution, so that a wait for `>= v` starts when
/// the value first reached v, not at the semaphore's latest signal (a counting semaphore's producer
/// often runs far ahead of its consumer).
///
/// Since the last `set` (or the execution's start) values only grow, so the history is a list of
/// (time, value from then on) in time order with non-decreasing values, and the first time a value
/// was reached is a binary search. Signals usually arrive in time order (one engine's instructions
/// end in order) and append; a signal timed before one already applied (another engine's, ending
/// earlier) is inserted in its place and raises the values after it. An add that wraps the 32-bit
/// value starts the history again, as a `set` does.
struct SemaphoreHistory {
    /// Empty: value 0 since time 0 (the execution's start).
    private var times: [Double] = []
    private var values: [UInt32] = []

    var isEmpty: Bool { times.isEmpty }

    mutating func clear() {
        times.removeAll(keepingCapacity: true)
        values.removeAll(keepingCapacity: true)
    }

    mutating func set(_ value: UInt32, at time: Double) {
        clear()
        times.append(time)
        values.append(value)
    }

    /// Adds `amount` at `time` to a semaphore whose value is `current`; returns the new value.
    mutating func add(_ amount: UInt32, to current: UInt32, at time: Double) -> UInt32 {
        let result = current &+ amount
        guard amount != 0 else { return result }
        guard result > current else {
            set(result, at: time)
            return result
        }
        if times.isEmpty {
            times.append(0)
            values.append(0)
        }
        let last = times.count - 1
        if time > times[last] {
            times.append(time)
            values.append(result)
        } else if time == times[last] {
            values[last] = result
        } else {
            // Earlier than a signal already applied: the value from `time` on grows by `amount`.
            // A signal cannot land before the history's start (a set, or time 0).
            let index = firstIndex { times[$0] > time }
            if index == 0 {
                for entry in values.indices { values[entry] &+= amount }
            } else if times[index - 1] == time {
                for entry in (index - 1)..<values.count { values[entry] &+= amount }
            } else {
                times.insert(time, at: index)
                values.insert(values[index - 1] &+ amount, at: index)
                for entry in (index + 1)..<values.count { values[entry] &+= amount }
            }
        }
        return result
    }

    /// The earliest time at which the value was at least `value` (it is, now).
    func firstTime(reaching value: UInt32) -> Double {
        if times.isEmpty { return 0 }
        let index = firstIndex { values[$0] >= value }
        return index < times.count ? times[index] : times[times.count - 1]
    }

    /// The first index of the history for which `isPast` holds (it holds for all later ones), or the count.
    private func firstIndex(where isPast: (Int) -> Bool) -> Int {
        var low = 0, high = times.count
        while low < high {
            let middle = (low + high) / 2
            if isPast(middle) { high = middle } else { low = middle + 1 }
        }
        return low
    }
}
