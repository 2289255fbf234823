import Synchronization
import VtrnDevice

/// The process's virtual hardware. As on a real host, a device exists once however many runtimes
/// use it: runtimes whose topologies give the same architecture at the same index on the same
/// NUMA node share the device, its HBM (usage is the device's, not a runtime's) and its cores,
/// which a runtime claims when it first uses one. A device lives while a runtime references it.
final class SharedDevice: Sendable {
    let hardware: VirtualDevice
    /// core → the runtime that claimed it (serial, for messages).
    private let claims = Mutex<[Int: Int]>([:])
    /// Idle driver queues on the host engines, for `Device.copy`.
    let hostQueues = Mutex<[DmaQueue.Ring]>([])

    init(hardware: VirtualDevice) { self.hardware = hardware }

    deinit {
        for ring in hostQueues.withLock({ $0 }) { hardware.closeQueue(ring.hardware) }
    }

    /// Claims `core` for runtime `serial`, or fails with `.busy` naming the holder.
    func claim(core: Int, for serial: Int) throws(VtrnError) {
        let holder: Int? = claims.withLock { claims in
            if let holder = claims[core], holder != serial { return holder }
            claims[core] = serial
            return nil
        }
        if let holder {
            throw VtrnError(.busy, "core \(core) of device \(hardware.index) is claimed by runtime \(holder) until it is destroyed")
        }
    }

    func releaseClaims(of serial: Int) {
        claims.withLock { claims in claims = claims.filter { $0.value != serial } }
    }

    func holder(of core: Int) -> Int? { claims.withLock { $0[core] } }

    /// The cores runtime `serial` holds.
    func cores(claimedBy serial: Int) -> [Int] { claims.withLock { $0.filter { $0.value == serial }.map(\.key) } }

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
