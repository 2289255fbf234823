import ArgumentParser
import CVtrnSystem
import Foundation
import Vtrn
import VtrnDevice

/// `vtrn bench collectives`: an nccl-tests table (size, time, algbw, busbw) of all-reduce and
/// all-gather on 2 to 16 virtual devices of a trn1.32xlarge in one process, beside the ceilings
/// this host allows, measured in the same run, and the cost model's estimate for the chip.
///
/// Definitions are nccl-tests' (doc/PERFORMANCE.md): S is the whole buffer in bytes (all-reduce:
/// each rank's; all-gather: the gathered output), t the time of one collective (every rank's call
/// to the last rank's completion), algbw = S / t in 1e9 B/s, busbw = algbw x 2(n-1)/n for
/// all-reduce and (n-1)/n for all-gather.
///
/// The ceiling is this host's memcpy bandwidth (one thread). But every rank of a virtual
/// communicator shares the host's memory: an all-reduce of S bytes over n ranks must at least
/// read every input and write every output once, n·S bytes each way, n memcpys of S on the host's
/// CPUs; an all-gather writes n·S. So with B the host's copy bandwidth with all its CPUs (measured
/// too), t >= n·S / B, and busbw <= B · 2(n-1)/n² (all-reduce), B · (n-1)/n² (all-gather): the
/// "host bound" column, what any implementation could reach here. On the chip each rank has its
/// own links; the "est" columns are the cost model's device time and the busbw it implies.
struct CollectiveBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collectives",
        abstract: "nccl-tests-style algbw/busbw of all-reduce and all-gather on 2-16 virtual devices, beside the host's ceilings.")

    @Option(help: "Rank counts (one device each), comma separated.")
    var ranks = "2,4,8,16"

    @Option(help: "Operations: all_reduce, all_gather, comma separated.")
    var ops = "all_reduce,all_gather"

    @Option(help: "Smallest size, bytes.")
    var minBytes = 8

    @Option(help: "Largest size, bytes (all-gather: the gathered output).")
    var maxBytes = 256 << 20

    @Option(help: "Each size is the previous times this.")
    var factor = 4

    @Option(help: "Timed iterations per size (fewer for sizes above 16 MiB).")
    var iterations = 10

    func run() throws {
        let rankCounts = ranks.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !rankCounts.isEmpty, rankCounts.allSatisfy({ (1...16).contains($0) }) else {
            throw ValidationError("--ranks takes numbers from 1 to 16, e.g. 2,4,8,16")
        }
        let operations = ops.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        guard !operations.isEmpty, operations.allSatisfy({ $0 == "all_reduce" || $0 == "all_gather" }) else {
            throw ValidationError("--ops takes all_reduce and all_gather")
        }
        guard factor >= 2, minBytes >= 4, maxBytes >= minBytes else { throw ValidationError("need --factor >= 2 and 4 <= --min-bytes <= --max-bytes") }

        print("vtrn bench collectives: measuring the host's memcpy bandwidth (the ceiling)...")
        let (oneThread, allThreads) = copyBandwidth(bytes: 64 << 20)
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        print(String(format: "  memcpy 64 MiB: %.2f GB/s on one thread, %.2f GB/s on %d threads (the host's CPUs)", oneThread, allThreads, cpus))
        let runtime = try Runtime(options: RuntimeOptions(topology: "trn1.32xlarge"))
        defer { runtime.close() }
        let link = runtime.devices[0].hardware.preset.interconnect
        print(String(format: "  NeuronLink-v2 as modelled: %.1f GB/s per link (%d links, %.0f GB/s per device), %.1f us per hop; "
                     + "published: 384 GiB/s per trn1 device", link.linkBytesPerSecond / 1e9, link.linksPerDevice,
                     link.deviceBytesPerSecond / 1e9, link.hopLatencyNanoseconds / 1e3))
        for operation in operations {
            for count in rankCounts {
                try table(operation, ranks: count, runtime: runtime, ceiling: oneThread, hostBandwidth: allThreads)
            }
        }
    }

    /// memcpy bandwidth of `bytes`, in 1e9 B/s: one thread, and one thread per CPU at once.
    func copyBandwidth(bytes: Int) -> (Double, Double) {
        let cpus = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let sources = (0..<cpus).map { _ in UnsafeSendablePointer(UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)) }
        let targets = (0..<cpus).map { _ in UnsafeSendablePointer(UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)) }
        defer { for buffer in sources + targets { buffer.pointer.deallocate() } }
        for index in 0..<cpus {
            memset(sources[index].pointer, 1, bytes)
            memset(targets[index].pointer, 2, bytes)
        }
        let single = medianTime(runs: 5) { memcpy(targets[0].pointer, sources[0].pointer, bytes) }
        let parallel = medianTime(runs: 5) {
            DispatchQueue.concurrentPerform(iterations: cpus) { index in memcpy(targets[index].pointer, sources[index].pointer, bytes) }
        }
        return (Double(bytes) / Double(single), Double(bytes * cpus) / Double(parallel))
    }

    func table(_ operation: String, ranks n: Int, runtime: Runtime, ceiling: Double, hostBandwidth: Double) throws {
        let devices = Array(runtime.devices.prefix(n))
        let comm = try runtime.makeCommunicator(devices.map { .init(device: $0, core: 0) })
        defer { comm.destroy() }
        let gather = operation == "all_gather"
        let busFactor = gather ? Double(n - 1) / Double(n) : 2 * Double(n - 1) / Double(n)
        let bound = hostBandwidth * busFactor / Double(n)
        print("")
        print("\(operation) on \(n) devices of a trn1.32xlarge (ranks 0-\(n - 1) = devices 0-\(n - 1), core 0), fp32, one process")
        print(String(format: "  ceiling: memcpy %.2f GB/s; host bound for %d ranks (all ranks share the host's %.2f GB/s): busbw <= %.2f GB/s",
                     ceiling, n, hostBandwidth, bound))
        var rows = [["SIZE", "COUNT", "TYPE", "REDOP", "TIME(us)", "ALGBW(GB/s)", "BUSBW(GB/s)", "BUSBW/CEILING", "BUSBW/BOUND",
                     "EST TIME(us)", "EST BUSBW(GB/s)"]]
        // Buffers for the largest size, reused: all-reduce in place (S per rank), all-gather S/n in, S out.
        let largest = (maxBytes / 4 / n) * 4 * n
        let inputs = try devices.map { try $0.allocate(UInt64(max(4, gather ? largest / n : largest))) }
        let outputs = try devices.map { try $0.allocate(UInt64(max(4, largest))) }
        defer { for memory in inputs + outputs { memory.free() } }
        var size = minBytes
        while size <= maxBytes {
            // S: whole elements, and for all-gather a multiple of n elements.
            let elements = max(gather ? n : 1, (size / 4) / (gather ? n : 1) * (gather ? n : 1))
            let bytes = elements * 4
            let perRank = gather ? elements / n : elements
            func once() throws -> (UInt64, Double) {
                let start = now()
                let fences = try (0..<n).map { rank -> Fence in
                    if gather {
                        return try comm.allGather(rank: rank, source: .init(inputs[rank]), destination: .init(outputs[rank]),
                                                  count: perRank, dtype: .fp32)
                    }
                    return try comm.allReduce(rank: rank, source: .init(inputs[rank]), destination: .init(inputs[rank]),
                                              count: perRank, dtype: .fp32)
                }
                for fence in fences { try fence.wait() }
                let elapsed = now() - start
                let device = fences.map { Double($0.info.deviceNanoseconds) }.max() ?? 0
                return (elapsed, device)
            }
            _ = try once() // warm-up: first touch of the pages
            let runs = bytes > 16 << 20 ? max(2, iterations / 4) : iterations
            var times: [UInt64] = []
            var estimate = 0.0
            for _ in 0..<runs {
                let (elapsed, device) = try once()
                times.append(elapsed)
                estimate = device
            }
            let time = times.sorted()[times.count / 2]
            let algbw = Double(bytes) / Double(time)
            let busbw = algbw * busFactor
            let estimatedBusbw = estimate > 0 ? Double(bytes) / estimate * busFactor : 0
            rows.append([byteText(bytes), "\(perRank)", "float", gather ? "none" : "sum", format(Double(time) / 1e3, 1), format(algbw),
                         format(busbw), format(busbw / ceiling), format(busbw / bound), format(estimate / 1e3, 1), format(estimatedBusbw)])
            if size >= maxBytes { break }
            // The largest size is measured too when the steps do not land on it; sizes that round
            // to the same buffer (all-gather's multiple of n elements) are measured once.
            var next = min(size * factor, maxBytes)
            while next < maxBytes && max(gather ? n : 1, (next / 4) / (gather ? n : 1) * (gather ? n : 1)) * 4 <= bytes {
                next = min(next * factor, maxBytes)
            }
            size = next
        }
        for line in renderTable(rows) { print(line) }
    }

    func byteText(_ bytes: Int) -> String {
        if bytes >= 1 << 20 && bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        if bytes >= 1 << 10 && bytes % (1 << 10) == 0 { return "\(bytes >> 10) KiB" }
        return "\(bytes) B"
    }
}
