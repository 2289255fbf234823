import ArgumentParser
import Foundation
import Vtrn

/// `vtrn demo`: the main job, end to end — enumerate, NUMA-local host buffers, DMA to HBM and
/// back through a core's queue, verify, and time each step.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Enumerate the devices, move data through HBM with DMA, verify it and print timings.")

    @OptionGroup var runtimeArguments: RuntimeArguments

    @Option(help: "MiB to move.")
    var mebibytes = 256

    func run() throws {
        let started = now()
        let runtime = try runtimeArguments.makeRuntime()
        defer { runtime.close() }
        print(ListCommand().table(runtime: runtime, devices: try runtime.devices.map { try $0.info }))
        let device = runtime.devices[0]
        let info = try device.info
        let bytes = mebibytes << 20

        var step = now()
        func lap(_ label: String, bytes moved: Int? = nil) {
            let elapsed = now() - step
            var line = "  \(label.padding(toLength: 52, withPad: " ", startingAt: 0)) \(format(Double(elapsed) / 1e6, 2)) ms"
            if let moved { line += "  (\(format(gigabytesPerSecond(moved, elapsed))) GB/s)" }
            print(line)
            step = now()
        }
        print("\ndevice 0 (\(info.name), NUMA node \(info.numaNode)): moving \(mebibytes) MiB")
        let input = try runtime.makeHostBuffer(bytes: bytes, options: HostBufferOptions(placement: .deviceLocal, device: 0))
        let output = try runtime.makeHostBuffer(bytes: bytes)
        lap("2 host buffers on node \(try input.numaNode().map(String.init) ?? "several"), pages committed")
        let words = input.data.bindMemory(to: UInt64.self, capacity: bytes / 8)
        for index in 0..<bytes / 8 { words[index] = UInt64(index) &* 0x9e37_79b9_7f4a_7c15 }
        lap("input filled with a pattern")
        let first = try device.allocate(UInt64(bytes)), second = try device.allocate(UInt64(bytes))
        lap("2 blocks of HBM allocated (lazily backed)")
        let queue = try device.openQueue(core: 0, engine: 0, queue: 0, ringEntries: 16384)
        func move(_ to: MemoryReference, _ from: MemoryReference) throws {
            try queue.enqueue([DmaTransfer(destination: to, source: from, bytes: UInt64(bytes))])
            try queue.wait(for: try queue.submit())
        }
        try move(.device(first, offset: 0), .host(input, offset: 0))
        lap("DMA host -> HBM (first touch commits HBM pages)", bytes: bytes)
        try move(.device(second, offset: 0), .device(first, offset: 0))
        lap("DMA HBM -> HBM", bytes: bytes)
        try move(.host(output, offset: 0), .device(second, offset: 0))
        lap("DMA HBM -> host", bytes: bytes)
        try move(.device(first, offset: 0), .host(input, offset: 0))
        lap("DMA host -> HBM again (pages warm)", bytes: bytes)
        let same = memcmp(input.data, output.data, bytes) == 0
        lap("verified byte for byte: \(same ? "identical" : "DIFFERENT")")
        let queueInfo = try queue.info
        let usage = try device.memoryUsage
        print("\n  queue: \(queueInfo.descriptorsCompleted) descriptors (64 KiB each), \(queueInfo.bytesCompleted >> 20) MiB moved, "
              + "sequence \(queueInfo.completedSequence)")
        print("  HBM: \(usage.used >> 20) MiB in use of \(usage.capacity >> 30) GiB, \(device.hardware.hbm.residentBytes >> 20) MiB resident")
        print("  total \(format(Double(now() - started) / 1e6, 1)) ms")
        print("  kernels on the NeuronCores come with command submission (not in this version yet)")
        guard same else { throw ExitCode.failure }
    }
}
