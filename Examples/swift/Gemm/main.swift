// C = A·B on a virtual NeuronCore from Swift, checked against a host reference.
//   swift run -c release vtrn-swift-gemm [M K N]
// The kernel itself is StandardKernels.gemm (Sources/VtrnKernels/Gemm.swift): DMA, PE, DVE and
// semaphores, tiled 128 x 128 x 512 with K accumulated in PSUM. Read it to write your own.
import Vtrn
import VtrnKernels

#if canImport(Glibc)
import Glibc
#endif

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let (m, k, n) = arguments.count == 3 ? (arguments[0], arguments[1], arguments[2]) : (300, 400, 700)

do {
    let runtime = try Runtime(options: RuntimeOptions(topology: "trn1"))
    let device = runtime.devices[0]

    // Inputs in host buffers on the device's NUMA node, then in HBM.
    func hostBuffer(_ count: Int, _ value: (Int) -> Float) throws -> HostBuffer {
        let buffer = try runtime.makeHostBuffer(bytes: count * 4)
        let floats = buffer.data.bindMemory(to: Float.self, capacity: count)
        for index in 0..<count { floats[index] = value(index) }
        return buffer
    }
    let a = try hostBuffer(m * k) { Float(($0 * 7) % 13) / 13 - 0.5 }
    let b = try hostBuffer(k * n) { Float(($0 * 5) % 11) / 11 - 0.5 }
    let c = try hostBuffer(m * n) { _ in 0 }
    let memoryA = try device.allocate(UInt64(m * k * 4)), memoryB = try device.allocate(UInt64(k * n * 4))
    let memoryC = try device.allocate(UInt64(m * n * 4))
    try device.copy(to: .device(memoryA, offset: 0), from: .host(a, offset: 0), bytes: UInt64(m * k * 4))
    try device.copy(to: .device(memoryB, offset: 0), from: .host(b, offset: 0), bytes: UInt64(k * n * 4))

    // Build, validate and load once; execute.
    let program = runtime.makeProgram()
    try StandardKernels.gemm(program, m: m, k: k, n: n)
    let kernel = try device.load(program, core: 0)
    let fence = try kernel.execute([.init(name: "a", memory: memoryA), .init(name: "b", memory: memoryB),
                                    .init(name: "c", memory: memoryC)])
    try fence.wait()
    try device.copy(to: .host(c, offset: 0), from: .device(memoryC, offset: 0), bytes: UInt64(m * n * 4))

    // Check against a plain host reference.
    let av = a.data.assumingMemoryBound(to: Float.self), bv = b.data.assumingMemoryBound(to: Float.self)
    let cv = c.data.assumingMemoryBound(to: Float.self)
    var worst: Float = 0
    for i in 0..<m {
        for j in 0..<n {
            var sum: Float = 0
            for x in 0..<k { sum += av[i * k + x] * bv[x * n + j] }
            worst = max(worst, abs(sum - cv[i * n + j]))
        }
    }
    let info = fence.info
    let flops = 2.0 * Double(m * n * k)
    print("GEMM \(m)x\(k)x\(n): \(program.instructionCount) instructions, largest error \(worst)")
    print("wall \(Double(info.wallNanoseconds) / 1e6) ms, estimated device time \(Double(info.deviceNanoseconds) / 1e3) us "
          + "(\(flops / Double(info.deviceNanoseconds) / 1e3) TFLOP/s on a NeuronCore), per engine \(info.instructions)")
    runtime.close()
    if worst > 1e-3 { exit(1) }
} catch {
    print("error: \(error)")
    exit(1)
}
