/// The element types of the virtual NeuronCore and their conversions to and from fp32.
///
/// Engines compute in fp32 and round to the output type with round-to-nearest-even (DESIGN.md,
/// "instructions"). The narrow floats convert bit for bit as the Python package `ml_dtypes` does
/// (`bfloat16`, `float8_e4m3`, `float8_e5m2`) and as numpy's `float16` does; DataTypeTests checks
/// every bit pattern and about a million fp32 inputs against those packages.
///
/// fp8 overflow. Neuron documents no saturation for fp8 conversions: the NKI reference describes
/// `nki.language.float8_e4m3` only as "8-bit floating-point number (1S,4E,3M)"
/// (https://awsdocs-neuron.readthedocs-hosted.com/en/latest/general/nki/api/generated/nki.language.float8_e4m3.html),
/// `nki.isa.tensor_copy` says only that a dtype change "performs an intermediate FP32 cast"
/// (https://awsdocs-neuron.readthedocs-hosted.com/en/v2.28.1/nki/api/generated/nki.isa.tensor_copy.html),
/// and the neuronx-cc 2.5.0.28 release notes that introduced fp8_e4m3 say "Care must be taken to
/// ensure that the down-casted values are representable within the 8-bit data range"
/// (https://awsdocs-neuron.readthedocs-hosted.com/en/v2.9.1/release-notes/compiler/neuronx-cc/index.html).
/// With nothing definite, vtrn follows ml_dtypes exactly, which is IEEE rounding: a finite value
/// whose magnitude reaches the midpoint between the largest finite value and the next power of two
/// becomes ±inf (e4m3: |x| >= 248, e5m2: |x| >= 61440, fp16: |x| >= 65520); below that it rounds
/// to ±max. inf stays inf; NaN stays NaN with its sign.
///
/// Float to integer: round to nearest even, saturate to the integer's range (±inf included), and
/// NaN becomes 0. Integer to float: exact where fp32 can hold the value, else nearest even (int32).
public enum DataType: Int, Sendable, CaseIterable, CustomStringConvertible {
    // Raw values are include/vtrn.h's vtrn_dtype_t.
    case fp32 = 1, bf16, fp16, fp8e4m3, fp8e5m2, int32, int8, uint8

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .fp32, .int32: 4
        case .bf16, .fp16: 2
        case .fp8e4m3, .fp8e5m2, .int8, .uint8: 1
        }
    }

    public var isFloat: Bool {
        switch self {
        case .fp32, .bf16, .fp16, .fp8e4m3, .fp8e5m2: true
        case .int32, .int8, .uint8: false
        }
    }

    public var isInteger: Bool { !isFloat }

    /// The spelling of traces and error messages: "fp32", "bf16", "fp8_e4m3", ...
    public var description: String {
        switch self {
        case .fp32: "fp32"
        case .bf16: "bf16"
        case .fp16: "fp16"
        case .fp8e4m3: "fp8_e4m3"
        case .fp8e5m2: "fp8_e5m2"
        case .int32: "int32"
        case .int8: "int8"
        case .uint8: "uint8"
        }
    }

    /// The largest finite value the type holds, as the nearest fp32 (int32's 2^31 - 1 reads 2^31).
    public var maximumFinite: Float {
        switch self {
        case .fp32: Float.greatestFiniteMagnitude
        case .bf16: 3.3895314e38
        case .fp16: 65504
        case .fp8e4m3: 240
        case .fp8e5m2: 57344
        case .int32: Float(Int32.max)
        case .int8: 127
        case .uint8: 255
        }
    }
}

public enum Conversion {
    // MARK: Scalar conversions

    @inlinable
    public static func bf16Bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        // ml_dtypes gives every NaN the canonical quiet NaN, keeping the sign.
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) & 0x8000 | 0x7FC0 }
        // Round to nearest even on the bits; overflow carries into the exponent and reaches inf.
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    @inlinable
    public static func float(bf16Bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bf16Bits) << 16)
    }

    /// Software rather than `Float16`, whose conversion is a library call on baseline x86_64 and
    /// which quiets NaN payloads where numpy keeps them.
    @inlinable
    public static func fp16Bits(_ value: Float) -> UInt16 {
        UInt16(truncatingIfNeeded: NarrowFloat.encode(value, exponentBits: 5, mantissaBits: 10, keepsNaNPayload: true))
    }

    @inlinable
    public static func float(fp16Bits: UInt16) -> Float {
        NarrowFloat.decode(UInt32(fp16Bits), exponentBits: 5, mantissaBits: 10)
    }

    @inlinable
    public static func fp8e4m3Bits(_ value: Float) -> UInt8 {
        UInt8(truncatingIfNeeded: NarrowFloat.encode(value, exponentBits: 4, mantissaBits: 3, keepsNaNPayload: false))
    }

    @inlinable
    public static func float(fp8e4m3Bits: UInt8) -> Float {
        NarrowFloat.decode(UInt32(fp8e4m3Bits), exponentBits: 4, mantissaBits: 3)
    }

    @inlinable
    public static func fp8e5m2Bits(_ value: Float) -> UInt8 {
        UInt8(truncatingIfNeeded: NarrowFloat.encode(value, exponentBits: 5, mantissaBits: 2, keepsNaNPayload: false))
    }

    @inlinable
    public static func float(fp8e5m2Bits: UInt8) -> Float {
        NarrowFloat.decode(UInt32(fp8e5m2Bits), exponentBits: 5, mantissaBits: 2)
    }

    /// Rounds `value` to what `type` can hold and back (RNE, saturation/NaN rules as above).
    @inlinable
    public static func round(_ value: Float, to type: DataType) -> Float {
        switch type {
        case .fp32: value
        case .bf16: float(bf16Bits: bf16Bits(value))
        case .fp16: float(fp16Bits: fp16Bits(value))
        case .fp8e4m3: float(fp8e4m3Bits: fp8e4m3Bits(value))
        case .fp8e5m2: float(fp8e5m2Bits: fp8e5m2Bits(value))
        case .int32: Float(int32(value))
        case .int8: Float(int8(value))
        case .uint8: Float(uint8(value))
        }
    }

    /// `value` rounded to nearest even and saturated to Int32; NaN gives 0.
    @inlinable @inline(__always)
    static func int32(_ value: Float) -> Int32 {
        let rounded = roundedToIntegral(value)
        if rounded.isNaN { return 0 }
        if rounded >= 2_147_483_648 { return .max }
        if rounded <= -2_147_483_648 { return .min }
        return Int32(rounded)
    }

    /// `value` rounded to nearest even and saturated to Int8; NaN gives 0.
    @inlinable @inline(__always)
    static func int8(_ value: Float) -> Int8 {
        Int8(truncatingIfNeeded: smallIntegerBits(value, minimum: -128, maximum: 127))
    }

    /// `value` rounded to nearest even and saturated to UInt8; NaN gives 0.
    @inlinable @inline(__always)
    static func uint8(_ value: Float) -> UInt8 {
        UInt8(truncatingIfNeeded: smallIntegerBits(value, minimum: 0, maximum: 255))
    }

    /// Clamps to integral bounds (NaN to 0), then adds 1.5 · 2^23: the sum's ulp is 1, so the FPU
    /// rounds to nearest even and the low mantissa bits hold the result in two's complement.
    /// Clamping before rounding gives the same answer as after, the bounds being integers.
    /// No branches and no range-checked conversion, so store loops vectorize.
    @inlinable @inline(__always)
    static func smallIntegerBits(_ value: Float, minimum: Float, maximum: Float) -> UInt32 {
        let clamped = value.isNaN ? 0 : Swift.min(Swift.max(value, minimum), maximum)
        return (clamped + 12_582_912).bitPattern
    }

    /// Round to nearest even without a libm call: below 2^23, adding 2^23 leaves an ulp of 1, so
    /// the FPU's own rounding does the work. Larger magnitudes, inf and NaN come back unchanged.
    @inlinable @inline(__always)
    static func roundedToIntegral(_ value: Float) -> Float {
        let magnitude = value.magnitude
        guard magnitude < 8_388_608 else { return value }
        return Float(signOf: value, magnitudeOf: (magnitude + 8_388_608) - 8_388_608)
    }

    // MARK: Bulk conversions

    /// Reads `count` elements of `type` starting at `source`, `stride` elements apart, into `destination` as fp32.
    /// `stride` may be negative, or 0 to broadcast one element.
    public static func load(_ type: DataType, from source: UnsafeRawPointer, stride: Int, count: Int,
                            into destination: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        switch type {
        case .fp32:
            if stride == 1 {
                UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count &* 4)
            } else {
                loadElements(UInt32.self, source, stride, count, destination) { Float(bitPattern: $0) }
            }
        case .bf16:
            loadElements(UInt16.self, source, stride, count, destination) { float(bf16Bits: $0) }
        case .fp16:
            loadElements(UInt16.self, source, stride, count, destination) { float(fp16Bits: $0) }
        case .fp8e4m3:
            fp8e4m3Table.withUnsafeBufferPointer { table in
                loadElements(UInt8.self, source, stride, count, destination) { table[Int($0)] }
            }
        case .fp8e5m2:
            fp8e5m2Table.withUnsafeBufferPointer { table in
                loadElements(UInt8.self, source, stride, count, destination) { table[Int($0)] }
            }
        case .int32:
            loadElements(UInt32.self, source, stride, count, destination) { Float(Int32(bitPattern: $0)) }
        case .int8:
            loadElements(UInt8.self, source, stride, count, destination) { Float(Int8(bitPattern: $0)) }
        case .uint8:
            loadElements(UInt8.self, source, stride, count, destination) { Float($0) }
        }
    }

    /// Writes `count` fp32 values as `type` to `destination`, `stride` elements apart.
    /// `stride` may be negative; with 0 every value lands on one element and the last one stays.
    public static func store(_ type: DataType, from source: UnsafePointer<Float>, count: Int,
                             to destination: UnsafeMutableRawPointer, stride: Int) {
        guard count > 0 else { return }
        switch type {
        case .fp32:
            if stride == 1 {
                destination.copyMemory(from: source, byteCount: count &* 4)
            } else {
                storeElements(UInt32.self, source, count, destination, stride) { $0.bitPattern }
            }
        case .bf16:
            storeElements(UInt16.self, source, count, destination, stride) { bf16Bits($0) }
        case .fp16:
            storeElements(UInt16.self, source, count, destination, stride) { fp16Bits($0) }
        case .fp8e4m3:
            storeElements(UInt8.self, source, count, destination, stride) { fp8e4m3Bits($0) }
        case .fp8e5m2:
            storeElements(UInt8.self, source, count, destination, stride) { fp8e5m2Bits($0) }
        case .int32:
            storeElements(UInt32.self, source, count, destination, stride) { UInt32(bitPattern: int32($0)) }
        case .int8:
            storeElements(UInt8.self, source, count, destination, stride) { UInt8(bitPattern: int8($0)) }
        case .uint8:
            storeElements(UInt8.self, source, count, destination, stride) { uint8($0) }
        }
    }

    /// Reads `count` elements of `type` as Int32, for the integer (bitvec) ALU ops: int32 as it is,
    /// int8 sign-extended, uint8 zero-extended; a float becomes the int32 it rounds to (nearest even,
    /// saturated, NaN 0), as every float-to-int32 conversion here. `stride` as in `load`.
    public static func loadInt32(_ type: DataType, from source: UnsafeRawPointer, stride: Int, count: Int,
                                 into destination: UnsafeMutablePointer<Int32>) {
        guard count > 0 else { return }
        switch type {
        case .int32: loadElements(UInt32.self, source, stride, count, destination) { Int32(bitPattern: $0) }
        case .int8: loadElements(UInt8.self, source, stride, count, destination) { Int32(Int8(bitPattern: $0)) }
        case .uint8: loadElements(UInt8.self, source, stride, count, destination) { Int32($0) }
        case .fp32: loadElements(UInt32.self, source, stride, count, destination) { int32(Float(bitPattern: $0)) }
        case .bf16: loadElements(UInt16.self, source, stride, count, destination) { int32(float(bf16Bits: $0)) }
        case .fp16: loadElements(UInt16.self, source, stride, count, destination) { int32(float(fp16Bits: $0)) }
        case .fp8e4m3: loadElements(UInt8.self, source, stride, count, destination) { int32(float(fp8e4m3Bits: $0)) }
        case .fp8e5m2: loadElements(UInt8.self, source, stride, count, destination) { int32(float(fp8e5m2Bits: $0)) }
        }
    }

    /// Writes `count` Int32 values as `type` as bit patterns: int32 as they are, int8 and uint8
    /// their low 8 bits (two's complement wrap, no saturation); a float type gets the nearest value.
    public static func storeInt32Bits(_ type: DataType, from source: UnsafePointer<Int32>, count: Int,
                                      to destination: UnsafeMutableRawPointer, stride: Int) {
        guard count > 0 else { return }
        switch type {
        case .int32: storeElements(UInt32.self, source, count, destination, stride) { UInt32(bitPattern: $0) }
        case .int8, .uint8: storeElements(UInt8.self, source, count, destination, stride) { UInt8(truncatingIfNeeded: $0) }
        case .fp32: storeElements(UInt32.self, source, count, destination, stride) { Float($0).bitPattern }
        case .bf16: storeElements(UInt16.self, source, count, destination, stride) { bf16Bits(Float($0)) }
        case .fp16: storeElements(UInt16.self, source, count, destination, stride) { fp16Bits(Float($0)) }
        case .fp8e4m3: storeElements(UInt8.self, source, count, destination, stride) { fp8e4m3Bits(Float($0)) }
        case .fp8e5m2: storeElements(UInt8.self, source, count, destination, stride) { fp8e5m2Bits(Float($0)) }
        }
    }

    /// Every fp8 code decoded once, so bulk loads are a table lookup.
    static let fp8e4m3Table: [Float] = (0...255).map { float(fp8e4m3Bits: UInt8($0)) }
    static let fp8e5m2Table: [Float] = (0...255).map { float(fp8e5m2Bits: UInt8($0)) }

    /// One loop per storage type; `decode` is inlined into it, so there is no per-element dispatch.
    @inline(__always)
    static func loadElements<Storage: FixedWidthInteger, Value>(
        _: Storage.Type, _ source: UnsafeRawPointer, _ stride: Int, _ count: Int,
        _ destination: UnsafeMutablePointer<Value>, _ decode: (Storage) -> Value
    ) {
        let size = MemoryLayout<Storage>.size
        switch stride {
        case 1:
            for index in 0..<count {
                let raw = source.loadUnaligned(fromByteOffset: index &* size, as: Storage.self)
                destination[index] = decode(Storage(littleEndian: raw))
            }
        case 0:
            let value = decode(Storage(littleEndian: source.loadUnaligned(as: Storage.self)))
            destination.update(repeating: value, count: count)
        default:
            let byteStride = stride &* size
            var offset = 0
            for index in 0..<count {
                destination[index] = decode(Storage(littleEndian: source.loadUnaligned(fromByteOffset: offset, as: Storage.self)))
                offset &+= byteStride
            }
        }
    }

    @inline(__always)
    static func storeElements<Storage: FixedWidthInteger, Value>(
        _: Storage.Type, _ source: UnsafePointer<Value>, _ count: Int,
        _ destination: UnsafeMutableRawPointer, _ stride: Int, _ encode: (Value) -> Storage
    ) {
        let size = MemoryLayout<Storage>.size
        switch stride {
        case 1:
            for index in 0..<count {
                destination.storeBytes(of: encode(source[index]).littleEndian, toByteOffset: index &* size, as: Storage.self)
            }
        case 0:
            // Every store hits the same element; the last one is what a sequential loop leaves.
            destination.storeBytes(of: encode(source[count &- 1]).littleEndian, as: Storage.self)
        default:
            let byteStride = stride &* size
            var offset = 0
            for index in 0..<count {
                destination.storeBytes(of: encode(source[index]).littleEndian, toByteOffset: offset, as: Storage.self)
                offset &+= byteStride
            }
        }
    }
}

/// IEEE-like binary formats narrower than fp32 (fp16, fp8 e4m3, fp8 e5m2): all-ones exponent for
/// inf and NaN, subnormals, bias 2^(e-1) - 1. The format's widths are parameters so one piece of
/// code serves all three; callers pass constants, which fold away once this is inlined.
@usableFromInline
enum NarrowFloat {
    /// fp32 to the format's bits (sign at bit e + m), round to nearest even.
    /// NaN becomes the quiet NaN (ml_dtypes), or with `keepsNaNPayload` the payload's top bits,
    /// made non-zero (numpy's float16).
    @inlinable @inline(__always)
    static func encode(_ value: Float, exponentBits e: UInt32, mantissaBits m: UInt32, keepsNaNPayload: Bool) -> UInt32 {
        let bias: UInt32 = (1 << (e - 1)) - 1
        let bits = value.bitPattern
        let sign = (bits >> 31) << (e + m)
        let magnitude = bits & 0x7FFF_FFFF
        let infinity: UInt32 = ((1 << e) - 1) << m
        // Halfway between the largest finite value (mantissa all ones, odd) and the next power of
        // two: from here on, round to nearest even gives inf.
        let overflow: UInt32 = ((bias + 127) << 23) | (((1 << (m + 1)) - 1) << (22 - m))
        let minimumNormal: UInt32 = (128 - bias) << 23
        let shift = 23 - m
        let result: UInt32
        if magnitude >= overflow {
            if magnitude <= 0x7F80_0000 {
                result = infinity
            } else if keepsNaNPayload {
                result = infinity | Swift.max(1, (magnitude >> shift) & ((1 << m) - 1))
            } else {
                result = infinity | (1 << (m - 1))
            }
        } else if magnitude >= minimumNormal {
            // Rebias the exponent, then round the mantissa on the bits; a carry moves into the exponent.
            let rebased = magnitude &- ((127 - bias) << 23)
            result = (rebased &+ ((1 << (shift - 1)) - 1) &+ ((rebased >> shift) & 1)) >> shift
        } else {
            // Subnormal or zero: adding 2^k whose fp32 ulp is the format's smallest subnormal lets
            // the FPU round; what is left above 2^k counts subnormal steps (2^m of them is the
            // smallest normal, which rounding may reach).
            let magic: UInt32 = ((127 - bias) + (23 - m) + 1) << 23
            result = (Float(bitPattern: magnitude) + Float(bitPattern: magic)).bitPattern &- magic
        }
        return result | sign
    }

    /// The format's bits (sign at bit e + m) to fp32, exactly; NaN keeps its payload.
    @inlinable @inline(__always)
    static func decode(_ bits: UInt32, exponentBits e: UInt32, mantissaBits m: UInt32) -> Float {
        let bias: UInt32 = (1 << (e - 1)) - 1
        let sign = (bits >> (e + m)) << 31
        let magnitude = bits & ((1 << (e + m)) - 1)
        let exponent = magnitude >> m
        let result: UInt32
        if exponent == (1 << e) - 1 {
            result = 0x7F80_0000 | ((magnitude & ((1 << m) - 1)) << (23 - m))
        } else if exponent == 0 {
            // mantissa · 2^(1 - bias - m), exact in fp32.
            result = (Float(magnitude) * Float(bitPattern: (128 - bias - m) << 23)).bitPattern
        } else {
            result = (magnitude << (23 - m)) &+ ((127 - bias) << 23)
        }
        return Float(bitPattern: result | sign)
    }
}
