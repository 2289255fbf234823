"""Program validation: every rule of the instruction set, broken once, with the status and the
exact message the library gives at vtrn_kernel_load; the builders' own checks (unknown enum
values, NULL pointers, access patterns of 0 or 5 dimensions, parameter names); and the
Python builder's."""

import ctypes
import re
from ctypes import byref

import numpy as np
import pytest

import vtrn
from vtrn import AccessPattern, Status
from vtrn._library import DmaCopyOptionsStruct, ScalarStruct, SyncStruct, lib

from support import failure, open_runtime

LOAD = "vtrn_kernel_load: instruction"


@pytest.fixture(scope="module")
def runtime():
    with open_runtime(topology="trn1,trn2") as runtime:
        yield runtime


@pytest.fixture(scope="module")
def device(runtime):
    return runtime.device(0)


@pytest.fixture
def program(runtime):
    with runtime.program() as program:
        yield program


def rejected(device, program):
    """The message of InvalidProgramError from loading ``program`` on core 0."""
    return failure(vtrn.InvalidProgramError, lambda: device.load(program))


def hbm(program, name="a", shape=(4, 4), dtype="float32"):
    return program.parameter(name, shape, dtype)


# Each case: an id, what it appends to an empty program, and the message after "instruction ".
RULES = [
    # engines
    ("tensor_copy on PE", lambda p: p.tensor_copy(p.sbuf((4, 4)), p.sbuf((4, 4)), engine="pe"),
     "0 (TENSOR_COPY on PE): runs on DVE or ACT or POOL, not PE"),
    ("memset on ACT", lambda p: p.memset(p.sbuf((4, 4)), 1.0, engine="act"),
     "0 (MEMSET on ACT): runs on DVE or POOL, not ACT"),
    ("tensor_scalar on DMA", lambda p: p.tensor_scalar(p.sbuf((4, 4)), p.sbuf((4, 4)), "add", 1.0, engine="dma"),
     "0 (TENSOR_SCALAR on DMA): runs on DVE or ACT or POOL, not DMA"),
    # partitions: NKI's quadrant rule, counts, bounds
    ("start 16", lambda p: p.tensor_copy(p.sbuf((4, 4), partition=16), p.sbuf((4, 4))),
     "0 (TENSOR_COPY on DVE): dst: starts at partition 16; compute engines start at partition 0, 32, 64 or 96"),
    ("start 32 with 64 partitions", lambda p: p.tensor_copy(p.sbuf((64, 4), partition=32), p.sbuf((64, 4))),
     "0 (TENSOR_COPY on DVE): dst: covers 64 partitions from partition 32; from 32 an access covers at most 32"),
    ("start 96 with 33 partitions", lambda p: p.tensor_copy(p.sbuf((4, 4)), p.sbuf((33, 4), partition=96)),
     "0 (TENSOR_COPY on DVE): src: partitions 96..<129 run past partition 127"),
    ("start 64 with 65 partitions", lambda p: p.tensor_copy(p.sbuf((65, 4), partition=64), p.sbuf((65, 4))),
     "0 (TENSOR_COPY on DVE): dst: partitions 64..<129 run past partition 127"),
    ("HBM of 2^24 + 1 rows", lambda p: (hbm(p, shape=(2**24 + 1, 1)), p.dma_copy(hbm(p, "b"), AccessPattern(
        "hbm", "fp32", (2**24 + 1, 1)))),
     "0 (DMA_COPY on DMA): src: 16777217 rows; an HBM access has 1 to 16777216"),
    ("dst_rmw_op multiply", lambda p: p.dma_copy(p.sbuf((4, 4)), p.sbuf((4, 4), offset=64), dst_rmw_op="multiply"),
     "0 (DMA_COPY on DMA): dst_rmw_op: multiply is not supported; DMA_COPY accumulates with add only (bypass copies)"),
    ("gather from SBUF", lambda p: p.dma_copy(p.sbuf((4, 6)), p.sbuf((8, 6)), src_index=p.sbuf((4, 1), "int32")),
     "0 (DMA_COPY on DMA): src: is in SBUF; an indirect DMA_COPY indexes the rows of an HBM tensor"),
    ("float indices", lambda p: p.dma_copy(p.sbuf((4, 6)), hbm(p, shape=(8, 6)), src_index=p.sbuf((4, 1))),
     "0 (DMA_COPY on DMA): index: is fp32 in SBUF; indices are an integer tile in SBUF"),
    ("index [P,2]", lambda p: p.dma_copy(hbm(p, shape=(8, 6)), p.sbuf((4, 6)), dst_index=p.sbuf((4, 2), "int32")),
     "0 (DMA_COPY on DMA): index: is 4 x 2; it must be [4, 1]"),
    ("gathered rows of another width", lambda p: p.dma_copy(p.sbuf((4, 5)), hbm(p, shape=(8, 6)),
                                                            src_index=p.sbuf((4, 1), "int8")),
     "0 (DMA_COPY on DMA): dst: has 5 elements per partition but a row of src has 6; an indirect DMA_COPY moves whole "
     "rows"),
    ("DMA start 120 with 9 partitions", lambda p: p.dma_copy(p.sbuf((9, 4), partition=120), p.sbuf((9, 4))),
     "0 (DMA_COPY on DMA): dst: partitions 120..<129 run past partition 127"),
    ("0 partitions", lambda p: p.tensor_copy(p.sbuf((0, 4)), p.sbuf((0, 4))),
     "0 (TENSOR_COPY on DVE): dst: 0 partitions; an access covers 1 to 128"),
    ("129 partitions", lambda p: p.memset(p.sbuf((129, 4)), 0.0),
     "0 (MEMSET on DVE): dst: 129 partitions; an access covers 1 to 128"),
    ("a free size 0", lambda p: p.memset(p.sbuf((4, 3, 0)), 0.0),
     "0 (MEMSET on DVE): dst: a free dimension has size 0 ([0, 3])"),
    ("more than 2^31 elements", lambda p: p.memset(AccessPattern("sbuf", "fp32", (4, 1 << 16, 1 << 16), (None, 0, 0)),
                                                   0.0),
     "0 (MEMSET on DVE): dst: sizes [65536, 65536] describe more than 2147483648 elements per partition"),
    ("a stride past 2^32", lambda p: p.memset(AccessPattern("sbuf", "fp32", (4, 2), (None, 1 << 33)), 0.0),
     "0 (MEMSET on DVE): dst: a stride is larger than 4294967296 elements (strides [8589934592], partition stride 0)"),
    ("the most negative stride", lambda p: p.memset(AccessPattern("sbuf", "fp32", (1, 16), (None, -(1 << 63))), 0.0),
     "0 (MEMSET on DVE): dst: a stride is larger than 4294967296 elements (strides [-9223372036854775808], "
     "partition stride 0)"),
    ("the most negative partition stride", lambda p: (hbm(p), p.dma_copy(p.sbuf((2, 1)), AccessPattern(
        "hbm", "fp32", (2, 1), (-(1 << 63), 1)))),
     "0 (DMA_COPY on DMA): src: a stride is larger than 4294967296 elements (strides [1], partition stride "
     "-9223372036854775808)"),
    ("a partition stride past 2^32", lambda p: (hbm(p), p.dma_copy(p.sbuf((2, 1)), AccessPattern(
        "hbm", "fp32", (2, 1), ((1 << 32) + 1, 1)))),
     "0 (DMA_COPY on DMA): src: a stride is larger than 4294967296 elements (strides [1], partition stride 4294967297)"),
    # offsets and bounds
    ("misaligned offset", lambda p: p.tensor_copy(p.sbuf((4, 4)), p.sbuf((4, 4), "bf16", offset=3)),
     "0 (TENSOR_COPY on DVE): src: byte offset 3 is not a multiple of bf16's size (2)"),
    ("past the end of SBUF", lambda p: p.memset(p.sbuf((4, 16), offset=192 * 1024 - 32), 0.0),
     "0 (MEMSET on DVE): dst: bytes 196576..<196640 of each partition run outside SBUF (196608 bytes per partition)"),
    ("before the start of SBUF", lambda p: p.memset(AccessPattern("sbuf", "fp32", (4, 8), (None, -1), offset=16), 0.0),
     "0 (MEMSET on DVE): dst: bytes -12..<20 of each partition run outside SBUF (196608 bytes per partition)"),
    ("past the end of PSUM", lambda p: p.transpose(p.psum((4, 4), offset=16384 - 8), p.sbuf((4, 4))),
     "0 (TRANSPOSE on PE): dst: bytes 16376..<16392 of each partition run outside PSUM (16384 bytes per partition)"),
    # HBM
    ("HBM by a compute engine", lambda p: p.tensor_copy(p.sbuf((4, 4)), hbm(p)),
     "0 (TENSOR_COPY on DVE): src: is in HBM; only DMA_COPY and collectives reach HBM"),
    ("parameter index out of range", lambda p: (hbm(p), p.dma_copy(p.sbuf((4, 4)), AccessPattern("hbm", "fp32", (4, 4),
                                                                                              parameter=1))),
     "0 (DMA_COPY on DMA): src: parameter 1 does not exist: the program has 1"),
    ("HBM range past the parameter", lambda p: (hbm(p), p.dma_copy(AccessPattern("hbm", "fp32", (4, 4), offset=4),
                                                                     p.sbuf((4, 4)))),
     '0 (DMA_COPY on DMA): dst: bytes 4..<68 run outside parameter "a" (64 bytes)'),
    ("HBM rows past the parameter", lambda p: (hbm(p), p.dma_copy(p.sbuf((5, 4)), AccessPattern("hbm", "fp32", (5, 4)))),
     '0 (DMA_COPY on DMA): src: bytes 0..<80 run outside parameter "a" (64 bytes)'),
    ("HBM rows before the parameter", lambda p: (hbm(p), p.dma_copy(p.sbuf((4, 4)), AccessPattern("hbm", "fp32", (4, 4),
                                                                                                (-4, 1), offset=8))),
     '0 (DMA_COPY on DMA): src: bytes -40..<24 run outside parameter "a" (64 bytes)'),
    # PSUM
    ("PSUM written by POOL", lambda p: p.memset(p.psum((4, 4)), 0.0, engine="pool"),
     "0 (MEMSET on POOL): dst: is in PSUM, which POOL (GpSimd) cannot access; DVE and ACT can"),
    ("PSUM read by POOL", lambda p: p.tensor_scalar(p.sbuf((4, 4)), p.psum((4, 4)), "add", 1.0, engine="pool"),
     "0 (TENSOR_SCALAR on POOL): src: is in PSUM, which POOL (GpSimd) cannot access; DVE and ACT can"),
    ("iota into PSUM", lambda p: p.iota(p.psum((4, 4), "int32"), [1]),
     "0 (IOTA on POOL): dst: is in PSUM, which POOL (GpSimd) cannot access; DVE and ACT can"),
    ("DMA to PSUM", lambda p: p.dma_copy(p.psum((4, 4)), p.sbuf((4, 4))),
     "0 (DMA_COPY on DMA): dst: is in PSUM, which DMA does not reach; move data between PSUM and SBUF with "
     "TENSOR_COPY on DVE or ACT"),
    ("DMA from PSUM", lambda p: p.dma_copy(p.sbuf((4, 4)), p.psum((4, 4))),
     "0 (DMA_COPY on DMA): src: is in PSUM, which DMA does not reach; move data between PSUM and SBUF with "
     "TENSOR_COPY on DVE or ACT"),
    ("matmul fp32 with bf16", lambda p: p.matmul(p.psum((4, 4)), p.sbuf((4, 4)), p.sbuf((4, 4), "bf16")),
     "0 (MATMUL on PE): moving: is bf16 but stationary is fp32; an fp32 input of MATMUL needs an fp32 partner "
     "(other dtypes mix freely)"),
    ("matmul fp16 with fp32", lambda p: p.matmul(p.psum((4, 4)), p.sbuf((4, 4), "fp16"), p.sbuf((4, 4))),
     "0 (MATMUL on PE): moving: is fp32 but stationary is fp16; an fp32 input of MATMUL needs an fp32 partner "
     "(other dtypes mix freely)"),
    # MATMUL
    ("matmul K 129", lambda p: p.matmul(p.psum((4, 4)), p.sbuf((129, 4)), p.sbuf((129, 4))),
     "0 (MATMUL on PE): stationary: 129 partitions; an access covers 1 to 128"),
    ("matmul M 129", lambda p: p.matmul(p.psum((128, 4)), p.sbuf((4, 129)), p.sbuf((4, 4))),
     "0 (MATMUL on PE): stationary: M is 129, more than 128 (the PE array's columns)"),
    ("matmul N 513", lambda p: p.matmul(p.psum((4, 513)), p.sbuf((4, 4)), p.sbuf((4, 513))),
     "0 (MATMUL on PE): moving: N is 513, more than 512 (one PSUM bank of fp32)"),
    ("matmul K mismatch", lambda p: p.matmul(p.psum((4, 4)), p.sbuf((4, 4)), p.sbuf((5, 4))),
     "0 (MATMUL on PE): moving: has 5 partitions but stationary has 4; both are K, the contraction"),
    ("matmul rows differ", lambda p: p.matmul(p.psum((4, 4)), p.sbuf((4, 4)), p.sbuf((4, 4), partition=32)),
     "0 (MATMUL on PE): moving: starts at partition 32 but stationary at 0; the PE array reads both from the same rows"),
    ("matmul dst shape", lambda p: p.matmul(p.psum((4, 5)), p.sbuf((3, 4)), p.sbuf((3, 4))),
     "0 (MATMUL on PE): dst: is 4 x 5; stationary^T . moving is 4 x 4"),
    ("matmul PSUM bank crossing", lambda p: p.matmul(p.psum((4, 4), offset=2040), p.sbuf((4, 4)), p.sbuf((4, 4))),
     "0 (MATMUL on PE): dst: bytes 2040..<2056 cross a PSUM bank boundary (banks are 2048 bytes)"),
    ("matmul int input", lambda p: p.matmul(p.psum((4, 4)), p.sbuf((4, 4)), p.sbuf((4, 4), "int32")),
     "0 (MATMUL on PE): moving: is int32; the PE multiplies floating-point dtypes"),
    ("matmul uint8 stationary", lambda p: p.matmul(p.psum((4, 4)), p.sbuf((4, 4), "uint8"), p.sbuf((4, 4))),
     "0 (MATMUL on PE): stationary: is uint8; the PE multiplies floating-point dtypes"),
    ("matmul into SBUF", lambda p: p.matmul(p.sbuf((4, 4)), p.sbuf((4, 4)), p.sbuf((4, 4))),
     "0 (MATMUL on PE): dst: is fp32 in SBUF; MATMUL accumulates fp32 in PSUM"),
    ("matmul into bf16", lambda p: p.matmul(p.psum((4, 4), "bf16"), p.sbuf((4, 4)), p.sbuf((4, 4))),
     "0 (MATMUL on PE): dst: is bf16 in PSUM; MATMUL accumulates fp32 in PSUM"),
    ("matmul from PSUM", lambda p: p.matmul(p.psum((4, 4)), p.sbuf((4, 4)), p.psum((4, 4))),
     "0 (MATMUL on PE): moving: is in PSUM; the PE reads its inputs from SBUF"),
    # TRANSPOSE
    ("transpose shape", lambda p: p.transpose(p.psum((4, 4)), p.sbuf((4, 5))),
     "0 (TRANSPOSE on PE): dst: is 4 x 4; the transpose of src is 5 x 4"),
    ("transpose dtype", lambda p: p.transpose(p.psum((4, 4), "bf16"), p.sbuf((4, 4))),
     "0 (TRANSPOSE on PE): dst: is bf16 but src is fp32; TRANSPOSE is bit exact, so they must match"),
    ("transpose 129 columns", lambda p: p.transpose(p.psum((128, 4)), p.sbuf((4, 129))),
     "0 (TRANSPOSE on PE): src: has 129 elements per partition; TRANSPOSE takes at most 128 x 128"),
    ("transpose into SBUF", lambda p: p.transpose(p.sbuf((4, 4)), p.sbuf((4, 4))),
     "0 (TRANSPOSE on PE): dst: is in SBUF; TRANSPOSE writes PSUM"),
    ("transpose on DVE 33 x 4", lambda p: p.transpose(p.sbuf((4, 33)), p.sbuf((33, 4)), engine="dve"),
     "0 (TRANSPOSE on DVE): src: is 33 x 4; TRANSPOSE on DVE takes at most 32 x 32 (the PE takes 128 x 128)"),
    ("transpose on DVE 4 x 64", lambda p: p.transpose(p.sbuf((64, 4)), p.sbuf((4, 64)), engine="dve"),
     "0 (TRANSPOSE on DVE): src: is 4 x 64; TRANSPOSE on DVE takes at most 32 x 32 (the PE takes 128 x 128)"),
    ("transpose on DVE dtype", lambda p: p.transpose(p.psum((4, 4), "bf16"), p.sbuf((4, 4)), engine="dve"),
     "0 (TRANSPOSE on DVE): dst: is bf16 but src is fp32; TRANSPOSE is bit exact, so they must match"),
    ("transpose on DVE shape", lambda p: p.transpose(p.psum((4, 4)), p.sbuf((4, 5)), engine="dve"),
     "0 (TRANSPOSE on DVE): dst: is 4 x 4; the transpose of src is 5 x 4"),
    ("transpose on ACT", lambda p: p.transpose(p.sbuf((4, 4)), p.sbuf((4, 4)), engine="act"),
     "0 (TRANSPOSE on ACT): runs on PE or DVE, not ACT"),
    # shapes and operands
    ("tensor_tensor shape mismatch", lambda p: p.tensor_tensor(p.sbuf((4, 4)), p.sbuf((4, 4)), p.sbuf((4, 5)), "add"),
     "0 (TENSOR_TENSOR on DVE): b: is 4 x 5 but dst is 4 x 4; their shapes must agree"),
    ("tensor_copy shape mismatch", lambda p: p.tensor_copy(p.sbuf((2, 8)), p.sbuf((4, 4))),
     "0 (TENSOR_COPY on DVE): src: is 4 x 4 but dst is 2 x 8; their shapes must agree"),
    ("activate shape mismatch", lambda p: p.activate(p.sbuf((4, 4)), "exp", p.sbuf((4, 2, 3))),
     "0 (ACTIVATE on ACT): src: is 4 x 6 but dst is 4 x 4; their shapes must agree"),
    ("DMA element counts", lambda p: p.dma_copy(p.sbuf((4, 4)), p.sbuf((4, 5))),
     "0 (DMA_COPY on DMA): src: has 20 elements but dst has 16; DMA_COPY moves equal counts"),
    ("both inputs in PSUM", lambda p: p.tensor_tensor(p.sbuf((4, 4)), p.psum((4, 4)), p.psum((4, 4)), "add"),
     "0 (TENSOR_TENSOR on DVE): b: is in PSUM as a is; TENSOR_TENSOR reads at most one input from PSUM"),
    ("unary op in tensor_tensor", lambda p: p.tensor_tensor(p.sbuf((4, 4)), p.sbuf((4, 4)), p.sbuf((4, 4)), "rsqrt"),
     "0 (TENSOR_TENSOR on DVE): op: rsqrt takes one operand; TENSOR_TENSOR needs a binary op"),
    ("logical_not in tensor_tensor", lambda p: p.tensor_tensor(p.sbuf((4, 4)), p.sbuf((4, 4)), p.sbuf((4, 4)),
                                                               "logical_not"),
     "0 (TENSOR_TENSOR on DVE): op: logical_not takes one operand; TENSOR_TENSOR needs a binary op"),
    ("invert on floats", lambda p: p.tensor_scalar(p.sbuf((4, 4), "int32"), p.sbuf((4, 4)), "invert", 0),
     "0 (TENSOR_SCALAR on DVE): src: is fp32; invert takes integer dtypes only"),
    ("bypass in tensor_tensor", lambda p: p.tensor_tensor(p.sbuf((4, 4)), p.sbuf((4, 4)), p.sbuf((4, 4)), "bypass"),
     "0 (TENSOR_TENSOR on DVE): op: bypass takes one operand; TENSOR_TENSOR needs a binary op"),
    ("bitwise op on floats", lambda p: p.tensor_tensor(p.sbuf((4, 4), "int32"), p.sbuf((4, 4), "int32"),
                                                       p.sbuf((4, 4)), "bitwise_and"),
     "0 (TENSOR_TENSOR on DVE): b: is fp32; bitwise_and takes integer dtypes only"),
    ("shift into a float", lambda p: p.tensor_scalar(p.sbuf((4, 4), "bf16"), p.sbuf((4, 4), "int8"), "add", 1.0,
                                                     "shift_left", 2.0),
     "0 (TENSOR_SCALAR on DVE): dst: is bf16; shift_left takes integer dtypes only"),
    ("bitvec and arithmetic stages", lambda p: p.tensor_scalar(p.sbuf((4, 4), "int32"), p.sbuf((4, 4), "int32"),
                                                             "bitwise_and", 3, "add", 1),
     "0 (TENSOR_SCALAR on DVE): op1: add is an arithmetic op but op0 bitwise_and is a bitvec op; the two stages of "
     "TENSOR_SCALAR are both bitvec or both arithmetic"),
    ("bitvec op on POOL", lambda p: p.tensor_scalar(p.sbuf((4, 4), "int32"), p.sbuf((4, 4), "int32"), "bypass", 0,
                                                    "shift_right", 1, engine="pool"),
     "0 (TENSOR_SCALAR on POOL): op1: shift_right is a bitvec op; TENSOR_SCALAR runs bitvec ops on DVE only"),
    ("tensor_reduce with subtract", lambda p: p.tensor_reduce(p.sbuf((4, 1)), p.sbuf((4, 4)), "subtract"),
     "0 (TENSOR_REDUCE on DVE): op: subtract does not reduce; TENSOR_REDUCE takes add, max, min, multiply, "
     "bitwise_and, bitwise_or, bitwise_xor, logical_and, logical_or or logical_xor"),
    ("tensor_reduce dst", lambda p: p.tensor_reduce(p.sbuf((4, 3)), p.sbuf((4, 4)), "add"),
     "0 (TENSOR_REDUCE on DVE): dst: has 3 elements per partition, which does not divide src's 4; each dst element "
     "reduces a consecutive group of src's elements"),
    ("tensor_reduce partitions", lambda p: p.tensor_reduce(p.sbuf((2, 1)), p.sbuf((4, 4)), "max"),
     "0 (TENSOR_REDUCE on DVE): dst: has 2 partitions but src has 4; TENSOR_REDUCE reduces along the free axes only"),
    ("bitwise reduction of floats", lambda p: p.tensor_reduce(p.sbuf((4, 1), "int32"), p.sbuf((4, 4)), "bitwise_or"),
     "0 (TENSOR_REDUCE on DVE): src: is fp32; bitwise_or takes integer dtypes only"),
    ("negated bitwise reduction", lambda p: p.tensor_reduce(p.sbuf((4, 1), "int32"), p.sbuf((4, 4), "int32"),
                                                            "bitwise_xor", negate=True),
     "0 (TENSOR_REDUCE on DVE): negate: applies to arithmetic reductions; bitwise_xor is a bitvec op"),
    ("scale [P,2]", lambda p: p.activate(p.sbuf((4, 4)), "exp", p.sbuf((4, 4)), scale=p.sbuf((4, 2))),
     "0 (ACTIVATE on ACT): scale: is 4 x 2; it must be [4, 1]"),
    ("bias of other partitions", lambda p: p.activate(p.sbuf((4, 4)), "exp", p.sbuf((4, 4)), bias=p.sbuf((3, 1))),
     "0 (ACTIVATE on ACT): bias: is 3 x 1; it must be [4, 1]"),
    ("accumulate_out [P,4]", lambda p: p.activate(p.sbuf((4, 4)), "exp", p.sbuf((4, 4)), accumulate_out=p.sbuf((4, 4))),
     "0 (ACTIVATE on ACT): accumulate_out: is 4 x 4; it must be [4, 1]"),
    ("x0 [P,2]", lambda p: p.tensor_scalar(p.sbuf((4, 4)), p.sbuf((4, 4)), "add", p.sbuf((4, 2))),
     "0 (TENSOR_SCALAR on DVE): x0: is 4 x 2; it must be [4, 1]"),
    ("x1 of 8 partitions", lambda p: p.tensor_scalar(p.sbuf((4, 4)), p.sbuf((4, 4)), "add", 1.0, "add", p.sbuf((8, 1))),
     "0 (TENSOR_SCALAR on DVE): x1: is 8 x 1; it must be [4, 1]"),
    ("x1 missing", lambda p: p.tensor_scalar(p.sbuf((4, 4)), p.sbuf((4, 4)), "add", 1.0, "multiply"),
     "0 (TENSOR_SCALAR on DVE): x1: is missing; op1 multiply needs it (or use bypass)"),
    ("reverse bit 2", lambda p: p.tensor_scalar(p.sbuf((4, 4)), p.sbuf((4, 4)), "add", 1.0, reverse=4),
     "0 (TENSOR_SCALAR on DVE): reverse: has bits 0x4; only bits 0 and 1 exist"),
    ("affine_select with add", lambda p: p.affine_select(p.sbuf((4, 4)), [1], 0, 1, "add", p.sbuf((4, 4)), 0.0),
     "0 (AFFINE_SELECT on POOL): cmp: add is not a comparison"),
    ("affine_select on_true shape", lambda p: p.affine_select(p.sbuf((4, 4)), [1], 0, 1, "less", p.sbuf((4, 5)), 0.0),
     "0 (AFFINE_SELECT on POOL): on_true: is 4 x 5 but dst is 4 x 4; their shapes must agree"),
    # semaphores
    ("SEM_SIGNAL 256", lambda p: p.sem_signal("pe", 256, 1),
     "0 (SEM_SIGNAL on PE): semaphore: 256 does not exist: a core has 256 (0-255)"),
    ("SEM_WAIT 1000", lambda p: p.sem_wait("dma", 1000, 1),
     "0 (SEM_WAIT on DMA): semaphore: 1000 does not exist: a core has 256 (0-255)"),
    ("wait on 256", lambda p: p.memset(p.sbuf((4, 4)), 1.0, wait=(256, 1)),
     "0 (MEMSET on DVE): sync: semaphore 256 does not exist: a core has 256 (0-255)"),
    ("signal 256", lambda p: p.iota(p.sbuf((4, 4), "int32"), [1], signal_set=(256, 1)),
     "0 (IOTA on POOL): sync: semaphore 256 does not exist: a core has 256 (0-255)"),
]


@pytest.mark.parametrize("build, message", [rule[1:] for rule in RULES], ids=[rule[0] for rule in RULES])
def test_rule(device, program, build, message):
    build(program)
    assert rejected(device, program) == f"{LOAD} {message}"


def test_hbm_to_hbm_is_a_dma_copy(device, program):
    # Nothing forbids it: DMA moves HBM to HBM inside a kernel, accumulating too.
    program.dma_copy(hbm(program, "a"), hbm(program, "b"))
    program.dma_copy(hbm(program, "c", (1000, 3)), hbm(program, "d", (3, 1000)).T, dst_rmw_op="add")
    program.dma_copy(program.parameters and AccessPattern("hbm", "fp32", (1000, 3), parameter=2), program.sbuf((100, 30)),
                     dst_rmw_op="bypass")
    with device.load(program):
        pass


def test_the_message_names_the_first_broken_instruction(device, program):
    tile = program.sbuf((4, 4))
    program.memset(tile, 1.0)
    program.tensor_copy(tile, tile, engine="act")
    program.sem_signal("dma", 3, 1)
    program.tensor_scalar(tile, tile, "add", 1.0, engine="pool", wait=(300, 1))
    program.memset(tile, 1.0, engine="pe")
    assert rejected(device, program) == f"{LOAD} 3 (TENSOR_SCALAR on POOL): sync: semaphore 300 does not exist: " \
                                        "a core has 256 (0-255)"


def test_rules_that_hold(device, program):
    # The edges of each rule, on the right side of it.
    program.tensor_copy(program.sbuf((64, 4), partition=64), program.sbuf((64, 4)))
    program.tensor_copy(program.sbuf((32, 4), partition=96), program.sbuf((32, 4), partition=32))
    program.dma_copy(program.sbuf((4, 4), partition=17), program.sbuf((4, 4), partition=3))
    program.matmul(program.psum((128, 512)), program.sbuf((128, 128)), program.sbuf((128, 512)))
    program.matmul(program.psum((1, 1), offset=2044), program.sbuf((1, 1), "fp8_e4m3"), program.sbuf((1, 1), "bf16"))
    program.transpose(program.psum((128, 128), "int8"), program.sbuf((128, 128), "int8"))
    program.tensor_tensor(program.sbuf((4, 4)), program.psum((4, 4)), program.sbuf((4, 4)), "pow")
    program.tensor_scalar(program.sbuf((4, 4)), program.sbuf((4, 4)), "add", 1.0, "bypass", reverse=3)
    program.transpose(program.sbuf((32, 32)), program.psum((32, 32)), engine="dve")
    # DVE and ACT write PSUM, as NKI's nl.zeros, tensor_copy and activation into PSUM tiles do.
    program.memset(program.psum((128, 8)), 0.0)
    program.tensor_copy(program.psum((128, 8), offset=64), program.sbuf((128, 8)), engine="act")
    program.activate(program.psum((4, 4), offset=128), "exp", program.psum((4, 4)), accumulate_out=program.psum((4, 1)))
    program.memset(program.sbuf((128, 16), offset=192 * 1024 - 64), 0.0, wait=(255, 0), signal=(255, 1))  # the last bytes
    with device.load(program) as kernel:
        assert kernel.core == 0


def test_validation_is_against_the_core_it_loads_on(runtime, program):
    # trn2's SBUF partitions hold 224 KiB, trn1's 192 KiB.
    program.memset(program.sbuf((128, 16), offset=200 * 1024), 0.0)
    assert rejected(runtime.device(0), program) == (
        f"{LOAD} 0 (MEMSET on DVE): dst: bytes 204800..<204864 of each partition run outside SBUF "
        "(196608 bytes per partition)")
    with runtime.device(1).load(program, core=0):
        pass


# -- the builders' own checks: INVALID_ARGUMENT when the instruction is appended ------------------

def test_unknown_names_are_refused_by_the_python_builder(program):
    tile = program.sbuf((4, 4))
    cases = [
        (lambda: program.activate(tile, "exp2", tile), "activation 'exp2' is not one of copy, exp, log, tanh, sigmoid, "
         "relu, gelu, gelu_tanh, silu, square, sqrt, rsqrt, reciprocal, abs, sign, erf, erf_dx, sin, arctan, softplus, "
         "mish, gelu_dx, silu_dx, gelu_apprx_sigmoid, gelu_apprx_sigmoid_dx"),
        (lambda: program.tensor_tensor(tile, tile, tile, "mod"), "ALU op 'mod' is not one of add, subtract, multiply, "
         "max, min, equal, not_equal, greater, greater_equal, less, less_equal, pow, abs, reciprocal, rsqrt, divide, "
         "bitwise_and, bitwise_or, bitwise_xor, shift_left, shift_right, bypass, logical_and, logical_or, logical_xor, "
         "logical_not, invert"),
        (lambda: program.tensor_copy(tile, tile, engine="gpsimd"), "engine 'gpsimd' is not one of pe, act, dve, pool, dma, cc"),
        (lambda: program.sem_signal("pe", 1, 1, op="subtract"), "semaphore op 'subtract' is not one of add, set"),
        (lambda: program.sbuf((4, 4), "float64"), "dtype 'float64' is not one of fp32, bf16, fp16, fp8_e4m3, fp8_e5m2, "
         "int32, int8, uint8 (or numpy's float32, bfloat16, float16, float8_e4m3, float8_e5m2, int32, int8, uint8)"),
        (lambda: program.parameter("x", (4,), np.complex64), "dtype <class 'numpy.complex64'> is not one of fp32, bf16, "
         "fp16, fp8_e4m3, fp8_e5m2, int32, int8, uint8 (or numpy's float32, bfloat16, float16, float8_e4m3, "
         "float8_e5m2, int32, int8, uint8)"),
        (lambda: program.iota(program.sbuf((4, 4, 2), "int32"), [1]),
         "iota: steps has 1 values but dst has 2 free dimensions (shape (4, 4, 2))"),
        (lambda: program.affine_select(tile, [1, 2], 0, 1, "less", tile, 0.0),
         "affine_select: steps has 2 values but dst has 1 free dimensions (shape (4, 4))"),
    ]
    for call, message in cases:
        assert failure(vtrn.InvalidArgumentError, call) == message
    assert program.instruction_count == 0
    assert list(program.parameters) == []


def test_unknown_enum_numbers_are_refused_by_the_c_builders(program):
    tile = program.sbuf((4, 4))
    cases = [
        (lambda: program.activate(tile, 26, tile), "vtrn_program_activate: fn is 26; accepted: VTRN_ACT_COPY (1) to "
         "VTRN_ACT_GELU_APPRX_SIGMOID_DX (25)"),
        (lambda: program.tensor_tensor(tile, tile, tile, 0), "vtrn_program_tensor_tensor: op is 0; accepted: "
         "VTRN_ALU_ADD (1) to VTRN_ALU_INVERT (27)"),
        (lambda: program.tensor_scalar(tile, tile, "add", 1.0, 28, 1.0), "vtrn_program_tensor_scalar: op1 is 28; "
         "accepted: VTRN_ALU_ADD (1) to VTRN_ALU_INVERT (27)"),
        (lambda: program.tensor_reduce(program.sbuf((4, 1)), tile, 99), "vtrn_program_tensor_reduce: op is 99; "
         "accepted: VTRN_ALU_ADD (1) to VTRN_ALU_INVERT (27)"),
        (lambda: program.affine_select(tile, [1], 0, 0, 0, tile, 0.0), "vtrn_program_affine_select: cmp is 0; accepted: "
         "VTRN_ALU_ADD (1) to VTRN_ALU_INVERT (27)"),
        (lambda: program.memset(tile, 1.0, engine=0x40), "vtrn_program_memset: engine is 0x40; accepted: one of "
         "VTRN_ENGINE_PE, VTRN_ENGINE_ACT, VTRN_ENGINE_DVE, VTRN_ENGINE_POOL, VTRN_ENGINE_DMA, VTRN_ENGINE_CC"),
        (lambda: program.tensor_copy(tile, tile, engine=0x6), "vtrn_program_tensor_copy: engine is 0x6; accepted: one of "
         "VTRN_ENGINE_PE, VTRN_ENGINE_ACT, VTRN_ENGINE_DVE, VTRN_ENGINE_POOL, VTRN_ENGINE_DMA, VTRN_ENGINE_CC"),
        (lambda: program.sem_wait(0, 1, 1), "vtrn_program_sem_wait: engine is 0x0; accepted: one of VTRN_ENGINE_PE, "
         "VTRN_ENGINE_ACT, VTRN_ENGINE_DVE, VTRN_ENGINE_POOL, VTRN_ENGINE_DMA, VTRN_ENGINE_CC"),
        (lambda: program.sem_signal("act", 1, 1, op=3), "vtrn_program_sem_signal: op is 3; accepted: "
         "VTRN_SEMAPHORE_ADD, VTRN_SEMAPHORE_SET"),
    ]
    for call, message in cases:
        assert failure(vtrn.InvalidArgumentError, call) == message
    assert program.instruction_count == 0


def raw_failure(status, call):
    assert call() == status
    return vtrn.last_error()


def test_operand_structs_the_c_builders_refuse(program):
    tile = program.sbuf((4, 4)).struct()
    invalid = Status.ERROR_INVALID_ARGUMENT
    for dims in (0, 5):
        bad = program.sbuf((4, 4)).struct()
        bad.dims = dims
        assert raw_failure(invalid, lambda: lib.vtrn_program_dma_copy(program.handle, bad, tile, None)) == \
            f"vtrn_program_dma_copy: dst.dims is {dims}; accepted: 1 to 4"
    bad = program.sbuf((4, 4)).struct()
    bad.space = 4
    assert raw_failure(invalid, lambda: lib.vtrn_program_transpose(program.handle, tile, bad, None)) == \
        "vtrn_program_transpose: src.space is 4; accepted: VTRN_MEMORY_SBUF, VTRN_MEMORY_PSUM, VTRN_MEMORY_HBM"
    bad = program.sbuf((4, 4)).struct()
    bad.dtype = 9
    assert raw_failure(invalid, lambda: lib.vtrn_program_tensor_copy(program.handle, 4, tile, bad, None)) == \
        "vtrn_program_tensor_copy: src.dtype is 9; accepted: VTRN_DTYPE_FP32 (1) to VTRN_DTYPE_UINT8 (8)"
    scale = ScalarStruct(is_tile=1, value=0.0, tile=bad)
    assert raw_failure(invalid, lambda: lib.vtrn_program_activate(program.handle, tile, 2, tile, byref(scale), None,
                                                                  None, None)) == \
        "vtrn_program_activate: scale.tile.dtype is 9; accepted: VTRN_DTYPE_FP32 (1) to VTRN_DTYPE_UINT8 (8)"
    kind = ScalarStruct(is_tile=3, value=1.0, tile=tile)
    assert raw_failure(invalid, lambda: lib.vtrn_program_tensor_scalar(program.handle, 4, tile, tile, 1, byref(kind), 22,
                                                                       None, 0, None)) == \
        "vtrn_program_tensor_scalar: x0.is_tile is 3; accepted: VTRN_SCALAR_IMMEDIATE (0), VTRN_SCALAR_TILE (1), " \
        "VTRN_SCALAR_INT32 (2)"
    options = DmaCopyOptionsStruct.init(dst_rmw_op=99)
    assert raw_failure(invalid, lambda: lib.vtrn_program_dma_copy_ex(program.handle, tile, tile, byref(options), None)) == \
        "vtrn_program_dma_copy_ex: options.dst_rmw_op is 99; accepted: VTRN_ALU_ADD (1) to VTRN_ALU_INVERT (27)"
    options = DmaCopyOptionsStruct.init(indirect=1)
    assert raw_failure(invalid, lambda: lib.vtrn_program_dma_copy_ex(program.handle, tile, tile, byref(options), None)) == \
        "vtrn_program_dma_copy_ex: options.index is NULL; an indirect copy needs its index tile"
    options = DmaCopyOptionsStruct.init(index=ctypes.pointer(tile))
    assert raw_failure(invalid, lambda: lib.vtrn_program_dma_copy_ex(program.handle, tile, tile, byref(options), None)) == \
        "vtrn_program_dma_copy_ex: options.index is set but options.indirect is VTRN_DMA_INDIRECT_NONE"
    options = DmaCopyOptionsStruct.init(indirect=3, index=ctypes.pointer(tile))
    assert raw_failure(invalid, lambda: lib.vtrn_program_dma_copy_ex(program.handle, tile, tile, byref(options), None)) == \
        "vtrn_program_dma_copy_ex: options.indirect is 3; accepted: VTRN_DMA_INDIRECT_NONE, VTRN_DMA_INDIRECT_SRC, " \
        "VTRN_DMA_INDIRECT_DST"
    options = DmaCopyOptionsStruct.init(oob_mode=2)
    assert raw_failure(invalid, lambda: lib.vtrn_program_dma_copy_ex(program.handle, tile, tile, byref(options), None)) == \
        "vtrn_program_dma_copy_ex: options.oob_mode is 2; accepted: VTRN_DMA_OOB_ERROR, VTRN_DMA_OOB_SKIP"
    options = DmaCopyOptionsStruct.init(struct_size=8)
    assert raw_failure(invalid, lambda: lib.vtrn_program_dma_copy_ex(program.handle, tile, tile, byref(options), None)) == \
        "vtrn_program_dma_copy_ex: options.struct_size is 8, smaller than 32, the size of the first " \
        "vtrn_dma_copy_options_t; initialize it with VTRN_DMA_COPY_OPTIONS_INIT"
    sync = SyncStruct.none()
    sync.signal_op = 7
    assert raw_failure(invalid, lambda: lib.vtrn_program_memset(program.handle, 4, tile, 1.0, byref(sync))) == \
        "vtrn_program_memset: sync.signal_op is 7; accepted: VTRN_SEMAPHORE_ADD, VTRN_SEMAPHORE_SET"
    # NULL pointers that are not optional.
    assert raw_failure(invalid, lambda: lib.vtrn_program_activate(program.handle, tile, 2, tile, None, None, None,
                                                                  None)) == "vtrn_program_activate: scale is NULL"
    assert raw_failure(invalid, lambda: lib.vtrn_program_tensor_scalar(program.handle, 4, tile, tile, 1, None, 22, None,
                                                                       0, None)) == "vtrn_program_tensor_scalar: x0 is NULL"
    assert raw_failure(invalid, lambda: lib.vtrn_program_iota(program.handle, tile, None, 0, 0, None)) == \
        "vtrn_program_iota: steps is NULL"
    assert raw_failure(invalid, lambda: lib.vtrn_program_affine_select(program.handle, tile, None, 0, 0, 9, tile, 0.0,
                                                                       None)) == "vtrn_program_affine_select: steps is NULL"
    assert raw_failure(invalid, lambda: lib.vtrn_program_instruction_count(program.handle, None)) == \
        "vtrn_program_instruction_count: count is NULL"
    assert program.instruction_count == 0


def test_access_patterns_of_more_than_four_free_axes_are_refused_by_python(program):
    with pytest.raises(ValueError) as caught:
        program.memset(program.sbuf((4, 1, 2, 1, 2, 1)), 0.0)
    assert str(caught.value) == "the view has 5 free axes (shape (4, 1, 2, 1, 2, 1)); an access pattern has at most 4"


def test_parameter_names_and_sizes(program):
    program.parameter("a", (4,))
    invalid = vtrn.InvalidArgumentError
    assert failure(invalid, lambda: program.parameter("a", (8,))) == \
        'vtrn_program_add_parameter: the program has a parameter named "a" already'
    assert failure(invalid, lambda: program.parameter("", (8,))) == \
        'vtrn_program_add_parameter: parameter name "" must be 1 to 63 bytes'
    long = "p" * 64
    assert failure(invalid, lambda: program.parameter(long, (8,))) == \
        f'vtrn_program_add_parameter: parameter name "{long}" must be 1 to 63 bytes'
    assert failure(invalid, lambda: program.parameter("empty", (4, 0))) == \
        'vtrn_program_add_parameter: parameter "empty" has 0 bytes'
    assert failure(invalid, lambda: program.parameter("é" * 32, (8,))) == \
        f'vtrn_program_add_parameter: parameter name "{"é" * 32}" must be 1 to 63 bytes'  # 64 bytes of UTF-8
    assert program.parameter("q" * 63, (2, 3), "bf16").shape == (2, 3)
    assert program.parameter("é" * 31, (1,)).parameter == 2
    assert list(program.parameters) == ["a", "q" * 63, "é" * 31]
    assert program.parameters["q" * 63] == vtrn.Parameter("q" * 63, 1, (2, 3), "bf16", 12)
    with pytest.raises(TypeError):
        program.parameter(b"bytes", (4,))


def test_python_argument_checks(program):
    tile = program.sbuf((4, 4))
    with pytest.raises(TypeError) as caught:
        program.tensor_copy(tile, np.zeros((4, 4)))
    assert str(caught.value) == "src is a ndarray; an operand is an AccessPattern (a tile, a parameter or a view of one)"
    with pytest.raises(TypeError) as caught:
        program.activate(tile, "exp", tile, scale="2")
    assert str(caught.value) == "scale is a str; it is a number or a [P,1] AccessPattern"
    with pytest.raises(ValueError) as caught:
        program.memset(tile, 0.0, signal=(1, 1), signal_set=(1, 2))
    assert str(caught.value) == "give signal (add) or signal_set (set), not both"
    with pytest.raises(TypeError) as caught:
        program.memset(tile, 0.0, wait=3)
    assert str(caught.value) == "wait is 3; it is a (semaphore, value) pair"
    with pytest.raises(ValueError) as caught:
        program.memset(tile, 0.0, wait=(-1, 0))
    assert str(caught.value) == "wait: semaphore -1 is out of range (0 to 2^31 - 1; the core has 0-255)"
    with pytest.raises(ValueError) as caught:
        program.memset(tile, 0.0, signal=(0, -1))
    assert str(caught.value) == "signal: value -1 is out of range: it must be 0 to 4294967295 (a uint32_t)"
    with pytest.raises(ValueError) as caught:
        program.iota(tile, [2**31])
    assert str(caught.value) == "step 2147483648 is out of range: it must fit an int32_t"
    with pytest.raises(ValueError) as caught:
        program.dma_copy(tile, tile, src_index=tile, dst_index=tile)
    assert str(caught.value) == "give src_index (a gather) or dst_index (a scatter), not both"
    assert failure(vtrn.InvalidArgumentError, lambda: program.dma_copy(tile, tile, src_index=tile, oob_mode="clamp")) == \
        "oob_mode 'clamp' is not one of error, skip"
    for immediate in (2**32, -(2**31) - 1):
        with pytest.raises(ValueError) as caught:
            program.tensor_scalar(tile, tile, "bitwise_and", immediate)
        assert str(caught.value) == f"x0 {immediate} is out of range: an integer immediate is 32 bits (-2^31 to 2^32 - 1)"
    with pytest.raises(TypeError) as caught:
        program.tensor_tensor(tile, tile, tile, 1.5)
    assert str(caught.value) == "ALU op is a float; give its name (add, subtract, multiply, max, min, equal, not_equal, " \
                                "greater, greater_equal, less, less_equal, pow, abs, reciprocal, rsqrt, divide, " \
                                "bitwise_and, bitwise_or, bitwise_xor, shift_left, shift_right, bypass, logical_and, " \
                                "logical_or, logical_xor, logical_not, invert)"
    assert program.instruction_count == 0


def test_a_program_of_another_runtime(device):
    with open_runtime(topology="trn1") as other, other.program() as program:
        program.memset(program.sbuf((4, 4)), 0.0)
        message = failure(vtrn.InvalidArgumentError, lambda: device.load(program, core=1))
        owner, loader = re.fullmatch(r"vtrn_kernel_load: the program belongs to runtime (\d+), not to runtime (\d+)",
                                     message).groups()
        assert owner != loader
