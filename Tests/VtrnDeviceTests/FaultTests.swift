import CVtrnSystem
import Testing
@testable import VtrnDevice

#if canImport(Glibc)
import Glibc
#endif

/// Faults in the device model, driven as a driver would: descriptors and doorbells, command
/// queues, the device's reset. (The runtime's side, messages and statuses: VtrnTests.)
@Suite struct FaultTests {
    /// A device of its own per test (tests run in parallel; the index only names it).
    func makeDevice(_ index: Int) throws -> VirtualDevice { try VirtualDevice(preset: .trn1, index: index, numaNode: 0) }

    /// Writes a copy of `count` descriptors of `length` bytes from `source` to `destination` at
    /// ring position `position` on, and rings the doorbell with `sequence`.
    func copy(on queue: DmaQueueHardware, from source: UnsafeRawPointer, to destination: UnsafeMutableRawPointer,
              length: Int, count: Int, position: UInt64, sequence: UInt64) {
        for index in 0..<count {
            let at = position + UInt64(index)
            var control = UInt32(length) & DmaDescriptor.lengthMask
            control |= DmaDescriptor.ringId(position: at, entries: queue.entries) << DmaDescriptor.ringIdShift
            let slot = Int(at % UInt64(queue.entries))
            queue.sourceRing[slot] = DmaDescriptor(lengthControl: control, address: UInt64(UInt(bitPattern: source + index * length)))
            queue.destinationRing[slot] = DmaDescriptor(lengthControl: control,
                                                        address: UInt64(UInt(bitPattern: destination + index * length)))
        }
        queue.ringDoorbell(tail: position + UInt64(count), sequence: sequence)
    }

    @Test func oneShotFiresOnceAndStickyFiresFromThenOn() {
        let once = ArmedFault(fault: Fault(.deviceLoss, after: 2), number: 1)
        #expect((0..<6).map { _ in once.fires() } == [false, false, true, false, false, false])
        let sticky = ArmedFault(fault: Fault(.deviceLoss, after: 2, sticky: true), number: 2)
        #expect((0..<5).map { _ in sticky.fires() } == [false, false, true, true, true])
        #expect(Fault(.dmaAbort(.init(core: .core(0), engine: 1, queue: 2)), after: 10, sticky: true).description
                == "dma-abort:core=0:engine=1:queue=2:after=10:sticky")
        #expect(Fault(.hbmUncorrectable(address: 4096, bytes: 64)).description == "hbm-ue:address=0x1000:bytes=64")
        #expect(Fault(.engineHang(core: nil, engine: .pe)).description == "engine-hang:engine=pe")
    }

    @Test func aDmaAbortStopsItsQueueAtTheDescriptorAndARestartResumes() throws {
        let device = try makeDevice(40)
        let queue = try #require(device.openQueue(core: 1, engine: 2, queue: 3, entries: 32))
        let neighbour = try #require(device.openQueue(core: 1, engine: 2, queue: 4, entries: 32))
        defer { device.closeQueue(queue); device.closeQueue(neighbour) }
        let source = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
        defer { source.deallocate(); destination.deallocate() }
        memset(source, 7, 4096)
        memset(destination, 0, 4096)
        device.inject(Fault(.dmaAbort(.init(core: .core(1), engine: 2, queue: 3)), after: 2))
        copy(on: queue, from: source, to: destination, length: 512, count: 4, position: 0, sequence: 1)
        copy(on: neighbour, from: source + 2048, to: destination + 2048, length: 512, count: 4, position: 0, sequence: 1)
        #expect(queue.wait(for: 1, timeoutNanoseconds: 5_000_000_000) == .stopped)
        #expect(neighbour.wait(for: 1, timeoutNanoseconds: 5_000_000_000) == .completed)
        let stop = try #require(queue.stop)
        #expect(stop.position == 2 && stop.reason == .aborted(fault: "injected fault 1 (dma-abort:core=1:engine=2:queue=3:after=2)"))
        #expect(queue.head == 2 && queue.completedSequence == 0 && queue.bytesCompleted == 1024)
        // Descriptors 0 and 1 were copied, 2 and 3 not; the neighbour's all.
        let bytes = UnsafeRawBufferPointer(start: destination, count: 4096)
        #expect(bytes[0..<1024].allSatisfy { $0 == 7 } && bytes[1024..<2048].allSatisfy { $0 == 0 })
        #expect(bytes[2048..<4096].allSatisfy { $0 == 7 })
        #expect(device.faults.counters.snapshot.dmaAborts == 1 && device.faults.armed.isEmpty)
        // The driver's queue reset: sequence 1 is done with (failed), the engine resumes.
        queue.restart(at: 4, sequence: 1)
        #expect(!queue.isStopped)
        copy(on: queue, from: source, to: destination + 1024, length: 512, count: 2, position: 4, sequence: 2)
        #expect(queue.wait(for: 2, timeoutNanoseconds: 5_000_000_000) == .completed)
        #expect(bytes[1024..<2048].allSatisfy { $0 == 7 })
    }

    @Test func anHbmErrorStopsAReadOfItButNotAWrite() throws {
        let device = try makeDevice(41)
        let queue = try #require(device.openQueue(core: 0, engine: 0, queue: 0, entries: 32))
        defer { device.closeQueue(queue) }
        guard case .success(let block) = device.hbm.allocate(8192, alignment: 4096, category: .tensor) else {
            Issue.record("allocation failed")
            return
        }
        let hbm = device.hbm.pointer(block.address)
        let host = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 64)
        defer { host.deallocate() }
        memset(host, 3, 8192)
        device.inject(Fault(.hbmUncorrectable(address: block.address + 4096, bytes: 1), sticky: true))
        // Host to HBM over the bad byte: a write, fine.
        copy(on: queue, from: host, to: hbm, length: 4096, count: 2, position: 0, sequence: 1)
        #expect(queue.wait(for: 1, timeoutNanoseconds: 5_000_000_000) == .completed)
        // HBM to host: the first descriptor misses it, the second reads it.
        copy(on: queue, from: hbm, to: host, length: 4096, count: 2, position: 2, sequence: 2)
        #expect(queue.wait(for: 2, timeoutNanoseconds: 5_000_000_000) == .stopped)
        let stop = try #require(queue.stop)
        #expect(stop.position == 3)
        #expect(stop.reason == .hbmUncorrectable(address: block.address + 4096, length: 4096,
                                                 fault: "injected fault 1 (hbm-ue:address=0x\(String(block.address + 4096, radix: 16)):bytes=1:sticky)"))
        #expect(device.faults.counters.snapshot.hbmUncorrectableErrors == 1 && device.faults.armed.count == 1)
    }

    @Test func aResetStopsEveryQueueAndFailsQueuedExecutions() throws {
        let device = try makeDevice(42)
        let queue = try #require(device.openQueue(core: 0, engine: 5, queue: 5, entries: 32))
        defer { device.closeQueue(queue) }
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 1024, alignment: 64)
        defer { memory.deallocate() }
        // A hang holds the queue; the reset replaces it by a reset stop and wakes the waiter.
        device.inject(Fault(.dmaHang(.init()), sticky: true))
        copy(on: queue, from: memory, to: memory + 512, length: 512, count: 1, position: 0, sequence: 1)
        #expect(queue.wait(for: 1, timeoutNanoseconds: 20_000_000, hangTimeoutNanoseconds: nil) == .timedOut)
        // On a loaded machine the engine's thread may reach the descriptor only after that wait.
        let hangDeadline = vtrnsys_monotonic_ns() + 10_000_000_000
        while queue.stop == nil && vtrnsys_monotonic_ns() < hangDeadline { usleep(1000) }
        #expect({ if case .hung = queue.stop?.reason { true } else { false } }())
        // A hang that has lasted its timeout counts as a stop.
        #expect(queue.wait(for: 1, timeoutNanoseconds: 5_000_000_000, hangTimeoutNanoseconds: 10_000_000) == .stopped)
        let dve = Instruction(engine: .dve, operation: .memset(destination: AccessPattern(space: .sbuf, dtype: .fp32, partitions: 1,
                                                                                          sizes: [4]), value: 1))
        let program = try LoadedProgram(instructions: [dve, dve], parameters: [], preset: .trn1)
        device.inject(Fault(.engineHang(core: 0, engine: .dve), after: 1))
        let running = CoreExecution(program: program, bindings: [], timeout: nil, completion: nil)
        let queued = CoreExecution(program: program, bindings: [], timeout: nil, completion: nil)
        #expect(device.commandQueues[0].submit(running) && device.commandQueues[0].submit(queued))
        // It hangs (with no timeout, until the reset): wait for the hang to begin.
        let deadline = vtrnsys_monotonic_ns() + 10_000_000_000
        while device.faults.counters.snapshot.hangs < 2 && vtrnsys_monotonic_ns() < deadline { usleep(1000) }
        #expect(!running.wait(timeoutNanoseconds: 20_000_000))
        let generation = device.faults.generation
        device.reset(clearingCounters: false)
        #expect(device.faults.generation == generation + 1 && device.faults.armed.isEmpty)
        #expect(queue.stop?.reason == .reset)
        #expect(running.isFinished && queued.isFinished)
        guard case .reset(let message) = running.outcome.failure, case .reset(let queuedMessage) = queued.outcome.failure else {
            Issue.record("\(running.outcome.failure as Any), \(queued.outcome.failure as Any)")
            return
        }
        #expect(message.contains("instruction 1 (MEMSET on DVE) never finished") && message.contains("until device 42 was reset"))
        #expect(queuedMessage.contains("while the execution was queued on core 0; it did not run"))
        #expect(device.faults.counters.snapshot.resets == 1 && device.faults.counters.snapshot.hangs == 2)
        // The core runs again.
        let after = CoreExecution(program: program, bindings: [], timeout: nil, completion: nil)
        #expect(device.commandQueues[0].submit(after))
        #expect(after.wait(timeoutNanoseconds: 5_000_000_000) && after.outcome.failure == nil)
    }

    @Test func aHungInstructionEndsAtTheExecutionTimeout() throws {
        let device = try makeDevice(43)
        let pe = Instruction(engine: .pe, operation: .transpose(
            destination: AccessPattern(space: .psum, dtype: .fp32, partitions: 4, sizes: [4]),
            source: AccessPattern(space: .sbuf, dtype: .fp32, partitions: 4, sizes: [4])))
        let program = try LoadedProgram(instructions: [pe], parameters: [], preset: .trn1)
        device.inject(Fault(.engineHang(core: nil, engine: .pe)))
        let start = vtrnsys_monotonic_ns()
        let execution = CoreExecution(program: program, bindings: [], timeout: 50_000_000, completion: nil)
        #expect(device.commandQueues[1].submit(execution))
        #expect(execution.wait(timeoutNanoseconds: 10_000_000_000))
        #expect(vtrnsys_monotonic_ns() - start >= 50_000_000)
        #expect(execution.outcome.failure == .timeout(
            "instruction 0 (TRANSPOSE on PE) never finished: PE of core 1 of device 43 hung (injected fault 1 (engine-hang:engine=pe)); "
            + "the execution timeout of 50 ms (VTRN_EXEC_TIMEOUT_MS) ended it"))
        #expect(device.faults.counters.snapshot.executionTimeouts == 1)
    }
}
