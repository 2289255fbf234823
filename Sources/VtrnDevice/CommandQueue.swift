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
    /// Called on the core's thread once the execution has finished (releases what it held).
    private let completion: (@Sendable (CoreExecution) -> Void)?
    /// Whether to record each instruction's place on the timeline (VTRN_TRACE).
    public let traced: Bool

    private let state = Atomic<Int>(0) // 0 queued, 1 running, 2 finished
    private let completionWord: UnsafeMutablePointer<UInt32>
    private let waiters = Atomic<Int>(0)
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

    func run(on executor: CoreExecutor) {
        startedAt = vtrnsys_monotonic_ns()
        state.store(1, ordering: .releasing)
        outcome = executor.run(program, bindings: bindings, deadline: timeout.map { startedAt &+ $0 }, trace: traced)
        finishedAt = vtrnsys_monotonic_ns()
        completion?(self)
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

    private struct State {
        /// Queued executions from `head`; a slot is emptied when its execution is taken, since a
        /// finished execution must not stay referenced here: its completion holds the runtime,
        /// which holds the device and so this queue (a cycle that kept every runtime that ran a
        /// kernel, its device's HBM reservation and this thread alive after vtrn_runtime_destroy).
        var pending: [CoreExecution?] = []
        var head = 0
        var thread: UInt64?
        var stopping = false
    }
    private let state = Mutex(State())
    private let pendingCount = Atomic<Int>(0)
    private let sleeping = Atomic<Bool>(false)
    private let wakeWord: UnsafeMutablePointer<UInt32>
    /// Made on the core thread's first execution (SBUF and PSUM are tens of MiB).
    private var executor: CoreExecutor?

    init(preset: ChipPreset, name: String, numaNode: Int) {
        self.preset = preset
        self.name = name
        self.numaNode = numaNode
        wakeWord = .allocate(capacity: 1)
        wakeWord.initialize(to: 0)
    }

    deinit { wakeWord.deallocate() }

    /// Queues an execution; false when the queue holds `capacity` already (nothing queued).
    public func submit(_ execution: CoreExecution) -> Bool {
        let start: Bool? = state.withLock { state in
            guard state.pending.count - state.head < Self.capacity else { return nil }
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
            state.head += 1
            if state.head > 256 && state.head * 2 > state.pending.count {
                state.pending.removeFirst(state.head)
                state.head = 0
            }
            return (execution, false)
        }
    }

    private func run() {
        _ = vtrnsys_run_on_node(Int32(numaNode))
        var idleSince: UInt64 = 0
        var idleRounds = 0
        while true {
            let (execution, stopping) = next()
            if let execution {
                if executor == nil { executor = CoreExecutor(preset: preset) }
                execution.run(on: executor!)
                pendingCount.subtract(1, ordering: .sequentiallyConsistent)
                idleRounds = 0
                continue
            }
            if stopping { return }
            if idleRounds == 0 { idleSince = vtrnsys_monotonic_ns() }
            idleRounds += 1
            if idleRounds & 63 != 0 || vtrnsys_monotonic_ns() - idleSince < DmaEngineHardware.engineSpinNanoseconds {
                vtrnsys_cpu_relax()
                continue
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
