// The exports of include/vtrn.h: translation only. Each decodes handles and pointers, calls the
// runtime, and writes results, all inside `exported`, which turns errors into status + message.
import CVtrn
import CVtrnSystem
import Vtrn
import VtrnDevice

// MARK: - Version and errors

@c @implementation
public func vtrn_version() -> UInt32 {
    UInt32(VTRN_VERSION_MAJOR) << 16 | UInt32(VTRN_VERSION_MINOR) << 8 | UInt32(VTRN_VERSION_PATCH)
}

private let statusStrings = StaticCStrings(Status.allCases.map(\.description) + ["unknown status"])

@c @implementation
public func vtrn_status_string(_ status: vtrn_status_t) -> UnsafePointer<CChar>! {
    guard let known = Status(rawValue: Int32(truncatingIfNeeded: status.rawValue)) else {
        return statusStrings.pointers.last!
    }
    return statusStrings.pointers[Int(known.rawValue)]
}

@c @implementation
public func vtrn_last_error() -> UnsafePointer<CChar>! {
    vtrnsys_last_error()
}

@c @implementation
public func vtrn_get_handle_counts(_ counts: UnsafeMutablePointer<vtrn_handle_counts_t>?) -> vtrn_status_t {
    exported {
        let counts = try vtrn_handle_counts_t.checkOutput(counts, name: "counts")
        var result = vtrn_handle_counts_t()
        result.runtimes = UInt64(Handles.runtimes.liveCount)
        result.devices = UInt64(Handles.devices.liveCount)
        result.host_buffers = UInt64(Handles.hostBuffers.liveCount)
        result.device_memory = UInt64(Handles.deviceMemory.liveCount)
        result.dma_queues = UInt64(Handles.dmaQueues.liveCount)
        result.programs = UInt64(Handles.programs.liveCount)
        result.kernels = UInt64(Handles.kernels.liveCount)
        result.fences = UInt64(Handles.fences.liveCount)
        result.comms = UInt64(Handles.comms.liveCount)
        result.total = result.runtimes + result.devices + result.host_buffers + result.device_memory + result.dma_queues
            + result.programs + result.kernels + result.fences + result.comms
        result.orphaned_host_bytes = UInt64(HostBuffer.reservedBytes.load(ordering: .relaxed))
        result.write(to: counts)
    }
}

// MARK: - Runtime

@c @implementation
public func vtrn_runtime_create(_ options: UnsafePointer<vtrn_runtime_options_t>?,
                                _ out: UnsafeMutablePointer<vtrn_runtime_t?>?) -> vtrn_status_t {
    exported {
        let out = try UnsafeMutablePointer.required(out, "out")
        var swiftOptions = RuntimeOptions()
        if let given = try vtrn_runtime_options_t.read(options, name: "options", defaults: vtrn_runtime_options_t()) {
            swiftOptions.topology = try string(given.topology, "options.topology")
            swiftOptions.visibleCores = try string(given.visible_cores, "options.visible_cores")
            let level = Int(given.log_level.rawValue)
            if level != 0 {
                guard let chosen = LogLevel(rawValue: level) else {
                    throw VtrnError.invalidArgument("options.log_level is \(level); accepted: VTRN_LOG_LEVEL_DEFAULT (0) to VTRN_LOG_LEVEL_TRACE (5)")
                }
                swiftOptions.logLevel = chosen
            }
        }
        let runtime = try Runtime(options: swiftOptions)
        out.pointee = handle(try Handles.register(runtime))
    }
}

@c @implementation
public func vtrn_runtime_destroy(_ runtime: vtrn_runtime_t?) -> vtrn_status_t {
    exported {
        guard runtime != nil else { return }
        try Handles.destroy(handleBits(runtime))
    }
}

@c @implementation
public func vtrn_runtime_get_info(_ runtime: vtrn_runtime_t?, _ info: UnsafeMutablePointer<vtrn_runtime_info_t>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.runtimes.lookup(handleBits(runtime))
        let info = try vtrn_runtime_info_t.checkOutput(info, name: "info")
        let configuration = entry.runtime.configuration
        var result = vtrn_runtime_info_t()
        result.device_count = UInt32(entry.runtime.devices.count)
        result.core_count = UInt32(configuration.coreCount)
        result.visible_core_count = UInt32(configuration.visibleCores.count)
        result.log_level = vtrn_log_level_t(rawValue: UInt32(configuration.logLevel.rawValue))
        result.exec_timeout_ns = configuration.execTimeoutMilliseconds.map { $0 * 1_000_000 } ?? UInt64.max
        copyCString(configuration.topology.description, into: &result.topology)
        copyCString(configuration.topology.instance?.name ?? "", into: &result.instance_type)
        result.write(to: info)
    }
}

// MARK: - Devices

@c @implementation
public func vtrn_device_count(_ runtime: vtrn_runtime_t?, _ count: UnsafeMutablePointer<UInt32>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.runtimes.lookup(handleBits(runtime))
        let count = try UnsafeMutablePointer.required(count, "count")
        count.pointee = UInt32(entry.deviceHandles.count)
    }
}

@c @implementation
public func vtrn_device_get(_ runtime: vtrn_runtime_t?, _ index: UInt32, _ out: UnsafeMutablePointer<vtrn_device_t?>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.runtimes.lookup(handleBits(runtime))
        let out = try UnsafeMutablePointer.required(out, "out")
        _ = try entry.runtime.device(Int(index))
        out.pointee = handle(entry.deviceHandles[Int(index)])
    }
}

@c @implementation
public func vtrn_device_get_info(_ device: vtrn_device_t?, _ info: UnsafeMutablePointer<vtrn_device_info_t>?) -> vtrn_status_t {
    exported {
        let device = try Handles.devices.lookup(handleBits(device)).object
        let info = try vtrn_device_info_t.checkOutput(info, name: "info")
        let swiftInfo = try device.info
        var result = vtrn_device_info_t()
        result.index = UInt32(swiftInfo.index)
        result.architecture = vtrn_architecture_t(rawValue: UInt32(swiftInfo.architecture.rawValue))
        copyCString(swiftInfo.name, into: &result.name)
        result.core_count = UInt32(swiftInfo.coreCount)
        result.first_core = UInt32(swiftInfo.firstCore)
        result.hbm_bytes = swiftInfo.hbmBytes
        result.hbm_used_bytes = swiftInfo.hbmUsedBytes
        result.hbm_bandwidth = swiftInfo.hbmBandwidth
        result.numa_node = Int32(swiftInfo.numaNode)
        result.pci_vendor_id = swiftInfo.pciVendorId
        result.pci_device_id = swiftInfo.pciDeviceId
        copyCString(swiftInfo.busAddress, into: &result.bus_address)
        copyCString(swiftInfo.uuid, into: &result.uuid)
        result.dma_engines_per_core = UInt32(swiftInfo.dmaEnginesPerCore)
        result.queues_per_dma_engine = UInt32(swiftInfo.queuesPerDmaEngine)
        result.sbuf_bytes_per_core = swiftInfo.sbufBytesPerCore
        result.psum_bytes_per_core = swiftInfo.psumBytesPerCore
        result.semaphores_per_core = UInt32(swiftInfo.semaphoresPerCore)
        result.visible_core_count = UInt32(swiftInfo.visibleCoreCount)
        copyCString(swiftInfo.interconnect.name, into: &result.interconnect)
        result.link_count = UInt32(swiftInfo.connectedDevices.count)
        result.links_per_device = UInt32(swiftInfo.interconnect.linksPerDevice)
        result.link_bandwidth = UInt64(swiftInfo.interconnect.linkBytesPerSecond.rounded())
        result.device_link_bandwidth = UInt64(swiftInfo.interconnect.deviceBytesPerSecond.rounded())
        result.hop_latency_ns = UInt64(swiftInfo.interconnect.hopLatencyNanoseconds.rounded())
        result.write(to: info)
    }
}

@c @implementation
public func vtrn_device_get_links(_ device: vtrn_device_t?, _ devices: UnsafeMutablePointer<UInt32>?,
                                  _ count: UnsafeMutablePointer<UInt32>?) -> vtrn_status_t {
    exported {
        let device = try Handles.devices.lookup(handleBits(device)).object
        let count = try UnsafeMutablePointer.required(count, "count")
        let links = try device.info.connectedDevices
        if let devices {
            guard Int(count.pointee) >= links.count else {
                let capacity = count.pointee
                count.pointee = UInt32(links.count)
                throw VtrnError.invalidArgument("*count is \(capacity), but device \(device.index) has "
                                                + "\(links.count) link\(links.count == 1 ? "" : "s"); pass an array of "
                                                + "\(links.count) (count now holds it)")
            }
            for (position, linked) in links.enumerated() { devices[position] = UInt32(linked) }
        }
        count.pointee = UInt32(links.count)
    }
}

@c @implementation
public func vtrn_device_get_core_info(_ device: vtrn_device_t?, _ core: UInt32,
                                      _ info: UnsafeMutablePointer<vtrn_core_info_t>?) -> vtrn_status_t {
    exported {
        let device = try Handles.devices.lookup(handleBits(device)).object
        let info = try vtrn_core_info_t.checkOutput(info, name: "info")
        let core = try device.coreInfo(Int(core))
        var result = vtrn_core_info_t()
        result.device_index = UInt32(core.deviceIndex)
        result.index = UInt32(core.index)
        result.global_index = UInt32(core.globalIndex)
        result.visible = core.visible ? 1 : 0
        result.engines = core.engines.rawValue
        result.sbuf_partitions = UInt32(core.sbufPartitions)
        result.sbuf_bytes_per_partition = UInt32(core.sbufBytesPerPartition)
        result.psum_bytes_per_partition = UInt32(core.psumBytesPerPartition)
        result.psum_banks = UInt32(core.psumBanks)
        result.semaphores = UInt32(core.semaphores)
        result.dma_engines = UInt32(core.dmaEngines)
        result.queues_per_dma_engine = UInt32(core.queuesPerDmaEngine)
        result.pe_clock_hz = core.peClockHz
        result.act_clock_hz = core.actClockHz
        result.dve_clock_hz = core.dveClockHz
        result.pool_clock_hz = core.poolClockHz
        result.write(to: info)
    }
}

@c @implementation
public func vtrn_device_get_core_holder(_ device: vtrn_device_t?, _ core: UInt32,
                                        _ holder: UnsafeMutablePointer<vtrn_core_holder_t>?) -> vtrn_status_t {
    exported {
        let device = try Handles.devices.lookup(handleBits(device)).object
        let output = try vtrn_core_holder_t.checkOutput(holder, name: "holder")
        var result = vtrn_core_holder_t()
        if let holder = try device.coreHolder(Int(core)) {
            result.held = 1
            result.pid = holder.processID ?? -1
            result.runtime = UInt32(clamping: holder.runtime ?? 0)
            result.this_process = holder.isThisProcess ? 1 : 0
            copyCString(holder.commandLine, into: &result.command)
        }
        result.write(to: output)
    }
}
