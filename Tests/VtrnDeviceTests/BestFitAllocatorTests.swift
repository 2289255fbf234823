import Testing
@testable import VtrnDevice

@Suite struct BestFitAllocatorTests {
    @Test func allocatesAlignedAndRoundsToGranularity() throws {
        var allocator = BestFitAllocator(capacity: 1 << 20)
        let first = try take(&allocator, 1, alignment: 64, category: .tensor)
        let second = try take(&allocator, 100, alignment: 4096, category: .tensor)
        #expect(first == 0)
        #expect(second == 4096)
        #expect(allocator.usage.used == 64 + 128)
        #expect(allocator.usage.allocationCount == 2)
        #expect(allocator.usage.byCategory == [192, 0])
    }

    @Test func picksTheSmallestHoleThatFits() throws {
        var allocator = BestFitAllocator(capacity: 10_000 * 64)
        let a = try take(&allocator, 64 * 100, alignment: 64, category: .tensor)
        _ = try take(&allocator, 64, alignment: 64, category: .tensor)
        let c = try take(&allocator, 64 * 10, alignment: 64, category: .tensor)
        _ = try take(&allocator, 64, alignment: 64, category: .tensor)
        allocator.free(a)
        allocator.free(c)
        // Holes of 100 and 10 granules: 8 granules go to the 10-granule hole.
        #expect(allocator.allocate(64 * 8, alignment: 64, category: .kernel) == c)
    }

    @Test func coalescesFreedNeighboursBackToOneRange() throws {
        var allocator = BestFitAllocator(capacity: 32 << 30)
        let blocks = try (0..<4).map { _ in try take(&allocator, 8 << 30, alignment: 64, category: .tensor) }
        #expect(allocator.allocate(1, alignment: 64, category: .tensor) == nil)
        for block in [blocks[1], blocks[3], blocks[0], blocks[2]] { allocator.free(block) }
        #expect(allocator.freeRanges.count == 1)
        #expect(allocator.usage.largestFreeBlock == 32 << 30)
        #expect(allocator.allocate(32 << 30, alignment: 64, category: .tensor) == 0)
    }

    @Test func failsWhenNothingFitsAndReportsUsage() throws {
        var allocator = BestFitAllocator(capacity: 1 << 20)
        _ = try take(&allocator, 600 << 10, alignment: 64, category: .tensor)
        #expect(allocator.allocate(500 << 10, alignment: 64, category: .tensor) == nil)
        #expect(allocator.allocate(2 << 20, alignment: 64, category: .tensor) == nil)
        #expect(allocator.usage.largestFreeBlock == 424 << 10)
        #expect(allocator.free(12345) == nil)
    }

    @Test func randomisedAllocationsNeverOverlapAndAlwaysCoalesce() throws {
        var generator = SplitMix(seed: 42)
        var allocator = BestFitAllocator(capacity: 1 << 24)
        var live: [UInt64: UInt64] = [:]
        for _ in 0..<5000 {
            if live.isEmpty || generator.next() % 3 != 0 {
                let bytes = generator.next() % 100_000 + 1
                let alignment = UInt64(1) << (generator.next() % 13)
                if let offset = allocator.allocate(bytes, alignment: alignment, category: .tensor) {
                    #expect(offset % alignment == 0)
                    live[offset] = (bytes + 63) / 64 * 64
                }
            } else {
                let offset = live.keys.sorted()[Int(generator.next() % UInt64(live.count))]
                #expect(allocator.free(offset) == live.removeValue(forKey: offset))
            }
            guard live.count % 16 == 0 else { continue }
            let sorted = live.sorted { $0.key < $1.key }
            for (left, right) in zip(sorted, sorted.dropFirst()) { #expect(left.key + left.value <= right.key) }
        }
        for offset in live.keys { allocator.free(offset) }
        #expect(allocator.freeRanges.count == 1 && allocator.usage.used == 0)
    }
}

struct AllocationFailed: Error {}

/// `allocate` that throws when nothing fits (#require cannot wrap a mutating call).
func take(_ allocator: inout BestFitAllocator, _ bytes: UInt64, alignment: UInt64, category: BestFitAllocator.Category) throws -> UInt64 {
    guard let offset = allocator.allocate(bytes, alignment: alignment, category: category) else { throw AllocationFailed() }
    return offset
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
