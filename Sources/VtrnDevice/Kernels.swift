#if canImport(Glibc)
import Glibc
#endif

/// The engines' arithmetic on fp32 rows: one loop per operation (the switch is outside the loop,
/// so each loop is simple enough for the optimiser to vectorise).
enum Kernels {
    @inline(__always)
    static func apply(_ op: AluOp, _ x: Float, _ y: Float) -> Float {
        switch op {
        case .add: return x + y
        case .subtract: return x - y
        case .multiply: return x * y
        case .max: return x.isNaN || y.isNaN ? .nan : Swift.max(x, y)
        case .min: return x.isNaN || y.isNaN ? .nan : Swift.min(x, y)
        case .equal: return x == y ? 1 : 0
        case .notEqual: return x != y ? 1 : 0
        case .greater: return x > y ? 1 : 0
        case .greaterEqual: return x >= y ? 1 : 0
        case .less: return x < y ? 1 : 0
        case .lessEqual: return x <= y ? 1 : 0
        case .pow: return powf(x, y)
        case .abs: return Swift.abs(x)
        case .reciprocal: return 1 / x
        case .rsqrt: return 1 / sqrtf(x)
        case .divide: return x / y
        case .logicalAnd: return x != 0 && y != 0 ? 1 : 0
        case .logicalOr: return x != 0 || y != 0 ? 1 : 0
        case .logicalXor: return (x != 0) != (y != 0) ? 1 : 0
        case .logicalNot: return x == 0 ? 1 : 0
        case .bitwiseAnd, .bitwiseOr, .bitwiseXor, .shiftLeft, .shiftRight, .invert:
            // The engines run bitvec ops on integers (`integerApply`); an fp32 operand stands for
            // the int32 it rounds to.
            return Float(integerApply(op, integer(x), integer(y)))
        case .bypass: return x
        }
    }

    /// The int32 an fp32 operand of a bitwise op stands for: rounded to nearest even and
    /// saturated, as every float-to-int32 conversion here.
    @inline(__always)
    static func integer(_ value: Float) -> Int32 { Conversion.int32(value) }

    /// A bitvec op on 32-bit patterns. Shift amounts count modulo 32; shift_right is logical (NKI's
    /// right_shift: zeros come in from the left; it has no arithmetic right shift).
    @inline(__always)
    static func integerApply(_ op: AluOp, _ x: Int32, _ y: Int32) -> Int32 {
        switch op {
        case .bitwiseAnd: return x & y
        case .bitwiseOr: return x | y
        case .bitwiseXor: return x ^ y
        case .shiftLeft: return x &<< (y & 31)
        case .shiftRight: return Int32(bitPattern: UInt32(bitPattern: x) &>> UInt32(y & 31))
        case .invert: return ~x
        default: return x
        }
    }

    @inline(__always)
    private static func map(_ count: Int, into out: UnsafeMutablePointer<Int32>, _ body: (Int) -> Int32) {
        for i in 0..<count { out[i] = body(i) }
    }

    static func integerBinary(_ op: AluOp, _ a: UnsafePointer<Int32>, _ b: UnsafePointer<Int32>, count: Int,
                              into out: UnsafeMutablePointer<Int32>) {
        switch op {
        case .bitwiseAnd: map(count, into: out) { a[$0] & b[$0] }
        case .bitwiseOr: map(count, into: out) { a[$0] | b[$0] }
        case .bitwiseXor: map(count, into: out) { a[$0] ^ b[$0] }
        default: map(count, into: out) { integerApply(op, a[$0], b[$0]) }
        }
    }

    /// out = src op x, or x op src when `reversed`, on integers.
    static func integerScalar(_ op: AluOp, _ source: UnsafePointer<Int32>, _ x: Int32, reversed: Bool, count: Int,
                              into out: UnsafeMutablePointer<Int32>) {
        if reversed {
            map(count, into: out) { integerApply(op, x, source[$0]) }
        } else {
            map(count, into: out) { integerApply(op, source[$0], x) }
        }
    }

    @inline(__always)
    private static func map(_ count: Int, into out: UnsafeMutablePointer<Float>, _ body: (Int) -> Float) {
        for i in 0..<count { out[i] = body(i) }
    }

    static func binary(_ op: AluOp, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int,
                       into out: UnsafeMutablePointer<Float>) {
        switch op {
        case .add: map(count, into: out) { a[$0] + b[$0] }
        case .subtract: map(count, into: out) { a[$0] - b[$0] }
        case .multiply: map(count, into: out) { a[$0] * b[$0] }
        case .divide: map(count, into: out) { a[$0] / b[$0] }
        default: map(count, into: out) { apply(op, a[$0], b[$0]) }
        }
    }

    /// out = src op x, or x op src when `reversed`.
    static func scalar(_ op: AluOp, _ source: UnsafePointer<Float>, _ x: Float, reversed: Bool, count: Int,
                       into out: UnsafeMutablePointer<Float>) {
        if reversed {
            map(count, into: out) { apply(op, x, source[$0]) }
            return
        }
        switch op {
        case .add: map(count, into: out) { source[$0] + x }
        case .subtract: map(count, into: out) { source[$0] - x }
        case .multiply: map(count, into: out) { source[$0] * x }
        default: map(count, into: out) { apply(op, source[$0], x) }
        }
    }

    /// One reduction of `count` values, in order (sums and products round as they go).
    static func reduce(_ op: AluOp, _ source: UnsafePointer<Float>, count: Int) -> Float {
        var result: Float
        switch op {
        case .add:
            // Eight running sums side by side (vectorised; the order is fixed, so results are
            // the same every run), then the rest.
            var lanes = SIMD8<Float>()
            var i = 0
            let raw = UnsafeRawPointer(source)
            while i + 8 <= count {
                lanes += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
                i += 8
            }
            result = lanes.sum()
            while i < count { result += source[i]; i += 1 }
        case .multiply:
            result = 1
            for i in 0..<count { result *= source[i] }
        case .max, .min:
            return extremum(op == .max, source, count: count)
        case .logicalAnd:
            result = 1
            for i in 0..<count where source[i] == 0 { result = 0 }
        case .logicalOr:
            result = 0
            for i in 0..<count where source[i] != 0 { result = 1 }
        default: // logical_xor: true when an odd number are true
            result = 0
            for i in 0..<count where source[i] != 0 { result = 1 - result }
        }
        return result
    }

    /// The largest (or smallest) of `count` values, NaN if any is NaN. Eight independent running
    /// extremes (each `x > m ? x : m`, a branch-free max instruction), and NaN found afterwards:
    /// `x * 0` is NaN exactly for NaN and infinities, so only then is the input scanned again.
    static func extremum(_ largest: Bool, _ source: UnsafePointer<Float>, count: Int) -> Float {
        let start: Float = largest ? -.infinity : .infinity
        var m0 = start, m1 = start, m2 = start, m3 = start, m4 = start, m5 = start, m6 = start, m7 = start
        var poison: Float = 0
        var i = 0
        if largest {
            while i + 8 <= count {
                let x0 = source[i], x1 = source[i + 1], x2 = source[i + 2], x3 = source[i + 3]
                let x4 = source[i + 4], x5 = source[i + 5], x6 = source[i + 6], x7 = source[i + 7]
                m0 = x0 > m0 ? x0 : m0; m1 = x1 > m1 ? x1 : m1; m2 = x2 > m2 ? x2 : m2; m3 = x3 > m3 ? x3 : m3
                m4 = x4 > m4 ? x4 : m4; m5 = x5 > m5 ? x5 : m5; m6 = x6 > m6 ? x6 : m6; m7 = x7 > m7 ? x7 : m7
                poison += (x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7) * 0
                i += 8
            }
        } else {
            while i + 8 <= count {
                let x0 = source[i], x1 = source[i + 1], x2 = source[i + 2], x3 = source[i + 3]
                let x4 = source[i + 4], x5 = source[i + 5], x6 = source[i + 6], x7 = source[i + 7]
                m0 = x0 < m0 ? x0 : m0; m1 = x1 < m1 ? x1 : m1; m2 = x2 < m2 ? x2 : m2; m3 = x3 < m3 ? x3 : m3
                m4 = x4 < m4 ? x4 : m4; m5 = x5 < m5 ? x5 : m5; m6 = x6 < m6 ? x6 : m6; m7 = x7 < m7 ? x7 : m7
                poison += (x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7) * 0
                i += 8
            }
        }
        var result = start
        for m in (largest ? [m0, m1, m2, m3, m4, m5, m6, m7] : [m0, m1, m2, m3, m4, m5, m6, m7]) {
            result = largest ? Swift.max(result, m) : Swift.min(result, m)
        }
        while i < count {
            let value = source[i]
            if value.isNaN { return .nan }
            result = largest ? Swift.max(result, value) : Swift.min(result, value)
            i += 1
        }
        if poison.isNaN {
            for j in 0..<count where source[j].isNaN { return .nan }
        }
        return result
    }

    /// One bitvec reduction of `count` values: and starts from all ones, or and xor from zero.
    static func integerReduce(_ op: AluOp, _ source: UnsafePointer<Int32>, count: Int) -> Int32 {
        var result: Int32 = op == .bitwiseAnd ? -1 : 0
        for i in 0..<count { result = integerApply(op, result, source[i]) }
        return result
    }

    static func activate(_ function: ActivationFunction, _ source: UnsafePointer<Float>, count: Int, scale: Float, bias: Float,
                         into out: UnsafeMutablePointer<Float>) {
        for i in 0..<count { out[i] = source[i] * scale + bias }
        switch function {
        case .copy: break
        case .exp: for i in 0..<count { out[i] = exponential(out[i]) }
        case .log: map(count, into: out) { logf(out[$0]) }
        case .tanh: map(count, into: out) { tanhf(out[$0]) }
        case .sigmoid: map(count, into: out) { 1 / (1 + exponential(-out[$0])) }
        case .relu: map(count, into: out) { Swift.max(out[$0], 0) }
        case .silu: map(count, into: out) { out[$0] / (1 + exponential(-out[$0])) }
        case .square: map(count, into: out) { out[$0] * out[$0] }
        case .sqrt: map(count, into: out) { sqrtf(out[$0]) }
        case .rsqrt: map(count, into: out) { 1 / sqrtf(out[$0]) }
        case .reciprocal: map(count, into: out) { 1 / out[$0] }
        case .abs: map(count, into: out) { Swift.abs(out[$0]) }
        case .sign: map(count, into: out) { x in out[x] > 0 ? 1 : out[x] < 0 ? -1 : out[x] == 0 ? 0 : out[x] }
        case .erf: map(count, into: out) { erff(out[$0]) }
        case .sin: map(count, into: out) { sinf(out[$0]) }
        case .arctan: map(count, into: out) { atanf(out[$0]) }
        default:
            // Compositions, in double and rounded once, so that no intermediate rounding or
            // cancellation shows in the fp32 result.
            map(count, into: out) { Float(composite(function, Double(out[$0]))) }
        }
    }

    /// e^x in fp32 without a libm call, so that loops over it vectorise (2.4x faster than expf
    /// here): x = k ln2 + r (Cody-Waite, k rounded by the 1.5 * 2^23 trick), e^r by Cephes'
    /// degree-6 polynomial, 2^k applied in two halves so that subnormal results stay right.
    /// Within 1 ulp of glibc's expf over [-104.5, 89]; inf, -inf, NaN and overflow as expf.
    @inline(__always)
    static func exponential(_ x: Float) -> Float {
        // Written as selects, not min/max, so that loops over it vectorise; NaN passes through.
        let floored: Float = x < -104.0 ? -104.0 : x
        let c: Float = floored > 88.72283 ? 88.72283 : floored
        let shifted = c * 1.44269504088896341 + 12582912.0
        let n = shifted - 12582912.0
        let k = Int32(bitPattern: shifted.bitPattern) &- 0x4B40_0000
        var r = c - n * 0.693359375
        r = r - n * -2.12194440e-4
        var p: Float = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        p = p * r * r + r + 1
        let half = k >> 1
        let low = Float(bitPattern: UInt32(bitPattern: (half &+ 127) &<< 23))
        let high = Float(bitPattern: UInt32(bitPattern: (k &- half &+ 127) &<< 23))
        let value = p * low * high
        return x > 88.72283 ? .infinity : value
    }

    static let sqrtHalf = 0.70710678118654752440
    static let sqrtTwoOverPi = 0.79788456080286535588

    /// The functions made of several steps, in stable forms: gelu through erfc (1 + erf(x/sqrt2)
    /// cancels for negative x), gelu_tanh as x * sigmoid(2u) (1 + tanh(u) cancels), softplus as
    /// max(x, 0) + log1p(exp(-|x|)).
    static func composite(_ function: ActivationFunction, _ x: Double) -> Double {
        switch function {
        case .gelu: return 0.5 * x * erfc(-x * sqrtHalf)
        case .geluTanh: return x / (1 + Glibc.exp(-2 * sqrtTwoOverPi * (x + 0.044715 * x * x * x)))
        case .erfDx: return 2 / 1.7724538509055160273 * Glibc.exp(-x * x)
        case .softplus: return softplus(x)
        case .mish: return x * Glibc.tanh(softplus(x))
        case .geluDx:
            // d/dx x·Phi(x) = Phi(x) + x·phi(x)
            return 0.5 * erfc(-x * sqrtHalf) + x * Glibc.exp(-0.5 * x * x) * 0.39894228040143267794
        case .siluDx:
            let s = sigmoid(x)
            return s * (1 + x * (1 - s))
        case .geluApprxSigmoid: return x * sigmoid(1.702 * x)
        case .geluApprxSigmoidDx:
            let s = sigmoid(1.702 * x)
            return s + 1.702 * x * s * (1 - s)
        default: return x
        }
    }

    @inline(__always)
    static func sigmoid(_ x: Double) -> Double { 1 / (1 + Glibc.exp(-x)) }

    @inline(__always)
    static func softplus(_ x: Double) -> Double { Swift.max(x, 0) + log1p(Glibc.exp(-Swift.abs(x))) }
}
