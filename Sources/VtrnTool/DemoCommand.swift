import ArgumentParser
import Foundation
import Vtrn
import VtrnKernels

/// `vtrn demo`: the main job, end to end — enumerate, NUMA-local host buffers, DMA to HBM and
/// back through a core's queue, GEMM and softmax kernels on a NeuronCore, verify, time each step.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Enumerate the devices, move data through HBM with DMA, verify it and print timings.")

    @OptionGroup var runtimeArguments: RuntimeArguments

    @Option(help: "MiB to move.")
    var mebibytes = 256

    @Option(help: "GEMM size (M = K = N).")
    var gemmSize = 512

    func run() throws {
        let started = now()
        // A progress line per step as it starts (see Progress), then the step's result line.
        var progress = Progress("demo", steps: 14)
        let runtime = try runtimeArguments.makeRuntime()
        defer { runtime.close() }
        progress.print(ListCommand().table(runtime: runtime, devices: try runtime.devices.map { try $0.info }))
        let device = runtime.devices[0]
        let info = try device.info
        let bytes = mebibytes << 20

        var step = now()
        func lap(_ label: String, bytes moved: Int? = nil) {
            let elapsed = now() - step
            var line = "  \(label.padding(toLength: max(52, label.count), withPad: " ", startingAt: 0)) \(format(Double(elapsed) / 1e6, 2)) ms"
            if let moved { line += "  (\(format(gigabytesPerSecond(moved, elapsed))) GB/s)" }
            progress.print(line)
            step = now()
        }
        progress.print("\ndevice 0 (\(info.name), NUMA node \(info.numaNode)): moving \(mebibytes) MiB")
        progress.step("making 2 host buffers of \(mebibytes) MiB")
        let input = try runtime.makeHostBuffer(bytes: bytes, options: HostBufferOptions(placement: .deviceLocal, device: 0))
        let output = try runtime.makeHostBuffer(bytes: bytes)
        lap("2 host buffers on node \(try input.numaNode().map(String.init) ?? "several"), pages committed")
        progress.step("filling the input")
        let words = input.data.bindMemory(to: UInt64.self, capacity: bytes / 8)
        for index in 0..<bytes / 8 { words[index] = UInt64(index) &* 0x9e37_79b9_7f4a_7c15 }
        lap("input filled with a pattern")
        progress.step("allocating HBM")
        let first = try device.allocate(UInt64(bytes)), second = try device.allocate(UInt64(bytes))
        lap("2 blocks of HBM allocated (lazily backed)")
        let queue = try device.openQueue(core: 0, engine: 0, queue: 0, ringEntries: 16384)
        func move(_ to: MemoryReference, _ from: MemoryReference) throws {
            try queue.enqueue([DmaTransfer(destination: to, source: from, bytes: UInt64(bytes))])
            try queue.wait(for: try queue.submit())
        }
        progress.step("DMA host -> HBM")
        try move(.device(first, offset: 0), .host(input, offset: 0))
        lap("DMA host -> HBM (first touch commits HBM pages)", bytes: bytes)
        progress.step("DMA HBM -> HBM")
        try move(.device(second, offset: 0), .device(first, offset: 0))
        lap("DMA HBM -> HBM", bytes: bytes)
        progress.step("DMA HBM -> host")
        try move(.host(output, offset: 0), .device(second, offset: 0))
        lap("DMA HBM -> host", bytes: bytes)
        progress.step("DMA host -> HBM again")
        try move(.device(first, offset: 0), .host(input, offset: 0))
        lap("DMA host -> HBM again (pages warm)", bytes: bytes)
        progress.step("comparing what came back")
        let same = memcmp(input.data, output.data, bytes) == 0
        lap("verified byte for byte: \(same ? "identical" : "DIFFERENT")")
        let queueInfo = try queue.info
        let usage = try device.memoryUsage
        progress.print("\n  queue: \(queueInfo.descriptorsCompleted) descriptors (64 KiB each), \(queueInfo.bytesCompleted >> 20) MiB moved, "
              + "sequence \(queueInfo.completedSequence)")
        progress.print("  HBM: \(usage.used >> 20) MiB in use of \(usage.capacity >> 30) GiB, \(device.hardware.hbm.residentBytes >> 20) MiB resident")
        guard same else { throw ExitCode.failure }

        // GEMM and softmax on core 0: C = A·B, then Y = softmax(C) by rows, checked on the host.
        let size = gemmSize
        progress.print("\ncore 0: GEMM \(size)x\(size)x\(size) fp32, then softmax over its rows")
        progress.step("making the inputs and copying them to HBM")
        step = now()
        let floats = size * size
        let a = try runtime.makeHostBuffer(bytes: floats * 4), b = try runtime.makeHostBuffer(bytes: floats * 4)
        let result = try runtime.makeHostBuffer(bytes: floats * 4)
        let aValues = a.data.bindMemory(to: Float.self, capacity: floats), bValues = b.data.bindMemory(to: Float.self, capacity: floats)
        for index in 0..<floats {
            aValues[index] = Float((index * 7) % 13) / 13 - 0.5
            bValues[index] = Float((index * 5) % 11) / 11 - 0.5
        }
        let memoryA = try device.allocate(UInt64(floats * 4)), memoryB = try device.allocate(UInt64(floats * 4))
        let memoryC = try device.allocate(UInt64(floats * 4)), memoryY = try device.allocate(UInt64(floats * 4))
        try device.copy(to: .device(memoryA, offset: 0), from: .host(a, offset: 0), bytes: UInt64(floats * 4))
        try device.copy(to: .device(memoryB, offset: 0), from: .host(b, offset: 0), bytes: UInt64(floats * 4))
        lap("inputs made and copied to HBM", bytes: 2 * floats * 4)
        progress.step("building, validating and loading the kernels")
        let gemmProgram = runtime.makeProgram(), softmaxProgram = runtime.makeProgram()
        try StandardKernels.gemm(gemmProgram, m: size, k: size, n: size)
        try StandardKernels.softmax(softmaxProgram, rows: size, columns: size)
        let gemm = try device.load(gemmProgram, core: 0), softmax = try device.load(softmaxProgram, core: 0)
        lap("kernels validated and loaded (\(gemmProgram.instructionCount) + \(softmaxProgram.instructionCount) instructions)")
        progress.step("executing GEMM and softmax")
        let gemmFence = try gemm.execute([.init(name: "a", memory: memoryA), .init(name: "b", memory: memoryB), .init(name: "c", memory: memoryC)])
        let softmaxFence = try softmax.execute([.init(name: "x", memory: memoryC), .init(name: "y", memory: memoryY)])
        try gemmFence.wait()
        try softmaxFence.wait()
        lap("executed (queued back to back on core 0; the first execution on a core sets up its SBUF)")
        // Once more, warm, for timings that are not the first on the core.
        progress.step("executing GEMM again")
        let warmGemm = try gemm.execute([.init(name: "a", memory: memoryA), .init(name: "b", memory: memoryB), .init(name: "c", memory: memoryC)])
        try warmGemm.wait()
        lap("GEMM executed again (warm)")
        progress.step("copying the result back")
        try device.copy(to: .host(result, offset: 0), from: .device(memoryY, offset: 0), bytes: UInt64(floats * 4))
        lap("result copied back", bytes: floats * 4)
        // Host reference: BLAS-free, row by row, in Double.
        progress.step("checking every 16th row against a host reference")
        let y = result.data.bindMemory(to: Float.self, capacity: floats)
        var worst = 0.0
        var row = [Double](repeating: 0, count: size)
        for i in stride(from: 0, to: size, by: max(1, size / 16)) {
            for j in 0..<size {
                var sum = 0.0
                for k in 0..<size { sum += Double(aValues[i * size + k]) * Double(bValues[k * size + j]) }
                row[j] = sum
            }
            let largest = row.max()!
            let total = row.reduce(0) { $0 + Foundation.exp($1 - largest) }
            for j in 0..<size { worst = max(worst, abs(Foundation.exp(row[j] - largest) / total - Double(y[i * size + j]))) }
        }
        lap("verified against a host reference (every 16th row): largest error \(String(format: "%.1e", worst))")
        let gemmInfo = warmGemm.info, softmaxInfo = softmaxFence.info
        let flops = 2.0 * Double(size * size * size)
        progress.print("  GEMM:    wall \(format(Double(gemmInfo.wallNanoseconds) / 1e6)) ms (\(format(flops / Double(gemmInfo.wallNanoseconds))) GFLOP/s "
              + "on this host), estimated device time \(format(Double(gemmInfo.deviceNanoseconds) / 1e3, 1)) us "
              + "(\(format(flops / Double(max(1, gemmInfo.deviceNanoseconds)) / 1e3, 1)) TFLOP/s on a NeuronCore)")
        progress.print("  softmax: wall \(format(Double(softmaxInfo.wallNanoseconds) / 1e6)) ms, estimated device time "
              + "\(format(Double(softmaxInfo.deviceNanoseconds) / 1e3, 1)) us")
        progress.print("  instructions per engine (PE ACT DVE POOL DMA CC): GEMM \(gemmInfo.instructions), softmax \(softmaxInfo.instructions)")
        progress.print("  total \(format(Double(now() - started) / 1e6, 1)) ms")
        guard worst < 1e-4 else { throw ExitCode.failure }
    }
}
