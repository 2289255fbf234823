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
    /// The allocator, and who holds each block: (owner, allocation id) by offset. The id makes a
    /// late free of a block that its owner's teardown already reclaimed a no-op, even when the
    /// same offset was handed out again since.
    private struct State {
        var allocator: BestFitAllocator
        var holders: [UInt64: (owner: Int, id: UInt64)] = [:]
        var nextId: UInt64 = 1
    }
    private let state: Mutex<State>

    public static let defaultAlignment: UInt64 = 64
    public static let maximumAlignment: UInt64 = 1 << 30

    /// Nil when the host cannot reserve the address space (the message is in `reservationError`).
    public init?(capacity: UInt64, numaNode: Int) {
        let mapping = mmap(nil, Int(capacity), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let mapping, mapping != MAP_FAILED else { return nil }
        self.capacity = capacity
        self.numaNode = numaNode
        self.base = mapping
        self.state = Mutex(State(allocator: BestFitAllocator(capacity: capacity)))
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

    public struct Block: Sendable, Equatable {
        public let address: UInt64
        public let id: UInt64
    }

    /// A new block held by `owner`, or the usage at the time of failure.
    public func allocate(_ bytes: UInt64, alignment: UInt64, category: BestFitAllocator.Category,
                         owner: Int = 0) -> Result<Block, AllocationFailure> {
        state.withLock { state in
            guard let offset = state.allocator.allocate(bytes, alignment: alignment, category: category) else {
                return .failure(AllocationFailure(usage: state.allocator.usage))
            }
            let id = state.nextId
            state.nextId += 1
            state.holders[offset] = (owner, id)
            return .success(Block(address: offset, id: id))
        }
    }

    /// Returns a block (no-op if it was returned already) and gives its touched pages back to the
    /// host, so that they read as zero if the space is reused. The pages are given back before the
    /// space returns to the allocator: done the other way round, a block allocated meanwhile at the
    /// same place would have its new contents zeroed under it.
    public func free(_ block: Block) {
        let size: UInt64? = state.withLock { state in
            guard state.holders[block.address]?.id == block.id else { return nil }
            state.holders[block.address] = nil
            return state.allocator.size(of: block.address)
        }
        guard let size else { return }
        giveBack([(block.address, size)])
    }

    /// Returns every block `owner` holds (a runtime's teardown).
    public func freeAll(owner: Int) {
        let blocks: [(UInt64, UInt64)] = state.withLock { state in
            var blocks: [(UInt64, UInt64)] = []
            for (address, holder) in state.holders where holder.owner == owner {
                state.holders[address] = nil
                if let size = state.allocator.size(of: address) { blocks.append((address, size)) }
            }
            return blocks
        }
        giveBack(blocks)
    }

    /// The pages go back to the host (outside the lock: it can take a while) before the space goes
    /// back to the allocator. The other way round, another thread could be given the space, write
    /// it, and have its data zeroed by this madvise: vtrn_memcpy round trips through device memory
    /// from several threads read back zeros a few times in 10,000 (the stress of issue 8).
    private func giveBack(_ blocks: [(address: UInt64, size: UInt64)]) {
        for block in blocks { release(block.address, block.size) }
        state.withLock { state in
            for block in blocks { state.allocator.free(block.address) }
        }
    }

    private func release(_ offset: UInt64, _ size: UInt64) {
        let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
        let start = (offset + page - 1) / page * page, end = (offset + size) / page * page
        if end > start { madvise(base + Int(start), Int(end - start), MADV_DONTNEED) }
    }

    public var usage: BestFitAllocator.Usage { state.withLock { $0.allocator.usage } }

    /// Host bytes committed for touched pages of the live blocks (mincore).
    public var residentBytes: UInt64 {
        let blocks = state.withLock { $0.allocator.liveBlocks }
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
