import Synchronization
import Vtrn

/// Handles are tokens, never pointers (DESIGN.md): 64 bits laid out as
///
///     63      56 55  52 51            32 31                     0
///     [ 0x76 'v' ][kind][     slot      ][       generation       ]
///
/// so a garbage value fails the magic byte, a handle of another kind fails the kind, and a
/// destroyed one fails the generation. The top byte also makes the value a non-canonical x86-64
/// address: dereferencing one by mistake faults at once instead of reading someone's memory.
struct HandleKind: Sendable {
    let tag: UInt64
    /// The C type, for messages: "vtrn_runtime_t".
    let typeName: String

    static let runtime = HandleKind(tag: 1, typeName: "vtrn_runtime_t")
    static let device = HandleKind(tag: 2, typeName: "vtrn_device_t")
    static let hostBuffer = HandleKind(tag: 3, typeName: "vtrn_host_buffer_t")
    static let deviceMemory = HandleKind(tag: 4, typeName: "vtrn_device_memory_t")
    static let dmaQueue = HandleKind(tag: 5, typeName: "vtrn_dma_queue_t")
    static let program = HandleKind(tag: 6, typeName: "vtrn_program_t")
    static let kernel = HandleKind(tag: 7, typeName: "vtrn_kernel_t")
    static let fence = HandleKind(tag: 8, typeName: "vtrn_fence_t")
    static let comm = HandleKind(tag: 9, typeName: "vtrn_comm_t")

    static let all: [HandleKind] = [.runtime, .device, .hostBuffer, .deviceMemory, .dmaQueue, .program, .kernel, .fence, .comm]
}

enum HandleLayout {
    static let magic: UInt64 = 0x76
    static let slotBits: UInt64 = 20
    static let maxSlots = 1 << 20

    static func encode(kind: HandleKind, slot: Int, generation: UInt32) -> UInt64 {
        magic << 56 | kind.tag << 52 | UInt64(slot) << 32 | UInt64(generation)
    }

    static func hexadecimal(_ raw: UInt64) -> String { "0x" + String(raw, radix: 16) }

    /// Which kind a well-formed token claims to be, for "is a vtrn_device_t, not a ..." messages.
    static func kind(of raw: UInt64) -> HandleKind? {
        guard raw >> 56 == magic else { return nil }
        let tag = (raw >> 52) & 0xf
        return HandleKind.all.first { $0.tag == tag }
    }
}

/// Live objects of one handle kind, by slot. Slots are reused in FIFO order so that a stale
/// handle's slot is rarely live again, and the 32-bit generation tells the rest apart.
final class HandleTable<Object: AnyObject & Sendable>: Sendable {
    let kind: HandleKind

    private struct Slot {
        var generation: UInt32 = 1
        var object: Object?
        var owner: UInt64 = 0
        /// Why the previous generation went away, for the stale-handle message.
        var retiredBecause: String?
    }

    private struct Storage {
        var slots: [Slot] = []
        var free: [Int] = []
        var freeHead = 0
        var live = 0
    }

    private let storage = Mutex(Storage())
    static var quarantine: Int { 64 }

    init(_ kind: HandleKind) { self.kind = kind }

    /// Registers an object; `owner` (a runtime's token) lets `removeAll(ownedBy:)` find it.
    func insert(_ object: Object, owner: UInt64 = 0) throws(VtrnError) -> UInt64 {
        let token: UInt64? = storage.withLock { storage in
            let slot: Int
            // A freed slot waits behind `quarantine` others before it is reused, so that a stale
            // handle keeps its precise reason for a while, and its slot is rarely live again.
            let waiting = storage.free.count - storage.freeHead
            if waiting > Self.quarantine || (waiting > 0 && storage.slots.count >= HandleLayout.maxSlots) {
                slot = storage.free[storage.freeHead]
                storage.freeHead += 1
                if storage.freeHead > 1024 && storage.freeHead * 2 > storage.free.count {
                    storage.free.removeFirst(storage.freeHead)
                    storage.freeHead = 0
                }
            } else if storage.slots.count < HandleLayout.maxSlots {
                slot = storage.slots.count
                storage.slots.append(Slot())
            } else {
                return nil
            }
            storage.slots[slot].object = object
            storage.slots[slot].owner = owner
            storage.live += 1
            return HandleLayout.encode(kind: kind, slot: slot, generation: storage.slots[slot].generation)
        }
        guard let token else {
            throw VtrnError(.outOfHostMemory, "too many live \(kind.typeName) handles (\(HandleLayout.maxSlots)); destroy some first")
        }
        return token
    }

    /// The object of a live handle, or `.invalidHandle` saying exactly what is wrong with it.
    func lookup(_ raw: UInt64) throws(VtrnError) -> Object {
        let slot = Int((raw >> 32) & 0xfffff)
        let generation = UInt32(truncatingIfNeeded: raw)
        let result: (Object?, String?) = storage.withLock { storage in
            guard raw >> 52 == (HandleLayout.magic << 4 | kind.tag), slot < storage.slots.count else { return (nil, nil) }
            let entry = storage.slots[slot]
            if entry.generation == generation, let object = entry.object { return (object, nil) }
            return (nil, entry.generation == generation &+ 1 ? entry.retiredBecause : nil)
        }
        if let object = result.0 { return object }
        throw invalid(raw, retiredBecause: result.1)
    }

    /// Unregisters a live handle and returns its object.
    @discardableResult
    func remove(_ raw: UInt64, because reason: String) throws(VtrnError) -> Object {
        let slot = Int((raw >> 32) & 0xfffff)
        let generation = UInt32(truncatingIfNeeded: raw)
        let result: (Object?, String?) = storage.withLock { storage in
            guard raw >> 52 == (HandleLayout.magic << 4 | kind.tag), slot < storage.slots.count else { return (nil, nil) }
            let entry = storage.slots[slot]
            guard entry.generation == generation, let object = entry.object else {
                return (nil, entry.generation == generation &+ 1 ? entry.retiredBecause : nil)
            }
            Self.retire(slot, because: reason, in: &storage)
            return (object, nil)
        }
        if let object = result.0 { return object }
        throw invalid(raw, retiredBecause: result.1)
    }

    /// Swaps the object of a live handle (used while registering objects that know their token).
    func replace(_ raw: UInt64, with object: Object) throws(VtrnError) {
        _ = try lookup(raw)
        let slot = Int((raw >> 32) & 0xfffff)
        storage.withLock { $0.slots[slot].object = object }
    }

    /// Unregisters every handle registered with `owner`; returns their objects.
    @discardableResult
    func removeAll(ownedBy owner: UInt64, because reason: String) -> [Object] {
        storage.withLock { storage in
            var removed: [Object] = []
            for slot in storage.slots.indices where storage.slots[slot].owner == owner {
                if let object = storage.slots[slot].object {
                    removed.append(object)
                    Self.retire(slot, because: reason, in: &storage)
                }
            }
            return removed
        }
    }

    var liveCount: Int { storage.withLock { $0.live } }

    private static func retire(_ slot: Int, because reason: String, in storage: inout Storage) {
        storage.slots[slot].object = nil
        storage.slots[slot].owner = 0
        storage.slots[slot].generation &+= 1
        if storage.slots[slot].generation == 0 { storage.slots[slot].generation = 1 }
        storage.slots[slot].retiredBecause = reason
        storage.free.append(slot)
        storage.live -= 1
    }

    private func invalid(_ raw: UInt64, retiredBecause: String?) -> VtrnError {
        let text = HandleLayout.hexadecimal(raw)
        if raw == 0 { return VtrnError(.invalidHandle, "the \(kind.typeName) is NULL") }
        guard raw >> 56 == HandleLayout.magic else {
            return VtrnError(.invalidHandle, "\(text) is not a vtrn handle (garbage, uninitialized, or a pointer)")
        }
        if let other = HandleLayout.kind(of: raw), other.tag != kind.tag {
            return VtrnError(.invalidHandle, "\(text) is a \(other.typeName), not a \(kind.typeName)")
        }
        if let retiredBecause {
            return VtrnError(.invalidHandle, "\(kind.typeName) \(text) is stale: \(retiredBecause)")
        }
        return VtrnError(.invalidHandle, "\(kind.typeName) \(text) is stale: it was destroyed (or never existed)")
    }
}
