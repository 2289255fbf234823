import CVtrnSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where a host buffer's pages go. Raw values are `vtrn_numa_placement_t`'s.
public enum Placement: Int, Sendable, CaseIterable, CustomStringConvertible {
    case deviceLocal = 0, node, interleave, any

    public var description: String {
        switch self {
        case .deviceLocal: "device-local"
        case .node: "node"
        case .interleave: "interleave"
        case .any: "any"
        }
    }
}

public struct HostBufferOptions: Sendable, Equatable {
    public var placement: Placement
    /// For `.deviceLocal`: the device whose node the pages go to.
    public var device: Int
    /// For `.node`: the node.
    public var numaNode: Int?
    /// Advise transparent huge pages.
    public var hugePages: Bool
    /// Pin the pages (mlock).
    public var locked: Bool

    public init(placement: Placement = .deviceLocal, device: Int = 0, numaNode: Int? = nil,
                hugePages: Bool = false, locked: Bool = false) {
        self.placement = placement
        self.device = device
        self.numaNode = numaNode
        self.hugePages = hugePages
        self.locked = locked
    }
}

/// The memory policy a placement comes to on a given host: a pure function of the options, the
/// devices' nodes and the host's nodes, so that many-node hosts can be tested on a one-node one.
public enum MemoryPolicy: Sendable, Equatable {
    /// MPOL_BIND to one node.
    case bind(Int)
    /// MPOL_INTERLEAVE over these nodes.
    case interleave([Int])
    /// No policy: first touch.
    case firstTouch

    public static func resolve(_ options: HostBufferOptions, deviceNodes: [Int], host: HostTopology) throws(VtrnError) -> MemoryPolicy {
        switch options.placement {
        case .deviceLocal:
            guard options.device >= 0 && options.device < deviceNodes.count else {
                throw .invalidArgument("options.device is \(options.device), but the runtime has "
                                       + "\(counted(deviceNodes.count, "device")) \(indexRange(deviceNodes.count, "device"))")
            }
            return .bind(deviceNodes[options.device])
        case .node:
            guard let node = options.numaNode, host.nodes.contains(node) else {
                let asked = options.numaNode.map(String.init) ?? "none"
                throw .invalidArgument("options.numa_node is \(asked), but this host's online NUMA "
                                       + "node\(host.nodes.count == 1 ? " is" : "s are") \(host.nodeList)")
            }
            return .bind(node)
        case .interleave:
            return .interleave(host.nodes)
        case .any:
            return .firstTouch
        }
    }
}

/// Host memory for DMA: allocated with a NUMA policy (`Runtime.makeHostBuffer`), or the caller's
/// own memory registered (`Runtime.registerHostBuffer`). A closed buffer refuses new transfers; its
/// memory is unmapped once no submitted transfer holds it.
public final class HostBuffer: Sendable {
    private let base: UnsafeSendableRawPointer
    public let bytes: Int
    /// Bytes mapped (whole pages); 0 for registered memory.
    let mappedBytes: Int
    public let options: HostBufferOptions
    public let policy: MemoryPolicy
    public let hugePages: Bool
    public let locked: Bool
    public let isRegistered: Bool
    /// Why a flag had no effect, or "".
    public let note: String
    public let runtime: Runtime
    private let closed = Atomic<Bool>(false)
    /// Set when the buffer is orphaned by its runtime's destruction (the C layer's
    /// `vtrn_runtime_destroy`): the pages are then released but the address range stays reserved.
    private let keepsAddress = Atomic<Bool>(false)

    var state: RuntimeState { runtime.state }
    public var data: UnsafeMutableRawPointer { base.pointer }

    init(base: UnsafeMutableRawPointer, bytes: Int, mappedBytes: Int, options: HostBufferOptions, policy: MemoryPolicy,
         hugePages: Bool, locked: Bool, registered: Bool, note: String, runtime: Runtime) {
        self.base = UnsafeSendableRawPointer(pointer: base)
        self.bytes = bytes
        self.mappedBytes = mappedBytes
        self.options = options
        self.policy = policy
        self.hugePages = hugePages
        self.locked = locked
        self.isRegistered = registered
        self.note = note
        self.runtime = runtime
    }

    deinit {
        guard !isRegistered else { return }
        if locked { munlock(base.pointer, mappedBytes) }
        if keepsAddress.load(ordering: .acquiring) {
            // Fresh zero pages over the old ones: the memory goes back to the system, and a thread
            // that still writes through the old pointer (having lost a race with the runtime's
            // destruction) writes into harmless private memory instead of faulting, or worse,
            // into whatever a later mmap would have put at this address.
            let replaced = mmap(base.pointer, mappedBytes, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0)
            if replaced != MAP_FAILED {
                HostBuffer.reservedBytes.add(mappedBytes, ordering: .relaxed)
                return
            }
        }
        munmap(base.pointer, mappedBytes)
    }

    /// Bytes of address space kept reserved by buffers orphaned by their runtime's destruction.
    public static let reservedBytes = Atomic<Int>(0)

    /// Makes the buffer keep its address range (not its pages) when it goes: for buffers whose
    /// pointer a caller may still use when their runtime is destroyed under it.
    public func keepAddressWhenReleased() { keepsAddress.store(true, ordering: .releasing) }

    /// Closed by `close()`, or by its runtime's closing.
    public var isClosed: Bool { closed.load(ordering: .acquiring) || state.isClosed }

    /// The runtime's serial.
    var runtimeSerial: Int { state.serial }

    /// Refuses further use; the pages go when the last reference (a transfer in flight) does.
    public func close() { closed.store(true, ordering: .releasing) }

    func checkOpen() throws(VtrnError) {
        try state.checkOpen()
        if closed.load(ordering: .acquiring) { throw VtrnError(.invalidHandle, "the host buffer was destroyed") }
    }

    /// The node holding every resident page, or nil when they are spread or none is resident.
    public func numaNode() throws(VtrnError) -> Int? {
        try checkOpen()
        var found: Int?
        for (node, pages) in try pagesPerNode().enumerated() where pages > 0 {
            if found != nil { return nil }
            found = node
        }
        return found
    }

    /// Resident pages per node (index = node), asked of the kernel with move_pages(2).
    public func pagesPerNode() throws(VtrnError) -> [UInt64] {
        try checkOpen()
        let nodeCount = numa_available() >= 0 ? Int(numa_max_node()) + 1 : 1
        var counts = [UInt64](repeating: 0, count: nodeCount)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = Int(bitPattern: data) / page * page
        let end = Int(bitPattern: data) + bytes
        let chunk = 65536
        var pages = [UnsafeMutableRawPointer?](repeating: nil, count: chunk)
        var status = [Int32](repeating: 0, count: chunk)
        var address = start
        while address < end {
            let count = min(chunk, (end - address + page - 1) / page)
            for index in 0..<count { pages[index] = UnsafeMutableRawPointer(bitPattern: address + index * page) }
            if move_pages(0, UInt(count), &pages, nil, &status, 0) != 0 {
                throw VtrnError(.internal, "move_pages failed: \(String(cString: strerror(errno)))")
            }
            for index in 0..<count where status[index] >= 0 && Int(status[index]) < nodeCount {
                counts[Int(status[index])] += 1
            }
            address += count * page
        }
        return counts
    }
}

/// A raw pointer that may cross threads: the memory it points to is the user's to synchronise.
struct UnsafeSendableRawPointer: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
}

extension Runtime {
    /// Allocates a host buffer placed as `options` say. Pages of every placement but `.any` are
    /// touched here, so they are where the policy put them when this returns.
    public func makeHostBuffer(bytes: Int, options: HostBufferOptions = HostBufferOptions()) throws(VtrnError) -> HostBuffer {
        try state.checkOpen()
        try Self.checkHostBufferSize(bytes)
        let policy = try MemoryPolicy.resolve(options, deviceNodes: configuration.deviceNodes, host: host)
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard bytes <= Int.max - (2 << 20) else { throw .invalidArgument("bytes is \(bytes), more than a process can map") }
        let hugePageBytes = 2 << 20
        let mapped = options.hugePages ? (bytes + hugePageBytes - 1) / hugePageBytes * hugePageBytes
                                       : (bytes + page - 1) / page * page
        guard let memory = mmap(nil, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              memory != MAP_FAILED else {
            throw VtrnError(.outOfHostMemory, "mmap of \(byteCount(UInt64(mapped))) failed: \(String(cString: strerror(errno)))")
        }
        var cleanup = true
        defer { if cleanup { munmap(memory, mapped) } }

        if numa_available() >= 0 {
            var mask = [UInt](repeating: 0, count: 1024 / UInt.bitWidth)
            var mode: Int32 = -1
            switch policy {
            case .bind(let node):
                mask[node / UInt.bitWidth] |= 1 << UInt(node % UInt.bitWidth)
                mode = Int32(MPOL_BIND)
            case .interleave(let nodes):
                for node in nodes { mask[node / UInt.bitWidth] |= 1 << UInt(node % UInt.bitWidth) }
                mode = Int32(MPOL_INTERLEAVE)
            case .firstTouch:
                break
            }
            if mode >= 0, mbind(memory, UInt(mapped), mode, mask, UInt(mask.count * UInt.bitWidth), 0) != 0 {
                throw VtrnError(.outOfHostMemory, "mbind(\(policy)) failed: \(String(cString: strerror(errno)))")
            }
        }

        var note = ""
        var hugePages = false
        if options.hugePages {
            let setting = transparentHugePageSetting()
            if setting == "never" || setting == nil {
                note = "transparent huge pages are not available on this system "
                    + "(/sys/kernel/mm/transparent_hugepage/enabled is \(setting.map { "[\($0)]" } ?? "missing"))"
            } else if madvise(memory, mapped, MADV_HUGEPAGE) != 0 {
                note = "madvise(MADV_HUGEPAGE) failed: \(String(cString: strerror(errno)))"
            } else {
                hugePages = true
            }
        }

        if policy != .firstTouch {
            // Commit every page now, under the policy. MADV_POPULATE_WRITE (Linux 5.14) reports a
            // node without room as ENOMEM instead of a fault; older kernels get a touch per page.
            let populateWrite: Int32 = 23
            if madvise(memory, mapped, populateWrite) != 0 {
                if errno == ENOMEM || errno == EFAULT {
                    throw VtrnError(.outOfHostMemory, "cannot commit \(byteCount(UInt64(mapped))) of host memory with "
                                    + "policy \(policy): the node has no room")
                }
                var offset = 0
                while offset < mapped {
                    memory.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self)
                    offset += page
                }
            }
        }

        if options.locked, mlock(memory, mapped) != 0 {
            let error = errno
            let limit = vtrnsys_memlock_limit()
            let current = limit == .max ? "unlimited" : byteCount(limit)
            throw VtrnError(.outOfHostMemory, "mlock of \(byteCount(UInt64(mapped))) failed (\(String(cString: strerror(error)))): "
                            + "RLIMIT_MEMLOCK is \(current); raise it (ulimit -l) or do without VTRN_HOST_BUFFER_LOCKED")
        }

        let buffer = HostBuffer(base: memory, bytes: bytes, mappedBytes: mapped, options: options, policy: policy,
                                hugePages: hugePages, locked: options.locked, registered: false, note: note, runtime: self)
        cleanup = false
        return buffer
    }

    /// A host buffer's size from C, where it is a size_t: 0, or one so large that it is negative
    /// as an Int, is refused naming the caller's number.
    static func checkHostBufferSize(_ bytes: Int) throws(VtrnError) {
        if bytes == 0 { throw .invalidArgument("bytes is 0; a host buffer holds at least 1 byte") }
        if bytes < 0 { throw .invalidArgument("bytes is \(UInt(bitPattern: bytes)), more than a process can map") }
    }

    /// Wraps memory the caller owns so DMA can use it without a copy. The caller keeps it alive
    /// until the buffer is closed and its transfers have completed.
    public func registerHostBuffer(_ pointer: UnsafeMutableRawPointer, bytes: Int) throws(VtrnError) -> HostBuffer {
        try state.checkOpen()
        try Self.checkHostBufferSize(bytes)
        // The range must be memory this process has mapped, and no more than the host's memory
        // (what DMA can reach): a registration that claimed more had vtrn walk it page by page
        // (vtrn_host_buffer_numa_node looped for hours over a claimed 2^44 bytes of a sanitizer's
        // reservation) or overflow computing its end. msync checks the mappings, not the pages.
        let page = UInt(sysconf(Int32(_SC_PAGESIZE)))
        let physical = UInt(max(0, sysconf(Int32(_SC_PHYS_PAGES)))) * page
        guard UInt(bytes) <= physical else {
            throw .invalidArgument("bytes is \(bytes), more than this host's \(byteCount(UInt64(physical))) of memory")
        }
        let start = UInt(bitPattern: pointer)
        let (end, wraps) = start.addingReportingOverflow(UInt(bytes))
        let range = "[0x\(String(start, radix: 16)), +\(bytes))"
        guard !wraps else { throw .invalidArgument("pointer and bytes \(range) wrap around the address space") }
        let first = start / page * page
        if msync(UnsafeMutableRawPointer(bitPattern: first), Int(end - first), MS_ASYNC) != 0 {
            throw .invalidArgument("\(range) is not all mapped memory of this process (msync: \(String(cString: strerror(errno))))")
        }
        let buffer = HostBuffer(base: pointer, bytes: bytes, mappedBytes: 0, options: HostBufferOptions(placement: .any),
                                policy: .firstTouch, hugePages: false, locked: false, registered: true, note: "", runtime: self)
        return buffer
    }
}

/// The bracketed word of /sys/kernel/mm/transparent_hugepage/enabled ("always", "madvise",
/// "never"), or nil when the file is missing.
func transparentHugePageSetting() -> String? {
    guard let file = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r") else { return nil }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    guard fgets(&line, 256, file) != nil else { return nil }
    let text = line.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    guard let open = text.firstIndex(of: "["), let close = text.firstIndex(of: "]"), open < close else { return nil }
    return String(text[text.index(after: open)..<close])
}
