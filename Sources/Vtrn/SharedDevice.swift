import Synchronization
import VtrnDevice

#if canImport(Glibc)
import Glibc
#endif

/// The process's virtual hardware. As on a real host, a device exists once however many runtimes
/// use it: runtimes whose topologies give the same architecture at the same index on the same
/// NUMA node share the device, its HBM (usage is the device's, not a runtime's) and its cores,
/// which a runtime claims when it first uses one. Claims are also the host's: the same identity
/// names each core's lock file (CoreLock), so runtimes of other processes contend for the core
/// exactly as runtimes of this one do. A device lives while a runtime references it.
final class SharedDevice: Sendable {
    let hardware: VirtualDevice
    /// A core this process claims: the runtime that claimed it, and its lock file, which makes
    /// the claim the host's (see CoreLock).
    private struct Claim {
        let runtime: Int
        let lock: CoreLock
    }

    /// core → its claim.
    private let claims = Mutex<[Int: Claim]>([:])
    /// Idle driver queues on the host engines, for `Device.copy`.
    let hostQueues = Mutex<[DmaQueue.Ring]>([])

    init(hardware: VirtualDevice) { self.hardware = hardware }

    deinit {
        for ring in hostQueues.withLock({ $0 }) { hardware.closeQueue(ring.hardware) }
    }

    /// The lock file of `core` in `directory`.
    func lockPath(core: Int, in directory: String) -> String {
        directory + "/" + CoreLock.fileName(architecture: hardware.preset.architecture, device: hardware.index,
                                            numaNode: hardware.numaNode, core: core)
    }

    /// Claims `core` for runtime `serial`, in this process and through its lock file in
    /// `lockDirectory` for the host: `.busy` naming the holder, a runtime of this process or
    /// another process; `.invalidArgument` when the lock file cannot be used.
    func claim(core: Int, for serial: Int, lockDirectory: String) throws(VtrnError) {
        enum Outcome {
            case claimed
            case heldByRuntime(Int)
            case heldByAnotherProcess
            case failed(LockFileError)
        }
        let path = lockPath(core: core, in: lockDirectory)
        // A holder that lets go between our attempt and our look at its record: try again.
        for _ in 0..<3 {
            let outcome: Outcome = claims.withLock { claims in
                if let claim = claims[core] { return claim.runtime == serial ? .claimed : .heldByRuntime(claim.runtime) }
                do throws(LockFileError) {
                    guard let lock = try CoreLock.acquire(path: path, runtime: serial) else { return .heldByAnotherProcess }
                    claims[core] = Claim(runtime: serial, lock: lock)
                    return .claimed
                } catch {
                    return .failed(error)
                }
            }
            switch outcome {
            case .claimed:
                return
            case .heldByRuntime(let holder):
                throw VtrnError(.busy, "core \(core) of device \(hardware.index) is claimed by runtime \(holder) until it is destroyed")
            case .heldByAnotherProcess:
                // Read outside the mutex: the holder may need a moment to write its record.
                guard let holder = (try? CoreLock.holder(path: path)) ?? nil else { continue }
                guard holder.processID != nil else {
                    throw VtrnError(.busy, "core \(core) of device \(hardware.index) is claimed by another process, which has "
                                    + "not recorded itself in the lock file \(path) (a child forked without exec keeps its "
                                    + "parent's claims)")
                }
                throw VtrnError(.busy, "core \(core) of device \(hardware.index) is claimed by \(holder) until the holder's "
                                + "runtime is destroyed or its process exits (lock file \(path))")
            case .failed(let error):
                throw .invalidArgument("cannot claim core \(core) of device \(hardware.index): \(error.message); the lock "
                                       + "directory (VTRN_LOCK_DIR, else \(LockDirectory.defaultsText)) must stay writable")
            }
        }
        throw VtrnError(.busy, "core \(core) of device \(hardware.index) is claimed and released by other processes faster "
                        + "than this runtime can take it (lock file \(path))")
    }

    /// Gives up the cores runtime `serial` claimed, in this process and for the host.
    func releaseClaims(of serial: Int) {
        let released = claims.withLock { claims in
            let mine = claims.filter { $0.value.runtime == serial }
            for core in mine.keys { claims[core] = nil }
            return mine.values.map(\.lock)
        }
        for lock in released { lock.release() }
    }

    /// Who holds `core`: a runtime of this process, else whoever holds its lock file in
    /// `lockDirectory`; nil when nobody does.
    func holder(of core: Int, lockDirectory: String) throws(VtrnError) -> CoreHolder? {
        if let runtime = claims.withLock({ $0[core]?.runtime }) {
            return CoreHolder(processID: getpid(), commandLine: currentCommandLine(), runtime: runtime, isThisProcess: true)
        }
        do {
            return try CoreLock.holder(path: lockPath(core: core, in: lockDirectory))
        } catch {
            throw .invalidArgument("cannot tell who holds core \(core) of device \(hardware.index): \(error.message)")
        }
    }

    /// The runtime of this process that holds `core`, if any (for monitors: no file is read).
    func runtimeHolding(_ core: Int) -> Int? { claims.withLock { $0[core]?.runtime } }

    /// The cores runtime `serial` holds.
    func cores(claimedBy serial: Int) -> [Int] { claims.withLock { $0.filter { $0.value.runtime == serial }.map(\.key) } }

    // MARK: The registry

    private struct Key: Hashable {
        let index: Int
        let architecture: Architecture
        let numaNode: Int
    }

    private struct WeakDevice: @unchecked Sendable {
        weak var device: SharedDevice?
    }

    private static let registry = Mutex<[Key: WeakDevice]>([:])

    /// Every device of the process that a runtime still references (for monitors).
    static func live() -> [SharedDevice] {
        registry.withLock { $0.values.compactMap(\.device) }.sorted { $0.hardware.index < $1.hardware.index }
    }

    /// The device at `index` with this architecture and node, made when no runtime has it.
    static func device(index: Int, preset: ChipPreset, numaNode: Int) throws(VtrnError) -> SharedDevice {
        let key = Key(index: index, architecture: preset.architecture, numaNode: numaNode)
        let result: Result<SharedDevice, VtrnError> = registry.withLock { registry in
            if let existing = registry[key]?.device { return .success(existing) }
            do {
                let device = SharedDevice(hardware: try VirtualDevice(preset: preset, index: index, numaNode: numaNode))
                registry[key] = WeakDevice(device: device)
                return .success(device)
            } catch let error as VirtualDevice.CreationError {
                return .failure(VtrnError(.outOfHostMemory, error.message))
            } catch {
                return .failure(VtrnError(.internal, "\(error)"))
            }
        }
        return try result.get()
    }
}
