/// The instruction set of the virtual NeuronCore, modelled on NKI's `nki.isa` (DESIGN.md's table).
/// Raw values of the enums are the C header's.

public enum MemorySpace: Int, Sendable, CustomStringConvertible {
    case sbuf = 1, psum, hbm
    public var description: String { self == .sbuf ? "SBUF" : self == .psum ? "PSUM" : "HBM" }
}

/// The engines, as stream indices; the C header's flags are `1 << rawValue`.
public enum Engine: Int, Sendable, CaseIterable, CustomStringConvertible {
    case pe = 0, act, dve, pool, dma
    /// The collective-communication engine (Neuron's CC cores): collectives inside a kernel run
    /// here, beside the compute engines, ordered with them by semaphores.
    case cc
    public var description: String { ["PE", "ACT", "DVE", "POOL", "DMA", "CC"][rawValue] }
    /// DMA and CC move data between memories; the others compute on SBUF and PSUM.
    public var movesData: Bool { self == .dma || self == .cc }
    public var flag: UInt32 { 1 << UInt32(rawValue) }
    public init?(flag: UInt32) {
        guard flag != 0, flag & (flag - 1) == 0, let engine = Engine(rawValue: flag.trailingZeroBitCount) else { return nil }
        self = engine
    }
}

public enum AluOp: Int, Sendable, CaseIterable, CustomStringConvertible {
    case add = 1, subtract, multiply, max, min
    case equal, notEqual, greater, greaterEqual, less, lessEqual
    case pow, abs, reciprocal, rsqrt, divide
    case bitwiseAnd, bitwiseOr, bitwiseXor, shiftLeft, shiftRight
    case bypass
    /// NKI's logical ops: arithmetic, nonzero (NaN included) is true, the result 1.0 or 0.0.
    case logicalAnd, logicalOr, logicalXor, logicalNot
    /// Bitwise not, a bitvec op.
    case invert

    public var description: String {
        ["add", "subtract", "multiply", "max", "min", "equal", "not_equal", "greater", "greater_equal", "less",
         "less_equal", "pow", "abs", "reciprocal", "rsqrt", "divide", "bitwise_and", "bitwise_or", "bitwise_xor",
         "shift_left", "shift_right", "bypass", "logical_and", "logical_or", "logical_xor", "logical_not",
         "invert"][rawValue - 1]
    }
    public var isComparison: Bool { (AluOp.equal.rawValue...AluOp.lessEqual.rawValue).contains(rawValue) }
    /// NKI's bitvec operators: they take integer dtypes and act on the 32-bit two's complement
    /// patterns of the values (int8 sign-extended, uint8 zero-extended), never through fp32. The
    /// others are arithmetic: the engines compute them in fp32.
    public var isBitwise: Bool { (AluOp.bitwiseAnd.rawValue...AluOp.shiftRight.rawValue).contains(rawValue) || self == .invert }
    /// Ops of one operand: in TENSOR_SCALAR they ignore their scalar; TENSOR_TENSOR refuses them.
    public var isUnary: Bool { [.abs, .reciprocal, .rsqrt, .logicalNot, .invert].contains(self) }
    /// NKI's legal reduction ops (its table also lists subtract, whose reduction it does not define).
    public var isReduction: Bool {
        [.add, .max, .min, .multiply, .bitwiseAnd, .bitwiseOr, .bitwiseXor, .logicalAnd, .logicalOr, .logicalXor].contains(self)
    }
}

/// ACTIVATE's functions: NKI's list for nki.isa.activation (its "Supported Activation Functions"),
/// computed to fp32 accuracy over the whole input range (the Scalar Engine's piecewise polynomials
/// are valid only in NKI's stated ranges, e.g. sin in [-pi, pi], arctan in [-pi/2, pi/2]).
public enum ActivationFunction: Int, Sendable, CaseIterable, CustomStringConvertible {
    case copy = 1, exp, log, tanh, sigmoid, relu, gelu, geluTanh, silu, square, sqrt, rsqrt, reciprocal
    case abs, sign, erf, erfDx, sin, arctan, softplus, mish, geluDx, siluDx, geluApprxSigmoid, geluApprxSigmoidDx
    public var description: String {
        ["copy", "exp", "log", "tanh", "sigmoid", "relu", "gelu", "gelu_tanh", "silu", "square", "sqrt", "rsqrt",
         "reciprocal", "abs", "sign", "erf", "erf_dx", "sin", "arctan", "softplus", "mish", "gelu_dx", "silu_dx",
         "gelu_apprx_sigmoid", "gelu_apprx_sigmoid_dx"][rawValue - 1]
    }
}

public enum SemaphoreOp: Int, Sendable { case add = 1, set = 2 }

/// An operand: up to 4 free dimensions over SBUF, PSUM or a kernel parameter (`vtrn_access_t`).
public struct AccessPattern: Sendable, Equatable {
    public var space: MemorySpace
    public var dtype: DataType
    public var startPartition: Int
    public var partitions: Int
    /// Bytes: into each partition (SBUF/PSUM) or into the parameter (HBM).
    public var offset: Int
    public var parameter: Int
    public var sizes: [Int]
    /// Elements; may be 0 or negative.
    public var strides: [Int]
    /// HBM: elements between partitions.
    public var partitionStride: Int

    public init(space: MemorySpace, dtype: DataType, startPartition: Int = 0, partitions: Int, offset: Int = 0,
                parameter: Int = 0, sizes: [Int], strides: [Int]? = nil, partitionStride: Int = 0) {
        self.space = space
        self.dtype = dtype
        self.startPartition = startPartition
        self.partitions = partitions
        self.offset = offset
        self.parameter = parameter
        self.sizes = sizes
        if let strides {
            self.strides = strides
        } else {
            var contiguous: [Int] = []
            var step = 1
            for size in sizes { contiguous.append(step); step = step &* size }
            self.strides = contiguous
        }
        self.partitionStride = partitionStride
    }

    /// Elements in each partition (validation bounds the sizes first, so that this cannot overflow
    /// for a loaded program; before that it wraps rather than trap).
    public var elementsPerPartition: Int { sizes.reduce(1, &*) }
    public var elementCount: Int { partitions * elementsPerPartition }

    /// Whether the free elements are one contiguous run.
    public var isContiguous: Bool {
        var step = 1
        for (size, stride) in zip(sizes, strides) where size > 1 {
            if stride != step { return false }
            step = step &* size
        }
        return true
    }

    /// The lowest and highest byte offsets (relative to a partition's start) the pattern touches,
    /// the highest exclusive.
    public var byteRange: (low: Int, high: Int) {
        var low = 0, high = 0
        for (size, stride) in zip(sizes, strides) where size > 1 {
            let extent = (size - 1) * stride
            if extent < 0 { low += extent } else { high += extent }
        }
        return (offset + low * dtype.size, offset + (high + 1) * dtype.size)
    }

    /// "SBUF[0:128, +1024] fp32 [512]" — for messages.
    public var summary: String {
        let where_ = space == .hbm ? "HBM parameter \(parameter)" : "\(space)[\(startPartition):\(startPartition + partitions)]"
        return "\(where_) at byte \(offset), \(dtype) \(sizes)"
    }
}

public enum ScalarOperand: Sendable, Equatable {
    case immediate(Float)
    case tile(AccessPattern)
    /// An exact 32-bit immediate for the bitvec ops (`0x7fffffff` has no fp32); arithmetic ops
    /// see it as the nearest fp32.
    case integer(Int32)
}

/// Semaphore work of an instruction: wait before, signal after.
public struct Synchronization: Sendable, Equatable {
    public var waitSemaphore: Int?
    public var waitValue: UInt32
    public var signalSemaphore: Int?
    public var signalOp: SemaphoreOp
    public var signalValue: UInt32

    public init(waitSemaphore: Int? = nil, waitValue: UInt32 = 0, signalSemaphore: Int? = nil,
                signalOp: SemaphoreOp = .add, signalValue: UInt32 = 0) {
        self.waitSemaphore = waitSemaphore
        self.waitValue = waitValue
        self.signalSemaphore = signalSemaphore
        self.signalOp = signalOp
        self.signalValue = signalValue
    }

    public static let none = Synchronization()
}

/// Indirect (gather/scatter) addressing of a DMA_COPY, NKI's `vector_offset` with `indirect_dim`
/// 0: the indexed operand, an HBM tensor of N rows (its partitions), gives row `index[p]` where a
/// direct copy would give row p, for each partition p of the [P,1] integer `index` tile in SBUF.
public struct DmaIndirection: Sendable, Equatable {
    public enum Operand: Int, Sendable { case source = 1, destination }
    /// NKI's oob_mode: an index outside 0..<N fails the execution, or skips its row.
    public enum OutOfBounds: Int, Sendable { case error = 0, skip }

    public var operand: Operand
    public var index: AccessPattern
    public var outOfBounds: OutOfBounds

    public init(operand: Operand, index: AccessPattern, outOfBounds: OutOfBounds = .error) {
        self.operand = operand
        self.index = index
        self.outOfBounds = outOfBounds
    }
}

public enum Operation: Sendable, Equatable {
    /// dst = src; with `readModifyWrite` `.add` (NKI's dst_rmw_op), dst = dst + src through fp32;
    /// with `indirection`, a gather (source indexed) or scatter (destination indexed) of rows.
    case dmaCopy(destination: AccessPattern, source: AccessPattern, readModifyWrite: AluOp = .bypass,
                 indirection: DmaIndirection? = nil)
    case matmul(destination: AccessPattern, stationary: AccessPattern, moving: AccessPattern, accumulate: Bool)
    case transpose(destination: AccessPattern, source: AccessPattern)
    case activate(destination: AccessPattern, function: ActivationFunction, source: AccessPattern, scale: ScalarOperand,
                  bias: AccessPattern?, accumulateOut: AccessPattern?)
    case tensorTensor(destination: AccessPattern, a: AccessPattern, b: AccessPattern, op: AluOp)
    case tensorScalar(destination: AccessPattern, source: AccessPattern, op0: AluOp, x0: ScalarOperand, op1: AluOp,
                      x1: ScalarOperand?, reverse: UInt32)
    case tensorReduce(destination: AccessPattern, source: AccessPattern, op: AluOp, negate: Bool)
    case tensorCopy(destination: AccessPattern, source: AccessPattern)
    case memset(destination: AccessPattern, value: Float)
    case iota(destination: AccessPattern, steps: [Int32], offset: Int32, channelMultiplier: Int32)
    case affineSelect(destination: AccessPattern, steps: [Int32], offset: Int32, channelMultiplier: Int32, compare: AluOp,
                      onTrue: AccessPattern, onFalse: Float)
    case semaphoreSignal(semaphore: Int, op: SemaphoreOp, value: UInt32)
    case semaphoreWait(semaphore: Int, value: UInt32)
    /// A collective of a communicator's ranks, on the CC engine.
    case collective(CollectiveInstruction)

    /// The opcode, as DESIGN.md names it.
    public var name: String {
        switch self {
        case .dmaCopy: "DMA_COPY"
        case .matmul: "MATMUL"
        case .transpose: "TRANSPOSE"
        case .activate: "ACTIVATE"
        case .tensorTensor: "TENSOR_TENSOR"
        case .tensorScalar: "TENSOR_SCALAR"
        case .tensorReduce: "TENSOR_REDUCE"
        case .tensorCopy: "TENSOR_COPY"
        case .memset: "MEMSET"
        case .iota: "IOTA"
        case .affineSelect: "AFFINE_SELECT"
        case .semaphoreSignal: "SEM_SIGNAL"
        case .semaphoreWait: "SEM_WAIT"
        case .collective(let collective): collective.kind.name
        }
    }

    /// Every access pattern, with its operand name, for validation.
    public var operands: [(name: String, access: AccessPattern, writes: Bool)] {
        switch self {
        case .dmaCopy(let d, let s, _, let indirection):
            [("dst", d, true), ("src", s, false)] + (indirection.map { [("index", $0.index, false)] } ?? [])
        case .matmul(let d, let st, let mv, _): [("dst", d, true), ("stationary", st, false), ("moving", mv, false)]
        case .transpose(let d, let s): [("dst", d, true), ("src", s, false)]
        case .activate(let d, _, let s, let scale, let bias, let out):
            [("dst", d, true), ("src", s, false)] + (scale.tile.map { [("scale", $0, false)] } ?? [])
                + (bias.map { [("bias", $0, false)] } ?? []) + (out.map { [("accumulate_out", $0, true)] } ?? [])
        case .tensorTensor(let d, let a, let b, _): [("dst", d, true), ("a", a, false), ("b", b, false)]
        case .tensorScalar(let d, let s, _, let x0, _, let x1, _):
            [("dst", d, true), ("src", s, false)] + (x0.tile.map { [("x0", $0, false)] } ?? [])
                + (x1?.tile.map { [("x1", $0, false)] } ?? [])
        case .tensorReduce(let d, let s, _, _): [("dst", d, true), ("src", s, false)]
        case .tensorCopy(let d, let s): [("dst", d, true), ("src", s, false)]
        case .memset(let d, _): [("dst", d, true)]
        case .iota(let d, _, _, _): [("dst", d, true)]
        case .affineSelect(let d, _, _, _, _, let t, _): [("dst", d, true), ("on_true", t, false)]
        case .semaphoreSignal, .semaphoreWait: []
        case .collective(let c):
            (c.destination.map { [("dst", $0, true)] } ?? []) + (c.source.map { [("src", $0, false)] } ?? [])
        }
    }
}

extension ScalarOperand {
    var tile: AccessPattern? { if case .tile(let access) = self { access } else { nil } }
}

public struct Instruction: Sendable, Equatable {
    public var engine: Engine
    public var operation: Operation
    public var sync: Synchronization

    public init(engine: Engine, operation: Operation, sync: Synchronization = .none) {
        self.engine = engine
        self.operation = operation
        self.sync = sync
    }
}

/// A named HBM tensor of a kernel.
public struct Parameter: Sendable, Equatable {
    public var name: String
    public var bytes: UInt64
    public init(name: String, bytes: UInt64) {
        self.name = name
        self.bytes = bytes
    }
}
