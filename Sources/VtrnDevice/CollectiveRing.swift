import Synchronization

/// A core's CC ring: the DMA queue its collective engine moves a collective's data with, on the
/// core's last DMA engine, apart from the queues a program opens (Neuron keeps DMA rings of its
/// own for collectives). The rank's thread writes the descriptor pairs and serves them itself with
/// the engine's code (`DmaQueueHardware.serveInline`), so a collective's transfers are DMA like
/// any other: a DMA abort or hang aimed at the core or the engine, an uncorrectable HBM error
/// under a source, a reset and a loss stop them, and the engine's byte counter counts them.
/// Reductions are DMA with compute (`DmaDescriptor.compute`): the arriving data are combined into
/// the destination as they land.
///
/// Used by one thread at a time: the core's, which runs one execution at a time.
public final class CollectiveRing: @unchecked Sendable {
    /// Descriptors per ring: 16 MiB of 64 KiB descriptors per doorbell.
    public static let entries = 256
    /// The ring's queue number: none of the program-visible queues' (a DMA fault aimed at a
    /// queue number does not hit it; one aimed at the core or the engine does).
    public static let queueIndex = -1

    let hardware: DmaQueueHardware
    /// Published descriptors and sequences so far.
    private var tail: UInt64 = 0
    private var sequence: UInt64 = 0
    /// Where the current collective's descriptors begin.
    private(set) var collectiveStart: UInt64 = 0

    /// The engine's buffer a fold accumulates a block in (one descriptor's worth).
    private let accumulator = UnsafeMutableRawPointer.allocate(byteCount: DmaDescriptor.maximumBytes, alignment: 64)

    init(hardware: DmaQueueHardware) { self.hardware = hardware }
    deinit { accumulator.deallocate() }

    /// The DMA engine (of the core) the ring is on.
    public var engineIndex: Int { hardware.engineIndex }

    /// Before a collective: a ring that a fault, reset or loss stopped in an earlier one starts
    /// again past what it had been given (what a driver does after failing the work in flight).
    func prepare(peers: [DeviceFaults]) {
        hardware.peers = peers
        pending = 0
        if hardware.isStopped { hardware.restart(at: tail, sequence: sequence, quiesce: false) }
        collectiveStart = tail
    }

    /// Folds `count` elements of `inputs` left in their order, `((in[0] op in[1]) op ...)`, rounded
    /// to the dtype at every step, and writes the result to every one of `outputs`: per 64 KiB
    /// block, a copy of the first input into the ring's accumulator, one compute descriptor per
    /// other input, and a copy to each output (so the accumulator stays in cache, and an output
    /// that is also an input is written only after it was read).
    func fold(_ inputs: [UnsafeRawPointer], into outputs: [UnsafeMutableRawPointer], count: Int, op: AluOp,
              dtype: DataType) -> DmaQueueHardware.Stop? {
        let bytes = count * dtype.size
        guard bytes > 0, !inputs.isEmpty else { return nil }
        let compute = DmaDescriptor.compute(op, dtype, accumulating: true)
        var done = 0
        while done < bytes {
            let length = min(DmaDescriptor.maximumBytes, bytes - done)
            if let stop = emit(to: accumulator, from: inputs[0] + done, length: length, flags: 0) { return stop }
            for input in inputs.dropFirst() {
                if let stop = emit(to: accumulator, from: input + done, length: length, flags: compute) { return stop }
            }
            for output in outputs {
                if let stop = emit(to: output + done, from: UnsafeRawPointer(accumulator), length: length, flags: 0) { return stop }
            }
            done += length
        }
        return flush()
    }

    /// Descriptors written and not yet served.
    private var pending = 0

    /// Writes one descriptor pair; serves the ring first when it is full.
    private func emit(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, length: Int,
                      flags: UInt32) -> DmaQueueHardware.Stop? {
        if pending == Self.entries, let stop = flush() { return stop }
        var control = UInt32(truncatingIfNeeded: length) & DmaDescriptor.lengthMask
        control |= DmaDescriptor.ringId(position: tail, entries: Self.entries) << DmaDescriptor.ringIdShift
        control |= DmaDescriptor.first | DmaDescriptor.last
        let slot = Int(tail % UInt64(Self.entries))
        hardware.sourceRing[slot] = DmaDescriptor(lengthControl: control, address: UInt64(UInt(bitPattern: source)))
        hardware.destinationRing[slot] = DmaDescriptor(lengthControl: control | flags, address: UInt64(UInt(bitPattern: destination)))
        tail += 1
        pending += 1
        return nil
    }

    /// Rings the doorbell for what is written and serves it; the stop, if the ring stopped.
    private func flush() -> DmaQueueHardware.Stop? {
        guard pending > 0 else { return nil }
        pending = 0
        sequence += 1
        hardware.serveInline(tail: tail, sequence: sequence)
        return hardware.stop
    }

    /// Moves `bytes` from `source` to `destination`, or with `reduce` combines them into it
    /// (`source op destination`, rounded to the dtype). Nil when done, else why the ring stopped.
    /// A copy of a buffer onto itself moves nothing.
    func transfer(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, bytes: Int,
                  reduce: (op: AluOp, dtype: DataType)? = nil) -> DmaQueueHardware.Stop? {
        if reduce == nil && UnsafeRawPointer(destination) == source { return nil }
        let flags = reduce.map { DmaDescriptor.compute($0.op, $0.dtype) } ?? 0
        var done = 0
        while done < bytes {
            let length = min(DmaDescriptor.maximumBytes, bytes - done)
            if let stop = emit(to: destination + done, from: source + done, length: length, flags: flags) { return stop }
            done += length
        }
        return flush()
    }
}
