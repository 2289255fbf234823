// Exports of include/vtrn.h: faults, resets and error counters. Translation only.
import CVtrn
import Vtrn
import VtrnDevice

/// The Swift fault of a C vtrn_fault_t, its fields checked (the runtime checks them against the device).
private func fault(_ given: vtrn_fault_t) throws(VtrnError) -> Fault {
    let known = VTRN_FAULT_STICKY.rawValue
    guard given.flags & ~known == 0 else {
        throw .invalidArgument("fault.flags has unknown bits 0x\(String(given.flags & ~known, radix: 16)); accepted: VTRN_FAULT_STICKY")
    }
    guard given.reserved == 0 else { throw .invalidArgument("fault.reserved is \(given.reserved); it must be 0") }
    let any = Int32(VTRN_FAULT_ANY), host = Int32(VTRN_FAULT_HOST)
    /// A core, engine or queue number, or nil for VTRN_FAULT_ANY.
    func index(_ value: Int32, _ name: String, allowingHost: Bool = false) throws(VtrnError) -> Int? {
        if value == any { return nil }
        guard value >= 0 else {
            let accepted = allowingHost ? "a number, VTRN_FAULT_ANY (-1) or VTRN_FAULT_HOST (-2)" : "a number or VTRN_FAULT_ANY (-1)"
            throw .invalidArgument("fault.\(name) is \(value); accepted: \(accepted)")
        }
        return Int(value)
    }
    let kind: Fault.Kind
    switch given.kind {
    case VTRN_FAULT_DMA_ABORT, VTRN_FAULT_DMA_HANG:
        let core: Fault.DmaCore = given.core == host ? .host : try index(given.core, "core", allowingHost: true).map { .core($0) } ?? .any
        let target = Fault.DmaTarget(core: core, engine: try index(given.engine, "engine"), queue: try index(given.queue, "queue"))
        kind = given.kind == VTRN_FAULT_DMA_ABORT ? .dmaAbort(target) : .dmaHang(target)
    case VTRN_FAULT_HBM_UE:
        kind = .hbmUncorrectable(address: given.address, bytes: given.bytes)
    case VTRN_FAULT_ENGINE_HANG:
        var engine: Engine?
        if given.engine != any {
            guard let named = Engine(flag: UInt32(bitPattern: given.engine)) else {
                throw .invalidArgument("fault.engine is \(given.engine); an engine hang takes one VTRN_ENGINE_* bit (PE 1, ACT 2, "
                                       + "DVE 4, POOL 8, DMA 16) or VTRN_FAULT_ANY (-1)")
            }
            engine = named
        }
        kind = .engineHang(core: try index(given.core, "core"), engine: engine)
    case VTRN_FAULT_DEVICE_LOSS:
        kind = .deviceLoss
    default:
        throw .invalidArgument("fault.kind is \(given.kind.rawValue); accepted: VTRN_FAULT_DMA_ABORT (1), VTRN_FAULT_DMA_HANG (2), "
                               + "VTRN_FAULT_HBM_UE (3), VTRN_FAULT_ENGINE_HANG (4), VTRN_FAULT_DEVICE_LOSS (5)")
    }
    return Fault(kind, after: given.after, sticky: given.flags & known != 0)
}

@c @implementation
public func vtrn_device_inject_fault(_ device: vtrn_device_t?, _ fault: UnsafePointer<vtrn_fault_t>?) -> vtrn_status_t {
    exported {
        let device = try Handles.devices.lookup(handleBits(device)).object
        guard let given = try vtrn_fault_t.read(fault, name: "fault", defaults: vtrn_fault_t()) else {
            throw VtrnError.invalidArgument("fault is NULL")
        }
        try device.injectFault(try VtrnCABI.fault(given))
    }
}

@c @implementation
public func vtrn_device_reset(_ device: vtrn_device_t?, _ flags: UInt32) -> vtrn_status_t {
    exported {
        let device = try Handles.devices.lookup(handleBits(device)).object
        let known = VTRN_DEVICE_RESET_CLEAR_COUNTERS.rawValue
        guard flags & ~known == 0 else {
            throw VtrnError.invalidArgument("flags has unknown bits 0x\(String(flags & ~known, radix: 16)); accepted: "
                                            + "VTRN_DEVICE_RESET_CLEAR_COUNTERS")
        }
        try device.reset(clearingCounters: flags & known != 0)
    }
}

@c @implementation
public func vtrn_device_get_error_counters(_ device: vtrn_device_t?,
                                           _ counters: UnsafeMutablePointer<vtrn_device_error_counters_t>?) -> vtrn_status_t {
    exported {
        let device = try Handles.devices.lookup(handleBits(device)).object
        let counters = try vtrn_device_error_counters_t.checkOutput(counters, name: "counters")
        let current = try device.errorCounters
        var result = vtrn_device_error_counters_t()
        result.lost = current.isLost ? 1 : 0
        result.armed_faults = UInt32(current.armedFaults)
        result.dma_aborts = current.counters.dmaAborts
        result.hbm_uncorrectable_errors = current.counters.hbmUncorrectableErrors
        result.execution_timeouts = current.counters.executionTimeouts
        result.hangs = current.counters.hangs
        result.device_losses = current.counters.deviceLosses
        result.resets = current.counters.resets
        result.faults_injected = current.counters.faultsInjected
        result.write(to: counters)
    }
}
