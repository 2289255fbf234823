import CVtrnSystem
import Synchronization
import VtrnDevice

#if canImport(Glibc)
import Glibc
#endif

/// The trace VTRN_TRACE asks for, in Chrome's Trace Event format (open it in Perfetto or
/// chrome://tracing): a process per device, a track per core and engine, and each executed
/// instruction as a span on the device's virtual timeline, placed at the host time its execution
/// started. A track "core N executions" shows each execution's host wall time. The runtime writes
/// the file when it is destroyed; "%p" in the path becomes the process id and "%r" the runtime's
/// serial, for several runtimes or processes tracing at once.
final class Tracer: Sendable {
    let path: String
    private let events = Mutex<[String]>([])
    private let origin = vtrnsys_monotonic_ns()

    init(path: String, serial: Int, devices: [VirtualDevice]) {
        self.path = path.replacing("%p", with: String(getpid())).replacing("%r", with: String(serial))
        var metadata: [String] = []
        for device in devices {
            metadata.append(#"{"ph":"M","name":"process_name","pid":\#(device.index),"args":{"name":"device \#(device.index) (\#(device.preset.name), \#(device.busAddress))"}}"#)
            for core in 0..<device.preset.coresPerDevice {
                for engine in Engine.allCases {
                    metadata.append(#"{"ph":"M","name":"thread_name","pid":\#(device.index),"tid":\#(Self.track(core, engine.rawValue)),"args":{"name":"core \#(core) \#(engine)"}}"#)
                }
                metadata.append(#"{"ph":"M","name":"thread_name","pid":\#(device.index),"tid":\#(Self.track(core, 7)),"args":{"name":"core \#(core) executions (host time)"}}"#)
            }
        }
        events.withLock { $0 = metadata }
    }

    private static func track(_ core: Int, _ lane: Int) -> Int { core * 8 + lane }

    /// Adds an execution's spans (called on the core's thread when it finishes).
    func record(_ execution: CoreExecution, device: Int, core: Int) {
        let start = Double(execution.startedAt &- origin) / 1000
        var lines: [String] = []
        lines.reserveCapacity(execution.outcome.trace.count + 1)
        let status = execution.outcome.failure.map { String("\($0)".prefix(200)).replacing("\"", with: "'").replacing("\\", with: "/") } ?? "success"
        lines.append(#"{"ph":"X","name":"execution","cat":"host","pid":\#(device),"tid":\#(Self.track(core, 7)),"ts":\#(start),"dur":\#(Double(execution.finishedAt &- execution.startedAt) / 1000),"args":{"device_ns":\#(execution.outcome.deviceNanoseconds),"status":"\#(status)"}}"#)
        for event in execution.outcome.trace {
            let name = execution.program.instructions[event.instruction].operation.name
            lines.append(#"{"ph":"X","name":"\#(name)","cat":"instruction","pid":\#(device),"tid":\#(Self.track(core, event.engine.rawValue)),"ts":\#(start + event.start / 1000),"dur":\#(event.duration / 1000),"args":{"instruction":\#(event.instruction)}}"#)
        }
        events.withLock { $0.append(contentsOf: lines) }
    }

    /// Writes the file; its path.
    func write() throws(VtrnError) -> String {
        let text = "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n" + events.withLock { $0.joined(separator: ",\n") } + "\n]}\n"
        guard let file = fopen(path, "w") else {
            throw VtrnError(.notFound, "VTRN_TRACE=\"\(path)\": cannot write the trace: \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        _ = text.withCString { fputs($0, file) }
        return path
    }
}
