// One data-parallel training step across many Trainium devices, from Swift, checked on the host.
//   VTRN_TOPOLOGY=trn1.32xlarge swift run vtrn-swift-data-parallel        16 devices, one process
//   mpirun -np 4 .build/debug/vtrn-swift-data-parallel                    4 processes x 4 devices
// Each rank (core 0 of a device) computes the weight gradient of its shard of the batch,
// G_r = X_r^T · dY_r, on the tensor engine, and the CC engine all-reduces it inside the same
// kernel (ordered after the matmul by semaphores); then the host all-reduces each rank's local
// gradient with Communicator.allReduce. Both are compared with the sum computed on the host.
import Foundation
import Vtrn
import VtrnDevice

let batch = 128, inputs = 128, outputs = 256
func xValue(_ rank: Int, _ i: Int) -> Float { Float((i * 37 + rank * 101) % 97) / 97 - 0.5 }
func dyValue(_ rank: Int, _ i: Int) -> Float { Float((i * 53 + rank * 29) % 89) / 89 - 0.5 }

let environment = ProcessInfo.processInfo.environment
let processes = Int(environment["OMPI_COMM_WORLD_SIZE"] ?? "1") ?? 1
let process = Int(environment["OMPI_COMM_WORLD_RANK"] ?? "0") ?? 0
let topology = environment["VTRN_TOPOLOGY"] ?? "trn1.32xlarge"

do {
    let runtime = try Runtime(options: RuntimeOptions(topology: topology))
    defer { runtime.close() }
    let total = min(runtime.devices.count, 16), local = total / processes
    let devices = Array(runtime.devices[(process * local)..<((process + 1) * local)])
    let members = devices.map { Communicator.Member(device: $0, core: 0) }
    let comm = processes > 1 ? try runtime.makeMPICommunicator(members) : try runtime.makeCommunicator(members)

    // The kernel: X and dY to SBUF (DMA), X^T·dY into PSUM (PE), to SBUF (DVE), all-reduced (CC), stored (DMA).
    let program = runtime.makeProgram()
    let x = try program.addParameter("x", bytes: UInt64(batch * inputs * 4))
    let dy = try program.addParameter("dy", bytes: UInt64(batch * outputs * 4))
    let grad = try program.addParameter("grad", bytes: UInt64(inputs * outputs * 4))
    func hbm(_ parameter: Int, _ rows: Int, _ columns: Int) -> AccessPattern {
        AccessPattern(space: .hbm, dtype: .fp32, partitions: rows, parameter: parameter, sizes: [columns], partitionStride: columns)
    }
    func sbuf(_ offset: Int, _ rows: Int, _ columns: Int) -> AccessPattern {
        AccessPattern(space: .sbuf, dtype: .fp32, partitions: rows, offset: offset, sizes: [columns])
    }
    let xTile = sbuf(0, batch, inputs), dyTile = sbuf(inputs * 4, batch, outputs)
    let gTile = sbuf((inputs + outputs) * 4, inputs, outputs), gSum = sbuf((inputs + 2 * outputs) * 4, inputs, outputs)
    let gPsum = AccessPattern(space: .psum, dtype: .fp32, partitions: inputs, sizes: [outputs])
    try program.append(Instruction(engine: .dma, operation: .dmaCopy(destination: xTile, source: hbm(x, batch, inputs))))
    try program.append(Instruction(engine: .dma, operation: .dmaCopy(destination: dyTile, source: hbm(dy, batch, outputs)),
                                   sync: .init(signalSemaphore: 0, signalValue: 1)))
    try program.append(Instruction(engine: .pe, operation: .matmul(destination: gPsum, stationary: xTile, moving: dyTile, accumulate: false),
                                   sync: .init(waitSemaphore: 0, waitValue: 1, signalSemaphore: 1, signalValue: 1)))
    try program.append(Instruction(engine: .dve, operation: .tensorCopy(destination: gTile, source: gPsum),
                                   sync: .init(waitSemaphore: 1, waitValue: 1, signalSemaphore: 2, signalValue: 1)))
    try program.appendCollective(.allReduce, communicator: comm, destination: gSum, source: gTile, op: .add,
                                 sync: .init(waitSemaphore: 2, waitValue: 1, signalSemaphore: 3, signalValue: 1))
    try program.append(Instruction(engine: .dma, operation: .dmaCopy(destination: hbm(grad, inputs, outputs), source: gSum),
                                   sync: .init(waitSemaphore: 3, waitValue: 1)))

    // Each rank's shard; its kernel's execution.
    let staging = try runtime.makeHostBuffer(bytes: batch * (inputs + outputs) * 4)
    let floats = staging.data.bindMemory(to: Float.self, capacity: batch * (inputs + outputs))
    var fences: [Fence] = [], gradients: [DeviceMemory] = [], locals: [DeviceMemory] = []
    let started = Date()
    for (index, device) in devices.enumerated() {
        let rank = comm.localRanks.lowerBound + index
        for i in 0..<(batch * inputs) { floats[i] = xValue(rank, i) }
        for i in 0..<(batch * outputs) { floats[batch * inputs + i] = dyValue(rank, i) }
        let xMemory = try device.allocate(UInt64(batch * inputs * 4)), dyMemory = try device.allocate(UInt64(batch * outputs * 4))
        try device.copy(to: .device(xMemory, offset: 0), from: .host(staging, offset: 0), bytes: UInt64(batch * inputs * 4))
        try device.copy(to: .device(dyMemory, offset: 0), from: .host(staging, offset: UInt64(batch * inputs * 4)),
                        bytes: UInt64(batch * outputs * 4))
        gradients.append(try device.allocate(UInt64(inputs * outputs * 4)))
        locals.append(try device.allocate(UInt64(inputs * outputs * 4)))
        let kernel = try device.load(program, core: 0)
        fences.append(try kernel.execute([.init(name: "x", memory: xMemory), .init(name: "dy", memory: dyMemory),
                                          .init(name: "grad", memory: gradients[index])]))
    }
    for fence in fences { try fence.wait() }
    let kernelSeconds = Date().timeIntervalSince(started)
    let deviceMicroseconds = Double(fences.map(\.info.deviceNanoseconds).max() ?? 0) / 1e3

    // The host's sum of every rank's gradient, and this process's ranks' local gradients.
    var sum = [Double](repeating: 0, count: inputs * outputs)
    var localGradients: [[Float]] = []
    for rank in 0..<comm.size {
        var gradient = [Float](repeating: 0, count: inputs * outputs)
        for m in 0..<inputs {
            for n in 0..<outputs {
                var accumulator: Float = 0
                for b in 0..<batch { accumulator += xValue(rank, b * inputs + m) * dyValue(rank, b * outputs + n) }
                gradient[m * outputs + n] = accumulator
                sum[m * outputs + n] += Double(accumulator)
            }
        }
        if comm.localRanks.contains(rank) { localGradients.append(gradient) }
    }
    for (index, device) in devices.enumerated() {
        localGradients[index].withUnsafeBytes { _ = memcpy(staging.data, $0.baseAddress!, inputs * outputs * 4) }
        try device.copy(to: .device(locals[index], offset: 0), from: .host(staging, offset: 0), bytes: UInt64(inputs * outputs * 4))
    }
    let reduced = try comm.localRanks.map { rank in
        try comm.allReduce(rank: rank, source: .init(locals[rank - comm.localRanks.lowerBound]),
                           destination: .init(locals[rank - comm.localRanks.lowerBound]), count: inputs * outputs, dtype: .fp32)
    }
    for fence in reduced { try fence.wait() }

    var worst = 0.0
    for (index, device) in devices.enumerated() {
        for memory in [gradients[index], locals[index]] {
            try device.copy(to: .host(staging, offset: 0), from: .device(memory, offset: 0), bytes: UInt64(inputs * outputs * 4))
            for i in 0..<(inputs * outputs) { worst = max(worst, abs(Double(floats[i]) - sum[i]) / (1 + abs(sum[i]))) }
        }
    }
    print("vtrn-swift-data-parallel: \(comm.size) ranks (\(local) in process \(process) of \(processes), \(topology))")
    print(String(format: "  kernel, matmul + in-kernel all-reduce: %.1f ms wall, estimated device time %.1f us", kernelSeconds * 1e3,
                 deviceMicroseconds))
    print(String(format: "  worst relative error against the host's sum: %.2e: %@", worst, worst < 1e-4 ? "ok" : "MISMATCH"))
    exit(worst < 1e-4 ? 0 : 1)
} catch {
    print("vtrn-swift-data-parallel: \(error)")
    exit(1)
}
