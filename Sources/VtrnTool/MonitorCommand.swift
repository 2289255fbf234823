import ArgumentParser
import CVtrnSystem
import Foundation
import Vtrn

#if canImport(Glibc)
import Glibc
#endif

/// The processes that publish vtrn counters (`/dev/shm/vtrn-<pid>`, see `MonitorSegment`), read
/// once. Segments of processes that are gone (killed without closing their runtimes) are removed.
struct MonitorSnapshot {
    struct Process {
        let pid: Int32
        let document: [String: Any]
        let json: String
    }

    var processes: [Process] = []
    var removed: [Int32] = []

    /// Whether `pid` is a running process: it exists and is not a zombie (killed, not yet reaped).
    static func alive(_ pid: Int32) -> Bool {
        if kill(pid, 0) != 0 && errno == ESRCH { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state != "Z" && state != "X"
    }

    static func take() -> MonitorSnapshot {
        var snapshot = MonitorSnapshot()
        let names = (try? FileManager.default.contentsOfDirectory(atPath: MonitorSegment.directory)) ?? []
        for name in names.sorted() where name.hasPrefix(MonitorSegment.prefix) {
            guard let pid = Int32(name.dropFirst(MonitorSegment.prefix.count)) else { continue }
            if !Self.alive(pid) {
                shm_unlink("/" + name)
                snapshot.removed.append(pid)
                continue
            }
            let descriptor = shm_open("/" + name, O_RDONLY | O_CLOEXEC, 0)
            guard descriptor >= 0 else { continue }
            defer { close(descriptor) }
            guard let mapping = mmap(nil, MonitorSegment.size, PROT_READ, MAP_SHARED, descriptor, 0), mapping != MAP_FAILED else { continue }
            defer { munmap(mapping, MonitorSegment.size) }
            guard let json = MonitorSegment.read(mapping),
                  let document = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else { continue }
            snapshot.processes.append(Process(pid: pid, document: document, json: json))
        }
        return snapshot
    }
}

/// "1s", "500ms", "0.25s", "2" (seconds) → seconds.
func parsePeriod(_ text: String) throws -> Double {
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    let (digits, scale): (Substring, Double) = trimmed.hasSuffix("ms") ? (trimmed.dropLast(2), 0.001)
        : trimmed.hasSuffix("s") ? (trimmed.dropLast(), 1) : (Substring(trimmed), 1)
    guard let value = Double(digits), value > 0, value * scale >= 0.01 else {
        throw ValidationError("--period \"\(text)\" is not a period of at least 10 ms, such as 1s, 500ms or 0.2s")
    }
    return value * scale
}

struct MonitorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "monitor",
        abstract: "Streams the counters of every process using vtrn, one JSON document per period (like neuron-monitor).",
        discussion: """
            Each document: {"timestamp_unix_ns": ..., "processes": [...]}, a process being what its runtime
            publishes every VTRN_MONITOR_PERIOD_MS (pid, command, devices with HBM in use, DMA bytes per engine,
            and per core: executions, busy and device time, utilisation, the holding runtime). Segments of
            processes that died without closing their runtimes are removed and listed in "removed_pids".
            """)

    @Flag(help: "JSON documents, one per line (the only format; accepted for neuron-monitor's habits).")
    var json = false

    @Option(help: "Time between documents: 1s, 500ms, 0.2s.")
    var period = "1s"

    @Option(help: "Stop after this many documents (default: run until interrupted).")
    var count: Int?

    func run() throws {
        let seconds = try parsePeriod(period)
        var emitted = 0
        while count.map({ emitted < $0 }) ?? true {
            if emitted > 0 { usleep(useconds_t(seconds * 1e6)) }
            let snapshot = MonitorSnapshot.take()
            var time = timespec()
            clock_gettime(CLOCK_REALTIME, &time)
            let processes = snapshot.processes.map(\.json).joined(separator: ",")
            print(#"{"timestamp_unix_ns":\#(Int(time.tv_sec) * 1_000_000_000 + Int(time.tv_nsec)),"processes":[\#(processes)],"removed_pids":[\#(snapshot.removed.map(String.init).joined(separator: ","))]}"#)
            fflush(nil)
            emitted += 1
        }
    }
}

struct TopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "top",
        abstract: "A live view of every process using vtrn: per-core utilisation and executions, HBM, DMA rates (like neuron-top). q quits.")

    @Option(help: "Time between redraws: 1s, 500ms.")
    var period = "1s"

    @Option(help: "Stop after this many redraws (default: until q or Ctrl-C).")
    var iterations: Int?

    func run() throws {
        let seconds = try parsePeriod(period)
        let terminal = isatty(STDIN_FILENO) != 0
        var saved = termios()
        if terminal {
            tcgetattr(STDIN_FILENO, &saved)
            var raw = saved
            raw.c_lflag &= ~tcflag_t(ICANON | ECHO)
            tcsetattr(STDIN_FILENO, TCSANOW, &raw)
            print("\u{1b}[?25l", terminator: "") // hide the cursor
        }
        defer {
            if terminal {
                tcsetattr(STDIN_FILENO, TCSANOW, &saved)
                print("\u{1b}[?25h", terminator: "")
            }
        }
        var previous: [String: (Double, Double)] = [:] // key → (value, time)
        var drawn = 0
        loop: while iterations.map({ drawn < $0 }) ?? true {
            let snapshot = MonitorSnapshot.take()
            let now = Double(vtrnsys_monotonic_ns()) / 1e9
            print("\u{1b}[H\u{1b}[2J" + Self.screen(snapshot, now: now, previous: &previous), terminator: "")
            fflush(nil)
            drawn += 1
            // Wait for the period, or a key.
            var descriptor = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
            if terminal {
                if poll(&descriptor, 1, Int32(seconds * 1000)) > 0 {
                    var key: UInt8 = 0
                    if read(STDIN_FILENO, &key, 1) == 1 && (key == UInt8(ascii: "q") || key == UInt8(ascii: "Q")) { break loop }
                }
            } else if iterations.map({ drawn < $0 }) ?? true {
                usleep(useconds_t(seconds * 1e6))
            }
        }
        print("")
    }

    /// The screen for one snapshot; rates from the change since the previous one.
    static func screen(_ snapshot: MonitorSnapshot, now: Double, previous: inout [String: (Double, Double)]) -> String {
        func rate(_ key: String, _ value: Double) -> Double? {
            defer { previous[key] = (value, now) }
            guard let (last, at) = previous[key], now > at else { return nil }
            return (value - last) / (now - at)
        }
        func number(_ value: Any?) -> Double { (value as? NSNumber)?.doubleValue ?? 0 }
        var lines = ["vtrn top — \(snapshot.processes.count) process\(snapshot.processes.count == 1 ? "" : "es") using vtrn    (q quits)", ""]
        if snapshot.processes.isEmpty { lines.append("  no process is using vtrn (runtimes publish to \(MonitorSegment.directory)/\(MonitorSegment.prefix)<pid>)") }
        for process in snapshot.processes {
            let command = (process.document["command"] as? String ?? "?").prefix(70)
            lines.append("pid \(process.pid)  \(command)  runtimes \(Int(number(process.document["runtimes"])))")
            for device in process.document["devices"] as? [[String: Any]] ?? [] {
                let index = Int(number(device["index"]))
                let used = number(device["hbm_used_bytes"]), total = number(device["hbm_bytes"])
                let dma = rate("\(process.pid)/\(index)/dma", number(device["dma_bytes"]))
                let errors = device["errors"] as? [String: Any] ?? [:]
                let errorText = errors["lost"] as? Bool == true ? "LOST"
                    : String(format: "errors: %.0f DMA aborts, %.0f HBM UE, %.0f timeouts, %.0f resets", number(errors["dma_aborts"]),
                             number(errors["hbm_uncorrectable_errors"]), number(errors["execution_timeouts"]), number(errors["resets"]))
                lines.append(String(format: "  device %d %@  HBM %.1f / %.0f GiB  DMA %@  %@", index, device["name"] as? String ?? "?",
                                    used / 1073741824, total / 1073741824, dma.map { String(format: "%.2f GB/s", $0 / 1e9) } ?? "-",
                                    errorText))
                for core in device["cores"] as? [[String: Any]] ?? [] {
                    let number_ = Int(number(core["core"]))
                    let utilization = number(core["utilization"])
                    let executions = number(core["executions"])
                    let perSecond = rate("\(process.pid)/\(index)/\(number_)/executions", executions)
                    let width = 30, filled = Int((utilization * Double(width)).rounded())
                    let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
                    let holder = (core["holder_runtime"] as? NSNumber).map { "runtime \($0)" } ?? "free"
                    let collectives = number(core["collectives"])
                    lines.append(String(format: "    core %d [%@] %5.1f %%  %8.0f executions  %@/s  %@%@", number_, bar, utilization * 100,
                                        executions, perSecond.map { String(format: "%.0f", $0) } ?? "-", holder,
                                        collectives > 0 ? String(format: "  %.0f collectives", collectives) : ""))
                }
            }
            lines.append("")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
