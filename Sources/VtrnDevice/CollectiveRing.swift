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

    init(hardware: DmaQueueHardware) { self.hardware = hardware }

    /// The DMA engine (of the core) the ring is on.
    public var engineIndex: Int { hardware.engineIndex }
    /// Bytes the ring has moved since the device was made.
    public var bytesCompleted: UInt64 { hardware.bytesCompleted }

    /// Before a collective: a ring that a fault, reset or loss stopped in an earlier one starts
    /// again past what it had been given (what a driver does after failing the work in flight).
    func prepare() {
        if hardware.isStopped { hardware.restart(at: tail, sequence: sequence, quiesce: false) }
        collectiveStart = tail
    }

    /// Moves `bytes` from `source` to `destination`, or with `reduce` combines them into it
    /// (`source op destination`, rounded to the dtype). Nil when done, else why the ring stopped.
    func transfer(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, bytes: Int,
                  reduce: (op: AluOp, dtype: DataType)? = nil) -> DmaQueueHardware.Stop? {
        let compute = reduce.map { DmaDescriptor.compute($0.op, $0.dtype) } ?? 0
        let entries = Self.entries
        var done = 0
        while done < bytes {
            var position = tail
            var used = 0
            while done < bytes && used < entries {
                let length = min(DmaDescriptor.maximumBytes, bytes - done)
                var control = UInt32(truncatingIfNeeded: length) & DmaDescriptor.lengthMask
                control |= DmaDescriptor.ringId(position: position, entries: entries) << DmaDescriptor.ringIdShift
                if done == 0 { control |= DmaDescriptor.first }
                if done + length == bytes { control |= DmaDescriptor.last }
                let slot = Int(position % UInt64(entries))
                hardware.sourceRing[slot] = DmaDescriptor(lengthControl: control, address: UInt64(UInt(bitPattern: source + done)))
                hardware.destinationRing[slot] = DmaDescriptor(lengthControl: control | compute,
                                                               address: UInt64(UInt(bitPattern: destination + done)))
                done += length
                position += 1
                used += 1
            }
            tail = position
            sequence += 1
            hardware.serveInline(tail: tail, sequence: sequence)
            if let stop = hardware.stop { return stop }
        }
        return nil
    }
}
