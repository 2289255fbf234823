import CVtrnSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A device's HBM: address space reserved at creation (no memory committed), bound to the
/// device's NUMA node, so that pages are committed there on first touch. A 96 GiB device costs
/// nothing until it is written. Addresses are offsets into this space.
public final class HighBandwidthMemory: @unchecked Sendable {
    public let capacity: UInt64
    public let numaNode: Int
    /// The reservation; immutable after init, so sharing it is safe (the pages are the user's).
    public let base: UnsafeMutableRawPointer
    private let allocator: Mutex<BestFitAllocator>

    public static let defaultAlignment: UInt64 = 64
    public static let maximumAlignment: UInt64 = 1 << 30

    /// Nil when the host cannot reserve the address space (the message is in `reservationError`).
    public init?(capacity: UInt64, numaNode: Int) {
        let mapping = mmap(nil, Int(capacity), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let mapping, mapping != MAP_FAILED else { return nil }
        self.capacity = capacity
        self.numaNode = numaNode
        self.base = mapping
        self.allocator = Mutex(BestFitAllocator(capacity: capacity))
        // Huge pages where the system allows them: first touches commit 2 MiB at a time.
        _ = madvise(mapping, Int(capacity), MADV_HUGEPAGE)
        if numa_available() >= 0 {
            // Pages come from the device's node, and only from it (as HBM is on the device).
            var mask = [UInt](repeating: 0, count: 1024 / UInt.bitWidth)
            mask[numaNode / UInt.bitWidth] |= 1 << UInt(numaNode % UInt.bitWidth)
            _ = mbind(mapping, UInt(capacity), Int32(MPOL_BIND), mask, UInt(mask.count * UInt.bitWidth), 0)
        }
    }

    deinit { munmap(base, Int(capacity)) }

    /// A block's offset, or nil with the usage at the time of failure.
    public func allocate(_ bytes: UInt64, alignment: UInt64, category: BestFitAllocator.Category) -> Result<UInt64, AllocationFailure> {
        allocator.withLock { allocator in
            if let offset = allocator.allocate(bytes, alignment: alignment, category: category) { return .success(offset) }
            return .failure(AllocationFailure(usage: allocator.usage))
        }
    }

    /// Returns a block and gives its touched pages back to the host (they read as zero if reused).
    public func free(_ offset: UInt64) {
        guard let size = allocator.withLock({ $0.free(offset) }) else { return }
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let start = (offset + page - 1) / page * page, end = (offset + size) / page * page
        if end > start { madvise(base + Int(start), Int(end - start), MADV_DONTNEED) }
    }

    public var usage: BestFitAllocator.Usage { allocator.withLock { $0.usage } }

    /// Host bytes committed for touched pages of the live blocks (mincore).
    public var residentBytes: UInt64 {
        let blocks = allocator.withLock { $0.liveBlocks }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let chunkPages = 1 << 18
        var vector = [UInt8](repeating: 0, count: chunkPages)
        var resident: UInt64 = 0
        for block in blocks {
            var start = Int(block.offset) / page * page
            let end = Int(block.offset + block.size)
            while start < end {
                let length = min(end - start, chunkPages * page)
                if mincore(base + start, length, &vector) == 0 {
                    let pages = (length + page - 1) / page
                    for index in 0..<pages where vector[index] & 1 != 0 { resident += UInt64(page) }
                }
                start += length
            }
        }
        return resident
    }

    public func pointer(_ address: UInt64) -> UnsafeMutableRawPointer { base + Int(address) }
}

public struct AllocationFailure: Error, Sendable {
    public let usage: BestFitAllocator.Usage
}
