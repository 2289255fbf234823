import CVtrnSystem
import Synchronization
import VtrnDevice

/// A program being built: instructions for a core's engines, and the named HBM parameters that
/// executions bind. Validation waits for `Device.load(_:core:)`.
///
/// ```swift
/// let program = runtime.makeProgram()
/// let a = try program.addParameter("a", bytes: 128 * 128 * 4)
/// try program.append(Instruction(engine: .dma, operation: .dmaCopy(destination: tile, source: hbm(a))))
/// let kernel = try device.load(program, core: 0)
/// let fence = try kernel.execute([Kernel.Binding(name: "a", memory: block)])
/// try fence.wait()
/// ```
public final class Program: Sendable {
    public let runtime: Runtime
    private let contents = Mutex<(instructions: [Instruction], parameters: [Parameter])>(([], []))

    init(runtime: Runtime) { self.runtime = runtime }

    /// Declares a parameter; its index, for `AccessPattern.parameter`.
    @discardableResult
    public func addParameter(_ name: String, bytes: UInt64) throws(VtrnError) -> Int {
        try runtime.state.checkOpen()
        guard !name.isEmpty, name.utf8.count < 64 else {
            throw .invalidArgument("parameter name \"\(name)\" must be 1 to 63 bytes")
        }
        guard bytes > 0 else { throw .invalidArgument("parameter \"\(name)\" has 0 bytes") }
        let result: Result<Int, VtrnError> = contents.withLock { contents in
            if contents.parameters.contains(where: { $0.name == name }) {
                return .failure(.invalidArgument("the program has a parameter named \"\(name)\" already"))
            }
            contents.parameters.append(Parameter(name: name, bytes: bytes))
            return .success(contents.parameters.count - 1)
        }
        return try result.get()
    }

    public func append(_ instruction: Instruction) throws(VtrnError) {
        try runtime.state.checkOpen()
        contents.withLock { $0.instructions.append(instruction) }
    }

    public var instructionCount: Int { contents.withLock { $0.instructions.count } }
    public var instructions: [Instruction] { contents.withLock { $0.instructions } }
    public var parameters: [Parameter] { contents.withLock { $0.parameters } }
}

extension Runtime {
    public func makeProgram() -> Program { Program(runtime: self) }
}

/// A program validated and loaded on one core of a device.
public final class Kernel: Sendable {
    public let device: Device
    public let core: Int
    public let program: LoadedProgram
    private let unloaded = Atomic<Bool>(false)

    init(device: Device, core: Int, program: LoadedProgram) {
        self.device = device
        self.core = core
        self.program = program
    }

    public struct Binding: Sendable {
        public var name: String
        public var memory: DeviceMemory
        public var offset: UInt64
        public init(name: String, memory: DeviceMemory, offset: UInt64 = 0) {
            self.name = name
            self.memory = memory
            self.offset = offset
        }
    }

    public var isUnloaded: Bool { unloaded.load(ordering: .acquiring) || device.state.isClosed }

    /// Queued executions finish; the kernel takes no new ones.
    public func unload() { unloaded.store(true, ordering: .releasing) }

    private func checkLoaded() throws(VtrnError) {
        try device.checkUsable()
        if unloaded.load(ordering: .acquiring) { throw VtrnError(.invalidHandle, "the kernel was unloaded") }
    }

    /// Queues one execution on the core and returns its fence at once.
    public func execute(_ bindings: [Binding]) throws(VtrnError) -> Fence {
        guard let tracer = device.runtime.tracer else {
            return try device.state.submitting { () throws(VtrnError) in try executeOpen(bindings, flow: nil) }
        }
        let began = vtrnsys_monotonic_ns()
        let flow = tracer.newFlow()
        let fence = try device.state.submitting { () throws(VtrnError) in try executeOpen(bindings, flow: flow) }
        tracer.call("execute", since: began, arguments: #""device":\#(device.index),"core":\#(core)"#, flow: flow)
        return fence
    }

    private func executeOpen(_ bindings: [Binding], flow: Int?) throws(VtrnError) -> Fence {
        try checkLoaded()
        let parameters = program.parameters
        var bound = [ParameterBinding?](repeating: nil, count: parameters.count)
        var leases: [BlockLease] = []
        for binding in bindings {
            guard let index = parameters.firstIndex(where: { $0.name == binding.name }) else {
                let names = parameters.map { "\"\($0.name)\"" }.joined(separator: ", ")
                throw .notFound("the kernel has no parameter \"\(binding.name)\"; its parameters are \(names.isEmpty ? "none" : names)")
            }
            guard bound[index] == nil else { throw .invalidArgument("parameter \"\(binding.name)\" is bound twice") }
            let memory = binding.memory
            if memory.isFreed { throw VtrnError(.invalidHandle, "the memory bound to \"\(binding.name)\" was freed") }
            guard memory.device.hardware === device.hardware, memory.device.runtime === device.runtime else {
                throw .invalidArgument("parameter \"\(binding.name)\" is bound to memory of device \(memory.device.index) of runtime "
                                       + "\(memory.device.runtime.serial); the kernel is on device \(device.index) of runtime "
                                       + "\(device.runtime.serial)")
            }
            guard binding.offset <= memory.bytes else {
                throw VtrnError(.outOfBounds, "parameter \"\(binding.name)\" is bound at offset \(binding.offset) of a "
                                + "\(memory.bytes)-byte block")
            }
            // What is left of the block after the offset; an instruction that reaches past it fails the execution.
            bound[index] = ParameterBinding(base: memory.pointer + Int(binding.offset), bytes: Int(memory.bytes - binding.offset))
            leases.append(memory.lease)
        }
        if let missing = bound.firstIndex(where: { $0 == nil }) {
            throw .invalidArgument("parameter \"\(parameters[missing].name)\" is not bound")
        }
        return try submit(bindings: bound.map { $0! }, leases: leases, flow: flow)
    }

    /// Queues an execution with its parameters bound; `leases` keep the bound memory until it ends.
    func submit(bindings: [ParameterBinding], leases: [BlockLease], flow: Int?) throws(VtrnError) -> Fence {
        for lease in leases { lease.acquire() }
        let held = leases
        let timeout = device.runtime.configuration.execTimeoutMilliseconds.map { $0 * 1_000_000 }
        let tracer = device.runtime.tracer
        let clock = device.hardware.preset.peClockHz
        let device = device, core = core
        let execution = CoreExecution(program: program, bindings: bindings, timeout: timeout, traced: tracer != nil) { execution in
            for lease in held { lease.release() }
            tracer?.record(execution, device: device.index, core: core, clockHz: clock, flow: flow)
        }
        guard device.hardware.commandQueues[core].submit(execution) else {
            for lease in held { lease.release() }
            throw VtrnError(.queueFull, "core \(core) of device \(device.index) has \(CoreCommandQueue.capacity) executions queued; "
                            + "wait for some to finish")
        }
        return Fence(kernel: self, execution: execution)
    }
}

extension Device {
    /// Validates `program` for `core` and loads it, claiming the core for this runtime.
    /// A program that fails validation claims nothing.
    public func load(_ program: Program, core: Int) throws(VtrnError) -> Kernel {
        try checkUsable()
        guard program.runtime === runtime else {
            throw .invalidArgument("the program belongs to runtime \(program.runtime.serial), not to runtime \(runtime.serial)")
        }
        guard core >= 0 && core < cores.count else {
            throw .invalidArgument("device \(index) has \(cores.count) cores (0-\(cores.count - 1)); core \(core) requested")
        }
        let loaded: LoadedProgram
        do {
            loaded = try LoadedProgram(instructions: program.instructions, parameters: program.parameters, preset: hardware.preset)
        } catch {
            throw VtrnError(.invalidProgram, error.message)
        }
        for (position, instruction) in loaded.instructions.enumerated() {
            guard case .collective(let collective) = instruction.operation else { continue }
            guard collective.group.rank(device: hardware, core: core) != nil else {
                throw VtrnError(.invalidProgram, "instruction \(position) (\(collective.kind) on CC): core \(core) of device "
                                + "\(index) is not a member of \(collective.group.name), whose ranks are "
                                + collective.group.members.enumerated().map { "\($0.offset): \($0.element.label)" }.joined(separator: ", "))
            }
        }
        try claim(core: core)
        return Kernel(device: self, core: core, program: loaded)
    }
}

/// One execution of a kernel.
public final class Fence: Sendable {
    public let kernel: Kernel
    let execution: CoreExecution

    init(kernel: Kernel, execution: CoreExecution) {
        self.kernel = kernel
        self.execution = execution
    }

    /// `.notReady` while the execution is queued or running; then its failure's status, or `.success`.
    public var status: Status {
        guard execution.isFinished else { return .notReady }
        return failure?.status ?? .success
    }

    private var failure: VtrnError? {
        switch execution.outcome.failure {
        case nil: nil
        case .outOfBounds(let message): VtrnError(.outOfBounds, message)
        case .invalidArgument(let message): VtrnError(.invalidArgument, message)
        case .deadlock(let message): VtrnError(.deadlock, message)
        case .timeout(let message): VtrnError(.timeout, message)
        case .hardware(let message): VtrnError(.hardware, message)
        case .dmaFault(let message): VtrnError(.dmaFault, message)
        case .reset(let message): VtrnError(.reset, message)
        case .deviceLost(let message): VtrnError(.deviceLost, message)
        }
    }

    private func result() throws(VtrnError) {
        if let failure { throw failure }
    }

    /// Waits for the execution and throws its failure. `timeoutNanoseconds` 0 polls (`.notReady`);
    /// a wait that times out throws `.timeout` and the execution goes on.
    public func wait(timeoutNanoseconds: UInt64 = .max) throws(VtrnError) {
        if let tracer = kernel.device.runtime.tracer {
            let began = vtrnsys_monotonic_ns()
            defer { tracer.call("fence wait", since: began, arguments: #""core":\#(kernel.core)"#) }
            try waitUntraced(timeoutNanoseconds: timeoutNanoseconds)
        } else {
            try waitUntraced(timeoutNanoseconds: timeoutNanoseconds)
        }
    }

    private func waitUntraced(timeoutNanoseconds: UInt64) throws(VtrnError) {
        guard execution.wait(timeoutNanoseconds: timeoutNanoseconds) else {
            if timeoutNanoseconds == 0 { throw VtrnError(.notReady, "the execution has not finished") }
            throw VtrnError(.timeout, "the execution did not finish within \(timeoutNanoseconds) ns of waiting; it goes on")
        }
        try result()
    }

    public struct Info: Sendable {
        public var status: Status
        public var wallNanoseconds: UInt64
        public var queuedNanoseconds: UInt64
        public var deviceNanoseconds: UInt64
        public var deviceCycles: UInt64
        public var instructions: [Int]
        public var busyNanoseconds: [UInt64]
    }

    public var info: Info {
        let finished = execution.isFinished
        let outcome = execution.outcome
        let device = finished ? UInt64(outcome.deviceNanoseconds.rounded()) : 0
        return Info(status: status,
                    wallNanoseconds: finished ? execution.finishedAt - execution.startedAt : 0,
                    queuedNanoseconds: finished ? execution.startedAt - execution.submittedAt : 0,
                    deviceNanoseconds: device,
                    deviceCycles: UInt64((outcome.deviceNanoseconds * Double(kernel.device.hardware.preset.peClockHz) / 1e9).rounded()),
                    instructions: finished ? outcome.instructions : Array(repeating: 0, count: Engine.allCases.count),
                    busyNanoseconds: finished ? outcome.busyNanoseconds.map { UInt64($0.rounded()) } : Array(repeating: 0, count: Engine.allCases.count))
    }
}
