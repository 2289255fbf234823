/// Load-time validation of a program against a core: every rule checked once, so that execution
/// needs no checks but the bindings'. The first broken rule is reported with the instruction's
/// index, its opcode and engine, the operand, and the rule.
public struct ValidationError: Error, Sendable, Equatable, CustomStringConvertible {
    public let instruction: Int
    public let message: String
    public var description: String { message }
}

public enum Validator {
    public static let partitionCount = 128
    public static let matmulMaxK = 128
    public static let matmulMaxM = 128
    public static let matmulMaxN = 512
    public static let psumBankBytes = 2048
    static let maxDimension = 1 << 24
    static let maxElements = 1 << 31
    static let maxStride = 1 << 32
    static let maxDmaElements = 1 << 26

    public static func validate(_ instructions: [Instruction], parameters: [Parameter], preset: ChipPreset) throws(ValidationError) {
        for (index, instruction) in instructions.enumerated() {
            try validate(instruction, index: index, parameters: parameters, preset: preset)
        }
    }

    static func validate(_ instruction: Instruction, index: Int, parameters: [Parameter], preset: ChipPreset) throws(ValidationError) {
        let operation = instruction.operation
        let engine = instruction.engine
        func fail(_ operand: String?, _ rule: String) -> ValidationError {
            let subject = operand.map { "\($0): " } ?? ""
            return ValidationError(instruction: index, message: "instruction \(index) (\(operation.name) on \(engine)): \(subject)\(rule)")
        }

        // The engine must be one that has the instruction.
        let allowed: [Engine]
        switch operation {
        case .dmaCopy: allowed = [.dma]
        case .matmul: allowed = [.pe]
        case .transpose: allowed = [.pe, .dve]
        case .activate: allowed = [.act]
        case .tensorTensor, .tensorReduce: allowed = [.dve]
        case .tensorScalar, .tensorCopy: allowed = [.dve, .act, .pool]
        case .memset: allowed = [.dve, .pool]
        case .iota, .affineSelect: allowed = [.pool]
        case .semaphoreSignal, .semaphoreWait: allowed = Engine.allCases
        case .collective: allowed = [.cc]
        }
        guard allowed.contains(engine) else {
            throw fail(nil, "runs on \(allowed.map(\.description).joined(separator: " or ")), not \(engine)")
        }

        for semaphore in [instruction.sync.waitSemaphore, instruction.sync.signalSemaphore].compactMap({ $0 }) {
            guard (0..<preset.semaphoresPerCore).contains(semaphore) else {
                throw fail("sync", "semaphore \(semaphore) does not exist: a core has \(preset.semaphoresPerCore) (0-\(preset.semaphoresPerCore - 1))")
            }
        }
        switch operation {
        case .semaphoreSignal(let semaphore, _, _), .semaphoreWait(let semaphore, _):
            guard (0..<preset.semaphoresPerCore).contains(semaphore) else {
                throw fail("semaphore", "\(semaphore) does not exist: a core has \(preset.semaphoresPerCore) (0-\(preset.semaphoresPerCore - 1))")
            }
        default: break
        }

        // Every operand on its own.
        for (name, access, _) in operation.operands {
            guard (1...4).contains(access.sizes.count), access.strides.count == access.sizes.count else {
                throw fail(name, "has \(access.sizes.count) free dimensions; an access pattern has 1 to 4")
            }
            guard access.sizes.allSatisfy({ $0 >= 1 }) else { throw fail(name, "a free dimension has size 0 (\(access.sizes))") }
            // Bounds that keep every later computation of extents and counts far from overflow.
            guard access.sizes.allSatisfy({ $0 <= maxDimension }) else {
                throw fail(name, "a free dimension is larger than \(maxDimension) elements (sizes \(access.sizes))")
            }
            guard access.sizes.reduce(1, { $0 * $1 > maxElements ? maxElements + 1 : $0 * $1 }) <= maxElements else {
                throw fail(name, "sizes \(access.sizes) describe more than \(maxElements) elements per partition")
            }
            // magnitude, not abs: abs(Int64.min) traps (a caller's stride of INT64_MIN crashed the load).
            guard access.strides.allSatisfy({ $0.magnitude <= maxStride.magnitude }),
                  access.partitionStride.magnitude <= maxStride.magnitude else {
                throw fail(name, "a stride is larger than \(maxStride) elements (strides \(access.strides), partition stride \(access.partitionStride))")
            }
            guard access.offset <= maxStride else { throw fail(name, "byte offset \(access.offset) is larger than \(maxStride)") }
            // Broadcast views (stride 0) can describe more elements than a partition holds; an
            // engine's pass over a partition is bounded by what SBUF's widest partition holds.
            if !engine.movesData && access.elementsPerPartition > preset.sbufBytesPerPartition {
                throw fail(name, "has \(access.elementsPerPartition) elements per partition; compute engines process at most "
                           + "\(preset.sbufBytesPerPartition) (the bytes of an SBUF partition)")
            }
            // Partitions are SBUF's and PSUM's rows; an HBM access's "partitions" are only its outer
            // dimension (a DMA_COPY from HBM to HBM is not a tile), bounded like the others.
            if access.space == .hbm {
                guard (1...maxDimension).contains(access.partitions) else {
                    throw fail(name, "\(access.partitions) rows; an HBM access has 1 to \(maxDimension)")
                }
            } else {
                guard (1...partitionCount).contains(access.partitions) else {
                    throw fail(name, "\(access.partitions) partitions; an access covers 1 to \(partitionCount)")
                }
            }
            guard access.offset >= 0, access.offset % access.dtype.size == 0 else {
                throw fail(name, "byte offset \(access.offset) is not a multiple of \(access.dtype)'s size (\(access.dtype.size))")
            }
            switch access.space {
            case .sbuf, .psum:
                guard access.startPartition >= 0, access.startPartition + access.partitions <= partitionCount else {
                    throw fail(name, "partitions \(access.startPartition)..<\(access.startPartition + access.partitions) run past partition \(partitionCount - 1)")
                }
                let capacity = access.space == .sbuf ? preset.sbufBytesPerPartition : preset.psumBytesPerPartition
                let range = access.byteRange
                guard range.low >= 0, range.high <= capacity else {
                    throw fail(name, "bytes \(range.low)..<\(range.high) of each partition run outside \(access.space) "
                               + "(\(capacity) bytes per partition)")
                }
                if !engine.movesData {
                    // NKI's quadrant rule: compute engines start at 0, 32, 64 or 96 and stay in that group.
                    let start = access.startPartition
                    guard start % 32 == 0 else {
                        throw fail(name, "starts at partition \(start); compute engines start at partition 0, 32, 64 or 96")
                    }
                    let limit = start == 0 ? 128 : start == 64 ? 64 : 32
                    guard access.partitions <= limit else {
                        throw fail(name, "covers \(access.partitions) partitions from partition \(start); from \(start) an access covers at most \(limit)")
                    }
                }
                if access.space == .psum {
                    // NKI: PE writes PSUM; DVE and ACT read and write it; GpSimd and the DMA engines
                    // do not reach it.
                    if engine.movesData {
                        throw fail(name, "is in PSUM, which \(engine) does not reach; move data between PSUM and SBUF with TENSOR_COPY "
                                   + "on DVE or ACT")
                    }
                    if engine == .pool {
                        throw fail(name, "is in PSUM, which POOL (GpSimd) cannot access; DVE and ACT can")
                    }
                }
            case .hbm:
                guard engine.movesData else { throw fail(name, "is in HBM; only DMA_COPY and collectives reach HBM") }
                guard access.parameter >= 0 && access.parameter < parameters.count else {
                    throw fail(name, "parameter \(access.parameter) does not exist: the program has \(parameters.count)")
                }
                let bytes = Int(clamping: parameters[access.parameter].bytes)
                let range = hbmByteRange(access)
                guard range.low >= 0, range.high <= bytes else {
                    throw fail(name, "bytes \(range.low)..<\(range.high) run outside parameter \"\(parameters[access.parameter].name)\" (\(bytes) bytes)")
                }
            }
        }

        func requireSameShape(_ a: (String, AccessPattern), _ b: (String, AccessPattern)) throws(ValidationError) {
            guard a.1.partitions == b.1.partitions, a.1.elementsPerPartition == b.1.elementsPerPartition else {
                throw fail(b.0, "is \(b.1.partitions) x \(b.1.elementsPerPartition) but \(a.0) is \(a.1.partitions) x \(a.1.elementsPerPartition); their shapes must agree")
            }
        }
        func requireColumn(_ name: String, _ access: AccessPattern, partitions: Int) throws(ValidationError) {
            guard access.partitions == partitions, access.elementsPerPartition == 1 else {
                throw fail(name, "is \(access.partitions) x \(access.elementsPerPartition); it must be [\(partitions), 1]")
            }
        }
        func requireSBUFInput(_ name: String, _ access: AccessPattern) throws(ValidationError) {
            guard access.space == .sbuf else { throw fail(name, "is in \(access.space); the PE reads its inputs from SBUF") }
        }
        func requireIntegers(_ op: AluOp, _ accesses: [(String, AccessPattern)]) throws(ValidationError) {
            guard op.isBitwise else { return }
            for (name, access) in accesses where !access.dtype.isInteger {
                throw fail(name, "is \(access.dtype); \(op) takes integer dtypes only")
            }
        }
        func requireTransposed(_ destination: AccessPattern, _ source: AccessPattern) throws(ValidationError) {
            guard destination.partitions == source.elementsPerPartition, destination.elementsPerPartition == source.partitions else {
                throw fail("dst", "is \(destination.partitions) x \(destination.elementsPerPartition); the transpose of src is \(source.elementsPerPartition) x \(source.partitions)")
            }
            guard destination.dtype == source.dtype else {
                throw fail("dst", "is \(destination.dtype) but src is \(source.dtype); TRANSPOSE is bit exact, so they must match")
            }
        }
        func scalar(_ name: String, _ operand: ScalarOperand?, partitions: Int) throws(ValidationError) {
            if case .tile(let tile)? = operand { try requireColumn(name, tile, partitions: partitions) }
        }

        switch operation {
        case .dmaCopy(let destination, let source, let readModifyWrite, let indirection):
            guard readModifyWrite == .bypass || readModifyWrite == .add else {
                throw fail("dst_rmw_op", "\(readModifyWrite) is not supported; DMA_COPY accumulates with add only (bypass copies)")
            }
            if let indirection {
                // Row p of the other operand pairs with row index[p] of the indexed HBM tensor.
                let (tableName, table, otherName, other) = indirection.operand == .source
                    ? ("src", source, "dst", destination) : ("dst", destination, "src", source)
                guard table.space == .hbm else {
                    throw fail(tableName, "is in \(table.space); an indirect DMA_COPY indexes the rows of an HBM tensor")
                }
                guard indirection.index.space == .sbuf, indirection.index.dtype.isInteger else {
                    throw fail("index", "is \(indirection.index.dtype) in \(indirection.index.space); indices are an integer tile in SBUF")
                }
                try requireColumn("index", indirection.index, partitions: other.partitions)
                guard other.elementsPerPartition == table.elementsPerPartition else {
                    throw fail(otherName, "has \(other.elementsPerPartition) elements per partition but a row of \(tableName) has "
                               + "\(table.elementsPerPartition); an indirect DMA_COPY moves whole rows")
                }
                guard other.elementCount <= maxDmaElements else {
                    throw fail(otherName, "moves \(other.elementCount) elements; one DMA_COPY moves at most \(maxDmaElements) (split it)")
                }
                break
            }
            guard source.elementCount <= maxDmaElements else {
                throw fail("src", "moves \(source.elementCount) elements; one DMA_COPY moves at most \(maxDmaElements) (split it)")
            }
            guard destination.elementCount == source.elementCount else {
                throw fail("src", "has \(source.elementCount) elements but dst has \(destination.elementCount); DMA_COPY moves equal counts")
            }
        case .matmul(let destination, let stationary, let moving, _):
            try requireSBUFInput("stationary", stationary)
            try requireSBUFInput("moving", moving)
            guard destination.space == .psum, destination.dtype == .fp32 else {
                throw fail("dst", "is \(destination.dtype) in \(destination.space); MATMUL accumulates fp32 in PSUM")
            }
            for (name, access) in [("stationary", stationary), ("moving", moving)] where !access.dtype.isFloat {
                throw fail(name, "is \(access.dtype); the PE multiplies floating-point dtypes")
            }
            guard (stationary.dtype == .fp32) == (moving.dtype == .fp32) else {
                throw fail("moving", "is \(moving.dtype) but stationary is \(stationary.dtype); an fp32 input of MATMUL needs an "
                           + "fp32 partner (other dtypes mix freely)")
            }
            let k = stationary.partitions, m = stationary.elementsPerPartition, n = moving.elementsPerPartition
            guard moving.partitions == k else {
                throw fail("moving", "has \(moving.partitions) partitions but stationary has \(k); both are K, the contraction")
            }
            guard stationary.startPartition == moving.startPartition else {
                throw fail("moving", "starts at partition \(moving.startPartition) but stationary at \(stationary.startPartition); the PE array reads both from the same rows")
            }
            guard k <= matmulMaxK else { throw fail("stationary", "K is \(k), more than \(matmulMaxK)") }
            guard m <= matmulMaxM else { throw fail("stationary", "M is \(m), more than \(matmulMaxM) (the PE array's columns)") }
            guard n <= matmulMaxN else { throw fail("moving", "N is \(n), more than \(matmulMaxN) (one PSUM bank of fp32)") }
            guard destination.partitions == m, destination.elementsPerPartition == n else {
                throw fail("dst", "is \(destination.partitions) x \(destination.elementsPerPartition); stationary^T . moving is \(m) x \(n)")
            }
            let range = destination.byteRange
            guard range.low / psumBankBytes == (range.high - 1) / psumBankBytes else {
                throw fail("dst", "bytes \(range.low)..<\(range.high) cross a PSUM bank boundary (banks are \(psumBankBytes) bytes)")
            }
        case .transpose(let destination, let source) where engine == .dve:
            // NKI's nc_transpose on the Vector Engine: at most 32 x 32, SBUF or PSUM either side.
            guard source.partitions <= 32, source.elementsPerPartition <= 32 else {
                throw fail("src", "is \(source.partitions) x \(source.elementsPerPartition); TRANSPOSE on DVE takes at most 32 x 32 "
                           + "(the PE takes 128 x 128)")
            }
            try requireTransposed(destination, source)
        case .transpose(let destination, let source):
            try requireSBUFInput("src", source)
            guard destination.space == .psum else { throw fail("dst", "is in \(destination.space); TRANSPOSE writes PSUM") }
            guard source.elementsPerPartition <= 128 else {
                throw fail("src", "has \(source.elementsPerPartition) elements per partition; TRANSPOSE takes at most 128 x 128")
            }
            try requireTransposed(destination, source)
        case .activate(let destination, _, let source, let scale, let bias, let accumulateOut):
            try requireSameShape(("dst", destination), ("src", source))
            try scalar("scale", scale, partitions: source.partitions)
            if let bias { try requireColumn("bias", bias, partitions: source.partitions) }
            if let accumulateOut { try requireColumn("accumulate_out", accumulateOut, partitions: source.partitions) }
        case .tensorTensor(let destination, let a, let b, let op):
            try requireSameShape(("dst", destination), ("a", a))
            try requireSameShape(("dst", destination), ("b", b))
            guard !(a.space == .psum && b.space == .psum) else {
                throw fail("b", "is in PSUM as a is; TENSOR_TENSOR reads at most one input from PSUM")
            }
            guard !op.isUnary && op != .bypass else {
                throw fail("op", "\(op) takes one operand; TENSOR_TENSOR needs a binary op")
            }
            try requireIntegers(op, [("dst", destination), ("a", a), ("b", b)])
        case .tensorScalar(let destination, let source, let op0, let x0, let op1, let x1, let reverse):
            try requireSameShape(("dst", destination), ("src", source))
            try scalar("x0", x0, partitions: source.partitions)
            guard reverse & ~3 == 0 else { throw fail("reverse", "has bits 0x\(String(reverse, radix: 16)); only bits 0 and 1 exist") }
            if op1 != .bypass {
                guard let x1 else { throw fail("x1", "is missing; op1 \(op1) needs it (or use bypass)") }
                try scalar("x1", x1, partitions: source.partitions)
            }
            try requireIntegers(op0, [("dst", destination), ("src", source)])
            try requireIntegers(op1, [("dst", destination), ("src", source)])
            // NKI: both operators of one tensor_scalar are bitvec or both arithmetic, and bitvec
            // ones run on the Vector Engine.
            if op0 != .bypass && op1 != .bypass && op0.isBitwise != op1.isBitwise {
                func kind(_ op: AluOp) -> String { op.isBitwise ? "a bitvec op" : "an arithmetic op" }
                throw fail("op1", "\(op1) is \(kind(op1)) but op0 \(op0) is \(kind(op0)); the two stages of TENSOR_SCALAR "
                           + "are both bitvec or both arithmetic")
            }
            if let bitvec = [op0, op1].first(where: \.isBitwise), engine != .dve {
                throw fail(bitvec == op0 ? "op0" : "op1", "\(bitvec) is a bitvec op; TENSOR_SCALAR runs bitvec ops on DVE only")
            }
        case .tensorReduce(let destination, let source, let op, let negate):
            guard op.isReduction else {
                throw fail("op", "\(op) does not reduce; TENSOR_REDUCE takes add, max, min, multiply, bitwise_and, bitwise_or, "
                           + "bitwise_xor, logical_and, logical_or or logical_xor")
            }
            try requireIntegers(op, [("dst", destination), ("src", source)])
            guard !(negate && op.isBitwise) else {
                throw fail("negate", "applies to arithmetic reductions; \(op) is a bitvec op")
            }
            guard destination.partitions == source.partitions else {
                throw fail("dst", "has \(destination.partitions) partitions but src has \(source.partitions); TENSOR_REDUCE "
                           + "reduces along the free axes only")
            }
            let kept = destination.elementsPerPartition, reduced = source.elementsPerPartition
            guard reduced % kept == 0 else {
                throw fail("dst", "has \(kept) elements per partition, which does not divide src's \(reduced); each dst element "
                           + "reduces a consecutive group of src's elements")
            }
        case .tensorCopy(let destination, let source):
            try requireSameShape(("dst", destination), ("src", source))
        case .memset:
            break
        case .iota(let destination, let steps, _, _):
            guard steps.count == destination.sizes.count else {
                throw fail("steps", "has \(steps.count) values but dst has \(destination.sizes.count) free dimensions")
            }
        case .affineSelect(let destination, let steps, _, _, let compare, let onTrue, _):
            guard steps.count == destination.sizes.count else {
                throw fail("steps", "has \(steps.count) values but dst has \(destination.sizes.count) free dimensions")
            }
            guard compare.isComparison else { throw fail("cmp", "\(compare) is not a comparison") }
            try requireSameShape(("dst", destination), ("on_true", onTrue))
        case .semaphoreSignal, .semaphoreWait:
            break
        case .collective(let collective):
            try validateCollective(collective, fail: fail)
        }
    }

    /// A permute's pairs: one target (or -1) per rank, each rank the target of at most one.
    public static func checkPermutePairs<E: Error>(_ targets: [Int], size: Int, groupName: String,
                                                   fail: (String) -> E) throws(E) {
        guard targets.count == size else {
            throw fail("has \(targets.count) targets; \(groupName) has \(size) ranks, and each names its target (or -1)")
        }
        var sourceOf: [Int: Int] = [:]
        for (from, to) in targets.enumerated() where to != -1 {
            guard (0..<size).contains(to) else {
                throw fail("rank \(from)'s target is \(to), not a rank of \(groupName) (0-\(size - 1)) or -1")
            }
            if let other = sourceOf[to] {
                throw fail("ranks \(other) and \(from) both send to rank \(to); a rank receives from one rank at most")
            }
            sourceOf[to] = from
        }
    }

    /// A collective's operands against its kind and its group's size (the element counts are
    /// NCCL's: all-gather's dst holds every rank's src, reduce-scatter's src every rank's dst).
    static func validateCollective(_ c: CollectiveInstruction, fail: (String?, String) -> ValidationError) throws(ValidationError) {
        let size = c.group.size
        let kind = c.kind
        if kind.readsSource && c.source == nil { throw fail("src", "is missing; \(kind) reads a source") }
        if kind.writesDestination && c.destination == nil { throw fail("dst", "is missing; \(kind) writes a destination") }
        if kind.reduces {
            guard CollectiveOperation.reductionOps.contains(c.op) else {
                throw fail("op", "\(c.op) is not a reduction of collectives; they take add, max or min (NKI's nl.add, nl.maximum, nl.minimum)")
            }
        }
        if let s = c.source, let d = c.destination {
            guard s.dtype == d.dtype else { throw fail("dst", "is \(d.dtype) but src is \(s.dtype); collectives do not convert") }
            let sc = s.elementCount, dc = d.elementCount
            switch kind {
            case .allReduce, .broadcast, .permute:
                guard sc == dc else { throw fail("dst", "has \(dc) elements but src has \(sc); \(kind) keeps the count") }
            case .allGather:
                guard dc == sc * size else {
                    throw fail("dst", "has \(dc) elements; ALL_GATHER over \(size) ranks of \(sc) elements each needs \(sc * size)")
                }
            case .reduceScatter:
                guard sc == dc * size else {
                    throw fail("src", "has \(sc) elements; REDUCE_SCATTER over \(size) ranks to \(dc) elements each needs \(dc * size)")
                }
            case .allToAll:
                guard sc == dc, sc % size == 0 else {
                    throw fail("src", "has \(sc) elements and dst \(dc); ALL_TO_ALL needs equal counts that split into \(size) chunks")
                }
            case .send, .receive:
                break
            }
        }
        if kind == .permute {
            try checkPermutePairs(c.targets, size: size, groupName: c.group.name) { fail("pairs", $0) }
        }
        if kind == .broadcast || kind.isPointToPoint {
            guard (0..<size).contains(c.peer) else {
                let role = kind == .broadcast ? "root" : "peer"
                throw fail(role, "rank \(c.peer) does not exist: \(c.group.name) has \(size) ranks (0-\(size - 1))")
            }
        }
    }

    /// Bytes of an HBM access relative to its parameter's start, the high end exclusive.
    public static func hbmByteRange(_ access: AccessPattern) -> (low: Int, high: Int) {
        let inner = access.byteRange
        let extent = (access.partitions - 1) * access.partitionStride * access.dtype.size
        return (inner.low + min(0, extent), inner.high + max(0, extent))
    }
}
