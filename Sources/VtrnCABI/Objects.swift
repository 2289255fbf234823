import Vtrn

/// The C layer's record of a runtime: the runtime and the handles of its devices, so that
/// `vtrn_device_get` returns the same handle for the same index.
final class RuntimeEntry: Sendable {
    let runtime: Runtime
    let token: UInt64
    let deviceHandles: [UInt64]

    init(runtime: Runtime, token: UInt64, deviceHandles: [UInt64]) {
        self.runtime = runtime
        self.token = token
        self.deviceHandles = deviceHandles
    }
}

/// The C layer's record of an object a runtime owns: the object and its runtime's token, which
/// the runtime's destruction uses to retire the handle.
final class Owned<Object: AnyObject & Sendable>: Sendable {
    let object: Object
    let runtimeToken: UInt64

    init(_ object: Object, runtimeToken: UInt64) {
        self.object = object
        self.runtimeToken = runtimeToken
    }
}

/// Every live handle of the process, one table per kind.
enum Handles {
    static let runtimes = HandleTable<RuntimeEntry>(.runtime)
    static let devices = HandleTable<Owned<Device>>(.device)
    static let hostBuffers = HandleTable<Owned<HostBuffer>>(.hostBuffer)
    static let deviceMemory = HandleTable<Owned<DeviceMemory>>(.deviceMemory)
    static let dmaQueues = HandleTable<Owned<DmaQueue>>(.dmaQueue)
    static let programs = HandleTable<Owned<Program>>(.program)
    static let kernels = HandleTable<Owned<Kernel>>(.kernel)
    static let fences = HandleTable<Owned<Fence>>(.fence)
    static let comms = HandleTable<Owned<Communicator>>(.comm)

    /// Registers an object a runtime owns.
    /// A runtime destroyed by another thread between the object's making and its registration
    /// has already swept its handles: the late one is taken back, and the call fails as calls on
    /// a destroyed runtime do (else it would outlive its runtime, a leak handle counts show).
    static func register<Object>(_ object: Object, in table: HandleTable<Owned<Object>>, runtimeToken: UInt64) throws(VtrnError) -> UInt64 {
        let token = try table.insert(Owned(object, runtimeToken: runtimeToken), owner: runtimeToken)
        do throws(VtrnError) {
            _ = try runtimes.lookup(runtimeToken)
        } catch {
            _ = try? table.remove(token, because: "its runtime was destroyed while it was made")
            throw error
        }
        return token
    }

    /// Registers a new runtime and its devices.
    static func register(_ runtime: Runtime) throws(VtrnError) -> UInt64 {
        // The entry needs its own token and its devices' tokens: reserve through a placeholder
        // runtime token first, then the devices with it as owner.
        let placeholder = RuntimeEntry(runtime: runtime, token: 0, deviceHandles: [])
        let token = try runtimes.insert(placeholder)
        var deviceHandles: [UInt64] = []
        do {
            for device in runtime.devices {
                deviceHandles.append(try devices.insert(Owned(device, runtimeToken: token), owner: token))
            }
        } catch {
            devices.removeAll(ownedBy: token, because: "never created")
            _ = try? runtimes.remove(token, because: "never created")
            throw error
        }
        try runtimes.replace(token, with: RuntimeEntry(runtime: runtime, token: token, deviceHandles: deviceHandles))
        return token
    }

    /// Unregisters a runtime and every handle it owns, then closes it.
    static func destroy(_ token: UInt64) throws(VtrnError) {
        let entry = try runtimes.remove(token, because: "it was destroyed")
        let reason = "runtime \(entry.runtime.serial), which owned it, was destroyed"
        fences.removeAll(ownedBy: token, because: reason)
        comms.removeAll(ownedBy: token, because: reason)
        kernels.removeAll(ownedBy: token, because: reason)
        programs.removeAll(ownedBy: token, because: reason)
        dmaQueues.removeAll(ownedBy: token, because: reason)
        deviceMemory.removeAll(ownedBy: token, because: reason)
        // A thread racing the destruction may still hold a mapped pointer: keep its address valid.
        for buffer in hostBuffers.removeAll(ownedBy: token, because: reason) { buffer.object.keepAddressWhenReleased() }
        devices.removeAll(ownedBy: token, because: reason)
        entry.runtime.close()
    }
}
