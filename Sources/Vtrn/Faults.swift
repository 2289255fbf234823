import VtrnDevice

/// A fault for one device of a topology, as `VTRN_FAULTS` lists them.
public struct DeviceFault: Sendable, Equatable, CustomStringConvertible {
    public var device: Int
    public var fault: Fault

    public init(device: Int, fault: Fault) {
        self.device = device
        self.fault = fault
    }

    /// The VTRN_FAULTS spelling: "hbm-ue:device=1:address=0x0:bytes=4096".
    public var description: String {
        guard device != 0 else { return fault.description }
        var parts = fault.description.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        parts.insert("device=\(device)", at: 1)
        return parts.joined(separator: ":")
    }

    public static let acceptedForms =
        "faults separated by commas, each KIND[:OPTION]... with KIND dma-abort, dma-hang, hbm-ue, engine-hang or "
        + "device-loss, and OPTIONs device=N (default 0), core=N|any (and core=host for the DMA kinds: vtrn_memcpy's "
        + "engines), engine=N|any (a DMA engine) or engine=pe|act|dve|pool|dma|any (engine-hang), queue=N|any, "
        + "after=N, address=A and bytes=N (hbm-ue, both required; decimal or 0x hex), sticky or once (the default); "
        + "e.g. \"dma-abort:core=0:engine=1:after=10\", \"hbm-ue:address=0x1000:bytes=4096:sticky\", "
        + "\"engine-hang:core=1:engine=pe\", \"device-loss:device=1\""

    /// The options each kind takes (beside device, sticky and once).
    private static let optionsByKind: [(kind: String, options: [String])] = [
        ("dma-abort", ["core", "engine", "queue", "after"]),
        ("dma-hang", ["core", "engine", "queue", "after"]),
        ("hbm-ue", ["address", "bytes"]),
        ("engine-hang", ["core", "engine", "after"]),
        ("device-loss", []),
    ]

    /// Parses VTRN_FAULTS and checks each fault against the device it names in `topology`.
    public static func parse(_ text: String, topology: Topology, source: String = "VTRN_FAULTS") throws(VtrnError) -> [DeviceFault] {
        func failure(_ problem: String) -> VtrnError {
            .invalidArgument("\(source)=\"\(text)\": \(problem); accepted: \(acceptedForms)")
        }
        let trimmed = text.trimmingSpaces
        if trimmed.isEmpty { throw failure("no fault is listed") }
        let devices = topology.devices
        var faults: [DeviceFault] = []
        for (position, rawEntry) in trimmed.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            let entry = rawEntry.trimmingSpaces
            if entry.isEmpty { throw failure("fault \(position + 1) is empty") }
            let label = "fault \(position + 1) (\"\(entry)\")"
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false).map { $0.trimmingSpaces }
            let kindName = parts[0].lowercased()
            guard let allowed = optionsByKind.first(where: { $0.kind == kindName })?.options else {
                throw failure("\(label) has kind \"\(parts[0])\", which is not dma-abort, dma-hang, hbm-ue, engine-hang or device-loss")
            }
            var values: [String: String] = [:]
            var sticky: Bool?
            for part in parts.dropFirst() {
                let word = part.lowercased()
                if word == "sticky" || word == "once" {
                    if sticky != nil { throw failure("\(label) says sticky or once twice") }
                    sticky = word == "sticky"
                    continue
                }
                guard let equals = word.firstIndex(of: "="), equals != word.startIndex else {
                    throw failure("\(label) has \"\(part)\" where an option KEY=VALUE, sticky or once belongs")
                }
                let key = String(word[..<equals]), value = String(word[word.index(after: equals)...])
                guard key == "device" || allowed.contains(key) else {
                    let accepted = (["device"] + allowed).joined(separator: ", ")
                    throw failure("\(label) has option \"\(key)\", which \(kindName) does not take (it takes \(accepted), sticky, once)")
                }
                if values[key] != nil { throw failure("\(label) gives \(key) twice") }
                if value.isEmpty { throw failure("\(label) gives \(key) no value") }
                values[key] = value
            }
            func number(_ key: String) throws(VtrnError) -> UInt64? {
                guard let value = values[key] else { return nil }
                let parsed: UInt64? = value.hasPrefix("0x") ? UInt64(value.dropFirst(2), radix: 16)
                    : value.allSatisfy(\.isASCIIDigit) ? UInt64(value) : nil
                guard let parsed else {
                    throw failure("\(label) has \(key)=\"\(value)\", which is not a number (decimal, or hexadecimal after 0x)")
                }
                return parsed
            }
            func index(_ key: String, words: [String]) throws(VtrnError) -> (Int?, String?) {
                guard let value = values[key] else { return (nil, nil) }
                if words.contains(value) { return (nil, value) }
                guard value.allSatisfy(\.isASCIIDigit), let parsed = Int(value), parsed < 1 << 20 else {
                    throw failure("\(label) has \(key)=\"\(value)\", which is not a number or \(words.joined(separator: " or "))")
                }
                return (parsed, nil)
            }
            let device = try number("device").map { Int(clamping: $0) } ?? 0
            guard device < devices.count else {
                throw failure("\(label) names device \(device), which does not exist: the topology \"\(topology)\" has "
                              + "\(counted(devices.count, "device")) \(indexRange(devices.count, "device"))")
            }
            let after = try number("after") ?? 0
            let kind: Fault.Kind
            switch kindName {
            case "dma-abort", "dma-hang":
                let (core, coreWord) = try index("core", words: ["any", "host"])
                let (engine, _) = try index("engine", words: ["any"])
                let (queue, _) = try index("queue", words: ["any"])
                let target = Fault.DmaTarget(core: coreWord == "host" ? .host : core.map { .core($0) } ?? .any,
                                             engine: engine, queue: queue)
                kind = kindName == "dma-abort" ? .dmaAbort(target) : .dmaHang(target)
            case "hbm-ue":
                guard let address = try number("address"), let bytes = try number("bytes") else {
                    throw failure("\(label) needs both address=A and bytes=N (the HBM range that fails)")
                }
                kind = .hbmUncorrectable(address: address, bytes: bytes)
            case "engine-hang":
                let (core, _) = try index("core", words: ["any"])
                var engine: Engine?
                if let value = values["engine"], value != "any" {
                    guard let named = Engine.allCases.first(where: { $0.description.lowercased() == value }) else {
                        throw failure("\(label) has engine=\"\(value)\", which is not pe, act, dve, pool, dma or any")
                    }
                    engine = named
                }
                kind = .engineHang(core: core, engine: engine)
            default:
                kind = .deviceLoss
            }
            let fault = Fault(kind, after: after, sticky: sticky ?? false)
            if let problem = fault.problem(on: devices[device].architecture.preset, device: device) {
                throw failure("\(label): \(problem)")
            }
            faults.append(DeviceFault(device: device, fault: fault))
        }
        return faults
    }
}

extension Fault {
    /// What is wrong with this fault's targets on a device of `preset`, or nil.
    public func problem(on preset: ChipPreset, device: Int) -> String? {
        if after != 0 && !counts {
            return "after is \(after), but \(kindName) counts nothing (after applies to dma-abort, dma-hang and engine-hang)"
        }
        func coreProblem(_ core: Int) -> String? {
            (0..<preset.coresPerDevice).contains(core) ? nil
                : "core \(core) does not exist: device \(device) (\(preset.name)) has \(counted(preset.coresPerDevice, "core")) "
                    + indexRange(preset.coresPerDevice, "core")
        }
        switch kind {
        case .dmaAbort(let target), .dmaHang(let target):
            let engines: Int
            switch target.core {
            case .core(let core):
                if let problem = coreProblem(core) { return problem }
                engines = preset.dmaEnginesPerCore
            case .host:
                if target.queue != nil {
                    return "the host DMA engines' queues have no fixed numbers (vtrn_memcpy borrows any): the queue must be any"
                }
                engines = VirtualDevice.hostEngineCount
            case .any:
                engines = preset.dmaEnginesPerCore
            }
            if let engine = target.engine, !(0..<engines).contains(engine) {
                return "DMA engine \(engine) does not exist: \(target.core == .host ? "the host has" : "a core has") "
                    + "\(counted(engines, "DMA engine")) \(indexRange(engines, "engine"))"
            }
            if let queue = target.queue, !(0..<preset.queuesPerDmaEngine).contains(queue) {
                return "queue \(queue) does not exist: a DMA engine has \(counted(preset.queuesPerDmaEngine, "queue")) "
                    + indexRange(preset.queuesPerDmaEngine, "queue")
            }
        case .hbmUncorrectable(let address, let bytes):
            if bytes == 0 { return "the HBM range has 0 bytes" }
            if address >= preset.hbmBytes || bytes > preset.hbmBytes - address {
                return "the HBM range [0x\(String(address, radix: 16)), +\(bytes) bytes) runs past the end of device "
                    + "\(device)'s HBM (\(byteCount(preset.hbmBytes)))"
            }
        case .engineHang(let core, _):
            if let core, let problem = coreProblem(core) { return problem }
        case .deviceLoss:
            break
        }
        return nil
    }
}

/// A device's error counters and state, as `vtrn_device_get_error_counters` reports them.
public struct DeviceErrorCounters: Sendable, Equatable {
    /// Why the device is lost, or nil.
    public var loss: String?
    public var armedFaults: Int
    public var counters: ErrorCounters.Snapshot

    public var isLost: Bool { loss != nil }
}

extension Device {
    /// Throws `.invalidHandle` once the runtime is closed and `.deviceLost` while the device is lost:
    /// every call that reaches the hardware checks it.
    func checkUsable() throws(VtrnError) {
        try state.checkOpen()
        if let loss = hardware.faults.loss {
            throw VtrnError(.deviceLost, "device \(index) is lost (\(loss)); vtrn_device_reset brings it back")
        }
    }

    /// Arms `fault` on this device (see `Fault`); returns its number, which messages name
    /// ("injected fault 3"). A device loss takes effect at once.
    @discardableResult
    public func injectFault(_ fault: Fault) throws(VtrnError) -> Int {
        try checkUsable()
        if let problem = fault.problem(on: hardware.preset, device: index) { throw .invalidArgument(problem) }
        let armed = hardware.inject(fault)
        runtime.log(.info, "device \(index): \(armed.label) armed")
        return armed.number
    }

    /// Resets the device, as a driver's reset does, for every runtime that has it: work in flight
    /// fails with `.reset`, faults are disarmed, a lost device comes back, DMA queues and cores
    /// return to a clean state (a queue keeps only what was enqueued and not yet submitted; SBUF and
    /// PSUM read as NaN again). Device memory, its contents and every handle stay. Returns once
    /// no work from before the reset is left.
    public func reset(clearingCounters: Bool = false) throws(VtrnError) {
        try state.checkOpen()
        hardware.reset(clearingCounters: clearingCounters)
        runtime.log(.info, "device \(index) reset")
    }

    /// The device's error counters (shared by the runtimes that have it).
    public var errorCounters: DeviceErrorCounters {
        get throws(VtrnError) {
            try state.checkOpen()
            let faults = hardware.faults
            return DeviceErrorCounters(loss: faults.loss, armedFaults: faults.armed.count, counters: faults.counters.snapshot)
        }
    }
}
