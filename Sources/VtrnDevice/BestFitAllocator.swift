/// Best-fit allocation over one address space, coalescing freed neighbours: the allocator of a
/// device's HBM. Aligned blocks are carved out of the smallest free range that holds them; the
/// padding in front of an aligned block stays free. Every block is tagged with a category, which
/// feeds the usage report, as the driver's mempool chunks are tagged with a memory type.
///
/// Costs: allocate and free are O(free ranges) (a sorted array; HBM sees few, large blocks).
public struct BestFitAllocator: Sendable {
    public enum Category: Int, Sendable, CaseIterable, CustomStringConvertible {
        case tensor, kernel
        public var description: String { self == .tensor ? "tensors" : "kernels" }
    }

    public struct Usage: Sendable, Equatable {
        public var capacity: UInt64
        public var used: UInt64
        public var largestFreeBlock: UInt64
        public var byCategory: [UInt64]
        public var allocationCount: Int
        public var free: UInt64 { capacity - used }
    }

    /// Blocks are whole multiples of this many bytes.
    public static let granularity: UInt64 = 64

    public let capacity: UInt64
    /// Free ranges, sorted by offset, never adjacent (they are coalesced).
    private(set) var freeRanges: [(offset: UInt64, size: UInt64)]
    /// Live blocks by offset: their rounded size and category.
    private var blocks: [UInt64: (size: UInt64, category: Category)] = [:]
    private var usedByCategory = [UInt64](repeating: 0, count: Category.allCases.count)

    public init(capacity: UInt64) {
        self.capacity = capacity
        freeRanges = capacity > 0 ? [(UInt64(0), capacity)] : []
    }

    /// The offset of a new block, or nil when no free range holds it. `alignment` is a power of two.
    public mutating func allocate(_ bytes: UInt64, alignment: UInt64, category: Category) -> UInt64? {
        precondition(bytes > 0 && alignment > 0 && alignment & (alignment - 1) == 0)
        guard bytes <= capacity else { return nil }
        let size = (bytes + Self.granularity - 1) / Self.granularity * Self.granularity
        var best: (index: Int, start: UInt64, waste: UInt64)?
        for (index, range) in freeRanges.enumerated() {
            let start = (range.offset + alignment - 1) & ~(alignment - 1)
            guard start >= range.offset, start - range.offset <= range.size,
                  range.size - (start - range.offset) >= size else { continue }
            let waste = range.size - size
            if best == nil || waste < best!.waste { best = (index, start, waste) }
            if waste == 0 { break }
        }
        guard let best else { return nil }
        let range = freeRanges[best.index]
        var replacement: [(offset: UInt64, size: UInt64)] = []
        if best.start > range.offset { replacement.append((range.offset, best.start - range.offset)) }
        let end = best.start + size, rangeEnd = range.offset + range.size
        if rangeEnd > end { replacement.append((end, rangeEnd - end)) }
        freeRanges.replaceSubrange(best.index...best.index, with: replacement)
        blocks[best.start] = (size, category)
        usedByCategory[category.rawValue] += size
        return best.start
    }

    /// The rounded size of the block at `offset`, or nil if no block starts there.
    public func size(of offset: UInt64) -> UInt64? { blocks[offset]?.size }

    /// Returns a block's space; the size it held, or nil if no block starts at `offset`.
    @discardableResult
    public mutating func free(_ offset: UInt64) -> UInt64? {
        guard let block = blocks.removeValue(forKey: offset) else { return nil }
        usedByCategory[block.category.rawValue] -= block.size
        // The first free range after the block, then merge with the neighbours it touches.
        var low = 0, high = freeRanges.count
        while low < high {
            let middle = (low + high) / 2
            if freeRanges[middle].offset < offset { low = middle + 1 } else { high = middle }
        }
        var start = offset, size = block.size
        var removeFrom = low, removeTo = low
        if low > 0, freeRanges[low - 1].offset + freeRanges[low - 1].size == offset {
            start = freeRanges[low - 1].offset
            size += freeRanges[low - 1].size
            removeFrom = low - 1
        }
        if low < freeRanges.count, offset + block.size == freeRanges[low].offset {
            size += freeRanges[low].size
            removeTo = low + 1
        }
        freeRanges.replaceSubrange(removeFrom..<removeTo, with: [(start, size)])
        return block.size
    }

    public var usage: Usage {
        Usage(capacity: capacity, used: usedByCategory.reduce(0, +),
              largestFreeBlock: freeRanges.map(\.size).max() ?? 0, byCategory: usedByCategory,
              allocationCount: blocks.count)
    }

    /// The live blocks, for tests and reports: (offset, rounded size).
    public var liveBlocks: [(offset: UInt64, size: UInt64)] {
        blocks.map { ($0.key, $0.value.size) }.sorted { $0.offset < $1.offset }
    }
}
