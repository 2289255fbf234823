import CVtrnSystem
import Synchronization
import VtrnDevice

#if canImport(Glibc)
import Glibc
#endif

/// A block of a device's HBM, allocated by `Device.allocate(_:alignment:)`. It is freed by
/// `free()`, when it is no longer referenced, or when its runtime closes.
public final class DeviceMemory: Sendable {
    public let device: Device
    let lease: BlockLease
    var block: HighBandwidthMemory.Block { lease.block }
    /// The block's offset in the device's HBM address space.
    public var address: UInt64 { block.address }
    public let bytes: UInt64
    public let alignment: UInt64
    private let freed = Atomic<Bool>(false)

    init(device: Device, block: HighBandwidthMemory.Block, bytes: UInt64, alignment: UInt64) {
        self.device = device
        self.lease = BlockLease(hbm: device.hardware.hbm, block: block)
        self.bytes = bytes
        self.alignment = alignment
    }

    /// The host memory that backs the block (HBM is host memory here).
    public var pointer: UnsafeMutableRawPointer { device.hardware.hbm.pointer(address) }

    /// Freed by `free()`, or by its runtime's closing.
    public var isFreed: Bool { freed.load(ordering: .acquiring) || device.state.isClosed }

    /// Gives the block up. Idempotent. Its space returns to the device at once, or, if an
    /// enqueued transfer still uses it, when that transfer's queue next notices its completion:
    /// new allocations never receive bytes from a transfer still in flight.
    public func free() {
        guard !freed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        lease.release()
    }

    deinit { free() }
}

extension Device {
    /// Allocates `bytes` of HBM aligned to `alignment` (a power of two up to 1 GiB; 0 means 64).
    /// Out of memory throws `.outOfDeviceMemory` with the usage report Neuron gives.
    public func allocate(_ bytes: UInt64, alignment: UInt64 = 0) throws(VtrnError) -> DeviceMemory {
        try checkUsable()
        guard bytes > 0 else { throw .invalidArgument("bytes is 0; a device memory block holds at least 1 byte") }
        let alignment = alignment == 0 ? HighBandwidthMemory.defaultAlignment : alignment
        guard alignment & (alignment - 1) == 0, alignment <= HighBandwidthMemory.maximumAlignment else {
            throw .invalidArgument("alignment \(alignment) is not a power of two up to 1 GiB (or 0 for the default, 64)")
        }
        switch hardware.hbm.allocate(bytes, alignment: alignment, category: .tensor, owner: runtime.serial) {
        case .success(let block):
            let memory = DeviceMemory(device: self, block: block, bytes: bytes, alignment: alignment)
            // A runtime closing meanwhile reclaims the block; the object then reads as freed.
            if state.isClosed {
                memory.free()
                try state.checkOpen()
            }
            return memory
        case .failure(let failure):
            throw VtrnError(.outOfDeviceMemory, Self.outOfMemoryReport(device: index, name: hardware.preset.name,
                                                                        requested: bytes, alignment: alignment,
                                                                        usage: failure.usage))
        }
    }

    static func outOfMemoryReport(device: Int, name: String, requested: UInt64, alignment: UInt64,
                                  usage: BestFitAllocator.Usage) -> String {
        let categories = BestFitAllocator.Category.allCases.map { "\($0) \(byteCount(usage.byCategory[$0.rawValue]))" }
        return "device \(device) (\(name)) cannot allocate \(byteCount(requested)) (alignment \(alignment)): "
            + "\(byteCount(usage.free)) of \(byteCount(usage.capacity)) free, largest free block \(byteCount(usage.largestFreeBlock)); "
            + "in use: \(categories.joined(separator: ", ")) in \(usage.allocationCount) blocks"
    }

    /// The device's HBM usage: shared by every runtime that has the device.
    public var memoryUsage: BestFitAllocator.Usage {
        get throws(VtrnError) {
            try state.checkOpen()
            return hardware.hbm.usage
        }
    }
}

/// Who still uses a block of HBM: its owner (until it frees it) and each enqueued transfer that
/// reads or writes it. The space returns to the allocator when the last one lets go. (A count of
/// our own: a weak or extra strong reference would cost the DMA hot path more.)
final class BlockLease: Sendable {
    let hbm: HighBandwidthMemory
    let block: HighBandwidthMemory.Block
    private let users = Atomic<Int>(1)

    init(hbm: HighBandwidthMemory, block: HighBandwidthMemory.Block) {
        self.hbm = hbm
        self.block = block
    }

    func acquire() { users.add(1, ordering: .relaxed) }

    func release() {
        if users.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { hbm.free(block) }
    }
}

/// "1.5 GiB (1610612736 bytes)" — for reports.
func byteCount(_ bytes: UInt64) -> String {
    let units: [(UInt64, String)] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
    for (size, name) in units where bytes >= size {
        let value = Double(bytes) / Double(size)
        let rounded = (value * 10).rounded() / 10
        return "\(rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)) \(name) (\(bytes) bytes)"
    }
    return counted(bytes, "byte")
}
