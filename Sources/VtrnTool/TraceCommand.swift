import ArgumentParser
import Foundation

/// `vtrn trace summary|render FILE`: reads a trace VTRN_TRACE wrote (Chrome's Trace Event format,
/// as Perfetto opens it) and says where the time went, or draws it as an SVG timeline.
struct TraceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Summarise or render a trace written by VTRN_TRACE.",
        subcommands: [TraceSummaryCommand.self, TraceRenderCommand.self])
}

struct TraceSummaryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "summary",
        abstract: "Per-engine busy time and utilisation, DMA bytes and rates, the top instructions, the longest semaphore stalls.")

    @Argument(help: "A trace file (VTRN_TRACE's JSON).")
    var file: String

    @Option(help: "How many instructions and stalls to list.")
    var top = 10

    func run() throws {
        let trace = try TraceFile(path: file)
        print(trace.summary(top: top), terminator: "")
    }
}

struct TraceRenderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render",
        abstract: "Draws the trace as an SVG timeline: a row per engine, DMA queue and host thread, bars coloured by kind.")

    @Argument(help: "A trace file (VTRN_TRACE's JSON).")
    var file: String

    @Option(name: .shortAndLong, help: "The SVG file to write.")
    var output: String

    @Option(help: "Width of the drawing in pixels.")
    var width = 1600

    @Option(help: "Zoom on the Nth kernel execution (1 is the first): its device timeline, from its start.")
    var execution: Int?

    func run() throws {
        var trace = try TraceFile(path: file)
        if let execution {
            let executions = trace.spans.filter { $0.category == "host" && $0.name == "execution" }.sorted { $0.start < $1.start }
            guard execution >= 1 && execution <= executions.count else {
                throw ValidationError("--execution \(execution): the trace has \(executions.count) execution\(executions.count == 1 ? "" : "s")")
            }
            let chosen = executions[execution - 1]
            let device = ((chosen.arguments["device_ns"] as? NSNumber)?.doubleValue ?? 0) / 1000
            trace.zoom(from: chosen.start, to: chosen.start + (device > 0 ? device : chosen.duration))
        }
        let svg = trace.svg(width: max(400, width))
        guard FileManager.default.createFile(atPath: output, contents: Data(svg.utf8)) else {
            throw ValidationError("cannot write \(output)")
        }
        print("\(output): \(trace.tracks.count) rows, \(trace.spans.count) spans over \(TraceFile.duration(trace.end - trace.start))")
    }
}

/// A trace, read: its rows (a process and thread of the trace each) and its complete events.
struct TraceFile {
    struct Track {
        let pid: Int
        let tid: Int
        var name: String
        /// "device" for the virtual timeline (instructions, semaphore waits), "host" otherwise.
        var clock = "host"
    }

    struct Span {
        let track: Int
        let name: String
        let category: String
        /// Microseconds, as the format has them.
        let start: Double
        let duration: Double
        let arguments: [String: Any]
        var end: Double { start + duration }
    }

    var tracks: [Track] = []
    var spans: [Span] = []
    var start = 0.0, end = 0.0

    init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("\(path): cannot read the file")
        }
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw ValidationError("\(path) is not valid JSON: \(error.localizedDescription)")
        }
        let events: [[String: Any]]
        if let object = root as? [String: Any], let list = object["traceEvents"] as? [[String: Any]] {
            events = list
        } else if let list = root as? [[String: Any]] {
            events = list
        } else {
            throw ValidationError("\(path) is not a trace: it has no \"traceEvents\" array")
        }
        var processNames: [Int: String] = [:]
        var threadNames: [[Int]: String] = [:]
        var index: [[Int]: Int] = [:]
        func number(_ value: Any?) -> Double? { (value as? NSNumber)?.doubleValue }
        for event in events where event["ph"] as? String == "M" {
            guard let pid = number(event["pid"]).map(Int.init), let name = (event["args"] as? [String: Any])?["name"] as? String else { continue }
            if event["name"] as? String == "process_name" { processNames[pid] = name }
            if event["name"] as? String == "thread_name", let tid = number(event["tid"]).map(Int.init) { threadNames[[pid, tid]] = name }
        }
        for event in events where event["ph"] as? String == "X" {
            guard let pid = number(event["pid"]).map(Int.init), let tid = number(event["tid"]).map(Int.init),
                  let start = number(event["ts"]) else { continue }
            let key = [pid, tid]
            let track: Int
            if let known = index[key] {
                track = known
            } else {
                track = tracks.count
                index[key] = track
                let process = processNames[pid] ?? "process \(pid)"
                // "device 0 (...) — device clock" → "device 0"; the host process adds nothing.
                let prefix = process.hasPrefix("device ") ? String(process.split(separator: " ").prefix(2).joined(separator: " ")) + " "
                    : process.hasPrefix("host") ? "" : process + " / "
                tracks.append(Track(pid: pid, tid: tid, name: prefix + (threadNames[key] ?? "thread \(tid)")))
            }
            let category = event["cat"] as? String ?? ""
            if category == "instruction" || category == "semaphore" { tracks[track].clock = "device" }
            spans.append(Span(track: track, name: event["name"] as? String ?? "?", category: category, start: start,
                              duration: max(0, number(event["dur"]) ?? 0), arguments: event["args"] as? [String: Any] ?? [:]))
        }
        // Rows in the order of the trace's processes and threads.
        let order = tracks.indices.sorted { (tracks[$0].pid, tracks[$0].tid) < (tracks[$1].pid, tracks[$1].tid) }
        var renumber = [Int](repeating: 0, count: tracks.count)
        for (position, old) in order.enumerated() { renumber[old] = position }
        tracks = order.map { tracks[$0] }
        spans = spans.map { Span(track: renumber[$0.track], name: $0.name, category: $0.category, start: $0.start,
                                 duration: $0.duration, arguments: $0.arguments) }
        start = spans.map(\.start).min() ?? 0
        end = spans.map(\.end).max() ?? 0
    }

    /// Keeps what overlaps [from, to] (microseconds), clipped to it.
    mutating func zoom(from: Double, to: Double) {
        spans = spans.compactMap { span in
            guard span.end >= from && span.start <= to else { return nil }
            let start = max(span.start, from), end = min(span.end, to)
            return Span(track: span.track, name: span.name, category: span.category, start: start, duration: end - start,
                        arguments: span.arguments)
        }
        start = from
        end = to
    }

    // MARK: Summary

    /// Busy time of a row: the union of its spans (microseconds).
    static func busy(_ spans: [Span]) -> Double {
        var total = 0.0, reach = -Double.infinity
        for span in spans.sorted(by: { $0.start < $1.start }) {
            if span.end <= reach { continue }
            total += span.end - max(span.start, reach)
            reach = span.end
        }
        return total
    }

    func summary(top: Int) -> String {
        var text = "trace: \(spans.count) spans on \(tracks.count) rows over \(Self.duration(end - start))\n"
        let byTrack = Dictionary(grouping: spans, by: \.track)
        // The device time of each core: the sum of its executions' estimated device time, from the
        // execution spans on its host row ("device_ns"). Rows of the same core share it.
        var deviceTime: [String: Double] = [:]
        for span in spans where span.category == "host" && span.name == "execution" {
            let key = Self.coreKey(tracks[span.track])
            deviceTime[key, default: 0] += ((span.arguments["device_ns"] as? NSNumber)?.doubleValue ?? 0) / 1000
        }

        var engineRows: [[String]] = []
        for (index, track) in tracks.enumerated() where track.clock == "device" {
            let instructions = (byTrack[index] ?? []).filter { $0.category == "instruction" }
            let busy = Self.busy(instructions)
            let window = deviceTime[Self.coreKey(track)] ?? 0
            engineRows.append([track.name, Self.duration(busy), window > 0 ? Self.percent(busy / window) : "-", "\(instructions.count)"])
        }
        if !engineRows.isEmpty {
            text += "\nengines (device clock; utilisation = busy / the core's estimated device time)\n"
            text += Self.table(["ROW", "BUSY", "UTILISATION", "INSTRUCTIONS"], engineRows)
        }

        var dmaRows: [[String]] = []
        for (index, track) in tracks.enumerated() {
            let transfers = (byTrack[index] ?? []).filter { $0.category == "dma" }
            guard !transfers.isEmpty else { continue }
            let bytes = transfers.reduce(0.0) { $0 + (($1.arguments["bytes"] as? NSNumber)?.doubleValue ?? 0) }
            let busy = Self.busy(transfers)
            dmaRows.append([track.name, "\(transfers.count)", Self.bytes(bytes), busy > 0 ? Self.rate(bytes / (busy / 1e6)) : "-",
                            Self.duration(busy)])
        }
        if !dmaRows.isEmpty {
            text += "\nDMA (host clock; rate = bytes / busy time)\n"
            text += Self.table(["ROW", "TRANSFERS", "BYTES", "RATE", "BUSY"], dmaRows)
        }

        let instructions = spans.filter { $0.category == "instruction" }
        if !instructions.isEmpty {
            var byName: [String: (count: Int, total: Double)] = [:]
            for span in instructions { byName[span.name, default: (0, 0)].count += 1; byName[span.name]!.total += span.duration }
            let total = instructions.reduce(0) { $0 + $1.duration }
            let rows = byName.sorted { $0.value.total > $1.value.total }.prefix(top).map { name, value in
                [name, "\(value.count)", Self.duration(value.total), Self.duration(value.total / Double(value.count)),
                 Self.percent(total > 0 ? value.total / total : 0)]
            }
            text += "\ntop instructions by time\n"
            text += Self.table(["INSTRUCTION", "COUNT", "TOTAL", "MEAN", "SHARE"], rows)
        }

        let stalls = spans.filter { $0.category == "semaphore" }.sorted { $0.duration > $1.duration }.prefix(top)
        text += "\nlongest semaphore stalls\n"
        if stalls.isEmpty {
            text += "  none recorded\n"
        } else {
            text += Self.table(["ROW", "WAIT", "AT", "STALLED"], stalls.map {
                [tracks[$0.track].name, $0.name, Self.duration($0.start - start), Self.duration($0.duration)]
            })
        }
        return text
    }

    /// "device 0 ... / core 1 ..." → the (process, core) a row belongs to, for sharing device time.
    static func coreKey(_ track: Track) -> String {
        let thread = track.name.split(separator: "/").last.map(String.init) ?? ""
        let words = thread.split(separator: " ")
        if let position = words.firstIndex(of: "core"), position + 1 < words.count { return "\(track.pid)/\(words[position + 1])" }
        return "\(track.pid)/\(track.tid)"
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows { for (column, cell) in row.enumerated() { widths[column] = max(widths[column], cell.count) } }
        func line(_ cells: [String]) -> String {
            "  " + cells.enumerated().map { column, cell in
                column == 0 ? cell.padding(toLength: widths[0], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[column] - cell.count) + cell
            }.joined(separator: "  ") + "\n"
        }
        return line(header) + rows.map(line).joined()
    }

    /// Microseconds as the most readable unit: "830 ns", "12.4 us", "3.21 ms", "1.50 s".
    static func duration(_ microseconds: Double) -> String {
        let nanoseconds = microseconds * 1000
        if nanoseconds < 1000 { return String(format: "%.0f ns", nanoseconds) }
        if nanoseconds < 1e6 { return String(format: "%.3g us", nanoseconds / 1e3) }
        if nanoseconds < 1e9 { return String(format: "%.3g ms", nanoseconds / 1e6) }
        return String(format: "%.3g s", nanoseconds / 1e9)
    }

    static func percent(_ fraction: Double) -> String { String(format: "%.1f %%", fraction * 100) }

    static func bytes(_ count: Double) -> String {
        for (size, unit) in [(1073741824.0, "GiB"), (1048576.0, "MiB"), (1024.0, "KiB")] where count >= size {
            return String(format: "%.1f %@", count / size, unit)
        }
        return String(format: "%.0f B", count)
    }

    static func rate(_ bytesPerSecond: Double) -> String { String(format: "%.2f GB/s", bytesPerSecond / 1e9) }

    // MARK: SVG

    /// A timeline: a row per track (device-clock rows marked), a time axis with units at the top,
    /// bars coloured by kind (instruction opcode, DMA, semaphore wait, host call), a legend below.
    /// Spans thinner than half a pixel are merged per pixel column, so a trace of a million spans
    /// stays a drawing a browser opens.
    func svg(width: Int) -> String {
        let labelWidth = 300.0, rowHeight = 18.0, axisHeight = 40.0, margin = 10.0
        let plotWidth = Double(width) - labelWidth - 2 * margin
        let window = max(end - start, 1e-3)
        func x(_ time: Double) -> Double { labelWidth + margin + (time - start) / window * plotWidth }

        var kinds: [String] = []
        var kindIndex: [String: Int] = [:]
        func kind(_ span: Span) -> String { span.category == "instruction" ? span.name : span.category.isEmpty ? span.name : span.category }
        for span in spans where kindIndex[kind(span)] == nil {
            kindIndex[kind(span)] = kinds.count
            kinds.append(kind(span))
        }
        // Categories keep their colours; instruction kinds take the palette in order of appearance.
        let fixed = ["dma": "#1f77b4", "semaphore": "#d62728", "host": "#7f7f7f", "api": "#8c564b"]
        let palette = ["#2ca02c", "#ff7f0e", "#9467bd", "#17becf", "#bcbd22", "#e377c2", "#aec7e8", "#ffbb78",
                       "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5"]
        var colors: [String: String] = [:]
        for name in kinds where fixed[name] == nil { colors[name] = palette[colors.count % palette.count] }
        func color(_ name: String) -> String { fixed[name] ?? colors[name] ?? "#000000" }
        func escape(_ text: String) -> String {
            text.replacing("&", with: "&amp;").replacing("<", with: "&lt;").replacing(">", with: "&gt;").replacing("\"", with: "&quot;")
        }

        let legendColumns = max(1, Int(plotWidth + labelWidth) / 180)
        let legendRows = (kinds.count + legendColumns - 1) / legendColumns
        let plotTop = axisHeight
        let height = plotTop + Double(tracks.count) * rowHeight + 30 + Double(legendRows) * 18 + margin
        var out = #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(width)" height="\#(Int(height))" font-family="sans-serif" font-size="11">"#
        out += "\n<title>vtrn trace timeline</title>\n"
        out += #"<rect x="0" y="0" width="\#(width)" height="\#(Int(height))" fill="white"/>"# + "\n"

        // The axis: "nice" steps of 1, 2 or 5 times a power of ten.
        let rough = window / 10
        let power = pow(10, floor(log10(rough)))
        let step = [1.0, 2.0, 5.0, 10.0].map { $0 * power }.first { $0 >= rough } ?? rough
        out += #"<g class="axis">"# + "\n"
        var tick = 0.0
        while tick <= window + step / 1e6 {
            let position = x(start + tick)
            out += #"<line x1="\#(f(position))" y1="\#(f(plotTop - 6))" x2="\#(f(position))" y2="\#(f(plotTop + Double(tracks.count) * rowHeight))" stroke="rgb(221,221,221)"/>"#
            out += #"<text class="tick" x="\#(f(position))" y="\#(f(plotTop - 10))" text-anchor="middle" data-time-us="\#(tick)">\#(escape(Self.duration(tick)))</text>"# + "\n"
            tick += step
        }
        out += #"<text x="\#(f(labelWidth + margin))" y="14" font-weight="bold">time from the first event (host and device clocks: rows marked [device] are on the virtual device timeline)</text>"#
        out += "\n</g>\n"

        // Rows.
        let byTrack = Dictionary(grouping: spans, by: \.track)
        for (index, track) in tracks.enumerated() {
            let top = plotTop + Double(index) * rowHeight
            out += #"<g class="row" data-name="\#(escape(track.name))" data-clock="\#(track.clock)">"#
            if index % 2 == 1 {
                out += #"<rect x="0" y="\#(f(top))" width="\#(width)" height="\#(f(rowHeight))" fill="rgb(246,246,246)"/>"#
            }
            out += #"<text x="\#(f(margin))" y="\#(f(top + 13))">\#(escape(track.name))\#(track.clock == "device" ? " [device]" : "")</text>"#
            // Bars; thin ones merged per pixel.
            var merged: [Int: (String, Double, Double)] = [:] // pixel → (kind, start, end)
            for span in (byTrack[index] ?? []).sorted(by: { $0.start < $1.start }) {
                let left = x(span.start), right = x(span.end)
                if right - left < 0.5 {
                    let pixel = Int(left)
                    if let existing = merged[pixel] { merged[pixel] = (existing.0, existing.1, max(existing.2, span.end)) }
                    else { merged[pixel] = (kind(span), span.start, span.end) }
                    continue
                }
                out += #"<rect class="bar" x="\#(f(left))" y="\#(f(top + 3))" width="\#(f(right - left))" height="\#(f(rowHeight - 6))" fill="\#(color(kind(span)))" data-kind="\#(escape(kind(span)))" data-start-us="\#(span.start - start)" data-duration-us="\#(span.duration)"><title>\#(escape(span.name)): \#(escape(Self.duration(span.duration))) at \#(escape(Self.duration(span.start - start)))</title></rect>"#
            }
            for (_, (name, first, last)) in merged.sorted(by: { $0.key < $1.key }) {
                out += #"<rect class="bar" x="\#(f(x(first)))" y="\#(f(top + 3))" width="\#(f(max(0.5, x(last) - x(first))))" height="\#(f(rowHeight - 6))" fill="\#(color(name))" data-kind="\#(escape(name))" data-start-us="\#(first - start)" data-duration-us="\#(last - first)"/>"#
            }
            out += "</g>\n"
        }

        // The legend.
        let legendTop = plotTop + Double(tracks.count) * rowHeight + 24
        out += #"<g class="legend">"#
        for (position, name) in kinds.enumerated() {
            let left = margin + Double(position % legendColumns) * 180, top = legendTop + Double(position / legendColumns) * 18
            out += #"<rect x="\#(f(left))" y="\#(f(top))" width="12" height="12" fill="\#(color(name))"/><text x="\#(f(left + 16))" y="\#(f(top + 10))">\#(escape(name))</text>"#
        }
        out += "</g>\n</svg>\n"
        return out
    }

    private func f(_ value: Double) -> String { String(format: "%.1f", value) }
}

/// `vtrn bench trace`: what VTRN_TRACE costs — the demo's wall time with and without it, each the
/// median of a few runs of `vtrn demo` in a child process (the tool itself), in the same run.
struct TraceBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Tracing overhead: the demo's wall time with VTRN_TRACE and without.")

    @Option(help: "Runs of each kind (the median counts).")
    var runs = 3

    @Option(help: "MiB the demo moves.")
    var mebibytes = 64

    func run() throws {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("vtrn-bench-trace-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        func demo(traced: Bool) throws -> UInt64 {
            let process = Process()
            process.executableURL = executable
            process.arguments = ["demo", "--mebibytes", "\(mebibytes)", "--gemm-size", "256"]
            var environment = ProcessInfo.processInfo.environment
            environment.removeValue(forKey: "VTRN_TRACE")
            if traced { environment["VTRN_TRACE"] = folder.appendingPathComponent("trace.json").path }
            process.environment = environment
            process.standardOutput = FileHandle.nullDevice
            let start = now()
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0 else { throw ValidationError("vtrn demo failed (status \(process.terminationStatus))") }
            return now() - start
        }
        var plain: [UInt64] = [], traced: [UInt64] = []
        var progress = Progress("bench trace", steps: 2 * max(1, runs))
        for run in 1...max(1, runs) {
            progress.step("vtrn demo, run \(run) without VTRN_TRACE")
            plain.append(try demo(traced: false))
            progress.step("vtrn demo, run \(run) with VTRN_TRACE")
            traced.append(try demo(traced: true))
        }
        progress.finish()
        let without = plain.sorted()[plain.count / 2], with = traced.sorted()[traced.count / 2]
        let size = (try? FileManager.default.attributesOfItem(atPath: folder.appendingPathComponent("trace.json").path)[.size] as? Int) ?? 0
        let ratio = Double(with) / Double(without)
        printReport("vtrn bench trace (median of \(runs) runs each; the demo moving \(mebibytes) MiB, GEMM 256)", [
            Measurement(name: "demo wall time with VTRN_TRACE", value: "\(format(Double(with) / 1e6, 1)) ms",
                        baseline: "without: \(format(Double(without) / 1e6, 1)) ms", ratio: format(ratio),
                        goal: "<= 1.25", met: ratio <= 1.25),
            Measurement(name: "trace file", value: "\(size / 1024) KiB", baseline: "-", ratio: "-", goal: "reported", met: nil),
        ])
    }
}
