import ArgumentParser
import CVtrnSystem
import Foundation
import Vtrn
import VtrnDevice
import VtrnKernels

/// `vtrn bench kernels`: issue 4's goals against baselines measured in the same run.
struct KernelBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "GEMM through a virtual core vs the host's cblas_sgemm, empty-kernel latency, validation speed.")

    @Option(help: "GEMM size (M = K = N).")
    var size = 1024

    @Option(help: "Seconds to spend on the latency measurement.")
    var seconds = 0.5

    func run() throws {
        var progress = Progress("bench kernels", steps: 5)
        var rows: [Measurement] = []
        let runtime = try Runtime(options: RuntimeOptions(topology: "trn1"))
        let device = runtime.devices[0]
        let n = size, bytes = n * n * 4

        // GEMM end to end from host buffers: copy A and B in, execute, copy C out.
        progress.step("GEMM \(size)^3 through a core, 5 runs")
        let hostA = try runtime.makeHostBuffer(bytes: bytes), hostB = try runtime.makeHostBuffer(bytes: bytes)
        let hostC = try runtime.makeHostBuffer(bytes: bytes)
        let a = hostA.data.bindMemory(to: Float.self, capacity: n * n), b = hostB.data.bindMemory(to: Float.self, capacity: n * n)
        for index in 0..<n * n {
            a[index] = Float(index % 7) - 3
            b[index] = Float(index % 5) - 2
        }
        let memoryA = try device.allocate(UInt64(bytes)), memoryB = try device.allocate(UInt64(bytes))
        let memoryC = try device.allocate(UInt64(bytes))
        let program = runtime.makeProgram()
        try StandardKernels.gemm(program, m: n, k: n, n: n)
        let kernel = try device.load(program, core: 0)
        var lastFence: Fence?
        let gemm = try medianTime(runs: 5) {
            try device.copy(to: .device(memoryA, offset: 0), from: .host(hostA, offset: 0), bytes: UInt64(bytes))
            try device.copy(to: .device(memoryB, offset: 0), from: .host(hostB, offset: 0), bytes: UInt64(bytes))
            let fence = try kernel.execute([.init(name: "a", memory: memoryA), .init(name: "b", memory: memoryB),
                                            .init(name: "c", memory: memoryC)])
            try fence.wait()
            try device.copy(to: .host(hostC, offset: 0), from: .device(memoryC, offset: 0), bytes: UInt64(bytes))
            lastFence = fence
        }
        progress.step("cblas_sgemm \(size)^3 on the host, 5 runs")
        let reference = UnsafeMutablePointer<Float>.allocate(capacity: n * n)
        defer { reference.deallocate() }
        let host = medianTime(runs: 5) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0,
                        reference, Int32(n))
        }
        let c = hostC.data.bindMemory(to: Float.self, capacity: n * n)
        let correct = (0..<n * n).allSatisfy { abs(c[$0] - reference[$0]) <= 1e-3 * max(1, abs(reference[$0])) }
        let flops = 2.0 * Double(n) * Double(n) * Double(n)
        let deviceTime = Double(lastFence?.info.deviceNanoseconds ?? 0)
        rows.append(Measurement(name: "GEMM \(n)^3 fp32, host buffers -> core -> host (\(correct ? "verified" : "WRONG"))",
                                value: "\(format(flops / Double(gemm))) GFLOP/s", baseline: "cblas_sgemm \(format(flops / Double(host))) GFLOP/s",
                                ratio: format(Double(host) / Double(gemm)), goal: ">= 0.50", met: correct && Double(host) / Double(gemm) >= 0.5))
        if let info = lastFence?.info {
            rows.append(Measurement(name: "  the execution alone (wall)", value: "\(format(Double(info.wallNanoseconds) / 1e6, 2)) ms",
                                    baseline: "cblas_sgemm \(format(Double(host) / 1e6, 2)) ms", ratio: format(Double(host) / Double(info.wallNanoseconds)),
                                    goal: "reported", met: nil))
        }
        rows.append(Measurement(name: "  its estimated device time", value: "\(format(deviceTime / 1e3, 1)) us",
                                baseline: "-", ratio: "-", goal: "reported", met: nil))

        // Empty kernel: submit to fence signalled, hot.
        progress.step("empty-kernel latency, and a thread round trip")
        let empty = try device.load(runtime.makeProgram(), core: 1)
        for _ in 0..<100 { try empty.execute([]).wait() }
        var samples: [UInt64] = []
        let start = now()
        while now() - start < UInt64(seconds * 1e9) || samples.count < 1000 {
            let begin = now()
            try empty.execute([]).wait()
            samples.append(now() - begin)
        }
        samples.sort()
        let roundTrip = DmaBench().threadRoundTrip(seconds: seconds / 2)
        rows.append(Measurement(name: "empty kernel: execute -> fence signalled (median)",
                                value: "\(format(Double(percentile(samples, 0.5)) / 1e3)) us",
                                baseline: "thread round trip \(format(Double(percentile(roundTrip, 0.5)) / 1e3)) us",
                                ratio: format(Double(percentile(samples, 0.5)) / Double(max(1, percentile(roundTrip, 0.5))), 1),
                                goal: "<= 10 us", met: percentile(samples, 0.5) <= 10_000))
        rows.append(Measurement(name: "  p99 (\(samples.count) samples)", value: "\(format(Double(percentile(samples, 0.99)) / 1e3)) us",
                                baseline: "-", ratio: "-", goal: "reported", met: nil))

        // Validation of a 10,000-instruction program.
        progress.step("validating a 10,000-instruction program, 5 runs")
        let big = runtime.makeProgram()
        let x = try big.addParameter("x", bytes: 128 * 512 * 4)
        let tile = AccessPattern(space: .sbuf, dtype: .fp32, partitions: 128, sizes: [512])
        let operations: [VtrnDevice.Operation] = [
            .dmaCopy(destination: tile, source: AccessPattern(space: .hbm, dtype: .fp32, partitions: 128, parameter: x, sizes: [512],
                                                             partitionStride: 512)),
            .activate(destination: tile, function: .exp, source: tile, scale: .immediate(1), bias: nil, accumulateOut: nil),
            .tensorScalar(destination: tile, source: tile, op0: .multiply, x0: .immediate(2), op1: .add, x1: .immediate(1), reverse: 0),
            .matmul(destination: AccessPattern(space: .psum, dtype: .fp32, partitions: 128, sizes: [512]),
                    stationary: AccessPattern(space: .sbuf, dtype: .fp32, partitions: 128, sizes: [128]), moving: tile, accumulate: false),
        ]
        let engines: [Engine] = [.dma, .act, .dve, .pe]
        for index in 0..<10_000 { try big.append(Instruction(engine: engines[index % 4], operation: operations[index % 4])) }
        let validation = try medianTime(runs: 5) { _ = try device.load(big, core: 1) }
        rows.append(Measurement(name: "validating a 10,000-instruction program (vtrn_kernel_load)",
                                value: "\(format(Double(validation) / 1e6, 2)) ms", baseline: "-", ratio: "-", goal: "<= 10 ms",
                                met: validation <= 10_000_000))

        // Executing 10,000 one-element instructions on ACT, DVE and POOL that order themselves with one
        // counting semaphore per engine (each adds 1 to its own; each waits for its predecessor's
        // engine to count far enough): the executor's scheduling and semaphore bookkeeping alone.
        progress.step("executing 10,000 chained one-element instructions, 9 runs")
        let chain = runtime.makeProgram()
        let chained: [Engine] = [.act, .dve, .pool]
        var counts = [UInt32](repeating: 0, count: chained.count)
        for index in 0..<10_000 {
            let engine = index % chained.count, previous = (index + chained.count - 1) % chained.count
            let element = AccessPattern(space: .sbuf, dtype: .fp32, partitions: 1, offset: engine * 64, sizes: [1])
            let sync = Synchronization(waitSemaphore: index == 0 ? nil : previous, waitValue: counts[previous],
                                       signalSemaphore: engine, signalValue: 1)
            counts[engine] += 1
            try chain.append(Instruction(engine: chained[engine], operation: .tensorCopy(destination: element, source: element), sync: sync))
        }
        let chainKernel = try device.load(chain, core: 1)
        let chainTime = try medianTime(runs: 9) { try chainKernel.execute([]).wait() }
        rows.append(Measurement(name: "executing 10,000 chained one-element instructions (semaphore per engine)",
                                value: "\(format(Double(chainTime) / 1e6, 2)) ms", baseline: "-", ratio: "-", goal: "reported", met: nil))
        runtime.close()
        progress.finish()
        printReport("vtrn bench kernels (\(ProcessInfo.processInfo.activeProcessorCount) CPUs; ratios are baseline time / vtrn time "
                    + "for GEMM, vtrn / baseline for latency)", rows)
    }
}
