import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How many of vtrn's idle core threads may spin at once: as many as the host has CPUs
/// (`VTRN_SPIN_SLOTS` overrides, 0 never spins). A spinning thread answers in microseconds where
/// a futex wake-up takes tens, but a core thread per rank of a 16-device communicator on a 2-CPU
/// host would spin on CPUs that the ranks still computing need: a thread that finds no slot
/// sleeps at once, and spinners yield the CPU every 64 rounds. Measured on this 2-CPU host, an
/// 8-byte all-reduce over 2 ranks: 24 us with 2 slots and yields, 140-250 us with 1 slot, 180-380
/// us with every core thread spinning (they took the CPUs the ranks needed).
enum SpinBudget {
    static let slots = Int(getenv("VTRN_SPIN_SLOTS").map { String(cString: $0) }.flatMap { Int($0) } ?? max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
    private static let spinning = Atomic<Int>(0)

    /// Takes a slot if one is free.
    static func enter() -> Bool {
        var current = spinning.load(ordering: .relaxed)
        while current < slots {
            let (exchanged, original) = spinning.compareExchange(expected: current, desired: current + 1, ordering: .acquiring)
            if exchanged { return true }
            current = original
        }
        return false
    }

    static func leave() { spinning.subtract(1, ordering: .releasing) }
}
