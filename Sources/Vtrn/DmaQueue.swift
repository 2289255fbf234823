import CVtrnSystem
import Synchronization
import VtrnDevice

/// One end of a transfer: a host buffer or a device memory block, and a byte offset into it.
public enum MemoryReference: Sendable {
    case host(HostBuffer, offset: UInt64)
    case device(DeviceMemory, offset: UInt64)
}

/// A copy of `bytes` bytes from `source` to `destination`.
public struct DmaTransfer: Sendable {
    /// "host to device", "device to host", "device to device" or "host to host", for traces.
    static func direction(from source: MemoryReference, to destination: MemoryReference) -> String {
        func side(_ reference: MemoryReference) -> String {
            if case .host = reference { return "host" }
            return "device"
        }
        return "\(side(source)) to \(side(destination))"
    }

    public var destination: MemoryReference
    public var source: MemoryReference
    public var bytes: UInt64

    public init(destination: MemoryReference, source: MemoryReference, bytes: UInt64) {
        self.destination = destination
        self.source = source
        self.bytes = bytes
    }
}

/// A DMA queue as the driver sees it: the producer side of one hardware queue's rings.
///
/// ```swift
/// let queue = try device.openQueue(core: 0, engine: 0, queue: 0)
/// try queue.enqueue([DmaTransfer(destination: .device(hbm, offset: 0), source: .host(buffer, offset: 0), bytes: n)])
/// let sequence = queue.submit()
/// try queue.wait(for: sequence)
/// ```
///
/// `enqueue` checks a whole batch and writes its descriptors or nothing; `submit` rings the
/// doorbell. Transfers complete in order. Everything here may be called from several threads.
public final class DmaQueue: Sendable, RuntimeResource {
    public let device: Device
    let ring: Ring
    private let closed = Atomic<Bool>(false)

    public var core: Int { ring.hardware.core }
    public var engine: Int { ring.hardware.engineIndex }
    public var queue: Int { ring.hardware.queueIndex }
    public var ringEntries: Int { ring.hardware.entries }

    public static let defaultRingEntries = 4096
    public static let ringEntriesRange = 32...((1 << 24) - 16)

    init(device: Device, ring: Ring) {
        self.device = device
        self.ring = ring
    }

    /// With VTRN_TRACE: what was enqueued since the last submit, and the submissions whose
    /// completion the driver has not seen yet.
    private struct TraceState {
        var bytes: UInt64 = 0
        var transfers = 0
        var directions: Set<String> = []
        var inFlight: [(sequence: UInt64, submitted: UInt64, bytes: UInt64, transfers: Int, direction: String)] = []
    }
    private let traceState = Mutex(TraceState())

    /// Checks and writes the descriptors of `count` transfers; `transfer(i)` gives the i-th.
    /// All or nothing: an error leaves the ring as it was.
    public func enqueue(count: Int, _ transfer: (Int) throws(VtrnError) -> DmaTransfer) throws(VtrnError) {
        try device.state.submitting { () throws(VtrnError) in
            try checkOpen()
            guard let tracer = device.runtime.tracer else {
                try ring.enqueue(count: count, device: device, recovery: recovery, transfer)
                return
            }
            let began = vtrnsys_monotonic_ns()
            var bytes: UInt64 = 0
            var directions: Set<String> = []
            try ring.enqueue(count: count, device: device, recovery: recovery) { (index: Int) throws(VtrnError) -> DmaTransfer in
                let value = try transfer(index)
                bytes += value.bytes
                directions.insert(DmaTransfer.direction(from: value.source, to: value.destination))
                return value
            }
            traceState.withLock { state in
                state.bytes += bytes
                state.transfers += count
                state.directions.formUnion(directions)
            }
            tracer.call("dma enqueue", since: began, arguments: #""transfers":\#(count),"bytes":\#(bytes)"#)
        }
    }

    public func enqueue(_ transfers: [DmaTransfer]) throws(VtrnError) {
        try enqueue(count: transfers.count) { transfers[$0] }
    }

    /// Rings the doorbell; returns the sequence that completes when all enqueued so far has.
    @discardableResult
    public func submit() throws(VtrnError) -> UInt64 {
        try device.state.submitting { () throws(VtrnError) in
            try checkOpen()
            guard let tracer = device.runtime.tracer else { return try ring.submit(recovery: recovery) }
            let began = vtrnsys_monotonic_ns()
            let sequence = try ring.submit(recovery: recovery)
            traceState.withLock { state in
                guard state.transfers > 0 else { return }
                let direction = state.directions.count == 1 ? state.directions.first! : "mixed"
                state.inFlight.append((sequence, began, state.bytes, state.transfers, direction))
                state.bytes = 0
                state.transfers = 0
                state.directions = []
            }
            tracer.call("dma submit", since: began, arguments: #""sequence":\#(sequence)"#)
            return sequence
        }
    }

    /// Waits for `sequence`: 0 polls (`.notReady`), `.max` waits forever, else `.timeout`. A
    /// sequence that failed throws its failure (a DMA abort, an HBM error, a hang past
    /// VTRN_EXEC_TIMEOUT_MS, a reset, a loss), whenever it is asked.
    public func wait(for sequence: UInt64, timeoutNanoseconds: UInt64 = .max) throws(VtrnError) {
        try checkOpen()
        guard let tracer = device.runtime.tracer else {
            try ring.wait(for: sequence, timeoutNanoseconds: timeoutNanoseconds, recovery: recovery)
            return
        }
        let began = vtrnsys_monotonic_ns()
        defer { tracer.call("dma wait", since: began, arguments: #""sequence":\#(sequence)"#) }
        try ring.wait(for: sequence, timeoutNanoseconds: timeoutNanoseconds, recovery: recovery)
        // The submissions now seen complete, each as a span from its doorbell to now.
        let now = vtrnsys_monotonic_ns(), completed = ring.hardware.completedSequence
        let done = traceState.withLock { state in
            let done = state.inFlight.filter { $0.sequence <= completed }
            state.inFlight.removeAll { $0.sequence <= completed }
            return done
        }
        for submission in done {
            tracer.transfer(device: device.index, core: core, engine: engine, queue: queue, sequence: submission.sequence,
                            bytes: submission.bytes, transfers: submission.transfers, direction: submission.direction,
                            submitted: submission.submitted, completed: now)
        }
    }

    /// How this queue's driver names it and times a hang out.
    var recovery: Ring.Recovery {
        Ring.Recovery(label: label, device: device.index,
                      hangTimeout: device.runtime.configuration.execTimeoutMilliseconds.map { $0 * 1_000_000 })
    }

    public var completedSequence: UInt64 { ring.hardware.completedSequence }

    public struct Info: Sendable, Equatable {
        public var freeEntries: Int
        public var submittedSequence: UInt64
        public var completedSequence: UInt64
        public var descriptorsCompleted: UInt64
        public var bytesCompleted: UInt64
    }

    public var info: Info {
        get throws(VtrnError) {
            try device.state.checkOpen()
            if isClosed { throw VtrnError(.invalidHandle, "the DMA queue was destroyed") }
            return ring.info(recovery: recovery)
        }
    }

    var label: String { "queue \(queue) of DMA engine \(engine) of core \(core) of device \(device.index)" }

    public var isClosed: Bool { closed.load(ordering: .acquiring) }

    /// Waits for submitted transfers, drops unsubmitted ones, and frees the hardware queue.
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        ring.drain()
        device.hardware.closeQueue(ring.hardware)
        device.state.release(self)
    }

    var closeOrder: Int { 0 }

    deinit { close() }

    private func checkOpen() throws(VtrnError) {
        try device.checkUsable()
        if isClosed { throw VtrnError(.invalidHandle, "the DMA queue was destroyed") }
    }
}

extension Device {
    /// Opens hardware queue (core, engine, queue), claiming the core for this runtime.
    public func openQueue(core: Int, engine: Int, queue: Int,
                          ringEntries: Int = DmaQueue.defaultRingEntries) throws(VtrnError) -> DmaQueue {
        try checkUsable()
        let preset = hardware.preset
        guard core >= 0 && core < preset.coresPerDevice else {
            throw .invalidArgument("device \(index) has \(preset.coresPerDevice) cores (0-\(preset.coresPerDevice - 1)); core \(core) requested")
        }
        guard engine >= 0 && engine < preset.dmaEnginesPerCore else {
            throw .invalidArgument("a core has \(preset.dmaEnginesPerCore) DMA engines (0-\(preset.dmaEnginesPerCore - 1)); engine \(engine) requested")
        }
        guard queue >= 0 && queue < preset.queuesPerDmaEngine else {
            throw .invalidArgument("a DMA engine has \(preset.queuesPerDmaEngine) queues (0-\(preset.queuesPerDmaEngine - 1)); queue \(queue) requested")
        }
        guard DmaQueue.ringEntriesRange.contains(ringEntries) else {
            throw .invalidArgument("ring_entries is \(ringEntries); udma rings hold \(DmaQueue.ringEntriesRange.lowerBound) to "
                                   + "\(DmaQueue.ringEntriesRange.upperBound) descriptors")
        }
        try claim(core: core)
        guard let hardware = hardware.openQueue(core: core, engine: engine, queue: queue, entries: ringEntries) else {
            throw VtrnError(.busy, "queue \(queue) of DMA engine \(engine) of core \(core) of device \(index) is open already; "
                            + "destroy it first or pick another queue")
        }
        let opened = DmaQueue(device: self, ring: DmaQueue.Ring(hardware: hardware))
        do {
            try state.adopt(opened)
        } catch {
            self.hardware.closeQueue(hardware)
            throw error
        }
        return opened
    }

    /// Copies `bytes` from `source` to `destination` and returns when done, over a queue of the
    /// device's host DMA engines (claims no core). Transfers of any size.
    public func copy(to destination: MemoryReference, from source: MemoryReference, bytes: UInt64) throws(VtrnError) {
        guard let tracer = runtime.tracer else {
            try state.submitting { () throws(VtrnError) in try copyOpen(to: destination, from: source, bytes: bytes) }
            return
        }
        let began = vtrnsys_monotonic_ns()
        try state.submitting { () throws(VtrnError) in try copyOpen(to: destination, from: source, bytes: bytes) }
        let direction = DmaTransfer.direction(from: source, to: destination)
        tracer.call("memcpy", since: began, arguments: #""bytes":\#(bytes),"direction":"\#(direction)""#)
        tracer.transfer(device: index, core: -1, engine: 0, queue: 0, sequence: 0, bytes: bytes, transfers: 1,
                        direction: direction, submitted: began, completed: vtrnsys_monotonic_ns())
    }

    private func copyOpen(to destination: MemoryReference, from source: MemoryReference, bytes: UInt64) throws(VtrnError) {
        try checkUsable()
        let transfer = DmaTransfer(destination: destination, source: source, bytes: bytes)
        var keepAlive = DmaQueue.KeepAlive()
        let prepared = try DmaQueue.Ring.prepare(transfer, index: nil, device: self, keepAlive: &keepAlive, allowingEmpty: true)
        guard bytes > 0 else { return }
        let ring = try borrowHostRing()
        defer { shared.hostQueues.withLock { $0.append(ring) } }
        let recovery = DmaQueue.Ring.Recovery(label: "host DMA engine \(ring.hardware.engineIndex) of device \(index) (vtrn_memcpy)",
                                              device: index,
                                              hangTimeout: runtime.configuration.execTimeoutMilliseconds.map { $0 * 1_000_000 })
        // Rounds of at most a ring's worth of descriptors.
        let perRound = UInt64(ring.hardware.entries) * UInt64(DmaDescriptor.maximumBytes)
        var done: UInt64 = 0
        while done < bytes {
            var chunk = prepared
            chunk.bytes = min(perRound, bytes - done)
            chunk.destination += Int(done)
            chunk.source += Int(done)
            try ring.enqueue(prepared: [chunk], keepAlive: keepAlive, recovery: recovery)
            let sequence = try ring.submit(recovery: recovery)
            try ring.wait(for: sequence, timeoutNanoseconds: .max, recovery: recovery)
            done += chunk.bytes
        }
    }

    private func borrowHostRing() throws(VtrnError) -> DmaQueue.Ring {
        if let ring = shared.hostQueues.withLock({ $0.popLast() }) { return ring }
        guard let hardware = hardware.openHostQueue(entries: DmaQueue.defaultRingEntries) else {
            throw VtrnError(.outOfHostMemory, "cannot start a host DMA engine thread for device \(index)")
        }
        return DmaQueue.Ring(hardware: hardware)
    }
}

extension DmaQueue {
    /// A transfer checked and resolved to host addresses.
    struct Prepared {
        var destination: UnsafeMutableRawPointer
        var source: UnsafeMutableRawPointer
        var bytes: UInt64
    }

    /// Host buffers stay mapped and HBM blocks stay allocated while a transfer uses them. A batch's
    /// last descriptor holds every distinct object of the batch: completion is in order, so the
    /// batch is done when its last descriptor is, and a batch of a thousand transfers between two
    /// buffers costs two references, not two thousand.
    struct KeepAlive {
        var hosts: (HostBuffer?, HostBuffer?) = (nil, nil)
        var leases: (BlockLease?, BlockLease?) = (nil, nil)
        var moreHosts: [HostBuffer] = []
        var moreLeases: [BlockLease] = []

        var isEmpty: Bool { hosts.0 == nil && hosts.1 == nil && leases.0 == nil && leases.1 == nil }

        /// Adds what `other` holds, skipping what is here already (batches name few objects).
        @inline(__always)
        mutating func add(_ host: HostBuffer) {
            if hosts.0 === host || hosts.1 === host || moreHosts.contains(where: { $0 === host }) { return }
            if hosts.0 == nil { hosts.0 = host } else if hosts.1 == nil { hosts.1 = host } else { moreHosts.append(host) }
        }

        @inline(__always)
        mutating func add(_ lease: BlockLease) {
            if leases.0 === lease || leases.1 === lease || moreLeases.contains(where: { $0 === lease }) { return }
            if leases.0 == nil { leases.0 = lease } else if leases.1 == nil { leases.1 = lease } else { moreLeases.append(lease) }
        }

        func acquire() {
            leases.0?.acquire()
            leases.1?.acquire()
            for lease in moreLeases { lease.acquire() }
        }

        func release() {
            leases.0?.release()
            leases.1?.release()
            for lease in moreLeases { lease.release() }
        }
    }

    /// The driver's state for one hardware queue: where to write next, what was published, and
    /// what the in-flight descriptors keep alive.
    final class Ring: Sendable {
        let hardware: DmaQueueHardware
        private let producer: Mutex<Producer>

        struct Producer {
            /// Next position to write; positions count descriptors since the queue opened.
            var tail: UInt64 = 0
            /// Position published by the last doorbell, and its sequence.
            var published: UInt64 = 0
            var sequence: UInt64 = 0
            /// Positions below this have had their keep-alives released.
            var reclaimed: UInt64 = 0
            var keepAlive: [KeepAlive]
            var keepAliveCount = 0
            var scratch: [Prepared] = []
            var transfersEnqueued: UInt32 = 0
            /// Set by `drain()`: the queue takes no more work.
            var closed = false
            /// Sequences that failed, in order, disjoint (see `record`).
            var failures: [Failure] = []

            /// The failure of `sequence`, if it failed.
            func failure(of sequence: UInt64) -> VtrnError? {
                for failure in failures.reversed() where failure.first <= sequence {
                    return sequence <= failure.last ? failure.error : nil
                }
                return nil
            }

            /// Records that sequences first...last failed with `error`. A run of failures of one
            /// status (a sticky fault failing every submission) is kept as one range with the
            /// latest message, so the record stays small.
            mutating func record(first: UInt64, last: UInt64, _ error: VtrnError) {
                if let previous = failures.last, previous.last + 1 == first, previous.error.status == error.status {
                    failures[failures.count - 1] = Failure(first: previous.first, last: last, error: error)
                } else {
                    failures.append(Failure(first: first, last: last, error: error))
                }
            }
        }

        struct Failure {
            var first: UInt64
            var last: UInt64
            var error: VtrnError
        }

        /// What a ring's driver needs to recover from a stop: the queue's name for messages, the
        /// device's index, and how long a hang may last (VTRN_EXEC_TIMEOUT_MS of the caller's
        /// runtime; nil: forever).
        struct Recovery {
            var label: String
            var device: Int
            var hangTimeout: UInt64?
        }

        init(hardware: DmaQueueHardware) {
            self.hardware = hardware
            producer = Mutex(Producer(keepAlive: Array(repeating: KeepAlive(), count: hardware.entries)))
        }

        static func descriptors(for bytes: UInt64) -> UInt64 {
            (bytes + UInt64(DmaDescriptor.maximumBytes) - 1) / UInt64(DmaDescriptor.maximumBytes)
        }

        /// Resolves one end; `role` is "dst" or "src" for messages, `index` the transfer's.
        @inline(__always)
        private static func resolve(_ reference: MemoryReference, bytes: UInt64, role: StaticString, index: Int?,
                                    device: Device, keepAlive: inout KeepAlive) throws(VtrnError) -> (UnsafeMutableRawPointer, ObjectIdentifier, UInt64) {
            var label: String { index.map { "transfer \($0): " } ?? "" }
            let offset: UInt64, size: UInt64, what: String
            let pointer: UnsafeMutableRawPointer, identity: ObjectIdentifier
            switch reference {
            case .host(let buffer, let at):
                if buffer.state.isClosed {
                    throw VtrnError(.invalidHandle, "\(label)\(role) host buffer's runtime \(buffer.runtimeSerial) was destroyed")
                }
                if buffer.isClosed { throw VtrnError(.invalidHandle, "\(label)\(role) host buffer was destroyed") }
                guard buffer.runtime === device.runtime else {
                    throw .invalidArgument("\(label)\(role) is a host buffer of runtime \(buffer.runtimeSerial), not of runtime "
                                           + "\(device.runtime.serial), which runs the copy (as another process's buffers are "
                                           + "not mapped for this one's DMA)")
                }
                (offset, size, what) = (at, UInt64(buffer.bytes), "host buffer")
                (pointer, identity) = (buffer.data, ObjectIdentifier(buffer))
                keepAlive.add(buffer)
            case .device(let memory, let at):
                if memory.isFreed { throw VtrnError(.invalidHandle, "\(label)\(role) device memory was freed") }
                guard memory.device.hardware === device.hardware else {
                    throw .invalidArgument("\(label)\(role) is memory of device \(memory.device.index), not of device "
                                           + "\(device.index), which runs the copy")
                }
                guard memory.device.runtime === device.runtime else {
                    throw .invalidArgument("\(label)\(role) is device memory of runtime \(memory.device.runtime.serial), not of "
                                           + "runtime \(device.runtime.serial), which runs the copy")
                }
                (offset, size, what) = (at, memory.bytes, "device memory block")
                (pointer, identity) = (memory.pointer, ObjectIdentifier(memory))
                keepAlive.add(memory.lease)
            }
            guard offset <= size, bytes <= size - offset else {
                throw VtrnError(.outOfBounds, "\(label)\(role) range [\(offset), \(offset) + \(bytes)) runs past the end of "
                                + "the \(size)-byte \(what)")
            }
            return (pointer + Int(offset), identity, offset)
        }

        /// Checks one transfer; `index` names it in messages ("transfer 3: "). Zero bytes are an
        /// error for a queue (a descriptor moves at least one byte), and checked like any other
        /// size when `allowingEmpty` (vtrn_memcpy).
        /// What its ends point into joins `keepAlive`, the batch's.
        static func prepare(_ transfer: DmaTransfer, index: Int?, device: Device, keepAlive: inout KeepAlive,
                            allowingEmpty: Bool = false) throws(VtrnError) -> Prepared {
            var label: String { index.map { "transfer \($0): " } ?? "" }
            guard transfer.bytes > 0 || allowingEmpty else { throw .invalidArgument("\(label)bytes is 0") }
            let destination = try resolve(transfer.destination, bytes: transfer.bytes, role: "dst", index: index, device: device,
                                          keepAlive: &keepAlive)
            let source = try resolve(transfer.source, bytes: transfer.bytes, role: "src", index: index, device: device,
                                     keepAlive: &keepAlive)
            if destination.1 == source.1 && transfer.bytes > 0 {
                let (low, high) = destination.2 < source.2 ? (destination.2, source.2) : (source.2, destination.2)
                if high - low < transfer.bytes {
                    throw .invalidArgument("\(label)dst and src overlap (offsets \(destination.2) and \(source.2) of the same "
                                           + "memory, \(counted(transfer.bytes, "byte")))")
                }
            }
            return Prepared(destination: destination.0, source: source.0, bytes: transfer.bytes)
        }

        func enqueue(count: Int, device: Device, recovery: Recovery,
                     _ transfer: (Int) throws(VtrnError) -> DmaTransfer) throws(VtrnError) {
            try producer.withLock { (producer: inout Producer) throws(VtrnError) in
                if producer.closed { throw VtrnError(.invalidHandle, "the DMA queue was destroyed") }
                recover(&producer, recovery)
                producer.scratch.removeAll(keepingCapacity: true)
                var keepAlive = KeepAlive()
                for index in 0..<count {
                    producer.scratch.append(try Self.prepare(try transfer(index), index: index, device: device,
                                                             keepAlive: &keepAlive))
                }
                try write(&producer, keepAlive: keepAlive)
            }
        }

        func enqueue(prepared: [Prepared], keepAlive: KeepAlive, recovery: Recovery) throws(VtrnError) {
            try producer.withLock { (producer: inout Producer) throws(VtrnError) in
                if producer.closed { throw VtrnError(.invalidHandle, "the DMA queue was destroyed") }
                recover(&producer, recovery)
                producer.scratch = prepared
                try write(&producer, keepAlive: keepAlive)
            }
        }

        /// Writes `producer.scratch` into the rings, or nothing when they lack room.
        private func write(_ producer: inout Producer, keepAlive batchKeepAlive: KeepAlive) throws(VtrnError) {
            reclaim(&producer)
            var needed: UInt64 = 0
            for prepared in producer.scratch { needed += Self.descriptors(for: prepared.bytes) }
            let entries = UInt64(hardware.entries)
            let free = entries - (producer.tail - hardware.head)
            guard needed <= free else {
                throw VtrnError(.queueFull, "the batch needs \(counted(needed, "descriptor")) and the ring has \(free) free of \(entries) "
                                + "(\(producer.tail - hardware.head) enqueued and not yet completed); wait for completions, "
                                + "submit, or open the queue with more ring entries")
            }
            var position = producer.tail
            var slot = Int(position % entries)
            let sourceRing = hardware.sourceRing, destinationRing = hardware.destinationRing
            for prepared in producer.scratch {
                producer.transfersEnqueued &+= 1
                var done: UInt64 = 0
                while done < prepared.bytes {
                    let length = min(prepared.bytes - done, UInt64(DmaDescriptor.maximumBytes))
                    var control = UInt32(truncatingIfNeeded: length) & DmaDescriptor.lengthMask
                    control |= DmaDescriptor.ringId(position: position, entries: Int(entries)) << DmaDescriptor.ringIdShift
                    if done == 0 { control |= DmaDescriptor.first }
                    let isLast = done + length == prepared.bytes
                    if isLast { control |= DmaDescriptor.last }
                    sourceRing[slot] = DmaDescriptor(lengthControl: control, metadata: producer.transfersEnqueued,
                                                     address: UInt64(UInt(bitPattern: prepared.source + Int(done))))
                    destinationRing[slot] = DmaDescriptor(lengthControl: control, metadata: producer.transfersEnqueued,
                                                          address: UInt64(UInt(bitPattern: prepared.destination + Int(done))))
                    done += length
                    position += 1
                    slot += 1
                    if slot == Int(entries) { slot = 0 }
                }
            }
            if !batchKeepAlive.isEmpty {
                let last = Int((position - 1) % entries)
                batchKeepAlive.acquire()
                producer.keepAlive[last] = batchKeepAlive
                producer.keepAliveCount += 1
            }
            producer.tail = position
            producer.scratch.removeAll(keepingCapacity: true)
        }

        /// Releases keep-alives of completed descriptors (what a driver does on completion).
        private func reclaim(_ producer: inout Producer) {
            let head = hardware.head
            if producer.keepAliveCount == 0 {
                producer.reclaimed = head
                return
            }
            let entries = UInt64(hardware.entries)
            while producer.reclaimed < head {
                let slot = Int(producer.reclaimed % entries)
                if !producer.keepAlive[slot].isEmpty {
                    producer.keepAlive[slot].release()
                    producer.keepAlive[slot] = KeepAlive()
                    producer.keepAliveCount -= 1
                }
                producer.reclaimed += 1
            }
        }

        func submit(recovery: Recovery) throws(VtrnError) -> UInt64 {
            try producer.withLock { (producer: inout Producer) throws(VtrnError) in
                if producer.closed { throw VtrnError(.invalidHandle, "the DMA queue was destroyed") }
                recover(&producer, recovery)
                if producer.tail != producer.published {
                    producer.sequence += 1
                    producer.published = producer.tail
                    hardware.ringDoorbell(tail: producer.tail, sequence: producer.sequence)
                }
                return producer.sequence
            }
        }

        func wait(for sequence: UInt64, timeoutNanoseconds: UInt64, recovery: Recovery) throws(VtrnError) {
            let (submitted, failed) = producer.withLock { producer in
                recover(&producer, recovery)
                return (producer.sequence, producer.failure(of: sequence))
            }
            guard sequence <= submitted else {
                throw .invalidArgument("sequence \(sequence) was never submitted on this queue; the last submitted is \(submitted)")
            }
            if let failed { throw failed }
            let start = vtrnsys_monotonic_ns()
            while true {
                let elapsed = vtrnsys_monotonic_ns() - start
                let remaining = timeoutNanoseconds == .max ? .max : timeoutNanoseconds - min(elapsed, timeoutNanoseconds)
                switch hardware.wait(for: sequence, timeoutNanoseconds: remaining, hangTimeoutNanoseconds: recovery.hangTimeout) {
                case .completed:
                    // Completed, or failed and passed by a recovery on another thread.
                    if let failed = producer.withLock({ producer in
                        reclaim(&producer)
                        return producer.failure(of: sequence)
                    }) { throw failed }
                    return
                case .stopped:
                    if let failed = producer.withLock({ producer in
                        recover(&producer, recovery)
                        return producer.failure(of: sequence)
                    }) { throw failed }
                case .timedOut:
                    let completed = hardware.completedSequence
                    var hang = ""
                    if let stop = hardware.stop, case .hung(let fault) = stop.reason {
                        hang = "; the queue hung at descriptor \(stop.position) (\(fault)), "
                            + (recovery.hangTimeout.map { "which fails it once it has hung for \($0 / 1_000_000) ms (VTRN_EXEC_TIMEOUT_MS)" }
                               ?? "and with VTRN_EXEC_TIMEOUT_MS=0 only vtrn_device_reset ends that")
                    }
                    if timeoutNanoseconds == 0 {
                        throw VtrnError(.notReady, "sequence \(sequence) has not completed; the last completed is \(completed)\(hang)")
                    }
                    throw VtrnError(.timeout, "sequence \(sequence) did not complete within \(timeoutNanoseconds) ns on \(recovery.label); "
                                    + "the last completed is \(completed)\(hang)")
                }
            }
        }

        /// After the hardware queue stopped, what a driver does (udma_q_reset): the sequences in
        /// flight fail with the stop's error, and the queue restarts past them. What is enqueued
        /// but not yet submitted stays, for the next submit: dropping it would let that submit
        /// return the previous sequence, which a caller would take for its batch's. A hang is left
        /// alone until it has lasted `recovery.hangTimeout` (or a reset ends it).
        private func recover(_ producer: inout Producer, _ recovery: Recovery) {
            guard let stop = hardware.stop else { return }
            if case .hung = stop.reason {
                guard let hangTimeout = recovery.hangTimeout, vtrnsys_monotonic_ns() &- stop.time >= hangTimeout else { return }
            }
            let completed = hardware.completedSequence
            let slot = stop.position % UInt64(hardware.entries)
            let at = "descriptor \(stop.position) (ring slot \(slot))"
            let status: Status, text: String
            switch stop.reason {
            case .descriptorError:
                (status, text) = (.dmaFault, "DMA abort on \(recovery.label): the engine refused \(at), a descriptor from another "
                                  + "lap of the ring or a mismatched pair")
            case .aborted(let fault):
                (status, text) = (.dmaFault, "DMA abort on \(recovery.label): \(at) failed with a descriptor error (\(fault))")
            case .hbmUncorrectable(let address, let length, let fault):
                (status, text) = (.hardware, "uncorrectable HBM error on device \(recovery.device): \(recovery.label) read HBM bytes "
                                  + "[0x\(String(address, radix: 16)), 0x\(String(address + UInt64(length), radix: 16))) at \(at), "
                                  + "over \(fault)")
            case .hung(let fault):
                (status, text) = (.timeout, "\(recovery.label) hung at \(at) (\(fault)); the execution timeout of "
                                  + "\((recovery.hangTimeout ?? 0) / 1_000_000) ms (VTRN_EXEC_TIMEOUT_MS) ended the wait for it")
            case .reset:
                (status, text) = (.reset, "device \(recovery.device) was reset (vtrn_device_reset) while the work was in flight "
                                  + "on \(recovery.label)")
            case .deviceLost(let why):
                (status, text) = (.deviceLost, "device \(recovery.device) was lost (\(why)) while the work was in flight on "
                                  + "\(recovery.label)")
            }
            if completed < producer.sequence {
                let first = completed + 1, last = producer.sequence
                let sequences = first == last ? "sequence \(first) failed" : "sequences \(first)-\(last) failed"
                let head = hardware.head, published = producer.published
                let skipped = published == head + 1 ? " (descriptor \(head) did not complete)"
                    : published > head ? " (descriptors \(head)-\(published - 1) did not complete)" : ""
                let next = stop.reason == .reset ? "the queue is clean and usable again" : "the queue goes on with later submissions"
                producer.record(first: first, last: last, VtrnError(status, "\(text); \(sequences)\(skipped); \(next)"))
            }
            hardware.restart(at: producer.published, sequence: producer.sequence)
            reclaim(&producer)
        }

        func info(recovery: Recovery) -> DmaQueue.Info {
            producer.withLock { producer in
                recover(&producer, recovery)
                return DmaQueue.Info(freeEntries: hardware.entries - Int(producer.tail - hardware.head),
                              submittedSequence: producer.sequence, completedSequence: hardware.completedSequence,
                              descriptorsCompleted: hardware.head, bytesCompleted: hardware.bytesCompleted)
            }
        }

        /// Waits for everything submitted, drops what was not, and releases all keep-alives. A
        /// stopped queue (a fault, a hang, a reset, a loss) has nothing left to wait for.
        func drain() {
            let sequence = producer.withLock { producer in
                producer.closed = true
                return producer.sequence
            }
            _ = hardware.wait(for: sequence, timeoutNanoseconds: .max, hangTimeoutNanoseconds: 0)
            producer.withLock { producer in
                producer.tail = producer.published
                for slot in producer.keepAlive.indices where !producer.keepAlive[slot].isEmpty {
                    producer.keepAlive[slot].release()
                    producer.keepAlive[slot] = KeepAlive()
                }
                producer.keepAliveCount = 0
            }
        }
    }
}
