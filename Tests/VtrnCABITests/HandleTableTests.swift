import Testing
import Vtrn
@testable import VtrnCABI

final class Box: Sendable {
    let value: Int
    init(_ value: Int) { self.value = value }
}

@Suite struct HandleTableTests {
    @Test func tokensCarryMagicKindSlotAndGeneration() throws {
        let table = HandleTable<Box>(.device)
        let token = try table.insert(Box(1))
        #expect(token >> 56 == 0x76)
        #expect((token >> 52) & 0xf == HandleKind.device.tag)
        #expect(try table.lookup(token).value == 1)
        #expect(table.liveCount == 1)
    }

    @Test func staleGarbageAndForeignHandlesAreRejectedWithReasons() throws {
        let devices = HandleTable<Box>(.device)
        let runtimes = HandleTable<Box>(.runtime)
        let token = try devices.insert(Box(1))
        try devices.remove(token, because: "it was destroyed")
        let stale = #expect(throws: VtrnError.self) { try devices.lookup(token) }
        #expect(stale?.status == .invalidHandle)
        #expect(stale?.message == "vtrn_device_t \(HandleLayout.hexadecimal(token)) is stale: it was destroyed")
        #expect(#expect(throws: VtrnError.self) { try devices.remove(token, because: "again") }?.status == .invalidHandle)

        let garbage = #expect(throws: VtrnError.self) { try devices.lookup(0x1234) }
        #expect(garbage?.message == "0x1234 is not a vtrn handle (garbage, uninitialized, or a pointer)")
        #expect(#expect(throws: VtrnError.self) { try devices.lookup(0) }?.message == "the vtrn_device_t is NULL")

        let runtime = try runtimes.insert(Box(2))
        let foreign = #expect(throws: VtrnError.self) { try devices.lookup(runtime) }
        #expect(foreign?.message == "\(HandleLayout.hexadecimal(runtime)) is a vtrn_runtime_t, not a vtrn_device_t")

        let outOfRange = HandleLayout.encode(kind: .device, slot: 999, generation: 1)
        #expect(#expect(throws: VtrnError.self) { try devices.lookup(outOfRange) }?.message.contains("is stale") == true)
    }

    @Test func slotsAreReusedWithNewGenerationsOnly() throws {
        let table = HandleTable<Box>(.runtime)
        var seen = Set<UInt64>()
        for index in 0..<1000 {
            let token = try table.insert(Box(index))
            #expect(seen.insert(token).inserted)
            #expect(try table.lookup(token).value == index)
            try table.remove(token, because: "done")
        }
        #expect(table.liveCount == 0)
        for old in seen { #expect(throws: VtrnError.self) { try table.lookup(old) } }
    }

    @Test func removeAllByOwnerRetiresOnlyThoseWithTheReason() throws {
        let table = HandleTable<Box>(.device)
        let mine = try (0..<3).map { try table.insert(Box($0), owner: 7) }
        let theirs = try table.insert(Box(9), owner: 8)
        #expect(table.removeAll(ownedBy: 7, because: "runtime 7 was destroyed").count == 3)
        for token in mine {
            #expect(#expect(throws: VtrnError.self) { try table.lookup(token) }?.message.hasSuffix("is stale: runtime 7 was destroyed") == true)
        }
        #expect(try table.lookup(theirs).value == 9)
    }

    @Test func concurrentInsertLookupRemove() async throws {
        let table = HandleTable<Box>(.device)
        await withTaskGroup(of: Bool.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    for index in 0..<500 {
                        guard let token = try? table.insert(Box(worker * 1000 + index)),
                              (try? table.lookup(token))?.value == worker * 1000 + index,
                              (try? table.remove(token, because: "done")) != nil
                        else { return false }
                    }
                    return true
                }
            }
            for await ok in group { #expect(ok) }
        }
        #expect(table.liveCount == 0)
    }
}
