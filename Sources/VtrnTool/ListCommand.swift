import ArgumentParser
import Foundation
import Vtrn

/// `vtrn ls`: the devices, as `neuron-ls` shows them, and which process holds which core, as
/// `neuron-ls -w` does (claims are the host's: any process's runtime with this topology and lock
/// directory).
struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List the virtual devices and the processes that hold their cores, as neuron-ls does.",
        discussion: """
            Core owners are read from the lock files in VTRN_LOCK_DIR (default /run/vtrn if writable, \
            else $XDG_RUNTIME_DIR/vtrn, else /tmp/vtrn-UID); a process sees another's claims on the same \
            topology and lock directory.
            """)

    @OptionGroup var runtimeArguments: RuntimeArguments

    @Flag(name: [.customShort("j"), .long], help: "Print JSON instead of a table.")
    var json = false

    // neuron-ls spells it -t/--topology; vtrn's --topology already names the topology to list
    // (RuntimeArguments), so the long form here is --show-topology.
    @Flag(name: [.customShort("t"), .customLong("show-topology")],
          help: "Print the instance type, each device's connected devices and the NeuronLink grid, as neuron-ls --topology does.")
    var showTopology = false

    func run() throws {
        let runtime = try runtimeArguments.makeRuntime()
        defer { runtime.close() }
        let devices = try runtime.devices.map { try $0.info }
        // Asked once per core, taking no lock: a snapshot.
        let holders = try runtime.devices.map { device in try (0..<device.cores.count).map { try device.coreHolder($0) } }
        if json {
            print(try jsonText(runtime: runtime, devices: devices, holders: holders))
        } else if showTopology {
            print(topologyText(runtime.configuration.topology, devices: devices))
        } else {
            print(table(runtime: runtime, devices: devices, holders: holders))
        }
    }

    /// The devices' table, then, given `holders`, the table of the cores held and by whom.
    func table(runtime: Runtime, devices: [DeviceInfo], holders: [[CoreHolder?]]? = nil) -> String {
        let configuration = runtime.configuration
        var lines = ["vtrn \(Vtrn.version), topology \(configuration.topology), "
                     + "\(configuration.coreCount) cores (\(configuration.visibleCores.count) visible: \(configuration.visibleCores)), "
                     + "core claims in \(configuration.lockDirectory)"]
        let header = [["DEVICE", "NAME", "ARCH", "CORES", "CORE IDS", "HBM", "CONNECTED DEVICES", "NUMA NODE",
                       "BUS ADDRESS", "PCI ID"]]
        let rows = devices.map { info in
            ["\(info.index)", info.name, "\(info.architecture)", "\(info.coreCount)",
             "\(info.firstCore)-\(info.firstCore + info.coreCount - 1)", "\(info.hbmBytes >> 30) GiB",
             connectedText(info), "\(info.numaNode)", info.busAddress,
             String(format: "%04x:%04x", info.pciVendorId, info.pciDeviceId)]
        }
        lines.append(contentsOf: renderTable(header + rows))
        // The error counters Neuron keeps in sysfs (hw_dma_abort_error, hw_hbm_ue_error, timeout,
        // reset_req_count), with the device's state and its injected faults.
        let errorHeader = [["DEVICE", "STATE", "DMA ABORTS", "HBM UE", "EXEC TIMEOUTS", "HANGS", "LOSSES", "RESETS",
                            "FAULTS ARMED/INJECTED"]]
        let errorRows = devices.map { info -> [String] in
            guard let errors = try? runtime.device(info.index).errorCounters else { return ["\(info.index)"] + Array(repeating: "?", count: 8) }
            let counters = errors.counters
            return ["\(info.index)", errors.isLost ? "LOST" : "ok", "\(counters.dmaAborts)", "\(counters.hbmUncorrectableErrors)",
                    "\(counters.executionTimeouts)", "\(counters.hangs)", "\(counters.deviceLosses)", "\(counters.resets)",
                    "\(errors.armedFaults)/\(counters.faultsInjected)"]
        }
        lines.append(contentsOf: renderTable(errorHeader + errorRows))

        guard let holders else { return lines.joined(separator: "\n") }

        let held = devices.flatMap { info in
            holders[info.index].enumerated().compactMap { core, holder in holder.map { (info, core, $0) } }
        }
        if held.isEmpty {
            lines.append("no core is claimed")
        } else {
            let ownerHeader = [["DEVICE", "CORE", "GLOBAL CORE", "PID", "RUNTIME", "COMMAND"]]
            let ownerRows = held.map { info, core, holder in
                ["\(info.index)", "\(core)", "\(info.firstCore + core)", holder.processID.map { "\($0)" } ?? "?",
                 holder.runtime.map { "\($0)" } ?? "?", abbreviated(holder.commandLine, to: 72)]
            }
            lines.append(contentsOf: renderTable(ownerHeader + ownerRows))
        }
        return lines.joined(separator: "\n")
    }

    func jsonText(runtime: Runtime, devices: [DeviceInfo], holders: [[CoreHolder?]]) throws -> String {
        let objects: [[String: Any]] = try devices.map { info in
            let device = try runtime.device(info.index)
            let errors = try device.errorCounters
            let counters = errors.counters
            return [
                "errors": [
                    "lost": errors.isLost, "loss": errors.loss ?? "", "armed_faults": errors.armedFaults,
                    "dma_aborts": counters.dmaAborts, "hbm_uncorrectable_errors": counters.hbmUncorrectableErrors,
                    "execution_timeouts": counters.executionTimeouts, "hangs": counters.hangs,
                    "device_losses": counters.deviceLosses, "resets": counters.resets, "faults_injected": counters.faultsInjected,
                ] as [String: Any],
                "index": info.index, "name": info.name, "architecture": "\(info.architecture)",
                "core_count": info.coreCount, "first_core": info.firstCore, "hbm_bytes": info.hbmBytes,
                "hbm_used_bytes": info.hbmUsedBytes, "hbm_bandwidth": info.hbmBandwidth, "numa_node": info.numaNode,
                "bus_address": info.busAddress, "pci_vendor_id": Int(info.pciVendorId),
                "pci_device_id": Int(info.pciDeviceId), "uuid": info.uuid,
                "dma_engines_per_core": info.dmaEnginesPerCore, "queues_per_dma_engine": info.queuesPerDmaEngine,
                "sbuf_bytes_per_core": info.sbufBytesPerCore, "psum_bytes_per_core": info.psumBytesPerCore,
                "semaphores_per_core": info.semaphoresPerCore, "visible_core_count": info.visibleCoreCount,
                "connected_to": info.connectedDevices,
                "interconnect": [
                    "name": info.interconnect.name, "links_per_device": info.interconnect.linksPerDevice,
                    "link_bytes_per_second": info.interconnect.linkBytesPerSecond,
                    "device_bytes_per_second": info.interconnect.deviceBytesPerSecond,
                    "hop_latency_ns": info.interconnect.hopLatencyNanoseconds,
                ] as [String: Any],
                "cores": device.cores.map { core in
                    ["index": core.index, "global_index": core.globalIndex, "visible": core.visible,
                     "holder": holders[info.index][core.index].map(holderObject) ?? NSNull()] as [String: Any]
                },
            ]
        }
        let data = try JSONSerialization.data(withJSONObject: objects, options: [.prettyPrinted, .sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

/// "12, 3, 4, 1", as neuron-ls's CONNECTED DEVICES column.
func connectedText(_ info: DeviceInfo) -> String {
    info.connectedDevices.map(String.init).joined(separator: ", ")
}

/// `vtrn ls -t`: what `neuron-ls --topology` prints (aws-neuron-sdk tools/neuron-sys-tools/
/// neuron-ls.rst): the instance type line, the table with CONNECTED DEVICES, and the grid of the
/// devices' NeuronLinks with its wrap-around legend. A device list, which is no instance, draws
/// one row per architecture ring.
func topologyText(_ topology: Topology, devices: [DeviceInfo]) -> String {
    var lines: [String] = []
    if let instance = topology.instance {
        lines.append("instance-type: \(instance)")
    } else {
        lines.append("instance-type: none (the device list \(topology): the devices of each architecture form a ring)")
    }
    // vtrn exposes every physical NeuronCore of a trn2 (8 per device): logical NeuronCore size 1.
    if devices.contains(where: { $0.architecture == .trn2 }) { lines.append("logical-neuroncore-config: 1") }
    let header = [["NEURON", "NEURON", "NEURON", "CONNECTED", "PCI"], ["DEVICE", "CORES", "MEMORY", "DEVICES", "BDF"]]
    let rows = devices.map { info in
        ["\(info.index)", "\(info.coreCount)", "\(info.hbmBytes >> 30) GB", connectedText(info),
         String(info.busAddress.drop(while: { $0 != ":" }).dropFirst())]
    }
    lines.append(contentsOf: renderNeuronLsTable(header: header, rows: rows))
    lines.append("")
    lines.append("")
    lines.append(contentsOf: topologyGrid(topology))
    return lines.joined(separator: "\n")
}

/// The "Neuron Device Topology" drawing of neuron-ls: a 4x4 torus as rows of `[ n ]` joined by
/// `◄––►`, vertical links between rows, `*` marking each wrap-around link; a device list as one
/// row per ring (no vertical links). Lines are padded to the width of the device rows, as
/// neuron-ls pads them (the documentation's example, less the 2 spaces that indent its block).
func topologyGrid(_ topology: Topology) -> [String] {
    let rows: [[Int]]
    let vertical: Bool
    if let torus = topology.instance?.torus {
        rows = (0..<torus.rows).map { row in Array(row * torus.columns..<(row + 1) * torus.columns) }
        vertical = true
    } else {
        rows = topology.rings
        vertical = false
    }
    func cell(_ device: Int) -> String { "[" + String(repeating: " ", count: device < 10 ? 1 : 0) + "\(device) ]" }
    // A row wraps around when it is a ring of 3 or more (2 devices share a single link).
    let wraps = rows.map { $0.count > 2 }
    let rowLines = rows.indices.map { index in
        (wraps[index] ? "*––►" : "    ") + rows[index].map(cell).joined(separator: "◄––►") + (wraps[index] ? "◄––*" : "")
    }
    let width = rowLines.map(\.count).max() ?? 0
    func padded(_ line: String) -> String { line + String(repeating: " ", count: max(0, width - line.count)) }
    var lines = ["Neuron Device Topology"]
    if vertical {
        let columns = rows.first?.count ?? 0
        // Under each cell's centre: cells are 5 wide, 4 apart, after the 4 characters of "*––►".
        func marks(_ mark: Character) -> String {
            padded((0..<columns).map { column in String(repeating: " ", count: column == 0 ? 6 : 8) + String(mark) }.joined())
        }
        let between = [marks("▲"), marks("│"), marks("▼")]
        lines += [marks("*"), marks("│"), marks("▼")]
        for (index, line) in rowLines.enumerated() {
            lines.append(padded(line))
            if index < rowLines.count - 1 { lines += between }
        }
        lines += [marks("▲"), marks("│"), marks("*")]
    } else {
        lines += rowLines.map(padded)
    }
    if vertical || wraps.contains(true) {
        lines += ["", "Legend:", "", "        *––► = Wrap-around link"]
    }
    return lines
}

/// A boxed table as neuron-ls draws it: header lines centred in their columns, cells left-aligned.
func renderNeuronLsTable(header: [[String]], rows: [[String]]) -> [String] {
    guard let first = header.first else { return [] }
    let widths = first.indices.map { column in (header + rows).map { $0[column].count }.max()! }
    let rule = "+" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "+") + "+"
    func centred(_ text: String, _ width: Int) -> String {
        let left = (width + 2 - text.count) / 2
        return String(repeating: " ", count: left) + text + String(repeating: " ", count: width + 2 - text.count - left)
    }
    let headerLines = header.map { line in "|" + line.indices.map { centred(line[$0], widths[$0]) }.joined(separator: "|") + "|" }
    let rowLines = rows.map { row in
        "| " + row.indices.map { row[$0] + String(repeating: " ", count: widths[$0] - row[$0].count) }.joined(separator: " | ") + " |"
    }
    return [rule] + headerLines + [rule] + rowLines + [rule]
}

/// A core's holder in `vtrn ls --json`; null fields when its lock file names no live process.
func holderObject(_ holder: CoreHolder) -> [String: Any] {
    ["pid": holder.processID.map { Int($0) as Any } ?? NSNull(), "command": holder.commandLine,
     "runtime": holder.runtime.map { $0 as Any } ?? NSNull(), "this_process": holder.isThisProcess]
}

/// `text` cut to `limit` characters, ending in "..." when cut.
func abbreviated(_ text: String, to limit: Int) -> String {
    text.count <= limit ? text : String(text.prefix(limit - 3)) + "..."
}

/// A boxed table like neuron-ls's: the first row is the header.
func renderTable(_ rows: [[String]]) -> [String] {
    guard let first = rows.first else { return [] }
    let widths = first.indices.map { column in rows.map { $0[column].count }.max()! }
    let rule = "+" + widths.map { String(repeating: "-", count: $0 + 2) }.joined(separator: "+") + "+"
    func line(_ row: [String]) -> String {
        "| " + row.indices.map { row[$0] + String(repeating: " ", count: widths[$0] - row[$0].count) }
            .joined(separator: " | ") + " |"
    }
    return [rule, line(first), rule] + rows.dropFirst().map(line) + [rule]
}
