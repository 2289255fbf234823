import CVtrnSystem
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One execution submitted to a core: its program and bindings, then its outcome and times.
public final class CoreExecution: @unchecked Sendable {
    public let program: LoadedProgram
    public let bindings: [ParameterBinding]
    /// Nanoseconds the execution may run, or nil.
    public let timeout: UInt64?
    /// Called on the core's thread once the execution has finished (releases what it held), then
    /// dropped: the command queue keeps finished executions for a while, and what the closure
    /// holds (the runtime, through its device) must not live on with them.
    private var completion: (@Sendable (CoreExecution) -> Void)?
    /// Whether to record each instruction's place on the timeline (VTRN_TRACE).
    public let traced: Bool

    private let state = Atomic<Int>(0) // 0 queued, 1 running, 2 finished
    private let completionWord: UnsafeMutablePointer<UInt32>
    private let waiters = Atomic<Int>(0)
    /// The device's generation (resets so far) when it was queued: a later reset fails it.
    /// Written by `CoreCommandQueue.submit` before the core's thread can see the execution.
    public internal(set) var generation: UInt64 = 0
    /// Set when whoever submitted it gives up on it (its runtime is destroyed): a hung instruction
    /// then stops hanging.
    let cancelled = Atomic<Bool>(false)
    /// Written by the core's thread before `state` becomes 2; read after.
    public private(set) var outcome = ExecutionOutcome()
    public let submittedAt: UInt64
    public private(set) var startedAt: UInt64 = 0
    public private(set) var finishedAt: UInt64 = 0

    public init(program: LoadedProgram, bindings: [ParameterBinding], timeout: UInt64?, traced: Bool = false,
                completion: (@Sendable (CoreExecution) -> Void)?) {
        self.traced = traced
        self.program = program
        self.bindings = bindings
        self.timeout = timeout
        self.completion = completion
        completionWord = .allocate(capacity: 1)
        completionWord.initialize(to: 0)
        submittedAt = vtrnsys_monotonic_ns()
    }

    deinit { completionWord.deallocate() }

    public var isFinished: Bool { state.load(ordering: .acquiring) == 2 }

    func run(on executor: CoreExecutor, context: ExecutionContext, account: (ExecutionOutcome) -> Void) {
        startedAt = vtrnsys_monotonic_ns()
        state.store(1, ordering: .releasing)
        outcome = executor.run(program, bindings: bindings, deadline: timeout.map { startedAt &+ $0 }, trace: traced,
                               context: context)
        // Counted before waiters can see the end, so that a waiter reads the counters up to date.
        if case .timeout = outcome.failure { context.faults.counters.executionTimeouts.add(1, ordering: .relaxed) }
        account(outcome)
        finish()
    }

    /// Ends an execution that never ran (the device was reset or lost while it was queued).
    func fail(_ failure: ExecutionOutcome.Failure) {
        startedAt = vtrnsys_monotonic_ns()
        state.store(1, ordering: .releasing)
        outcome.failure = failure
        finish()
    }

    private func finish() {
        finishedAt = vtrnsys_monotonic_ns()
        completion?(self)
        completion = nil
        state.store(2, ordering: .sequentiallyConsistent)
        if waiters.load(ordering: .sequentiallyConsistent) > 0 {
            _ = vtrnsys_add_u32(completionWord, 1)
            _ = vtrnsys_futex_wake(completionWord, Int32.max)
        }
    }

    /// Waits until finished: spins briefly, then sleeps. False when `timeout` passed first.
    public func wait(timeoutNanoseconds: UInt64) -> Bool {
        if isFinished { return true }
        if timeoutNanoseconds == 0 { return false }
        let start = vtrnsys_monotonic_ns()
        let deadline = timeoutNanoseconds == .max ? UInt64.max : start &+ timeoutNanoseconds
        let spinUntil = min(deadline, start + DmaEngineHardware.waiterSpinNanoseconds)
        var spins = 0
        while !isFinished {
            spins += 1
            if spins & 63 == 0 && vtrnsys_monotonic_ns() >= spinUntil { break }
            vtrnsys_cpu_relax()
        }
        if isFinished { return true }
        waiters.add(1, ordering: .sequentiallyConsistent)
        defer { waiters.subtract(1, ordering: .sequentiallyConsistent) }
        while true {
            let word = vtrnsys_load_u32(completionWord)
            if isFinished { return true }
            let now = vtrnsys_monotonic_ns()
            if now >= deadline { return false }
            _ = vtrnsys_futex_wait(completionWord, word, deadline == .max ? .max : deadline - now)
        }
    }
}

/// A core's command queue: executions run one at a time, in submission order, on a host thread of
/// the core's own, which starts with the first submission, spins briefly when the queue empties
/// and then sleeps until the next.
public final class CoreCommandQueue: @unchecked Sendable {
    public static let capacity = 1024
    public let preset: ChipPreset
    public let name: String
    public let numaNode: Int
    /// The core's index on its device, and the device's faults.
    public let core: Int
    let faults: DeviceFaults

    private struct State {
        /// Queued executions from `head`; a slot is emptied when its execution is taken, since a
        /// finished execution must not stay referenced here: its completion holds the runtime,
        /// which holds the device and so this queue (a cycle that kept every runtime that ran a
        /// kernel, its device's HBM reservation and this thread alive after vtrn_runtime_destroy).
        var pending: [CoreExecution?] = []
        var head = 0
        var thread: UInt64?
        var stopping = false
        /// The execution the core's thread runs now.
        var running: CoreExecution?
    }
    private let state = Mutex(State())
    private let pendingCount = Atomic<Int>(0)
    /// For monitors (`vtrn top`): executions finished, host time spent running them, and their
    /// estimated device time, since the queue was made. Bumped once per execution.
    private let finishedCount = Atomic<UInt64>(0)
    private let runningNanoseconds = Atomic<UInt64>(0)
    private let deviceNanosecondsTotal = Atomic<UInt64>(0)
    private let collectivesTotal = Atomic<UInt64>(0)
    private let collectiveNanosecondsTotal = Atomic<UInt64>(0)

    public struct Counters: Sendable {
        public var executions: UInt64
        public var runningNanoseconds: UInt64
        public var deviceNanoseconds: UInt64
        public var depth: Int
        /// Collectives the core's CC engine finished, from the host and inside kernels, and their
        /// estimated CC-engine time (waits for the other ranks included).
        public var collectives: UInt64 = 0
        public var collectiveNanoseconds: UInt64 = 0
    }

    public var counters: Counters {
        Counters(executions: finishedCount.load(ordering: .relaxed), runningNanoseconds: runningNanoseconds.load(ordering: .relaxed),
                 deviceNanoseconds: deviceNanosecondsTotal.load(ordering: .relaxed), depth: depth,
                 collectives: collectivesTotal.load(ordering: .relaxed),
                 collectiveNanoseconds: collectiveNanosecondsTotal.load(ordering: .relaxed))
    }
    private let sleeping = Atomic<Bool>(false)
    private let wakeWord: UnsafeMutablePointer<UInt32>
    /// Made on the core thread's first execution (SBUF and PSUM are tens of MiB).
    private var executor: CoreExecutor?

    init(preset: ChipPreset, name: String, numaNode: Int, core: Int, faults: DeviceFaults) {
        self.preset = preset
        self.name = name
        self.numaNode = numaNode
        self.core = core
        self.faults = faults
        wakeWord = .allocate(capacity: 1)
        wakeWord.initialize(to: 0)
    }

    deinit { wakeWord.deallocate() }

    /// Queues an execution; false when the queue holds `capacity` already (nothing queued).
    public func submit(_ execution: CoreExecution) -> Bool {
        let start: Bool? = state.withLock { state in
            guard state.pending.count - state.head < Self.capacity else { return nil }
            execution.generation = faults.generation
            state.pending.append(execution)
            pendingCount.add(1, ordering: .sequentiallyConsistent)
            if state.thread == nil && !state.stopping {
                state.thread = 0
                return true
            }
            return false
        }
        guard let start else { return false }
        if start {
            let context = Unmanaged.passRetained(self).toOpaque()
            var thread: UInt64 = 0
            _ = vtrnsys_thread_start({ context in
                Unmanaged<CoreCommandQueue>.fromOpaque(context!).takeRetainedValue().run()
            }, context, name, &thread)
            state.withLock { $0.thread = thread }
        } else if sleeping.load(ordering: .sequentiallyConsistent) {
            _ = vtrnsys_add_u32(wakeWord, 1)
            _ = vtrnsys_futex_wake(wakeWord, 1)
        }
        return true
    }

    /// Executions queued or running.
    public var depth: Int { pendingCount.load(ordering: .relaxed) }

    /// Returns once every execution submitted so far has finished (a runtime's teardown: its
    /// memory must outlive the executions that use it).
    public func drain() {
        while pendingCount.load(ordering: .acquiring) > 0 { usleep(50) }
    }

    /// Returns once no execution queued before the device reached `generation` is queued or
    /// running (a reset fails them; the core's thread finishes them).
    func waitForExecutions(before generation: UInt64) {
        while state.withLock({ state in
            (state.running.map { $0.generation < generation } ?? false)
                || state.pending[state.head...].contains { ($0?.generation ?? .max) < generation }
        }) {
            usleep(50)
        }
    }

    /// Executions queued or running stop hanging (their runtime is going away and waits for them):
    /// a hung instruction fails its execution at once instead of at the timeout, or never.
    public func cancelHangs() {
        state.withLock { state in
            state.running?.cancelled.store(true, ordering: .relaxed)
            for execution in state.pending[state.head...] { execution?.cancelled.store(true, ordering: .relaxed) }
        }
        faults.wakeHungInstructions()
    }

    /// Stops the thread after the queued executions (the device is going away).
    func shutdown() {
        let thread: UInt64? = state.withLock { state in
            state.stopping = true
            return state.thread
        }
        _ = vtrnsys_add_u32(wakeWord, 1)
        _ = vtrnsys_futex_wake(wakeWord, 1)
        guard let thread, thread != 0 else { return }
        // The last reference to the device can be an execution this very thread has just run (its
        // completion holds the runtime): the thread cannot join itself, so it ends detached.
        if thread == UInt64(pthread_self()) {
            _ = pthread_detach(pthread_t(thread))
        } else {
            _ = vtrnsys_thread_join(thread)
        }
    }

    private func next() -> (CoreExecution?, Bool) {
        state.withLock { state in
            guard state.head < state.pending.count else { return (nil, state.stopping) }
            let execution = state.pending[state.head]
            state.pending[state.head] = nil
            state.running = execution
            state.head += 1
            if state.head > 256 && state.head * 2 > state.pending.count {
                state.pending.removeFirst(state.head)
                state.head = 0
            }
            return (execution, false)
        }
    }

    /// Runs the next execution, if any; (whether one ran, whether the queue is stopping). Every
    /// reference to the execution is gone when this returns, before the execution counts as done:
    /// a runtime's teardown waits for that count, and the last reference to the runtime (which the
    /// execution's completion holds) must not go on this thread, which its teardown joins.
    private func runNext(executorGeneration: inout UInt64) -> (Bool, Bool) {
        let (execution, stopping) = next()
        guard let execution else { return (false, stopping) }
        let generation = faults.generation
        if executor == nil {
            executor = CoreExecutor(preset: preset)
            executorGeneration = generation
        } else if executorGeneration != generation {
            executor!.clear()
            executorGeneration = generation
        }
        let place = "core \(core) of device \(faults.deviceIndex)"
        if execution.generation != generation {
            execution.fail(.reset("device \(faults.deviceIndex) was reset (vtrn_device_reset) while the execution was "
                                  + "queued on core \(core); it did not run"))
        } else if let loss = faults.loss {
            execution.fail(.deviceLost("device \(faults.deviceIndex) is lost (\(loss)): the execution queued on "
                                       + "\(place) did not run; vtrn_device_reset brings the device back"))
        } else {
            execution.run(on: executor!, context: ExecutionContext(faults: faults, core: core, generation: generation,
                                                                   execution: execution)) { outcome in
                let cc = Engine.cc.rawValue
                if outcome.instructions[cc] > 0 {
                    collectivesTotal.add(UInt64(outcome.instructions[cc]), ordering: .relaxed)
                    collectiveNanosecondsTotal.add(UInt64(max(0, outcome.busyNanoseconds[cc].rounded())), ordering: .relaxed)
                }
            }
            runningNanoseconds.add(execution.finishedAt &- execution.startedAt, ordering: .relaxed)
            deviceNanosecondsTotal.add(UInt64(max(0, execution.outcome.deviceNanoseconds.rounded())), ordering: .relaxed)
            finishedCount.add(1, ordering: .relaxed)
        }
        state.withLock { $0.running = nil }
        return (true, false)
    }

    private func run() {
        _ = vtrnsys_run_on_node(Int32(numaNode))
        var idleSince: UInt64 = 0
        var idleRounds = 0
        var executorGeneration: UInt64 = 0
        // Whether this thread holds one of the spin budget's slots while it idles.
        var spinning = false
        while true {
            let (ran, stopping) = runNext(executorGeneration: &executorGeneration)
            if ran {
                pendingCount.subtract(1, ordering: .sequentiallyConsistent)
                idleRounds = 0
                if spinning {
                    SpinBudget.leave()
                    spinning = false
                }
                continue
            }
            if stopping {
                if spinning { SpinBudget.leave() }
                return
            }
            if idleRounds == 0 {
                idleSince = vtrnsys_monotonic_ns()
                spinning = SpinBudget.enter()
            }
            idleRounds += 1
            if spinning && (idleRounds & 63 != 0 || vtrnsys_monotonic_ns() - idleSince < DmaEngineHardware.engineSpinNanoseconds) {
                // Every 64 rounds, let a runnable thread have the CPU (ranks of a collective
                // outnumber the host's CPUs); an idle host gives it straight back.
                if idleRounds & 63 == 0 { sched_yield() } else { vtrnsys_cpu_relax() }
                continue
            }
            if spinning {
                SpinBudget.leave()
                spinning = false
            }
            let word = vtrnsys_load_u32(wakeWord)
            sleeping.store(true, ordering: .sequentiallyConsistent)
            if pendingCount.load(ordering: .sequentiallyConsistent) == 0 && !state.withLock({ $0.stopping }) {
                _ = vtrnsys_futex_wait(wakeWord, word, .max)
            }
            sleeping.store(false, ordering: .sequentiallyConsistent)
            idleRounds = 0
        }
    }
}

/// What a core's executor needs to see faults while it runs an execution: the device's faults,
/// the core, and the generation the execution belongs to.
public struct ExecutionContext {
    let faults: DeviceFaults
    let core: Int
    let generation: UInt64
    let execution: CoreExecution

    /// Called before an instruction when a fault is armed, the device is lost or was reset: the
    /// failure that stops the execution at this instruction, if any. A hang sleeps here.
    func check(_ instruction: Instruction, index: Int, bindings: [ParameterBinding], parameters: [Parameter],
               deadline: UInt64?) -> ExecutionOutcome.Failure? {
        let device = faults.deviceIndex
        let what = "instruction \(index) (\(instruction.operation.name) on \(instruction.engine))"
        if faults.generation != generation {
            return .reset("device \(device) was reset (vtrn_device_reset) while the execution ran on core \(core): "
                          + "\(what) and the ones after it did not run")
        }
        if let loss = faults.loss {
            return .deviceLost("device \(device) was lost (\(loss)) while the execution ran on core \(core): \(what) and "
                               + "the ones after it did not run; vtrn_device_reset brings the device back")
        }
        let armed = faults.armed
        for fault in armed {
            guard case .engineHang(let targetCore, let targetEngine) = fault.fault.kind,
                  targetCore == nil || targetCore == core, targetEngine == nil || targetEngine == instruction.engine,
                  fault.fires() else { continue }
            faults.counters.hangs.add(1, ordering: .relaxed)
            if !fault.fault.sticky { faults.retire(fault) }
            let hung = "\(what) never finished: \(instruction.engine) of core \(core) of device \(device) hung (\(fault.label))"
            switch faults.hang(until: deadline, generation: generation, cancelled: { execution.cancelled.load(ordering: .relaxed) }) {
            case .deadline:
                let milliseconds = (execution.timeout ?? 0) / 1_000_000
                return .timeout("\(hung); the execution timeout of \(milliseconds) ms (VTRN_EXEC_TIMEOUT_MS) ended it")
            case .reset:
                return .reset("\(hung) until device \(device) was reset (vtrn_device_reset)")
            case .lost:
                return .deviceLost("\(hung) until device \(device) was lost (\(faults.loss ?? "lost"))")
            case .cancelled:
                return .timeout("\(hung) until its runtime was destroyed")
            }
        }
        // Reads of HBM: the inputs that are parameters, and an accumulating DMA's destination. A
        // collective's reads are its CC ring's descriptors, which fail every rank at once.
        if case .collective = instruction.operation { return nil }
        var accumulates = false
        if case .dmaCopy(_, _, let readModifyWrite, _) = instruction.operation { accumulates = readModifyWrite != .bypass }
        for (name, access, writes) in instruction.operation.operands where access.space == .hbm && (!writes || accumulates) {
            let range = Validator.hbmByteRange(access)
            let start = UInt(bitPattern: bindings[access.parameter].base.pointer) &+ UInt(bitPattern: range.low)
            guard let (fault, address) = faults.hbmError(in: armed, reading: start, length: range.high - range.low) else { continue }
            return .hardware("uncorrectable HBM error on device \(device): \(what) of the execution on core \(core) read "
                             + "\(name) (parameter \"\(parameters[access.parameter].name)\") at HBM bytes "
                             + "\(DeviceFaults.range(address, UInt64(range.high - range.low))), over \(fault.label); the "
                             + "execution stopped there")
        }
        return nil
    }
}
