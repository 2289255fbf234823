import CVtrnSystem
import Synchronization

/// `Synchronization.Mutex`, visible to ThreadSanitizer; vtrn's modules use it under the same name.
///
/// The standard library's mutex takes and releases a contended lock in its own code, which is not
/// instrumented (a futex in `_lockSlow`/`_unlockSlow`), so TSan misses that synchronisation and
/// reports the accesses the lock protects as races: Swift 6.3 on Linux, four threads incrementing
/// a `Mutex<[Int: Int]>`, three reports. This one also tells TSan (`__tsan_acquire` once the lock is
/// held, `__tsan_release` before it is let go, both on the lock's address) when TSan's
/// runtime is in the process, and is the standard mutex otherwise. Its API is what vtrn uses.
package struct Mutex<Value: ~Copyable>: ~Copyable, @unchecked Sendable {
    @usableFromInline let base: Synchronization::Mutex<Value>

    @inlinable
    package init(_ initialValue: consuming sending Value) { base = Synchronization::Mutex(initialValue) }

    /// As `Synchronization.Mutex.withLock`.
    @inlinable
    package borrowing func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        // The lock's address names it to TSan (taken before the value is touched: TSan checks
        // that access too).
        let address = withUnsafePointer(to: self) { UnsafeMutableRawPointer(mutating: $0) }
        return try base.withLock { (value: inout sending Value) throws(E) -> sending Result in
            vtrnsys_tsan_acquire(address)
            defer { vtrnsys_tsan_release(address) }
            return try body(&value)
        }
    }
}
