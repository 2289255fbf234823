/// A UUID-shaped identifier derived from text by FNV-1a (Swift's `Hasher` is seeded per process,
/// and these must be the same in every process for the same topology).
func stableUUID(of text: String) -> String {
    func fnv1a(_ seed: UInt64) -> UInt64 {
        var hash: UInt64 = seed
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        return hash
    }
    var high = fnv1a(0xcbf2_9ce4_8422_2325)
    var low = fnv1a(0x84222325_cbf29ce4 ^ high)
    high = (high & ~0xf000) | 0x8000                    // version 8: custom
    low = (low & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000 // RFC 4122 variant
    func hex(_ value: UInt64, _ digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: digits - text.count) + text
    }
    let h = hex(high, 16), l = hex(low, 16)
    return "\(h.prefix(8))-\(h.dropFirst(8).prefix(4))-\(h.suffix(4))-\(l.prefix(4))-\(l.suffix(12))"
}
