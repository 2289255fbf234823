import Vtrn
import VtrnDevice

/// Kernels written against the instruction set, for Swift hosts, the `vtrn` tool and tests: GEMM,
/// row softmax and RMSNorm. Each builds one program whose engines overlap their work, ordered by
/// semaphores exactly as a hand-written NKI kernel would be.
public enum StandardKernels {
    /// C[M,N] = A[M,K] · B[K,N], parameters "a", "b", "c" in row-major fp32, tiled 128 x 128 x 512
    /// with K accumulated in PSUM; `tileType` is the SBUF type of the operands (fp32 or bf16: DMA
    /// converts on the way in).
    ///
    /// Per output tile (128 rows of A, 512 columns of B): DMA loads Aᵀ tiles (a strided access:
    /// partition = k, elements = m, stride K) once per row block, and B tiles into a ring of 4
    /// slots; PE multiplies, accumulating over K in one of two PSUM banks; DVE copies the bank to
    /// SBUF; DMA stores it. Semaphores: 0 B tiles loaded, 1 B tiles consumed, 2 Aᵀ tiles loaded,
    /// 3 row blocks finished by PE, 4 output tiles finished by PE, 5 tiles copied out of PSUM,
    /// 6 tiles stored.
    public static func gemm(_ program: Program, m: Int, k: Int, n: Int, tileType: DataType = .fp32) throws(VtrnError) {
        let a = try program.addParameter("a", bytes: UInt64(m * k * 4))
        let b = try program.addParameter("b", bytes: UInt64(k * n * 4))
        let c = try program.addParameter("c", bytes: UInt64(m * n * 4))
        let kTiles = (k + 127) / 128, size = tileType.size
        // SBUF layout per partition: two Aᵀ regions (one per row block in flight), 4 B slots, 2 output slots.
        let aRegion = kTiles * 128 * size
        let bBase = 2 * aRegion, bSlot = 512 * size, outBase = bBase + 4 * bSlot
        guard outBase + 2 * 512 * 4 <= 196_608 else {
            throw .invalidArgument("K = \(k) needs \(outBase + 4096) bytes of SBUF per partition for its Aᵀ tiles; this GEMM keeps K under about 20000")
        }
        func sbuf(_ partitions: Int, _ offset: Int, _ elements: Int, _ type: DataType) -> AccessPattern {
            AccessPattern(space: .sbuf, dtype: type, partitions: partitions, offset: offset, sizes: [elements])
        }
        func add(_ engine: Engine, _ operation: Operation, wait: (Int, Int)? = nil, signal: Int? = nil) throws(VtrnError) {
            try program.append(Instruction(engine: engine, operation: operation, sync: Synchronization(
                waitSemaphore: wait?.0, waitValue: UInt32(wait?.1 ?? 0), signalSemaphore: signal, signalOp: .add, signalValue: 1)))
        }
        // When all of Aᵀ fits in SBUF with room to spare, load it once and stream B column blocks
        // past it: A and B each cross DMA once.
        let mTiles = (m + 127) / 128, nBlocks = (n + 511) / 512
        let residentA = mTiles * kTiles * 128 * size, columnBlock = kTiles * 512 * size
        if residentA + 2 * columnBlock + 8 * 2048 <= 196_608 {
            try gemmWithResidentA(program, m: m, k: k, n: n, a: a, b: b, c: c, tileType: tileType, mTiles: mTiles, kTiles: kTiles,
                                  nBlocks: nBlocks, columnBlock: columnBlock)
            return
        }
        var bLoads = 0, aLoads = 0, tile = 0, rowBlock = 0
        var pendingStore: (tile: Int, rows: Int, columns: Int, m0: Int, n0: Int)?
        func store(_ pending: (tile: Int, rows: Int, columns: Int, m0: Int, n0: Int)) throws(VtrnError) {
            try add(.dma, .dmaCopy(destination: AccessPattern(space: .hbm, dtype: .fp32, partitions: pending.rows,
                                                              offset: (pending.m0 * n + pending.n0) * 4, parameter: c,
                                                              sizes: [pending.columns], partitionStride: n),
                                   source: sbuf(pending.rows, outBase + (pending.tile % 2) * 2048, pending.columns, .fp32)),
                    wait: (5, pending.tile + 1), signal: 6)
        }
        for m0 in stride(from: 0, to: m, by: 128) {
            let rows = min(128, m - m0)
            let region = (rowBlock % 2) * aRegion
            // Aᵀ tiles of this row block; the region was last read by row block rowBlock - 2.
            for kt in 0..<kTiles {
                let k0 = kt * 128, depth = min(128, k - k0)
                let wait: (Int, Int)? = kt == 0 && rowBlock >= 2 ? (3, rowBlock - 1) : nil
                try add(.dma, .dmaCopy(destination: sbuf(depth, region + kt * 128 * size, rows, tileType),
                                       source: AccessPattern(space: .hbm, dtype: .fp32, partitions: depth, offset: (m0 * k + k0) * 4,
                                                             parameter: a, sizes: [rows], strides: [k], partitionStride: 1)),
                        wait: wait, signal: 2)
                aLoads += 1
            }
            for n0 in stride(from: 0, to: n, by: 512) {
                let columns = min(512, n - n0)
                let bank = (tile % 2) * 2048
                for kt in 0..<kTiles {
                    let k0 = kt * 128, depth = min(128, k - k0)
                    let slot = bBase + (bLoads % 4) * bSlot
                    try add(.dma, .dmaCopy(destination: sbuf(depth, slot, columns, tileType),
                                           source: AccessPattern(space: .hbm, dtype: .fp32, partitions: depth, offset: (k0 * n + n0) * 4,
                                                                 parameter: b, sizes: [columns], partitionStride: n)),
                            wait: bLoads >= 4 ? (1, bLoads - 3) : nil, signal: 0)
                    // PE: this row block's Aᵀ tile k is loaded, and (first pass) the PSUM bank is free.
                    try add(.pe, .semaphoreWait(semaphore: 2, value: UInt32(aLoads - kTiles + kt + 1)))
                    if kt == 0 && tile >= 2 { try add(.pe, .semaphoreWait(semaphore: 5, value: UInt32(tile - 1))) }
                    let last = kt == kTiles - 1
                    try program.append(Instruction(engine: .pe, operation: .matmul(
                        destination: AccessPattern(space: .psum, dtype: .fp32, partitions: rows, offset: bank, sizes: [columns]),
                        stationary: sbuf(depth, region + kt * 128 * size, rows, tileType),
                        moving: sbuf(depth, slot, columns, tileType), accumulate: kt > 0),
                        sync: Synchronization(waitSemaphore: 0, waitValue: UInt32(bLoads + 1), signalSemaphore: 1, signalOp: .add, signalValue: 1)))
                    if last { try add(.pe, .semaphoreSignal(semaphore: 4, op: .add, value: 1)) }
                    bLoads += 1
                }
                // DVE: PSUM bank to SBUF, once the output slot's previous tile is stored.
                if tile >= 2 { try add(.dve, .semaphoreWait(semaphore: 6, value: UInt32(tile - 1))) }
                try add(.dve, .tensorCopy(destination: sbuf(rows, outBase + (tile % 2) * 2048, columns, .fp32),
                                          source: AccessPattern(space: .psum, dtype: .fp32, partitions: rows, offset: bank, sizes: [columns])),
                        wait: (4, tile + 1), signal: 5)
                if let pendingStore { try store(pendingStore) }
                pendingStore = (tile, rows, columns, m0, n0)
                tile += 1
            }
            try add(.pe, .semaphoreSignal(semaphore: 3, op: .add, value: 1))
            rowBlock += 1
        }
        if let pendingStore { try store(pendingStore) }
    }

    /// GEMM with every Aᵀ tile resident in SBUF. Semaphores: 0 B tiles loaded, 1 B column blocks
    /// finished by PE, 2 Aᵀ tiles loaded, 4 output tiles finished by PE, 5 tiles copied out of
    /// PSUM, 6 tiles stored. PSUM banks and output slots rotate through 8.
    static func gemmWithResidentA(_ program: Program, m: Int, k: Int, n: Int, a: Int, b: Int, c: Int, tileType: DataType,
                                  mTiles: Int, kTiles: Int, nBlocks: Int, columnBlock: Int) throws(VtrnError) {
        let size = tileType.size
        let aTile = 128 * size
        let bBase = mTiles * kTiles * aTile, outBase = bBase + 2 * columnBlock
        func sbuf(_ partitions: Int, _ offset: Int, _ elements: Int, _ type: DataType) -> AccessPattern {
            AccessPattern(space: .sbuf, dtype: type, partitions: partitions, offset: offset, sizes: [elements])
        }
        func add(_ engine: Engine, _ operation: Operation, wait: (Int, Int)? = nil, signal: Int? = nil) throws(VtrnError) {
            try program.append(Instruction(engine: engine, operation: operation, sync: Synchronization(
                waitSemaphore: wait?.0, waitValue: UInt32(wait?.1 ?? 0), signalSemaphore: signal, signalOp: .add, signalValue: 1)))
        }
        // Aᵀ, tile (mt, kt) at bytes (mt * kTiles + kt) * aTile of partitions 0..<depth.
        for mt in 0..<mTiles {
            for kt in 0..<kTiles {
                let m0 = mt * 128, k0 = kt * 128, rows = min(128, m - m0), depth = min(128, k - k0)
                try add(.dma, .dmaCopy(destination: sbuf(depth, (mt * kTiles + kt) * aTile, rows, tileType),
                                       source: AccessPattern(space: .hbm, dtype: .fp32, partitions: depth, offset: (m0 * k + k0) * 4,
                                                             parameter: a, sizes: [rows], strides: [k], partitionStride: 1)),
                        signal: 2)
            }
        }
        var tile = 0, bLoads = 0
        var stores: [(tile: Int, rows: Int, columns: Int, m0: Int, n0: Int)] = []
        func store(_ pending: (tile: Int, rows: Int, columns: Int, m0: Int, n0: Int)) throws(VtrnError) {
            try add(.dma, .dmaCopy(destination: AccessPattern(space: .hbm, dtype: .fp32, partitions: pending.rows,
                                                              offset: (pending.m0 * n + pending.n0) * 4, parameter: c,
                                                              sizes: [pending.columns], partitionStride: n),
                                   source: sbuf(pending.rows, outBase + (pending.tile % 8) * 2048, pending.columns, .fp32)),
                    wait: (5, pending.tile + 1), signal: 6)
        }
        try add(.pe, .semaphoreWait(semaphore: 2, value: UInt32(mTiles * kTiles)))
        for block in 0..<nBlocks {
            let n0 = block * 512, columns = min(512, n - n0)
            let slot = bBase + (block % 2) * columnBlock
            // B tiles of this column block; the slot was last read by block - 2.
            for kt in 0..<kTiles {
                let k0 = kt * 128, depth = min(128, k - k0)
                try add(.dma, .dmaCopy(destination: sbuf(depth, slot + kt * 512 * size, columns, tileType),
                                       source: AccessPattern(space: .hbm, dtype: .fp32, partitions: depth, offset: (k0 * n + n0) * 4,
                                                             parameter: b, sizes: [columns], partitionStride: n)),
                        wait: kt == 0 && block >= 2 ? (1, block - 1) : nil, signal: 0)
                bLoads += 1
            }
            for pending in stores { try store(pending) }
            stores.removeAll()
            for mt in 0..<mTiles {
                let m0 = mt * 128, rows = min(128, m - m0)
                let bank = (tile % 8) * 2048
                if tile >= 8 { try add(.pe, .semaphoreWait(semaphore: 5, value: UInt32(tile - 7))) }
                for kt in 0..<kTiles {
                    let depth = min(128, k - kt * 128)
                    try add(.pe, .matmul(destination: AccessPattern(space: .psum, dtype: .fp32, partitions: rows, offset: bank, sizes: [columns]),
                                         stationary: sbuf(depth, (mt * kTiles + kt) * aTile, rows, tileType),
                                         moving: sbuf(depth, slot + kt * 512 * size, columns, tileType), accumulate: kt > 0),
                            wait: (0, bLoads - kTiles + kt + 1))
                }
                try add(.pe, .semaphoreSignal(semaphore: 4, op: .add, value: 1))
                if tile >= 8 { try add(.dve, .semaphoreWait(semaphore: 6, value: UInt32(tile - 7))) }
                try add(.dve, .tensorCopy(destination: sbuf(rows, outBase + (tile % 8) * 2048, columns, .fp32),
                                          source: AccessPattern(space: .psum, dtype: .fp32, partitions: rows, offset: bank, sizes: [columns])),
                        wait: (4, tile + 1), signal: 5)
                stores.append((tile, rows, columns, m0, n0))
                tile += 1
            }
            try add(.pe, .semaphoreSignal(semaphore: 1, op: .add, value: 1))
        }
        for pending in stores { try store(pending) }
    }

    /// Row softmax of x[rows, columns] (fp32) into "y": per 128-row block, TENSOR_REDUCE max
    /// (negated), ACTIVATE exp with that as bias and the row sums accumulated, ACTIVATE reciprocal
    /// of the sums, TENSOR_SCALAR multiply. Semaphores: 0 loaded, 1 max, 2 sums inverted,
    /// 3 normalised, 4 stored.
    public static func softmax(_ program: Program, rows: Int, columns: Int) throws(VtrnError) {
        let x = try program.addParameter("x", bytes: UInt64(rows * columns * 4))
        let y = try program.addParameter("y", bytes: UInt64(rows * columns * 4))
        let rowBytes = columns * 4
        guard 4 * rowBytes + 64 <= 196_608 else { throw .invalidArgument("softmax rows of \(columns) columns do not fit SBUF") }
        func tile(_ partitions: Int, _ offset: Int, _ elements: Int) -> AccessPattern {
            AccessPattern(space: .sbuf, dtype: .fp32, partitions: partitions, offset: offset, sizes: [elements])
        }
        func add(_ engine: Engine, _ operation: Operation, wait: (Int, Int)? = nil, signal: Int? = nil) throws(VtrnError) {
            try program.append(Instruction(engine: engine, operation: operation, sync: Synchronization(
                waitSemaphore: wait?.0, waitValue: UInt32(wait?.1 ?? 0), signalSemaphore: signal, signalOp: .add, signalValue: 1)))
        }
        let statistics = 4 * rowBytes
        for (block, r0) in stride(from: 0, to: rows, by: 128).enumerated() {
            let count = min(128, rows - r0), slot = block % 2
            let input = tile(count, slot * rowBytes, columns), output = tile(count, (2 + slot) * rowBytes, columns)
            let negatedMax = tile(count, statistics + slot * 16, 1), sum = tile(count, statistics + slot * 16 + 4, 1)
            let inverse = tile(count, statistics + slot * 16 + 8, 1)
            let rowsInHBM = { (parameter: Int) in
                AccessPattern(space: .hbm, dtype: .fp32, partitions: count, offset: r0 * rowBytes, parameter: parameter,
                              sizes: [columns], partitionStride: columns)
            }
            // The input slot was last read by block - 2's exp; the output slot last stored by block - 2.
            try add(.dma, .dmaCopy(destination: input, source: rowsInHBM(x)), wait: block >= 2 ? (2, block - 1) : nil, signal: 0)
            try add(.dve, .tensorReduce(destination: negatedMax, source: input, op: .max, negate: true), wait: (0, block + 1), signal: 1)
            try add(.act, .activate(destination: input, function: .exp, source: input, scale: .immediate(1), bias: negatedMax,
                                    accumulateOut: sum), wait: (1, block + 1))
            try add(.act, .activate(destination: inverse, function: .reciprocal, source: sum, scale: .immediate(1), bias: nil,
                                    accumulateOut: nil), signal: 2)
            if block >= 2 { try add(.dve, .semaphoreWait(semaphore: 4, value: UInt32(block - 1))) }
            try add(.dve, .tensorScalar(destination: output, source: input, op0: .multiply, x0: .tile(inverse), op1: .bypass, x1: nil,
                                        reverse: 0), wait: (2, block + 1), signal: 3)
            try add(.dma, .dmaCopy(destination: rowsInHBM(y), source: output), wait: (3, block + 1), signal: 4)
        }
    }
}
