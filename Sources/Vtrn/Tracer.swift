import CVtrnSystem
import Synchronization
import VtrnDevice

#if canImport(Glibc)
import Glibc
#endif

/// The trace VTRN_TRACE asks for, in Chrome's Trace Event format (Perfetto and chrome://tracing
/// open it; `vtrn trace summary|render` read it). Two clocks, kept apart:
///
/// - A process per device, "device N (...) — device clock": a row per core and engine, each
///   instruction a span on the execution's virtual timeline (opcode, operands and cycles as args),
///   semaphore waits as spans of their own ("wait sem 3 >= 2"), so a stall shows. An execution's
///   timeline is placed at the host time it started; the row "core N executions" shows each
///   execution's host wall time.
/// - A process "host — wall clock": the API calls of each host thread (execute, fence wait, DMA
///   submit and wait, memcpy) and a row per DMA queue with each submission from its doorbell to
///   the completion its driver saw (bytes, direction, achieved rate). Flow arrows lead from an
///   `execute` call to its execution.
///
/// The file is written as events come, and after each batch it ends with "]}": it is valid JSON at
/// every moment, even if the process exits without destroying the runtime or is killed between
/// batches. "%p" in the path becomes the process id and "%r" the runtime's number.
final class Tracer: Sendable {
    let path: String
    private let origin = vtrnsys_monotonic_ns()
    private struct Output {
        var file: UnsafeMutablePointer<FILE>?
        var pending: [String] = []
        var wroteAny = false
        var failed: String?
    }
    private let output = Mutex(Output())
    private let nextFlow = Atomic<Int>(0)
    /// Host threads seen, for their row names.
    private let threads = Mutex<Set<Int32>>([])

    static let hostProcess = 9999

    init(path: String, serial: Int, devices: [VirtualDevice]) {
        self.path = path.replacing("%p", with: String(getpid())).replacing("%r", with: String(serial))
        var metadata: [String] = []
        for device in devices {
            metadata.append(#"{"ph":"M","name":"process_name","pid":\#(device.index),"args":{"name":"device \#(device.index) (\#(device.preset.name), \#(device.busAddress)) — device clock"}}"#)
            metadata.append(#"{"ph":"M","name":"process_sort_index","pid":\#(device.index),"args":{"sort_index":\#(device.index)}}"#)
            for core in 0..<device.preset.coresPerDevice {
                for engine in Engine.allCases {
                    metadata.append(#"{"ph":"M","name":"thread_name","pid":\#(device.index),"tid":\#(Self.track(core, engine.rawValue)),"args":{"name":"core \#(core) \#(engine)"}}"#)
                }
                metadata.append(#"{"ph":"M","name":"thread_name","pid":\#(device.index),"tid":\#(Self.track(core, 7)),"args":{"name":"core \#(core) executions (host time)"}}"#)
            }
        }
        metadata.append(#"{"ph":"M","name":"process_name","pid":\#(Self.hostProcess),"args":{"name":"host — wall clock"}}"#)
        metadata.append(#"{"ph":"M","name":"process_sort_index","pid":\#(Self.hostProcess),"args":{"sort_index":1000}}"#)
        output.withLock { output in
            output.file = fopen(self.path, "w")
            if output.file == nil { output.failed = "VTRN_TRACE=\"\(self.path)\": cannot write the trace: \(String(cString: strerror(errno)))" }
            output.pending = metadata
        }
        flush()
    }

    private static func track(_ core: Int, _ lane: Int) -> Int { core * 8 + lane }

    /// Microseconds since the trace began, as the format counts.
    private func microseconds(_ nanoseconds: UInt64) -> Double { Double(Int64(bitPattern: nanoseconds &- origin)) / 1000 }

    private func emit(_ lines: [String], flushNow: Bool = true) {
        output.withLock { $0.pending.append(contentsOf: lines) }
        if flushNow { flush() }
    }

    /// Appends what is pending and ends the file with "]}" again, so it stays valid JSON.
    func flush() {
        output.withLock { output in
            guard let file = output.file, !output.pending.isEmpty else { return }
            let body = output.pending.joined(separator: ",\n")
            output.pending.removeAll(keepingCapacity: true)
            if output.wroteAny {
                fseek(file, -4, SEEK_END) // before "\n]}\n"
                _ = (",\n" + body + "\n]}\n").withCString { fputs($0, file) }
            } else {
                _ = ("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n" + body + "\n]}\n").withCString { fputs($0, file) }
                output.wroteAny = true
            }
            fflush(file)
        }
    }

    /// Writes what is pending and closes the file; its path.
    func write() throws(VtrnError) -> String {
        flush()
        let failure: String? = output.withLock { output in
            if let file = output.file { fclose(file) }
            output.file = nil
            return output.failed
        }
        if let failure { throw VtrnError(.notFound, failure) }
        return path
    }

    // MARK: Host calls

    /// The row of the calling thread in the host process (its Linux thread id).
    private func hostThread() -> Int32 {
        let tid = vtrnsys_thread_id()
        let isNew = threads.withLock { $0.insert(tid).inserted }
        if isNew {
            emit([#"{"ph":"M","name":"thread_name","pid":\#(Self.hostProcess),"tid":\#(tid),"args":{"name":"thread \#(tid) API calls"}}"#],
                 flushNow: false)
        }
        return tid
    }

    /// Records a host API call that ran from `start` to now on this thread; `flow` starts an arrow
    /// to what it submitted.
    func call(_ name: String, since start: UInt64, arguments: String = "", flow: Int? = nil) {
        let end = vtrnsys_monotonic_ns()
        let tid = hostThread()
        var lines = [#"{"ph":"X","name":"\#(name)","cat":"api","pid":\#(Self.hostProcess),"tid":\#(tid),"ts":\#(microseconds(start)),"dur":\#(Double(end &- start) / 1000),"args":{\#(arguments)}}"#]
        if let flow {
            lines.append(#"{"ph":"s","name":"submission","cat":"flow","id":\#(flow),"pid":\#(Self.hostProcess),"tid":\#(tid),"ts":\#(microseconds(start))}"#)
        }
        emit(lines, flushNow: false)
    }

    /// A new flow id, linking a submission to what runs it.
    func newFlow() -> Int { nextFlow.add(1, ordering: .relaxed).newValue }

    // MARK: DMA

    /// A row per DMA queue in the host process, named when first used.
    private let queues = Mutex<Set<Int>>([])

    private func queueRow(device: Int, core: Int, engine: Int, queue: Int) -> Int {
        let row = 100_000 + device * 10_000 + (core < 0 ? 9_000 + queue : core * 256 + engine * 16 + queue)
        let isNew = queues.withLock { $0.insert(row).inserted }
        if isNew {
            let name = core < 0 ? "device \(device) host DMA queue \(queue)" : "device \(device) core \(core) DMA engine \(engine) queue \(queue)"
            emit([#"{"ph":"M","name":"thread_name","pid":\#(Self.hostProcess),"tid":\#(row),"args":{"name":"\#(name)"}}"#], flushNow: false)
        }
        return row
    }

    /// One submission of a DMA queue, from its doorbell to the completion its driver saw.
    func transfer(device: Int, core: Int, engine: Int, queue: Int, sequence: UInt64, bytes: UInt64, transfers: Int,
                  direction: String, submitted: UInt64, completed: UInt64) {
        let row = queueRow(device: device, core: core, engine: engine, queue: queue)
        let seconds = Double(completed &- submitted) / 1e9
        let rate = seconds > 0 ? Double(bytes) / seconds / 1e9 : 0
        emit([#"{"ph":"X","name":"\#(direction)","cat":"dma","pid":\#(Self.hostProcess),"tid":\#(row),"ts":\#(microseconds(submitted)),"dur":\#(Double(completed &- submitted) / 1000),"args":{"sequence":\#(sequence),"bytes":\#(bytes),"transfers":\#(transfers),"direction":"\#(direction)","rate_gb_per_s":\#((rate * 1000).rounded() / 1000)}}"#])
    }

    // MARK: Executions

    /// Adds an execution's spans (called on the core's thread when it finishes); `flow` ends the
    /// arrow its `execute` call started.
    func record(_ execution: CoreExecution, device: Int, core: Int, clockHz: UInt64, flow: Int?) {
        let start = microseconds(execution.startedAt)
        var lines: [String] = []
        lines.reserveCapacity(execution.outcome.trace.count + 2)
        let status = execution.outcome.failure.map { jsonEscaped(String("\($0)".prefix(300))) } ?? "success"
        lines.append(#"{"ph":"X","name":"execution","cat":"host","pid":\#(device),"tid":\#(Self.track(core, 7)),"ts":\#(start),"dur":\#(Double(execution.finishedAt &- execution.startedAt) / 1000),"args":{"device_ns":\#(execution.outcome.deviceNanoseconds),"queued_ns":\#(execution.startedAt &- execution.submittedAt),"status":"\#(status)"}}"#)
        if let flow {
            lines.append(#"{"ph":"f","bp":"e","name":"submission","cat":"flow","id":\#(flow),"pid":\#(device),"tid":\#(Self.track(core, 7)),"ts":\#(start)}"#)
        }
        let cyclesPerNanosecond = Double(clockHz) / 1e9
        for event in execution.outcome.trace {
            let instruction = execution.program.instructions[event.instruction]
            let track = Self.track(core, event.engine.rawValue)
            if let wait = event.waitedFor {
                lines.append(#"{"ph":"X","name":"wait sem \#(wait.semaphore) >= \#(wait.value)","cat":"semaphore","pid":\#(device),"tid":\#(track),"ts":\#(start + event.start / 1000),"dur":\#(event.duration / 1000),"args":{"instruction":\#(event.instruction),"semaphore":\#(wait.semaphore),"value":\#(wait.value)}}"#)
                continue
            }
            var operands = instruction.operation.operands.map { "\($0.name)=\(Self.brief($0.access))" }.joined(separator: " ")
            if case .collective(let collective) = instruction.operation {
                let rank = collective.group.members.firstIndex { $0.device.index == device && $0.core == core }
                operands += " \(collective.group.name) rank \(rank.map(String.init) ?? "?") of \(collective.group.size)"
            }
            lines.append(#"{"ph":"X","name":"\#(instruction.operation.name)","cat":"instruction","pid":\#(device),"tid":\#(track),"ts":\#(start + event.start / 1000),"dur":\#(event.duration / 1000),"args":{"instruction":\#(event.instruction),"cycles":\#(Int((event.duration * cyclesPerNanosecond).rounded())),"operands":"\#(jsonEscaped(operands))"}}"#)
        }
        emit(lines)
    }

    /// "SBUF[0:16]+1024 fp32 16" / "HBM#0+0 bf16 128x512".
    static func brief(_ access: AccessPattern) -> String {
        let place = access.space == .hbm ? "HBM#\(access.parameter)" : "\(access.space)[\(access.startPartition):\(access.startPartition + access.partitions)]"
        return "\(place)+\(access.offset) \(access.dtype) \(access.sizes.map(String.init).joined(separator: "x"))"
    }
}

/// `text` as the inside of a JSON string: quotes and backslashes escaped, control characters as \u escapes.
func jsonEscaped(_ text: String) -> String {
    var out = ""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}
