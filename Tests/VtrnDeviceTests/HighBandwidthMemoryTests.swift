import Foundation
import Synchronization
import Testing
@testable import VtrnDevice

@Suite struct HighBandwidthMemoryTests {
    /// Freeing gives a block's pages back to the host (they read as zero afterwards). That used to
    /// happen after the space was back in the allocator, so a block another thread allocated at
    /// the same place meanwhile could have what it had just written zeroed under it (found by the
    /// 8-thread stress of ../shared/repro/conc.c: vtrn_memcpy round trips that came back zero).
    @Test func aFreeNeverZeroesABlockAllocatedAtTheSamePlaceMeanwhile() throws {
        let hbm = try #require(HighBandwidthMemory(capacity: 1 << 24, numaNode: 0))
        let corrupted = Atomic<Int>(0), rounds = 4000
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            for round in 0..<rounds {
                let bytes = 4096 * (1 + (worker + round) % 4)
                guard case .success(let block) = hbm.allocate(UInt64(bytes), alignment: 4096, category: .tensor) else { continue }
                let pointer = hbm.pointer(block.address).bindMemory(to: UInt8.self, capacity: bytes)
                let value = UInt8(truncatingIfNeeded: worker * 31 + round) | 1
                pointer.update(repeating: value, count: bytes)
                // Give a concurrent free the time to land in the middle of this block's life.
                for _ in 0..<50 { _ = Thread.current }
                if pointer[0] != value || pointer[bytes - 1] != value { corrupted.add(1, ordering: .relaxed) }
                hbm.free(block)
            }
        }
        #expect(corrupted.load(ordering: .relaxed) == 0)
        #expect(hbm.usage.used == 0)
    }

    @Test func aFreedBlockReadsAsZeroWhenItsSpaceIsReused() throws {
        let hbm = try #require(HighBandwidthMemory(capacity: 1 << 20, numaNode: 0))
        guard case .success(let first) = hbm.allocate(8192, alignment: 4096, category: .tensor) else {
            Issue.record("allocation failed"); return
        }
        hbm.pointer(first.address).initializeMemory(as: UInt8.self, repeating: 0xab, count: 8192)
        hbm.free(first)
        hbm.free(first) // a second free of the same block is a no-op
        guard case .success(let second) = hbm.allocate(8192, alignment: 4096, category: .tensor) else {
            Issue.record("allocation failed"); return
        }
        #expect(second.address == first.address)
        let bytes = UnsafeRawBufferPointer(start: hbm.pointer(second.address), count: 8192)
        #expect(bytes.allSatisfy { $0 == 0 })
    }
}
