import CVtrnSystem
import Synchronization
import VtrnDevice

#if canImport(Glibc)
import Glibc
#endif

/// What `vtrn top` and `vtrn monitor` read: while a process has a runtime, a thread of it writes a
/// snapshot of its devices' counters (HBM in use, DMA bytes per engine, per-core executions, busy
/// time and utilisation, who holds each core) every `period` into a shared-memory segment of its
/// own, `/dev/shm/vtrn-<pid>`, as neuron-monitor reads the runtime's counters. The hot paths only
/// bump relaxed atomic counters (one per execution, one per DMA burst); this thread samples them.
/// The last runtime's close stops the thread and removes the segment; a monitor removes the
/// segments of processes that died without closing (kill -9).
///
/// Segment layout (`MonitorSegment`): 8 bytes magic "VTRNMON1", a 32-bit sequence number (odd
/// while the writer writes: a seqlock), a 32-bit length, then that many bytes of JSON.
public enum MonitorSegment {
    public static let magic: [UInt8] = Array("VTRNMON1".utf8)
    public static let size = 1 << 18
    public static let headerBytes = 16
    public static let directory = "/dev/shm"
    public static let prefix = "vtrn-"

    public static func name(pid: Int32) -> String { "/\(prefix)\(pid)" }

    /// The JSON text of a mapped segment, read consistently (nil if it is not one, or never settles).
    public static func read(_ base: UnsafeRawPointer) -> String? {
        guard (0..<8).allSatisfy({ base.load(fromByteOffset: $0, as: UInt8.self) == magic[$0] }) else { return nil }
        let sequenceWord = UnsafeMutablePointer(mutating: (base + 8).assumingMemoryBound(to: UInt32.self))
        for _ in 0..<1000 {
            let before = vtrnsys_load_u32(sequenceWord)
            if before & 1 == 1 { usleep(100); continue }
            let length = min(Int(base.load(fromByteOffset: 12, as: UInt32.self)), size - headerBytes)
            let bytes = Array(UnsafeRawBufferPointer(start: base + headerBytes, count: length))
            if vtrnsys_load_u32(sequenceWord) == before { return String(decoding: bytes, as: UTF8.self) }
        }
        return nil
    }
}

final class MonitorPublisher: @unchecked Sendable {
    static let shared = MonitorPublisher()
    static let defaultPeriodMilliseconds = 500

    /// VTRN_MONITOR_PERIOD_MS: milliseconds between snapshots, 0 for none (default 500).
    static func period(environment: [String: String]) throws(VtrnError) -> Int {
        guard let text = environment["VTRN_MONITOR_PERIOD_MS"] else { return defaultPeriodMilliseconds }
        let digits = text.trimmingSpaces
        guard !digits.isEmpty, digits.allSatisfy(\.isASCIIDigit), let value = Int(digits), value <= 3_600_000 else {
            throw .invalidArgument("VTRN_MONITOR_PERIOD_MS=\"\(text)\" is not a number of milliseconds from 0 to 3600000; "
                                   + "accepted: 0 (publish nothing for vtrn top/monitor) or a period such as 500")
        }
        return value
    }

    /// Milliseconds between snapshots (VTRN_MONITOR_PERIOD_MS; 0 turns publishing off).
    private struct State {
        var runtimes = 0
        var thread: UInt64?
        var base: UInt?   // the mapping's address
        var name = ""
    }
    private let state = Mutex(State())
    /// Serialises start and stop (which join the thread outside `state`'s lock).
    private let lifecycle = Mutex(())
    private let stopWord: UnsafeMutablePointer<UInt32>
    private let stopping = Atomic<Bool>(false)

    private init() {
        stopWord = .allocate(capacity: 1)
        stopWord.initialize(to: 0)
    }

    /// A runtime opened: the first starts publishing.
    func runtimeOpened(periodMilliseconds: Int) {
        guard periodMilliseconds > 0 else { return }
        lifecycle.withLock { _ in
            let first = state.withLock { state -> Bool in
                state.runtimes += 1
                return state.runtimes == 1
            }
            guard first else { return }
            let pid = getpid()
            let name = MonitorSegment.name(pid: pid)
            let descriptor = shm_open(name, O_CREAT | O_RDWR | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else { return }
            defer { close(descriptor) }
            guard ftruncate(descriptor, off_t(MonitorSegment.size)) == 0,
                  let mapping = mmap(nil, MonitorSegment.size, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0),
                  mapping != MAP_FAILED else {
                shm_unlink(name)
                return
            }
            MonitorSegment.magic.withUnsafeBytes { mapping.copyMemory(from: $0.baseAddress!, byteCount: 8) }
            stopping.store(false, ordering: .sequentiallyConsistent)
            let context = Unmanaged.passRetained(Start(publisher: self, base: mapping, period: UInt64(periodMilliseconds) * 1_000_000)).toOpaque()
            var thread: UInt64 = 0
            let started = vtrnsys_thread_start({ context in
                let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
                start.publisher.run(base: start.base, period: start.period)
            }, context, "vtrn-monitor", &thread)
            if started != 0 {
                Unmanaged<Start>.fromOpaque(context).release()
                munmap(mapping, MonitorSegment.size)
                shm_unlink(name)
                return
            }
            state.withLock {
                $0.thread = thread
                $0.base = UInt(bitPattern: mapping)
                $0.name = name
            }
        }
    }

    /// A runtime closed: the last stops publishing and removes the segment.
    func runtimeClosed() {
        lifecycle.withLock { _ in
            let last: (UInt64, UInt, String)? = state.withLock { state in
                guard state.runtimes > 0 else { return nil }
                state.runtimes -= 1
                guard state.runtimes == 0, let thread = state.thread, let base = state.base else { return nil }
                state.thread = nil
                state.base = nil
                return (thread, base, state.name)
            }
            guard let (thread, address, name) = last, let base = UnsafeMutableRawPointer(bitPattern: address) else { return }
            stopping.store(true, ordering: .sequentiallyConsistent)
            _ = vtrnsys_add_u32(stopWord, 1)
            _ = vtrnsys_futex_wake(stopWord, Int32.max)
            _ = vtrnsys_thread_join(thread)
            shm_unlink(name)
            munmap(base, MonitorSegment.size)
        }
    }

    private final class Start: @unchecked Sendable {
        let publisher: MonitorPublisher
        let base: UnsafeMutableRawPointer
        let period: UInt64
        init(publisher: MonitorPublisher, base: UnsafeMutableRawPointer, period: UInt64) {
            self.publisher = publisher
            self.base = base
            self.period = period
        }
    }

    private func run(base: UnsafeMutableRawPointer, period: UInt64) {
        var previous: [String: (running: UInt64, at: UInt64)] = [:]
        let command = currentCommandLine()
        while !stopping.load(ordering: .sequentiallyConsistent) {
            let word = vtrnsys_load_u32(stopWord)
            publish(base: base, period: period, command: command, previous: &previous)
            if stopping.load(ordering: .sequentiallyConsistent) { break }
            _ = vtrnsys_futex_wait(stopWord, word, period)
        }
    }

    private func publish(base: UnsafeMutableRawPointer, period: UInt64, command: String,
                         previous: inout [String: (running: UInt64, at: UInt64)]) {
        let now = vtrnsys_monotonic_ns()
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        var devices: [String] = []
        for device in SharedDevice.live() {
            let hardware = device.hardware
            let usage = hardware.hbm.usage
            var cores: [String] = []
            for (core, queue) in hardware.commandQueues.enumerated() {
                let counters = queue.counters
                let key = "\(hardware.index)/\(core)"
                var utilization = 0.0
                if let last = previous[key], now > last.at {
                    utilization = min(1, Double(counters.runningNanoseconds &- last.running) / Double(now - last.at))
                }
                previous[key] = (counters.runningNanoseconds, now)
                let holder = device.runtimeHolding(core).map(String.init) ?? "null"
                cores.append(#"{"core":\#(core),"executions":\#(counters.executions),"busy_ns":\#(counters.runningNanoseconds),"#
                             + #""device_ns":\#(counters.deviceNanoseconds),"queued":\#(counters.depth),"#
                             + #""utilization":\#(Double(Int(utilization * 10000)) / 10000),"holder_runtime":\#(holder),"#
                             + #""collectives":\#(counters.collectives),"collective_device_ns":\#(counters.collectiveNanoseconds)}"#)
            }
            let dma = hardware.dmaBytesPerEngine
            let errors = hardware.faults.counters.snapshot
            let errorJSON = #""errors":{"lost":\#(hardware.faults.loss != nil),"dma_aborts":\#(errors.dmaAborts),"#
                + #""hbm_uncorrectable_errors":\#(errors.hbmUncorrectableErrors),"execution_timeouts":\#(errors.executionTimeouts),"#
                + #""hangs":\#(errors.hangs),"device_losses":\#(errors.deviceLosses),"resets":\#(errors.resets),"#
                + #""faults_injected":\#(errors.faultsInjected)}"#
            devices.append(#"{"index":\#(hardware.index),"name":"\#(hardware.preset.name)","numa_node":\#(hardware.numaNode),"#
                           + #""hbm_bytes":\#(usage.capacity),"hbm_used_bytes":\#(usage.used),"#
                           + #""dma_bytes":\#(dma.reduce(0, +)),"dma_bytes_per_engine":[\#(dma.map(String.init).joined(separator: ","))],"#
                           + errorJSON + #","cores":[\#(cores.joined(separator: ","))]}"#)
        }
        let runtimes = state.withLock { $0.runtimes }
        let json = #"{"pid":\#(getpid()),"command":"\#(jsonEscaped(command))","updated_unix_ns":\#(UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)),"#
            + #""period_ms":\#(period / 1_000_000),"runtimes":\#(runtimes),"devices":[\#(devices.joined(separator: ","))]}"#
        let bytes = Array(json.utf8.prefix(MonitorSegment.size - MonitorSegment.headerBytes))
        let sequenceWord = (base + 8).assumingMemoryBound(to: UInt32.self)
        _ = vtrnsys_add_u32(sequenceWord, 1) // odd: writing
        bytes.withUnsafeBytes { (base + MonitorSegment.headerBytes).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        (base + 12).storeBytes(of: UInt32(bytes.count), as: UInt32.self)
        _ = vtrnsys_add_u32(sequenceWord, 1) // even: done
    }

}
