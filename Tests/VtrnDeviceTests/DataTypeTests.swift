import Foundation
import Testing
@testable import VtrnDevice

/// The narrow float formats, with the code under test and the Python type that is the reference.
private enum NarrowFormat: Int, CaseIterable, CustomStringConvertible {
    case bf16, fp16, fp8e4m3, fp8e5m2

    var description: String { dataType.description }

    var dataType: DataType {
        switch self {
        case .bf16: .bf16
        case .fp16: .fp16
        case .fp8e4m3: .fp8e4m3
        case .fp8e5m2: .fp8e5m2
        }
    }

    var bitWidth: Int { dataType.size * 8 }

    func encode(_ value: Float) -> UInt16 {
        switch self {
        case .bf16: Conversion.bf16Bits(value)
        case .fp16: Conversion.fp16Bits(value)
        case .fp8e4m3: UInt16(Conversion.fp8e4m3Bits(value))
        case .fp8e5m2: UInt16(Conversion.fp8e5m2Bits(value))
        }
    }

    func decode(_ bits: UInt16) -> Float {
        switch self {
        case .bf16: Conversion.float(bf16Bits: bits)
        case .fp16: Conversion.float(fp16Bits: bits)
        case .fp8e4m3: Conversion.float(fp8e4m3Bits: UInt8(bits))
        case .fp8e5m2: Conversion.float(fp8e5m2Bits: UInt8(bits))
        }
    }
}

/// What ml_dtypes (and numpy, for fp16) make of the test inputs, from one python3 run per process.
private struct Reference: Sendable {
    /// fp32 bit patterns fed to every encoder.
    let inputs: [UInt32]
    /// Per NarrowFormat: the reference encoding of each input (fp8 widened to 16 bits).
    let encoded: [[UInt16]]
    /// Per NarrowFormat: every bit pattern of the format decoded to fp32 bits.
    let decoded: [[UInt32]]

    static let shared: Result<Reference, ReferenceFailure> = compute()

    /// The reference, or nil after recording why there is none. A missing python3 or ml_dtypes
    /// fails the test: CI installs them, and a skipped bit-exactness check would hide regressions.
    static func require() -> Reference? {
        switch shared {
        case .success(let reference):
            return reference
        case .failure(let failure):
            Issue.record(Comment(rawValue: failure.message))
            return nil
        }
    }

    static let script = """
        import sys
        try:
            import numpy as np
            import ml_dtypes
        except ImportError as error:
            sys.stderr.write(f"{error}\\n")
            sys.exit(3)
        inputs = np.fromfile(sys.argv[1], dtype="<u4").view(np.float32)
        formats = [ml_dtypes.bfloat16, np.float16, ml_dtypes.float8_e4m3, ml_dtypes.float8_e5m2]
        with open(sys.argv[2], "wb") as out, np.errstate(all="ignore"):
            for kind in formats:
                encoded = inputs.astype(kind)
                bits = encoded.view(np.uint16 if encoded.itemsize == 2 else np.uint8)
                out.write(bits.astype("<u2").tobytes())
            for kind in formats:
                width = np.dtype(kind).itemsize
                codes = np.arange(1 << (8 * width), dtype=np.uint16 if width == 2 else np.uint8)
                out.write(codes.view(kind).astype(np.float32).view("<u4").tobytes())
        """

    static func compute() -> Result<Reference, ReferenceFailure> {
        let inputs = referenceInputs()
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("vtrn-dtype-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString)")
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let inputURL = directory.appendingPathComponent("inputs.bin")
            let outputURL = directory.appendingPathComponent("outputs.bin")
            try inputs.withUnsafeBytes { Data($0) }.write(to: inputURL)

            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", script, inputURL.path, outputURL.path]
            let errors = Pipe()
            process.standardError = errors
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            guard process.terminationStatus == 0 else {
                let detail = errorText.trimmingCharacters(in: .whitespacesAndNewlines)
                return .failure(ReferenceFailure(detail: "python3 exited with status \(process.terminationStatus): \(detail)"))
            }

            let output = try Data(contentsOf: outputURL)
            let formats = NarrowFormat.allCases
            let expectedBytes = formats.count * inputs.count * 2 + formats.reduce(0) { $0 + (1 << $1.bitWidth) * 4 }
            guard output.count == expectedBytes else {
                return .failure(ReferenceFailure(detail: "python3 wrote \(output.count) bytes, expected \(expectedBytes)"))
            }
            return output.withUnsafeBytes { raw in
                var offset = 0
                var encoded: [[UInt16]] = []
                for _ in formats {
                    encoded.append((0..<inputs.count).map {
                        UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: offset + $0 * 2, as: UInt16.self))
                    })
                    offset += inputs.count * 2
                }
                var decoded: [[UInt32]] = []
                for format in formats {
                    decoded.append((0..<(1 << format.bitWidth)).map {
                        UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + $0 * 4, as: UInt32.self))
                    })
                    offset += (1 << format.bitWidth) * 4
                }
                return .success(Reference(inputs: inputs, encoded: encoded, decoded: decoded))
            }
        } catch {
            return .failure(ReferenceFailure(detail: "could not run /usr/bin/env python3: \(error)"))
        }
    }
}

private struct ReferenceFailure: Error, Sendable {
    let detail: String
    var message: String {
        "The dtype reference needs python3 with numpy and ml_dtypes (\(detail)). "
            + "Run Scripts/setup, which installs ml-dtypes (CI installs it)."
    }
}

/// Deterministic inputs: special values, fp32 denormals, every representable value of each narrow
/// format with the midpoint to its successor and the fp32 neighbours of both, the overflow
/// thresholds, all negated too, then 100k seeded random fp32 bit patterns.
private func referenceInputs() -> [UInt32] {
    var values: [UInt32] = [
        0x0000_0000, 0x7F80_0000,                          // 0, inf
        0x7FC0_0000, 0x7FC0_0001, 0x7F80_0001, 0x7FA0_0000, // NaNs: quiet, payloads, signalling
        0x7FFF_FFFF, 0x7F80_2000, 0x7F80_1FFF, 0x7FBF_FFFF,
        0x0000_0001, 0x0000_0002, 0x0000_0003, 0x0000_8000, // fp32 denormals
        0x0000_8001, 0x0001_8000, 0x003F_FFFF, 0x0040_0000, 0x0040_0001, 0x007F_FFFF,
        0x0080_0000, 0x7F7F_FFFF, 0x7F7F_8000, 0x7F7F_7FFF, // min normal, max, bf16 overflow edge
        Float(1).bitPattern, Float(0.5).bitPattern, Float(3).bitPattern,
    ]
    for format in NarrowFormat.allCases {
        let positiveCodes = 1 << (format.bitWidth - 1)
        for code in 0..<positiveCodes {
            let value = format.decode(UInt16(code))
            guard value.isFinite else { continue }
            var next = format.decode(UInt16(code + 1))
            if !next.isFinite {
                // Past the largest finite value: the next step of the same binade, where inf begins.
                next = value + (value - format.decode(UInt16(code - 1)))
            }
            let midpoint = Float((Double(value) + Double(next)) / 2)
            for candidate in [value, midpoint] {
                values.append(candidate.bitPattern)
                values.append(candidate.nextUp.bitPattern)
                values.append(candidate.nextDown.bitPattern)
            }
        }
        // Well beyond the largest finite value.
        let maximum = format.dataType.maximumFinite
        for multiple: Float in [1.5, 2, 4, 1000] { values.append((maximum * multiple).bitPattern) }
    }
    values += values.map { $0 ^ 0x8000_0000 }
    var random = SplitMix64(seed: 0x5EED_D7E5)
    for _ in 0..<100_000 { values.append(UInt32(truncatingIfNeeded: random.next())) }
    return values
}

private struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

/// Equal bits, or both NaN with the same sign (payloads are not part of the contract when decoding).
private func sameFloat(_ actual: Float, _ expectedBits: UInt32) -> Bool {
    let expected = Float(bitPattern: expectedBits)
    if expected.isNaN { return actual.isNaN && actual.sign == expected.sign }
    return actual.bitPattern == expectedBits
}

@Suite struct DataTypeTests {
    // MARK: The type itself

    @Test func describesEveryType() {
        #expect(DataType.allCases.map(\.rawValue) == Array(1...8))
        #expect(DataType.allCases.map(\.description)
            == ["fp32", "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "int32", "int8", "uint8"])
        #expect(DataType.allCases.map(\.size) == [4, 2, 2, 1, 1, 4, 1, 1])
        #expect(DataType.allCases.filter(\.isFloat) == [.fp32, .bf16, .fp16, .fp8e4m3, .fp8e5m2])
        #expect(DataType.allCases.filter(\.isInteger) == [.int32, .int8, .uint8])
        #expect(DataType.allCases.map(\.maximumFinite)
            == [3.4028235e38, 3.3895314e38, 65504, 240, 57344, 2147483647, 127, 255])
        // The largest finite codes decode to maximumFinite.
        #expect(Conversion.float(bf16Bits: 0x7F7F) == DataType.bf16.maximumFinite)
        #expect(Conversion.float(fp16Bits: 0x7BFF) == DataType.fp16.maximumFinite)
        #expect(Conversion.float(fp8e4m3Bits: 0x77) == DataType.fp8e4m3.maximumFinite)
        #expect(Conversion.float(fp8e5m2Bits: 0x7B) == DataType.fp8e5m2.maximumFinite)
    }

    // MARK: Narrow floats against ml_dtypes

    @Test(arguments: NarrowFormat.allCases)
    private func decodesEveryBitPatternAsMlDtypes(_ format: NarrowFormat) {
        guard let reference = Reference.require() else { return }
        let expected = reference.decoded[format.rawValue]
        let codes = (0..<expected.count).map { UInt16($0) }
        var bulk = [Float](repeating: 0, count: codes.count)
        if format.bitWidth == 16 {
            codes.withUnsafeBytes { Conversion.load(format.dataType, from: $0.baseAddress!, stride: 1, count: codes.count, into: &bulk) }
        } else {
            let bytes = codes.map { UInt8($0) }
            bytes.withUnsafeBytes { Conversion.load(format.dataType, from: $0.baseAddress!, stride: 1, count: bytes.count, into: &bulk) }
        }
        var mismatches: [String] = []
        for (index, code) in codes.enumerated() {
            let scalar = format.decode(code)
            if !sameFloat(scalar, expected[index]) || !sameFloat(bulk[index], expected[index]) {
                mismatches.append("\(hex(code)): scalar \(scalar), load \(bulk[index]), ml_dtypes \(Float(bitPattern: expected[index]))")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) codes decode differently, first: \(mismatches.prefix(5))")
    }

    @Test(arguments: NarrowFormat.allCases)
    private func encodesAsMlDtypes(_ format: NarrowFormat) {
        guard let reference = Reference.require() else { return }
        let expected = reference.encoded[format.rawValue]
        let inputs = reference.inputs.map { Float(bitPattern: $0) }
        // The bulk path, then the scalar one, on every input.
        var stored = [UInt8](repeating: 0, count: inputs.count * format.dataType.size)
        stored.withUnsafeMutableBytes {
            Conversion.store(format.dataType, from: inputs, count: inputs.count, to: $0.baseAddress!, stride: 1)
        }
        var mismatches: [String] = []
        for index in inputs.indices {
            let scalar = format.encode(inputs[index])
            let bulk = format.bitWidth == 16
                ? UInt16(stored[2 * index]) | UInt16(stored[2 * index + 1]) << 8
                : UInt16(stored[index])
            if scalar != expected[index] || bulk != expected[index] {
                mismatches.append("\(inputs[index]) (\(hex(reference.inputs[index]))): scalar \(hex(scalar)), store \(hex(bulk)), ml_dtypes \(hex(expected[index]))")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(inputs.count) inputs encode differently, first: \(mismatches.prefix(5))")
    }

    /// The overflow rule of DataType.swift (ml_dtypes', as Neuron documents none): RNE up to the
    /// midpoint past the largest finite value, inf from there on; inf stays inf, NaN stays NaN.
    @Test func fp8OverflowBecomesInfinityPastTheMidpoint() {
        #expect(Conversion.fp8e4m3Bits(240) == 0x77)
        #expect(Conversion.fp8e4m3Bits(247.99998) == 0x77)
        #expect(Conversion.fp8e4m3Bits(248) == 0x78)
        #expect(Conversion.fp8e4m3Bits(-248) == 0xF8)
        #expect(Conversion.fp8e4m3Bits(1e30) == 0x78)
        #expect(Conversion.fp8e4m3Bits(.infinity) == 0x78)
        #expect(Conversion.fp8e4m3Bits(-.infinity) == 0xF8)
        #expect(Conversion.fp8e4m3Bits(.nan) == 0x7C)
        #expect(Conversion.fp8e4m3Bits(-.nan) == 0xFC)
        #expect(Conversion.round(300, to: .fp8e4m3) == .infinity)
        #expect(Conversion.round(-241, to: .fp8e4m3) == -240)

        #expect(Conversion.fp8e5m2Bits(57344) == 0x7B)
        #expect(Conversion.fp8e5m2Bits(61439.996) == 0x7B)
        #expect(Conversion.fp8e5m2Bits(61440) == 0x7C)
        #expect(Conversion.fp8e5m2Bits(-61440) == 0xFC)
        #expect(Conversion.fp8e5m2Bits(.infinity) == 0x7C)
        #expect(Conversion.fp8e5m2Bits(.nan) == 0x7E)
        #expect(Conversion.round(1e6, to: .fp8e5m2) == .infinity)

        #expect(Conversion.round(65519.996, to: .fp16) == 65504)
        #expect(Conversion.round(65520, to: .fp16) == .infinity)
        #expect(Conversion.round(3.3961776e38, to: .bf16) == .infinity)
        #expect(Conversion.round(3.3961772e38, to: .bf16) == 3.3895314e38)
        #expect(Conversion.round(.nan, to: .bf16).isNaN)
    }

    @Test func narrowFloatsRoundToNearestEven() {
        // 1 + half an ulp ties to the even 1; 1 + 3 half-ulps ties up to 1 + 2 ulps.
        #expect(Conversion.round(1 + 0x1p-8, to: .bf16) == 1)
        #expect(Conversion.round(1 + 3 * 0x1p-8, to: .bf16) == 1 + 0x1p-6)
        #expect(Conversion.round(1 + 0x1p-11, to: .fp16) == 1)
        #expect(Conversion.round(1 + 0x1p-4, to: .fp8e4m3) == 1)
        #expect(Conversion.round(1 + 3 * 0x1p-4, to: .fp8e4m3) == 1.25)
        #expect(Conversion.round(1 + 0x1p-3, to: .fp8e5m2) == 1)
        // Subnormals: e4m3's smallest is 2^-9; half of it ties to 0, a bit more rounds up.
        #expect(Conversion.round(0x1p-10, to: .fp8e4m3) == 0)
        #expect(Conversion.round(0x1.000002p-10, to: .fp8e4m3) == 0x1p-9)
        #expect(Conversion.round(-0x1p-30, to: .fp8e5m2).bitPattern == (-Float.zero).bitPattern)
    }

    // MARK: Integers

    @Test func int32RoundsToNearestEvenAndSaturates() {
        let cases: [(Float, Int32)] = [
            (0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1.5, -2), (-2.5, -2), (0.49999997, 0), (3.5, 4),
            (4194304.5, 4194304), (8388607.5, 8388608), (-8388607.5, -8388608), (16777216, 16777216),
            (2147483520, 2147483520), (2147483648, .max), (3e9, .max), (.infinity, .max),
            (-2147483648, .min), (-3e9, .min), (-.infinity, .min), (.nan, 0), (-.nan, 0),
        ]
        for (value, expected) in cases {
            #expect(Conversion.int32(value) == expected, "\(value)")
            #expect(Conversion.round(value, to: .int32) == Float(expected), "\(value)")
        }
    }

    @Test func int8RoundsToNearestEvenAndSaturates() {
        let cases: [(Float, Int8)] = [
            (0.5, 0), (1.5, 2), (-2.5, -2), (-0.5, 0), (126.5, 126), (127.4, 127), (127.5, 127),
            (200, 127), (.infinity, 127), (-127.5, -128), (-128.5, -128), (-1e9, -128), (-.infinity, -128),
            (.nan, 0),
        ]
        for (value, expected) in cases {
            #expect(Conversion.int8(value) == expected, "\(value)")
            #expect(Conversion.round(value, to: .int8) == Float(expected), "\(value)")
        }
    }

    @Test func uint8RoundsToNearestEvenAndSaturates() {
        let cases: [(Float, UInt8)] = [
            (0.5, 0), (1.5, 2), (2.5, 2), (-0.5, 0), (-1, 0), (-2.5, 0), (-.infinity, 0), (253.5, 254),
            (254.5, 254), (255.5, 255), (300, 255), (.infinity, 255), (.nan, 0),
        ]
        for (value, expected) in cases {
            #expect(Conversion.uint8(value) == expected, "\(value)")
            #expect(Conversion.round(value, to: .uint8) == Float(expected), "\(value)")
        }
    }

    @Test func integersLoadExactlyOrToNearestEven() {
        let int32s: [Int32] = [.min, -16777217, -1, 0, 1, 16777217, 16777219, .max]
        var loaded = [Float](repeating: 0, count: int32s.count)
        int32s.withUnsafeBytes { Conversion.load(.int32, from: $0.baseAddress!, stride: 1, count: int32s.count, into: &loaded) }
        #expect(loaded == [-2147483648, -16777216, -1, 0, 1, 16777216, 16777220, 2147483648])

        let int8s: [Int8] = [.min, -1, 0, 1, .max]
        loaded = [Float](repeating: 0, count: int8s.count)
        int8s.withUnsafeBytes { Conversion.load(.int8, from: $0.baseAddress!, stride: 1, count: int8s.count, into: &loaded) }
        #expect(loaded == [-128, -1, 0, 1, 127])

        let uint8s: [UInt8] = [0, 1, 128, 255]
        loaded = [Float](repeating: 0, count: uint8s.count)
        uint8s.withUnsafeBytes { Conversion.load(.uint8, from: $0.baseAddress!, stride: 1, count: uint8s.count, into: &loaded) }
        #expect(loaded == [0, 1, 128, 255])
    }

    @Test func integerStoresRoundAndSaturate() {
        let values: [Float] = [0.5, 1.5, -2.5, .nan, 300, -300]
        var int8s = [Int8](repeating: 99, count: values.count)
        int8s.withUnsafeMutableBytes { Conversion.store(.int8, from: values, count: values.count, to: $0.baseAddress!, stride: 1) }
        #expect(int8s == [0, 2, -2, 0, 127, -128])
        var uint8s = [UInt8](repeating: 99, count: values.count)
        uint8s.withUnsafeMutableBytes { Conversion.store(.uint8, from: values, count: values.count, to: $0.baseAddress!, stride: 1) }
        #expect(uint8s == [0, 2, 0, 0, 255, 0])
        var int32s = [Int32](repeating: 99, count: values.count)
        int32s.withUnsafeMutableBytes { Conversion.store(.int32, from: values, count: values.count, to: $0.baseAddress!, stride: 1) }
        #expect(int32s == [0, 2, -2, 0, 300, -300])
    }

    // MARK: Strided load and store

    /// Values each type holds exactly (no NaN, so equality is bit equality).
    private static func representableValues(_ type: DataType) -> [Float] {
        switch type {
        case .fp32:
            return [0, -0.0, 1, -1.5, .pi, 1e-40, -3e38, .infinity, -.infinity, 0x1.fffffep-3, 123456.79]
        case .bf16:
            return stride(from: 0, to: 65536, by: 251).map { Conversion.float(bf16Bits: UInt16($0)) }.filter { !$0.isNaN }
        case .fp16:
            return stride(from: 0, to: 65536, by: 251).map { Conversion.float(fp16Bits: UInt16($0)) }.filter { !$0.isNaN }
        case .fp8e4m3:
            return (0...255).map { Conversion.float(fp8e4m3Bits: UInt8($0)) }.filter { !$0.isNaN }
        case .fp8e5m2:
            return (0...255).map { Conversion.float(fp8e5m2Bits: UInt8($0)) }.filter { !$0.isNaN }
        case .int32:
            return [-2147483648, -16777216, -65537, -1, 0, 1, 255, 12345, 16777216, 2147483520]
        case .int8:
            return (-128...127).map { Float($0) }
        case .uint8:
            return (0...255).map { Float($0) }
        }
    }

    /// `value`'s little-endian bytes in `type`, worked out without Conversion's bulk paths.
    private static func bytes(of value: Float, as type: DataType) -> [UInt8] {
        let bits: UInt32 = switch type {
        case .fp32: value.bitPattern
        case .bf16: UInt32(Conversion.bf16Bits(value))
        case .fp16: UInt32(Conversion.fp16Bits(value))
        case .fp8e4m3: UInt32(Conversion.fp8e4m3Bits(value))
        case .fp8e5m2: UInt32(Conversion.fp8e5m2Bits(value))
        case .int32: UInt32(bitPattern: Int32(value))
        case .int8: UInt32(UInt8(bitPattern: Int8(value)))
        case .uint8: UInt32(UInt8(value))
        }
        return (0..<type.size).map { UInt8(truncatingIfNeeded: bits >> (8 * $0)) }
    }

    @Test(arguments: DataType.allCases, [1, 3, -1, 0])
    func stridedStoreAndLoadRoundTrip(type: DataType, stride: Int) {
        let values = Self.representableValues(type)
        let count = values.count
        let size = type.size
        let span = (Swift.max(abs(stride), 1) * (count - 1) + 1) * size
        let padding = 17 // odd, so multi-byte elements sit unaligned
        let sentinel: UInt8 = 0xA5
        var buffer = [UInt8](repeating: sentinel, count: span + 2 * padding)
        // With a negative stride, element 0 is the last in memory.
        let baseOffset = padding + (stride < 0 ? (count - 1) * -stride * size : 0)

        buffer.withUnsafeMutableBytes { raw in
            Conversion.store(type, from: values, count: count, to: raw.baseAddress! + baseOffset, stride: stride)
        }
        var written = Set<Int>()
        let storedIndices = stride == 0 ? [count - 1] : Array(0..<count)
        for index in storedIndices {
            let offset = baseOffset + (stride == 0 ? 0 : index * stride * size)
            let expected = Self.bytes(of: values[index], as: type)
            #expect(Array(buffer[offset..<offset + size]) == expected, "\(type) stride \(stride) element \(index)")
            written.formUnion(offset..<offset + size)
        }
        let untouched = buffer.indices.filter { !written.contains($0) }
        #expect(untouched.allSatisfy { buffer[$0] == sentinel }, "\(type) stride \(stride) wrote outside its elements")

        var loaded = [Float](repeating: .nan, count: count)
        buffer.withUnsafeBytes { raw in
            Conversion.load(type, from: raw.baseAddress! + baseOffset, stride: stride, count: count, into: &loaded)
        }
        let expected = stride == 0 ? [Float](repeating: values[count - 1], count: count) : values
        #expect(loaded.map(\.bitPattern) == expected.map(\.bitPattern), "\(type) stride \(stride)")
    }

    @Test(arguments: DataType.allCases)
    func zeroCountTouchesNothing(type: DataType) {
        var buffer = [UInt8](repeating: 0xA5, count: 8)
        var floats: [Float] = [42]
        buffer.withUnsafeMutableBytes { raw in
            Conversion.store(type, from: floats, count: 0, to: raw.baseAddress!, stride: 1)
            Conversion.load(type, from: raw.baseAddress!, stride: 1, count: 0, into: &floats)
        }
        #expect(buffer == [UInt8](repeating: 0xA5, count: 8))
        #expect(floats == [42])
    }
}
