import Testing
@testable import VtrnDevice

/// Load-time rules of the instruction set, each broken once: the message names the instruction,
/// the operand and the rule.
@Suite struct ValidationTests {
    func sbuf(_ partitions: Int, _ elements: Int, _ dtype: DataType = .fp32, offset: Int = 0) -> AccessPattern {
        AccessPattern(space: .sbuf, dtype: dtype, partitions: partitions, offset: offset, sizes: [elements])
    }

    func psum(_ partitions: Int, _ elements: Int, _ dtype: DataType = .fp32, offset: Int = 0) -> AccessPattern {
        AccessPattern(space: .psum, dtype: dtype, partitions: partitions, offset: offset, sizes: [elements])
    }

    /// The message of the first broken rule, or nil when the instruction is valid.
    func problem(_ engine: Engine, _ operation: Operation, parameters: [Parameter] = []) -> String? {
        do {
            try Validator.validate([Instruction(engine: engine, operation: operation)], parameters: parameters, preset: .trn1)
            return nil
        } catch {
            return error.message
        }
    }

    @Test func theMostNegativeStrideIsRefusedNotTrapped() {
        let hostile = AccessPattern(space: .sbuf, dtype: .fp32, partitions: 1, sizes: [16], strides: [Int.min])
        #expect(problem(.dve, .memset(destination: hostile, value: 0))?.contains("a stride is larger than") == true)
        let rows = AccessPattern(space: .hbm, dtype: .fp32, partitions: 2, sizes: [1], partitionStride: Int.min)
        #expect(problem(.dma, .dmaCopy(destination: AccessPattern(space: .sbuf, dtype: .fp32, partitions: 2, sizes: [1]),
                                       source: rows), parameters: [Parameter(name: "x", bytes: 64)])?
            .contains("partition stride -9223372036854775808") == true)
    }

    @Test func tensorReduceKeepsPartitionsAndGroupsOfElements() {
        let ints = sbuf(8, 12, .int32)
        #expect(problem(.dve, .tensorReduce(destination: sbuf(8, 3), source: sbuf(8, 12), op: .add, negate: true)) == nil)
        #expect(problem(.dve, .tensorReduce(destination: sbuf(8, 5), source: sbuf(8, 12), op: .max, negate: false))
                == "instruction 0 (TENSOR_REDUCE on DVE): dst: has 5 elements per partition, which does not divide src's 12; "
                + "each dst element reduces a consecutive group of src's elements")
        #expect(problem(.dve, .tensorReduce(destination: sbuf(4, 1), source: sbuf(8, 12), op: .min, negate: false))
                == "instruction 0 (TENSOR_REDUCE on DVE): dst: has 4 partitions but src has 8; TENSOR_REDUCE reduces along the "
                + "free axes only")
        #expect(problem(.dve, .tensorReduce(destination: sbuf(8, 1, .int32), source: ints, op: .bitwiseXor, negate: true))
                == "instruction 0 (TENSOR_REDUCE on DVE): negate: applies to arithmetic reductions; bitwise_xor is a bitvec op")
        #expect(problem(.dve, .tensorReduce(destination: sbuf(8, 1, .int32), source: sbuf(8, 12), op: .bitwiseAnd, negate: false))
                == "instruction 0 (TENSOR_REDUCE on DVE): src: is fp32; bitwise_and takes integer dtypes only")
        #expect(problem(.dve, .tensorReduce(destination: sbuf(8, 1), source: sbuf(8, 12), op: .divide, negate: false))
                == "instruction 0 (TENSOR_REDUCE on DVE): op: divide does not reduce; TENSOR_REDUCE takes add, max, min, "
                + "multiply, bitwise_and, bitwise_or, bitwise_xor, logical_and, logical_or or logical_xor")
        for op in [AluOp.logicalAnd, .logicalOr, .logicalXor] {
            #expect(problem(.dve, .tensorReduce(destination: sbuf(8, 2), source: sbuf(8, 12), op: op, negate: true)) == nil)
        }
    }

    @Test func tensorScalarKeepsBitvecOnDveAndStagesOfOneKind() {
        let ints = sbuf(8, 12, .int32)
        #expect(problem(.dve, .tensorScalar(destination: ints, source: ints, op0: .bitwiseAnd, x0: .integer(3), op1: .add,
                                            x1: .immediate(1), reverse: 0))
                == "instruction 0 (TENSOR_SCALAR on DVE): op1: add is an arithmetic op but op0 bitwise_and is a bitvec op; the "
                + "two stages of TENSOR_SCALAR are both bitvec or both arithmetic")
        #expect(problem(.pool, .tensorScalar(destination: ints, source: ints, op0: .invert, x0: .integer(0), op1: .bypass,
                                             x1: nil, reverse: 0))
                == "instruction 0 (TENSOR_SCALAR on POOL): op0: invert is a bitvec op; TENSOR_SCALAR runs bitvec ops on DVE only")
        #expect(problem(.dve, .tensorTensor(destination: sbuf(8, 12), a: sbuf(8, 12), b: sbuf(8, 12), op: .logicalNot))
                == "instruction 0 (TENSOR_TENSOR on DVE): op: logical_not takes one operand; TENSOR_TENSOR needs a binary op")
    }

    @Test func psumIsForPeDveAndActOnly() {
        #expect(problem(.dve, .memset(destination: psum(8, 4), value: 0)) == nil)
        #expect(problem(.act, .tensorCopy(destination: psum(8, 4), source: psum(8, 4, offset: 64))) == nil)
        #expect(problem(.act, .activate(destination: psum(8, 4), function: .exp, source: sbuf(8, 4), scale: .immediate(1),
                                        bias: nil, accumulateOut: psum(8, 1, offset: 64))) == nil)
        #expect(problem(.pool, .memset(destination: psum(8, 4), value: 0))
                == "instruction 0 (MEMSET on POOL): dst: is in PSUM, which POOL (GpSimd) cannot access; DVE and ACT can")
        #expect(problem(.pool, .tensorCopy(destination: sbuf(8, 4), source: psum(8, 4)))
                == "instruction 0 (TENSOR_COPY on POOL): src: is in PSUM, which POOL (GpSimd) cannot access; DVE and ACT can")
        #expect(problem(.dma, .dmaCopy(destination: psum(8, 4), source: sbuf(8, 4)))
                == "instruction 0 (DMA_COPY on DMA): dst: is in PSUM, which DMA does not reach; move data between PSUM and SBUF "
                + "with TENSOR_COPY on DVE or ACT")
    }

    @Test func matmulTakesFp32OnlyWithFp32() {
        func matmul(_ stationary: DataType, _ moving: DataType) -> String? {
            problem(.pe, .matmul(destination: psum(4, 8), stationary: sbuf(16, 4, stationary), moving: sbuf(16, 8, moving, offset: 64),
                                 accumulate: false))
        }
        #expect(matmul(.fp32, .fp32) == nil && matmul(.bf16, .fp8e4m3) == nil && matmul(.fp16, .bf16) == nil)
        #expect(matmul(.fp32, .bf16) == "instruction 0 (MATMUL on PE): moving: is bf16 but stationary is fp32; an fp32 input of "
                + "MATMUL needs an fp32 partner (other dtypes mix freely)")
        #expect(matmul(.fp8e5m2, .fp32) == "instruction 0 (MATMUL on PE): moving: is fp32 but stationary is fp8_e5m2; an fp32 "
                + "input of MATMUL needs an fp32 partner (other dtypes mix freely)")
    }

    @Test func transposeOnDveTakesAtMost32By32EitherMemory() {
        #expect(problem(.dve, .transpose(destination: sbuf(32, 32), source: psum(32, 32))) == nil)
        #expect(problem(.dve, .transpose(destination: psum(5, 3, .int8), source: sbuf(3, 5, .int8))) == nil)
        #expect(problem(.dve, .transpose(destination: sbuf(33, 8), source: sbuf(8, 33)))
                == "instruction 0 (TRANSPOSE on DVE): src: is 8 x 33; TRANSPOSE on DVE takes at most 32 x 32 (the PE takes 128 x 128)")
        #expect(problem(.dve, .transpose(destination: sbuf(4, 8), source: sbuf(4, 8)))
                == "instruction 0 (TRANSPOSE on DVE): dst: is 4 x 8; the transpose of src is 8 x 4")
        #expect(problem(.act, .transpose(destination: sbuf(4, 4), source: sbuf(4, 4)))
                == "instruction 0 (TRANSPOSE on ACT): runs on PE or DVE, not ACT")
        #expect(problem(.pe, .transpose(destination: sbuf(4, 4), source: sbuf(4, 4)))
                == "instruction 0 (TRANSPOSE on PE): dst: is in SBUF; TRANSPOSE writes PSUM")
    }

    @Test func dmaCopyRowsAndReadModifyWrite() {
        let parameters = [Parameter(name: "big", bytes: 4 << 24 + 64)]
        func hbm(_ rows: Int) -> AccessPattern {
            AccessPattern(space: .hbm, dtype: .fp32, partitions: rows, sizes: [1], partitionStride: 1)
        }
        #expect(problem(.dma, .dmaCopy(destination: hbm(1 << 24), source: hbm(1 << 24)), parameters: parameters) == nil)
        #expect(problem(.dma, .dmaCopy(destination: hbm(1 << 24 + 1), source: hbm(1 << 24)), parameters: parameters)
                == "instruction 0 (DMA_COPY on DMA): dst: 16777217 rows; an HBM access has 1 to 16777216")
        #expect(problem(.dma, .dmaCopy(destination: hbm(300), source: sbuf(100, 3), readModifyWrite: .add), parameters: parameters)
                == nil)
        #expect(problem(.dma, .dmaCopy(destination: sbuf(8, 4), source: sbuf(8, 4, offset: 64), readModifyWrite: .max))
                == "instruction 0 (DMA_COPY on DMA): dst_rmw_op: max is not supported; DMA_COPY accumulates with add only "
                + "(bypass copies)")
    }

    @Test func indirectDmaCopyIndexesHbmRowsWithAnIntegerColumn() {
        let parameters = [Parameter(name: "table", bytes: 100 * 6 * 4)]
        let table = AccessPattern(space: .hbm, dtype: .fp32, partitions: 100, sizes: [6], partitionStride: 6)
        func gather(_ destination: AccessPattern, _ source: AccessPattern, index: AccessPattern) -> String? {
            problem(.dma, .dmaCopy(destination: destination, source: source,
                                   indirection: DmaIndirection(operand: .source, index: index, outOfBounds: .skip)), parameters: parameters)
        }
        #expect(gather(sbuf(4, 6), table, index: sbuf(4, 1, .uint8, offset: 64)) == nil)
        #expect(gather(sbuf(4, 6), sbuf(8, 6, offset: 128), index: sbuf(4, 1, .int32, offset: 64))
                == "instruction 0 (DMA_COPY on DMA): src: is in SBUF; an indirect DMA_COPY indexes the rows of an HBM tensor")
        #expect(gather(sbuf(4, 6), table, index: sbuf(4, 1, .bf16, offset: 64))
                == "instruction 0 (DMA_COPY on DMA): index: is bf16 in SBUF; indices are an integer tile in SBUF")
        #expect(gather(sbuf(4, 6), table, index: sbuf(5, 1, .int32, offset: 64))
                == "instruction 0 (DMA_COPY on DMA): index: is 5 x 1; it must be [4, 1]")
        #expect(gather(sbuf(4, 7), table, index: sbuf(4, 1, .int32, offset: 64))
                == "instruction 0 (DMA_COPY on DMA): dst: has 7 elements per partition but a row of src has 6; an indirect "
                + "DMA_COPY moves whole rows")
        let scatter = Operation.dmaCopy(destination: table, source: sbuf(4, 6), readModifyWrite: .add,
                                        indirection: DmaIndirection(operand: .destination, index: sbuf(4, 1, .int32, offset: 64)))
        #expect(problem(.dma, scatter, parameters: parameters) == nil)
    }
}
