import CVtrn
import Testing
import Vtrn
import VtrnDevice
@testable import VtrnCABI

/// The instruction set's enums as the header numbers them, and what the builders make of the C
/// operands: the Swift device model and the C contract must agree value for value.
@Suite struct InstructionSetTests {
    @Test func aluOpsMatchTheHeader() {
        let header: [(vtrn_alu_op_t, AluOp)] = [
            (VTRN_ALU_ADD, .add), (VTRN_ALU_SUBTRACT, .subtract), (VTRN_ALU_MULTIPLY, .multiply), (VTRN_ALU_MAX, .max),
            (VTRN_ALU_MIN, .min), (VTRN_ALU_EQUAL, .equal), (VTRN_ALU_NOT_EQUAL, .notEqual), (VTRN_ALU_GREATER, .greater),
            (VTRN_ALU_GREATER_EQUAL, .greaterEqual), (VTRN_ALU_LESS, .less), (VTRN_ALU_LESS_EQUAL, .lessEqual),
            (VTRN_ALU_POW, .pow), (VTRN_ALU_ABS, .abs), (VTRN_ALU_RECIPROCAL, .reciprocal), (VTRN_ALU_RSQRT, .rsqrt),
            (VTRN_ALU_DIVIDE, .divide), (VTRN_ALU_BITWISE_AND, .bitwiseAnd), (VTRN_ALU_BITWISE_OR, .bitwiseOr),
            (VTRN_ALU_BITWISE_XOR, .bitwiseXor), (VTRN_ALU_SHIFT_LEFT, .shiftLeft), (VTRN_ALU_SHIFT_RIGHT, .shiftRight),
            (VTRN_ALU_BYPASS, .bypass), (VTRN_ALU_LOGICAL_AND, .logicalAnd), (VTRN_ALU_LOGICAL_OR, .logicalOr),
            (VTRN_ALU_LOGICAL_XOR, .logicalXor), (VTRN_ALU_LOGICAL_NOT, .logicalNot), (VTRN_ALU_INVERT, .invert),
        ]
        #expect(header.count == AluOp.allCases.count)
        for (c, swift) in header { #expect(Int(c.rawValue) == swift.rawValue, "\(swift)") }
    }

    @Test func activationsMatchTheHeader() {
        let header: [(vtrn_activation_t, ActivationFunction)] = [
            (VTRN_ACT_COPY, .copy), (VTRN_ACT_EXP, .exp), (VTRN_ACT_LOG, .log), (VTRN_ACT_TANH, .tanh),
            (VTRN_ACT_SIGMOID, .sigmoid), (VTRN_ACT_RELU, .relu), (VTRN_ACT_GELU, .gelu), (VTRN_ACT_GELU_TANH, .geluTanh),
            (VTRN_ACT_SILU, .silu), (VTRN_ACT_SQUARE, .square), (VTRN_ACT_SQRT, .sqrt), (VTRN_ACT_RSQRT, .rsqrt),
            (VTRN_ACT_RECIPROCAL, .reciprocal), (VTRN_ACT_ABS, .abs), (VTRN_ACT_SIGN, .sign), (VTRN_ACT_ERF, .erf),
            (VTRN_ACT_ERF_DX, .erfDx), (VTRN_ACT_SIN, .sin), (VTRN_ACT_ARCTAN, .arctan), (VTRN_ACT_SOFTPLUS, .softplus),
            (VTRN_ACT_MISH, .mish), (VTRN_ACT_GELU_DX, .geluDx), (VTRN_ACT_SILU_DX, .siluDx),
            (VTRN_ACT_GELU_APPRX_SIGMOID, .geluApprxSigmoid), (VTRN_ACT_GELU_APPRX_SIGMOID_DX, .geluApprxSigmoidDx),
        ]
        #expect(header.count == ActivationFunction.allCases.count)
        for (c, swift) in header { #expect(Int(c.rawValue) == swift.rawValue, "\(swift)") }
    }

    @Test func scalarKindsMatchTheHeader() {
        #expect(VTRN_SCALAR_IMMEDIATE.rawValue == 0 && VTRN_SCALAR_TILE.rawValue == 1 && VTRN_SCALAR_INT32.rawValue == 2)
    }

    /// Builds one instruction through the C ABI and returns what the program holds.
    func built(_ build: (vtrn_program_t?) -> vtrn_status_t) throws -> Instruction {
        var runtime: vtrn_runtime_t?
        try #require(vtrn_runtime_create(nil, &runtime) == VTRN_SUCCESS)
        defer { _ = vtrn_runtime_destroy(runtime) }
        var program: vtrn_program_t?
        try #require(vtrn_program_create(runtime, &program) == VTRN_SUCCESS)
        try #require(build(program) == VTRN_SUCCESS, "\(String(cString: vtrn_last_error()))")
        return try #require(Handles.programs.lookup(handleBits(program)).object.instructions.first)
    }

    @Test func int32ImmediatesArriveBitForBit() throws {
        // 0x7fc00001 and 0x7f800001 read as NaNs in fp32: the bits must not be quieted on the way.
        for value: Int32 in [0x7fff_ffff, -1, .min, 0x7fc0_0001, 0x7f80_0001] {
            let tile = vtrn_sbuf(0, 4, 0, VTRN_DTYPE_INT32, 4)
            var scalar = vtrn_scalar_int32(value)
            let instruction = try built { program in
                vtrn_program_tensor_scalar(program, VTRN_ENGINE_DVE, tile, tile, VTRN_ALU_BITWISE_AND, &scalar, VTRN_ALU_BYPASS,
                                           nil, 0, nil)
            }
            guard case .tensorScalar(_, _, .bitwiseAnd, let x0, .bypass, nil, 0) = instruction.operation else {
                Issue.record("built \(instruction.operation)")
                continue
            }
            #expect(x0 == .integer(value))
        }
    }
}
