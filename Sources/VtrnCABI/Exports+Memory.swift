// Exports of include/vtrn.h: host buffers, device memory, DMA queues. Translation only.
import CVtrn
import CVtrnSystem
import Vtrn

// MARK: - Host buffers

@c @implementation
public func vtrn_host_buffer_create(_ runtime: vtrn_runtime_t?, _ bytes: Int,
                                    _ options: UnsafePointer<vtrn_host_buffer_options_t>?,
                                    _ out: UnsafeMutablePointer<vtrn_host_buffer_t?>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.runtimes.lookup(handleBits(runtime))
        let out = try UnsafeMutablePointer.required(out, "out")
        var swiftOptions = HostBufferOptions()
        if let given = try vtrn_host_buffer_options_t.read(options, name: "options", defaults: vtrn_host_buffer_options_t()) {
            guard let placement = Placement(rawValue: Int(given.placement.rawValue)) else {
                throw VtrnError.invalidArgument("options.placement is \(given.placement.rawValue); accepted: VTRN_NUMA_DEVICE_LOCAL (0), "
                                                + "VTRN_NUMA_NODE (1), VTRN_NUMA_INTERLEAVE (2), VTRN_NUMA_ANY (3)")
            }
            let known = VTRN_HOST_BUFFER_HUGEPAGES.rawValue | VTRN_HOST_BUFFER_LOCKED.rawValue
            guard given.flags & ~known == 0 else {
                throw VtrnError.invalidArgument("options.flags has unknown bits 0x\(String(given.flags & ~known, radix: 16)); "
                                                + "accepted: VTRN_HOST_BUFFER_HUGEPAGES, VTRN_HOST_BUFFER_LOCKED")
            }
            swiftOptions = HostBufferOptions(
                placement: placement, device: Int(given.device), numaNode: given.numa_node >= 0 ? Int(given.numa_node) : nil,
                hugePages: given.flags & VTRN_HOST_BUFFER_HUGEPAGES.rawValue != 0,
                locked: given.flags & VTRN_HOST_BUFFER_LOCKED.rawValue != 0)
            if placement == .node && given.numa_node < 0 {
                throw VtrnError.invalidArgument("options.numa_node is \(given.numa_node); VTRN_NUMA_NODE needs a node "
                                                + "(online: \(entry.runtime.host.nodeList))")
            }
        }
        let buffer = try entry.runtime.makeHostBuffer(bytes: bytes, options: swiftOptions)
        // Should registering fail, the object is released with its last reference.
        out.pointee = handle(try Handles.register(buffer, in: Handles.hostBuffers, runtimeToken: entry.token))
    }
}

@c @implementation
public func vtrn_host_buffer_register(_ runtime: vtrn_runtime_t?, _ pointer: UnsafeMutableRawPointer?, _ bytes: Int,
                                      _ out: UnsafeMutablePointer<vtrn_host_buffer_t?>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.runtimes.lookup(handleBits(runtime))
        let out = try UnsafeMutablePointer.required(out, "out")
        guard let pointer else { throw VtrnError.invalidArgument("pointer is NULL") }
        let buffer = try entry.runtime.registerHostBuffer(pointer, bytes: bytes)
        // Should registering fail, the object is released with its last reference.
        out.pointee = handle(try Handles.register(buffer, in: Handles.hostBuffers, runtimeToken: entry.token))
    }
}

@c @implementation
public func vtrn_host_buffer_map(_ buffer: vtrn_host_buffer_t?, _ data: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
                                 _ bytes: UnsafeMutablePointer<Int>?) -> vtrn_status_t {
    exported {
        let buffer = try Handles.hostBuffers.lookup(handleBits(buffer)).object
        let data = try UnsafeMutablePointer.required(data, "data")
        data.pointee = buffer.data
        bytes?.pointee = buffer.bytes
    }
}

@c @implementation
public func vtrn_host_buffer_numa_node(_ buffer: vtrn_host_buffer_t?, _ node: UnsafeMutablePointer<Int32>?) -> vtrn_status_t {
    exported {
        let buffer = try Handles.hostBuffers.lookup(handleBits(buffer)).object
        let node = try UnsafeMutablePointer.required(node, "node")
        node.pointee = Int32(try buffer.numaNode() ?? -1)
    }
}

@c @implementation
public func vtrn_host_buffer_node_pages(_ buffer: vtrn_host_buffer_t?, _ pages: UnsafeMutablePointer<UInt64>?,
                                        _ count: UnsafeMutablePointer<UInt32>?) -> vtrn_status_t {
    exported {
        let buffer = try Handles.hostBuffers.lookup(handleBits(buffer)).object
        let count = try UnsafeMutablePointer.required(count, "count")
        let perNode = try buffer.pagesPerNode()
        if let pages {
            guard Int(count.pointee) >= perNode.count else {
                let capacity = count.pointee
                count.pointee = UInt32(perNode.count)
                throw VtrnError.invalidArgument("*count is \(capacity), but the host can have \(perNode.count) node\(perNode.count == 1 ? "" : "s"); "
                                                + "pass an array of \(perNode.count) (count now holds it)")
            }
            for (node, value) in perNode.enumerated() { pages[node] = value }
        }
        count.pointee = UInt32(perNode.count)
    }
}

@c @implementation
public func vtrn_host_buffer_get_info(_ buffer: vtrn_host_buffer_t?, _ info: UnsafeMutablePointer<vtrn_host_buffer_info_t>?) -> vtrn_status_t {
    exported {
        let buffer = try Handles.hostBuffers.lookup(handleBits(buffer)).object
        let info = try vtrn_host_buffer_info_t.checkOutput(info, name: "info")
        var result = vtrn_host_buffer_info_t()
        result.data = buffer.data
        result.bytes = buffer.bytes
        result.placement = vtrn_numa_placement_t(rawValue: UInt32(buffer.options.placement.rawValue))
        switch buffer.policy {
        case .bind(let node): result.requested_node = Int32(node)
        default: result.requested_node = -1
        }
        result.flags = (buffer.options.hugePages ? VTRN_HOST_BUFFER_HUGEPAGES.rawValue : 0)
            | (buffer.options.locked ? VTRN_HOST_BUFFER_LOCKED.rawValue : 0)
        result.huge_pages = buffer.hugePages ? 1 : 0
        result.locked = buffer.locked ? 1 : 0
        result.registered = buffer.isRegistered ? 1 : 0
        copyCString(buffer.note, into: &result.note)
        result.write(to: info)
    }
}

@c @implementation
public func vtrn_host_buffer_destroy(_ buffer: vtrn_host_buffer_t?) -> vtrn_status_t {
    exported {
        guard buffer != nil else { return }
        try Handles.hostBuffers.remove(handleBits(buffer), because: "it was destroyed").object.close()
    }
}

// MARK: - Device memory

@c @implementation
public func vtrn_device_memory_alloc(_ device: vtrn_device_t?, _ bytes: UInt64, _ alignment: UInt64,
                                     _ out: UnsafeMutablePointer<vtrn_device_memory_t?>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.devices.lookup(handleBits(device))
        let out = try UnsafeMutablePointer.required(out, "out")
        let memory = try entry.object.allocate(bytes, alignment: alignment)
        // Should registering fail, the object is released with its last reference.
        out.pointee = handle(try Handles.register(memory, in: Handles.deviceMemory, runtimeToken: entry.runtimeToken))
    }
}

@c @implementation
public func vtrn_device_memory_free(_ memory: vtrn_device_memory_t?) -> vtrn_status_t {
    exported {
        guard memory != nil else { return }
        try Handles.deviceMemory.remove(handleBits(memory), because: "it was freed").object.free()
    }
}

@c @implementation
public func vtrn_device_memory_get_info(_ memory: vtrn_device_memory_t?,
                                        _ info: UnsafeMutablePointer<vtrn_device_memory_info_t>?) -> vtrn_status_t {
    exported {
        let memory = try Handles.deviceMemory.lookup(handleBits(memory)).object
        let info = try vtrn_device_memory_info_t.checkOutput(info, name: "info")
        var result = vtrn_device_memory_info_t()
        result.device_index = UInt32(memory.device.index)
        result.address = memory.address
        result.bytes = memory.bytes
        result.alignment = memory.alignment
        result.write(to: info)
    }
}

@c @implementation
public func vtrn_device_get_memory_usage(_ device: vtrn_device_t?, _ usage: UnsafeMutablePointer<vtrn_memory_usage_t>?) -> vtrn_status_t {
    exported {
        let device = try Handles.devices.lookup(handleBits(device)).object
        let usage = try vtrn_memory_usage_t.checkOutput(usage, name: "usage")
        let current = try device.memoryUsage
        var result = vtrn_memory_usage_t()
        result.total_bytes = current.capacity
        result.used_bytes = current.used
        result.free_bytes = current.free
        result.largest_free_block = current.largestFreeBlock
        result.tensor_bytes = current.byCategory[0]
        result.kernel_bytes = current.byCategory[1]
        result.allocation_count = UInt64(current.allocationCount)
        result.resident_bytes = device.hardware.hbm.residentBytes
        result.write(to: usage)
    }
}

// MARK: - DMA

@c @implementation
public func vtrn_dma_queue_create(_ device: vtrn_device_t?, _ options: UnsafePointer<vtrn_dma_queue_options_t>?,
                                  _ out: UnsafeMutablePointer<vtrn_dma_queue_t?>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.devices.lookup(handleBits(device))
        let out = try UnsafeMutablePointer.required(out, "out")
        var defaults = vtrn_dma_queue_options_t()
        defaults.ring_entries = UInt32(DmaQueue.defaultRingEntries)
        let given = try vtrn_dma_queue_options_t.read(options, name: "options", defaults: defaults) ?? defaults
        let queue = try entry.object.openQueue(core: Int(given.core), engine: Int(given.engine), queue: Int(given.queue),
                                               ringEntries: Int(given.ring_entries))
        // Should registering fail, the object is released with its last reference.
        out.pointee = handle(try Handles.register(queue, in: Handles.dmaQueues, runtimeToken: entry.runtimeToken))
    }
}

/// The Swift reference of a C memory reference: the handle's kind says host or device.
func memoryReference(_ reference: vtrn_memory_ref_t, _ name: String) throws(VtrnError) -> MemoryReference {
    let bits = UInt64(UInt(bitPattern: reference.memory))
    do throws(VtrnError) {
        switch HandleLayout.kind(of: bits)?.tag {
        case HandleKind.deviceMemory.tag:
            return .device(try Handles.deviceMemory.lookup(bits).object, offset: reference.offset)
        case HandleKind.hostBuffer.tag:
            return .host(try Handles.hostBuffers.lookup(bits).object, offset: reference.offset)
        default:
            if bits == 0 { throw VtrnError(.invalidHandle, "it is NULL") }
            if let kind = HandleLayout.kind(of: bits) {
                throw VtrnError(.invalidHandle, "\(HandleLayout.hexadecimal(bits)) is a \(kind.typeName), not a "
                                + "vtrn_host_buffer_t or vtrn_device_memory_t")
            }
            throw VtrnError(.invalidHandle, "\(HandleLayout.hexadecimal(bits)) is not a vtrn handle")
        }
    } catch {
        throw VtrnError(error.status, "\(name).memory: \(error.message)")
    }
}

@c @implementation
public func vtrn_dma_queue_enqueue(_ queue: vtrn_dma_queue_t?, _ transfers: UnsafePointer<vtrn_dma_transfer_t>?,
                                   _ count: UInt32) -> vtrn_status_t {
    exported {
        let queue = try Handles.dmaQueues.lookup(handleBits(queue)).object
        guard count > 0 else { return }
        guard let transfers else { throw VtrnError.invalidArgument("transfers is NULL and count is \(count)") }
        // Consecutive transfers usually name the same memory: look each handle up once.
        var cache: [(bits: UInt64, reference: MemoryReference)] = []
        func resolve(_ reference: vtrn_memory_ref_t, _ name: String) throws(VtrnError) -> MemoryReference {
            let bits = UInt64(UInt(bitPattern: reference.memory))
            for cached in cache where cached.bits == bits {
                switch cached.reference {
                case .host(let buffer, _): return .host(buffer, offset: reference.offset)
                case .device(let memory, _): return .device(memory, offset: reference.offset)
                }
            }
            let resolved = try memoryReference(reference, name)
            if cache.count == 4 { cache.removeFirst() }
            cache.append((bits, resolved))
            return resolved
        }
        try queue.enqueue(count: Int(count)) { (index: Int) throws(VtrnError) -> DmaTransfer in
            let transfer = transfers[index]
            do throws(VtrnError) {
                return DmaTransfer(destination: try resolve(transfer.dst, "dst"), source: try resolve(transfer.src, "src"),
                                   bytes: transfer.bytes)
            } catch {
                throw VtrnError(error.status, "transfer \(index): \(error.message)")
            }
        }
    }
}

@c @implementation
public func vtrn_dma_queue_submit(_ queue: vtrn_dma_queue_t?, _ sequence: UnsafeMutablePointer<UInt64>?) -> vtrn_status_t {
    exported {
        let queue = try Handles.dmaQueues.lookup(handleBits(queue)).object
        let submitted = try queue.submit()
        sequence?.pointee = submitted
    }
}

@c @implementation
public func vtrn_dma_queue_wait(_ queue: vtrn_dma_queue_t?, _ sequence: UInt64, _ timeout_ns: UInt64) -> vtrn_status_t {
    exported {
        let queue = try Handles.dmaQueues.lookup(handleBits(queue)).object
        try queue.wait(for: sequence, timeoutNanoseconds: timeout_ns)
    }
}

@c @implementation
public func vtrn_dma_queue_completed(_ queue: vtrn_dma_queue_t?, _ sequence: UnsafeMutablePointer<UInt64>?) -> vtrn_status_t {
    exported {
        let queue = try Handles.dmaQueues.lookup(handleBits(queue)).object
        let sequence = try UnsafeMutablePointer.required(sequence, "sequence")
        sequence.pointee = queue.completedSequence
    }
}

@c @implementation
public func vtrn_dma_queue_get_info(_ queue: vtrn_dma_queue_t?, _ info: UnsafeMutablePointer<vtrn_dma_queue_info_t>?) -> vtrn_status_t {
    exported {
        let queue = try Handles.dmaQueues.lookup(handleBits(queue)).object
        let info = try vtrn_dma_queue_info_t.checkOutput(info, name: "info")
        let current = try queue.info
        var result = vtrn_dma_queue_info_t()
        result.device_index = UInt32(queue.device.index)
        result.core = UInt32(queue.core)
        result.engine = UInt32(queue.engine)
        result.queue = UInt32(queue.queue)
        result.ring_entries = UInt32(queue.ringEntries)
        result.free_entries = UInt32(current.freeEntries)
        result.submitted_sequence = current.submittedSequence
        result.completed_sequence = current.completedSequence
        result.descriptors_completed = current.descriptorsCompleted
        result.bytes_completed = current.bytesCompleted
        result.write(to: info)
    }
}

@c @implementation
public func vtrn_dma_queue_destroy(_ queue: vtrn_dma_queue_t?) -> vtrn_status_t {
    exported {
        guard queue != nil else { return }
        try Handles.dmaQueues.remove(handleBits(queue), because: "it was destroyed").object.close()
    }
}

@c @implementation
public func vtrn_memcpy(_ device: vtrn_device_t?, _ dst: vtrn_memory_ref_t, _ src: vtrn_memory_ref_t, _ bytes: UInt64) -> vtrn_status_t {
    exported {
        let device = try Handles.devices.lookup(handleBits(device)).object
        try device.copy(to: try memoryReference(dst, "dst"), from: try memoryReference(src, "src"), bytes: bytes)
    }
}
