import ArgumentParser
import CVtrnSystem
import Foundation
import Synchronization
import Vtrn

/// `vtrn bench`: speed and memory goals, each next to a baseline measured in the same run.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure vtrn against baselines measured in the same run, and print the ratios.",
        subcommands: [DmaBench.self, KernelBench.self, NkiBench.self, TraceBench.self, CollectiveBench.self])
}

/// One line of a bench report.
struct Measurement {
    let name: String
    let value: String
    let baseline: String
    let ratio: String
    let goal: String
    let met: Bool?
}

func printReport(_ title: String, _ rows: [Measurement]) {
    print(title)
    let table = [["MEASUREMENT", "VTRN", "BASELINE", "RATIO", "GOAL", "MET"]] + rows.map {
        [$0.name, $0.value, $0.baseline, $0.ratio, $0.goal, $0.met.map { $0 ? "yes" : "NO" } ?? "-"]
    }
    for line in renderTable(table) { print(line) }
}

func now() -> UInt64 { vtrnsys_monotonic_ns() }

func gigabytesPerSecond(_ bytes: Int, _ nanoseconds: UInt64) -> Double { Double(bytes) / Double(nanoseconds) }

func format(_ value: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", value) }

/// The median of several timed runs of `body`, in nanoseconds.
func medianTime(runs: Int, _ body: () throws -> Void) rethrows -> UInt64 {
    var times: [UInt64] = []
    for _ in 0..<runs {
        let start = now()
        try body()
        times.append(now() - start)
    }
    return times.sorted()[times.count / 2]
}

func percentile(_ sorted: [UInt64], _ fraction: Double) -> UInt64 {
    sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
}

/// Resident memory of this process, bytes (VmRSS).
func residentBytes() -> UInt64 {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let digits = line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) } ?? 0
        return digits * 1024
    }
    return 0
}

struct DmaBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dma",
        abstract: "DMA bandwidth, descriptor rate, latency, idle CPU and resident memory (issue 3's goals).")

    @Option(help: "Transfer size for the bandwidth runs, MiB.")
    var mebibytes = 64

    @Option(help: "Seconds to spend on each rate measurement.")
    var seconds = 0.5

    func run() throws {
        var progress = Progress("bench dma", steps: 8)
        // Resident memory first, before this process has touched anything else.
        progress.step("resident memory of a trn2:2 runtime")
        let before = residentBytes()
        let big = try Runtime(options: RuntimeOptions(topology: "trn2:2"))
        let after = residentBytes()
        big.close()
        var rows: [Measurement] = []
        rows.append(Measurement(name: "resident memory after creating trn2:2 (192 GiB HBM)",
                                value: "\(after / 1_048_576) MiB total", baseline: "\(before / 1_048_576) MiB before",
                                ratio: "+\(format(Double(after - before) / 1_048_576, 1)) MiB", goal: "<= 64 MiB total",
                                met: after <= 64 << 20))

        progress.step("a trn1 runtime, \(mebibytes) MiB host buffers and warm HBM")
        let runtime = try Runtime(options: RuntimeOptions(topology: "trn1"))
        let device = runtime.devices[0]
        let bytes = mebibytes << 20
        let host = try runtime.makeHostBuffer(bytes: bytes), back = try runtime.makeHostBuffer(bytes: bytes)
        memset(host.data, 7, bytes)
        let memory = try device.allocate(UInt64(bytes))
        memset(memory.pointer, 1, bytes) // commit the HBM pages: this measures a warm device
        let queue = try device.openQueue(core: 0, engine: 0, queue: 0, ringEntries: 16384)

        // Bandwidth, one transfer at a time, against memcpy of the same size between the same kinds of memory.
        progress.step("bandwidth of \(mebibytes) MiB transfers, and memcpy's")
        let memcpyTime = medianTime(runs: 9) { memcpy(memory.pointer, host.data, bytes) }
        let memcpyRate = gigabytesPerSecond(bytes, memcpyTime)
        func transferTime(_ transfer: DmaTransfer) throws -> UInt64 {
            try medianTime(runs: 9) {
                try queue.enqueue([transfer])
                try queue.wait(for: try queue.submit())
            }
        }
        let toDevice = gigabytesPerSecond(bytes, try transferTime(
            DmaTransfer(destination: .device(memory, offset: 0), source: .host(host, offset: 0), bytes: UInt64(bytes))))
        let toHost = gigabytesPerSecond(bytes, try transferTime(
            DmaTransfer(destination: .host(back, offset: 0), source: .device(memory, offset: 0), bytes: UInt64(bytes))))
        for (name, rate) in [("host -> device bandwidth, \(mebibytes) MiB transfers", toDevice),
                             ("device -> host bandwidth, \(mebibytes) MiB transfers", toHost)] {
            rows.append(Measurement(name: name, value: "\(format(rate)) GB/s", baseline: "memcpy \(format(memcpyRate)) GB/s",
                                    ratio: format(rate / memcpyRate), goal: ">= 0.90", met: rate / memcpyRate >= 0.9))
        }
        progress.step("bandwidth of 1 MiB transfers, and memcpy's")
        let small = 1 << 20
        let smallMemcpy = gigabytesPerSecond(small, medianTime(runs: 51) { memcpy(memory.pointer, host.data, small) })
        let smallRate = gigabytesPerSecond(small, try medianTime(runs: 51) {
            try queue.enqueue([DmaTransfer(destination: .device(memory, offset: 0), source: .host(host, offset: 0), bytes: UInt64(small))])
            try queue.wait(for: try queue.submit())
        })
        rows.append(Measurement(name: "host -> device bandwidth, 1 MiB transfers", value: "\(format(smallRate)) GB/s",
                                baseline: "memcpy \(format(smallMemcpy)) GB/s", ratio: format(smallRate / smallMemcpy),
                                goal: ">= 0.90", met: smallRate / smallMemcpy >= 0.9))

        // Several engines at once: one queue per host core, each copying its share.
        let engines = max(2, ProcessInfo.processInfo.activeProcessorCount)
        progress.step("\(engines) DMA engines together")
        let queues = try (1..<engines).map { try device.openQueue(core: 0, engine: $0, queue: 0, ringEntries: 16384) }
        let all = [queue] + queues
        let share = bytes / all.count
        let parallelTime = try medianTime(runs: 9) {
            var sequences: [UInt64] = []
            for (index, each) in all.enumerated() {
                try each.enqueue([DmaTransfer(destination: .device(memory, offset: UInt64(index * share)),
                                              source: .host(host, offset: UInt64(index * share)), bytes: UInt64(share))])
                sequences.append(try each.submit())
            }
            for (each, sequence) in zip(all, sequences) { try each.wait(for: sequence) }
        }
        let parallelRate = gigabytesPerSecond(share * all.count, parallelTime)
        rows.append(Measurement(name: "host -> device, \(all.count) engines together", value: "\(format(parallelRate)) GB/s",
                                baseline: "memcpy \(format(memcpyRate)) GB/s", ratio: format(parallelRate / memcpyRate),
                                goal: "> 1 where memory allows", met: nil))

        // Descriptor rate: 64-byte transfers in batches of 1024, enqueued, submitted and completed.
        progress.step("descriptor rate, 64-byte transfers (\(format(seconds * 1.25)) s)")
        let batch = (0..<1024).map { index in
            DmaTransfer(destination: .device(memory, offset: UInt64(index * 64)), source: .host(host, offset: UInt64(index * 64)), bytes: 64)
        }
        var transfers = 0
        let rateStart = now()
        while now() - rateStart < UInt64(seconds * 1e9) {
            for _ in 0..<8 {
                try queue.enqueue(batch)
                _ = try queue.submit()
                transfers += batch.count
            }
            try queue.wait(for: try queue.submit())
        }
        let rate = Double(transfers) / (Double(now() - rateStart) / 1e9)
        let copyStart = now()
        var copies = 0
        while now() - copyStart < UInt64(seconds * 1e9) / 4 {
            for index in 0..<1024 { memcpy(memory.pointer + index * 64, host.data + index * 64, 64) }
            copies += 1024
        }
        let copyRate = Double(copies) / (Double(now() - copyStart) / 1e9)
        rows.append(Measurement(name: "descriptor rate, 64-byte transfers in batches of 1024",
                                value: "\(format(rate / 1e6)) M/s", baseline: "memcpy \(format(copyRate / 1e6)) M/s",
                                ratio: format(rate / copyRate), goal: ">= 5 M/s", met: rate >= 5e6))

        // Latency: one 64-byte transfer, submit to completion seen by the waiter, queue hot.
        progress.step("latency of one 64-byte transfer, and a thread round trip")
        let one = [batch[0]]
        var samples: [UInt64] = []
        let latencyStart = now()
        while now() - latencyStart < UInt64(seconds * 1e9) || samples.count < 1000 {
            try queue.enqueue(one)
            let start = now()
            try queue.wait(for: try queue.submit())
            samples.append(now() - start)
        }
        samples.sort()
        let roundTrip = threadRoundTrip(seconds: seconds / 2)
        rows.append(Measurement(name: "submit -> completion, one 64-byte transfer (median)",
                                value: "\(format(Double(percentile(samples, 0.5)) / 1000)) us",
                                baseline: "thread round trip \(format(Double(percentile(roundTrip, 0.5)) / 1000)) us",
                                ratio: format(Double(percentile(samples, 0.5)) / Double(max(1, percentile(roundTrip, 0.5))), 1),
                                goal: "<= 5 us", met: percentile(samples, 0.5) <= 5000))
        rows.append(Measurement(name: "submit -> completion (p99, \(samples.count) samples)",
                                value: "\(format(Double(percentile(samples, 0.99)) / 1000)) us",
                                baseline: "thread round trip p99 \(format(Double(percentile(roundTrip, 0.99)) / 1000)) us",
                                ratio: "-", goal: "reported", met: nil))

        // Idle: the runtime with its queues open and nothing to do, CPU time over one second.
        progress.step("CPU used while idle (1 s)")
        usleep(200_000) // past the engines' spin before they sleep
        let cpuStart = vtrnsys_process_cpu_ns(), wallStart = now()
        usleep(1_000_000)
        let idle = Double(vtrnsys_process_cpu_ns() - cpuStart) / Double(now() - wallStart)
        rows.append(Measurement(name: "idle: \(all.count) open queues, CPU over 1 s", value: "\(format(idle * 100, 3)) % of a core",
                                baseline: "-", ratio: "-", goal: "<= 1 %", met: idle <= 0.01))
        for each in all { each.close() }
        runtime.close()
        progress.finish()
        printReport("vtrn bench dma (\(ProcessInfo.processInfo.activeProcessorCount) CPUs; ratios are vtrn / baseline)", rows)
    }

    /// Round trips between two threads that spin on one atomic, nanoseconds each.
    func threadRoundTrip(seconds: Double) -> [UInt64] {
        final class PingPong: Sendable {
            let turn = Atomic<Int>(0)
            let stop = Atomic<Bool>(false)
        }
        let shared = PingPong()
        let thread = Thread {
            var expected = 1
            while !shared.stop.load(ordering: .relaxed) {
                if shared.turn.load(ordering: .acquiring) == expected {
                    shared.turn.store(expected + 1, ordering: .releasing)
                    expected += 2
                }
            }
        }
        thread.start()
        var samples: [UInt64] = []
        var value = 0
        let start = now()
        while now() - start < UInt64(seconds * 1e9) || samples.count < 1000 {
            let begin = now()
            shared.turn.store(value + 1, ordering: .releasing)
            while shared.turn.load(ordering: .acquiring) != value + 2 {}
            samples.append(now() - begin)
            value += 2
        }
        shared.stop.store(true, ordering: .relaxed)
        return samples.sorted()
    }
}

/// `vtrn bench nki`: NKI kernels through vtrn.nki (Python) against an eager numpy interpretation of
/// the same operations, and the front end's tracing and caching costs. It runs
/// `python3 -m vtrn.nki bench` from the repository this tool was built in, on this tool's libvtrn;
/// installed, on the libvtrn installed beside it, with the vtrn package Python finds.
struct NkiBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nki",
        abstract: "NKI kernels on vtrn vs eager numpy (the way NKI's simulator runs them), tracing and cache costs.")

    func run() throws {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        let binFolder = executable.deletingLastPathComponent()
        var folder = binFolder
        var package: URL?
        for _ in 0..<6 {
            folder = folder.deletingLastPathComponent()
            if FileManager.default.fileExists(atPath: folder.appendingPathComponent("python/vtrn/nki/__init__.py").path) {
                package = folder.appendingPathComponent("python")
                break
            }
        }
        var environment = ProcessInfo.processInfo.environment
        // Installed (Scripts/install): PREFIX/bin/vtrn, PREFIX/lib/libvtrn.so, and the Python
        // package wherever pip put it.
        let installedLibrary = binFolder.deletingLastPathComponent().appendingPathComponent("lib/libvtrn.so")
        if let package {
            environment["PYTHONPATH"] = package.path + (environment["PYTHONPATH"].map { ":" + $0 } ?? "")
            environment["VTRN_LIBRARY"] = binFolder.appendingPathComponent("libvtrn.so").path
        } else if FileManager.default.fileExists(atPath: installedLibrary.path) {
            environment["VTRN_LIBRARY"] = installedLibrary.path
        } else {
            throw ValidationError("cannot find python/vtrn/nki above \(binFolder.path), nor \(installedLibrary.path): "
                                  + "`vtrn bench nki` runs from a build inside the vtrn repository, or installed by "
                                  + "Scripts/install with the Python package installed by pip")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-m", "vtrn.nki", "bench"]
        process.environment = environment
        try process.run()
        process.waitUntilExit()
        if process.terminationStatus != 0 { throw ExitCode(process.terminationStatus) }
    }
}
