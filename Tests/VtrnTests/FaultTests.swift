import CVtrnSystem
import Foundation
import Synchronization
import Testing
import VtrnDevice
@testable import Vtrn

#if canImport(Glibc)
import Glibc
#endif

/// Injected faults through the Swift API and VTRN_FAULTS: what the caller sees, that the rest
/// goes on, one-shot against sticky, hangs against the execution timeout, loss and reset.
@Suite struct FaultTests {
    /// A [128, 16] fp32 kernel on `core`: out = in * 2 (DMA, DVE, DMA in order); DVE's is instruction 1.
    func doublingKernel(_ device: Device, core: Int) throws -> Kernel {
        let program = device.runtime.makeProgram()
        let bytes: UInt64 = 128 * 16 * 4
        let input = try program.addParameter("in", bytes: bytes), output = try program.addParameter("out", bytes: bytes)
        let tile = AccessPattern(space: .sbuf, dtype: .fp32, partitions: 128, sizes: [16])
        let doubled = AccessPattern(space: .sbuf, dtype: .fp32, partitions: 128, offset: 1024, sizes: [16])
        func hbm(_ parameter: Int) -> AccessPattern {
            AccessPattern(space: .hbm, dtype: .fp32, partitions: 128, parameter: parameter, sizes: [16], partitionStride: 16)
        }
        try program.append(Instruction(engine: .dma, operation: .dmaCopy(destination: tile, source: hbm(input)),
                                       sync: Synchronization(signalSemaphore: 0, signalValue: 1)))
        try program.append(Instruction(engine: .dve, operation: .tensorScalar(destination: doubled, source: tile, op0: .multiply,
                                                                             x0: .immediate(2), op1: .bypass, x1: nil, reverse: 0),
                                       sync: Synchronization(waitSemaphore: 0, waitValue: 1, signalSemaphore: 1, signalValue: 1)))
        try program.append(Instruction(engine: .dma, operation: .dmaCopy(destination: hbm(output), source: doubled),
                                       sync: Synchronization(waitSemaphore: 1, waitValue: 1)))
        return try device.load(program, core: core)
    }

    struct Doubling {
        let input: DeviceMemory
        let output: DeviceMemory
        let values: [Float]
    }

    func prepare(_ device: Device) throws -> Doubling {
        let values = (0..<128 * 16).map { Float($0) }
        let input = try device.allocate(UInt64(values.count * 4)), output = try device.allocate(UInt64(values.count * 4))
        let host = try device.runtime.makeHostBuffer(bytes: values.count * 4)
        values.withUnsafeBytes { host.data.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        try device.copy(to: .device(input, offset: 0), from: .host(host, offset: 0), bytes: UInt64(values.count * 4))
        return Doubling(input: input, output: output, values: values)
    }

    func execute(_ kernel: Kernel, _ data: Doubling) throws -> Fence {
        try kernel.execute([.init(name: "in", memory: data.input), .init(name: "out", memory: data.output)])
    }

    func doubledCorrectly(_ data: Doubling) throws -> Bool {
        let device = data.output.device
        let host = try device.runtime.makeHostBuffer(bytes: data.values.count * 4)
        try device.copy(to: .host(host, offset: 0), from: .device(data.output, offset: 0), bytes: UInt64(data.values.count * 4))
        let result = UnsafeBufferPointer(start: host.data.assumingMemoryBound(to: Float.self), count: data.values.count)
        return zip(result, data.values).allSatisfy { $0 == 2 * $1 }
    }

    func waitForHangs(_ device: Device, _ count: UInt64) throws {
        let deadline = vtrnsys_monotonic_ns() + 10_000_000_000
        while try device.errorCounters.counters.hangs < count && vtrnsys_monotonic_ns() < deadline { usleep(1000) }
        #expect(try device.errorCounters.counters.hangs >= count)
    }

    /// The VtrnError `body` throws, or nil.
    func failure(_ body: () throws -> Void) -> VtrnError? {
        do {
            try body()
            return nil
        } catch {
            return error as? VtrnError
        }
    }

    // MARK: VTRN_FAULTS

    @Test func theGrammarParsesAndSpellsBack() throws {
        let topology = try Topology.parse("trn1:2")
        let faults = try DeviceFault.parse(
            " dma-abort:core=0:engine=1:queue=2:after=10:sticky , dma-hang:core=host:engine=any, HBM-UE:device=1:address=0x1000:bytes=4096,"
            + "engine-hang:core=1:engine=PE:after=3:once,device-loss:device=1", topology: topology)
        #expect(faults == [
            DeviceFault(device: 0, fault: Fault(.dmaAbort(.init(core: .core(0), engine: 1, queue: 2)), after: 10, sticky: true)),
            DeviceFault(device: 0, fault: Fault(.dmaHang(.init(core: .host)))),
            DeviceFault(device: 1, fault: Fault(.hbmUncorrectable(address: 4096, bytes: 4096))),
            DeviceFault(device: 0, fault: Fault(.engineHang(core: 1, engine: .pe), after: 3)),
            DeviceFault(device: 1, fault: Fault(.deviceLoss)),
        ])
        #expect(faults.map(\.description) == ["dma-abort:core=0:engine=1:queue=2:after=10:sticky", "dma-hang:core=host",
                                              "hbm-ue:device=1:address=0x1000:bytes=4096", "engine-hang:core=1:engine=pe:after=3",
                                              "device-loss:device=1"])
        // Each spelling parses back to itself.
        for fault in faults { #expect(try DeviceFault.parse(fault.description, topology: topology) == [fault]) }
        let configuration = try RuntimeConfiguration.resolve(options: .init(), environment: ["VTRN_TOPOLOGY": "trn1:2",
                                                                                             "VTRN_FAULTS": "device-loss:device=1"],
                                                             host: HostTopology(nodes: [0]))
        #expect(configuration.faults == [DeviceFault(device: 1, fault: Fault(.deviceLoss))])
    }

    @Test(arguments: [
        ("", "no fault is listed"),
        ("lost", "fault 1 (\"lost\") has kind \"lost\", which is not dma-abort, dma-hang, hbm-ue, engine-hang or device-loss"),
        ("device-loss,", "fault 2 is empty"),
        ("dma-abort:core=2", "fault 1 (\"dma-abort:core=2\"): core 2 does not exist: device 0 (Trainium1) has 2 cores (0-1)"),
        ("dma-abort:engine=16", "DMA engine 16 does not exist: a core has 16 DMA engines (0-15)"),
        ("dma-abort:queue=99", "queue 99 does not exist: a DMA engine has 16 queues (0-15)"),
        ("dma-abort:core=-1", "core=\"-1\", which is not a number or any or host"),
        ("dma-abort:after=1e3", "after=\"1e3\", which is not a number (decimal, or hexadecimal after 0x)"),
        ("dma-abort:after=0xzz", "after=\"0xzz\", which is not a number"),
        ("dma-hang:address=4", "option \"address\", which dma-hang does not take (it takes device, core, engine, queue, after, sticky, once)"),
        ("hbm-ue:bytes=4", "needs both address=A and bytes=N"),
        ("hbm-ue:address=0:bytes=0", "the HBM range has 0 bytes"),
        ("hbm-ue:address=0x800000000:bytes=1", "runs past the end of device 0's HBM (32 GiB (34359738368 bytes))"),
        ("engine-hang:engine=gpu", "engine=\"gpu\", which is not pe, act, dve, pool, dma or any"),
        ("engine-hang:core=host", "core=\"host\", which is not a number or any"),
        ("device-loss:device=3", "names device 3, which does not exist: the topology \"trn1:2\" has 2 devices (0-1)"),
        ("device-loss:after=1", "option \"after\", which device-loss does not take"),
        ("dma-abort:queue", "has \"queue\" where an option KEY=VALUE, sticky or once belongs"),
        ("dma-abort:queue=", "gives queue no value"),
        ("dma-abort:once:once", "says sticky or once twice"),
        ("dma-hang:core=host:queue=0", "the queue must be any"),
    ])
    func badStringsNameTheBadPart(text: String, problem: String) throws {
        let error = #expect(throws: VtrnError.self) { try DeviceFault.parse(text, topology: try Topology.parse("trn1:2")) }
        #expect(error?.status == .invalidArgument)
        #expect(error?.message.hasPrefix("VTRN_FAULTS=\"\(text)\": ") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains(problem) == true, "\(error?.message ?? "") lacks \(problem)")
        #expect(error?.message.hasSuffix("\"device-loss:device=1\"") == true) // ends with the accepted forms
    }

    @Test func runtimeCreationFailsOnABadVariableAndArmsAGoodOne() throws {
        let error = #expect(throws: VtrnError.self) {
            try Runtime(options: .init(topology: "trn1"), environment: ["VTRN_FAULTS": "hbm-ue:address=1"])
        }
        #expect(error?.message.hasPrefix("VTRN_FAULTS=\"hbm-ue:address=1\": fault 1 (\"hbm-ue:address=1\") needs both") == true)
        let (runtime, first, second) = try isolatedDevices(faults: "dma-abort:device={0}:sticky,device-loss:device={1}")
        defer { runtime.close() }
        #expect(try first.errorCounters.armedFaults == 1 && !first.errorCounters.isLost)
        #expect(try second.errorCounters.isLost && second.errorCounters.counters.deviceLosses == 1)
        #expect(try second.errorCounters.loss == "lost by injected fault 1 (device-loss)")
    }

    @Test func hangsAndHbmErrorsFromTheVariable() throws {
        let (runtime, device, other) = try isolatedDevices(environment: ["VTRN_EXEC_TIMEOUT_MS": "200"],
                                                           faults: "engine-hang:device={0}:engine=pe,dma-hang:device={1}:core=host")
        defer { runtime.close() }
        let program = runtime.makeProgram()
        try program.append(Instruction(engine: .pe, operation: .transpose(
            destination: AccessPattern(space: .psum, dtype: .fp32, partitions: 4, sizes: [4]),
            source: AccessPattern(space: .sbuf, dtype: .fp32, partitions: 4, sizes: [4]))))
        let error = failure { try device.load(program, core: 1).execute([]).wait() }
        #expect(error?.status == .timeout)
        #expect(error?.message.hasPrefix("instruction 0 (TRANSPOSE on PE) never finished: PE of core 1 of device \(device.index) hung "
                                         + "(injected fault 1 (engine-hang:engine=pe))") == true, "\(error as Any)")
        // The other device's host DMA engines hang: vtrn_memcpy's wait ends at the timeout.
        let buffer = try runtime.makeHostBuffer(bytes: 4096)
        let memory = try other.allocate(4096)
        let copyError = failure { try other.copy(to: .device(memory, offset: 0), from: .host(buffer, offset: 0), bytes: 4096) }
        #expect(copyError?.status == .timeout)
        #expect(copyError?.message.contains("(vtrn_memcpy) hung at descriptor") == true, "\(copyError as Any)")
        #expect(copyError?.message.contains("injected fault 1 (dma-hang:core=host)") == true, "\(copyError as Any)")
    }

    // MARK: Each fault, through the API

    @Test func aDmaAbortFailsItsSequenceAndTheQueueGoesOn() throws {
        let (runtime, device, other) = try isolatedDevices()
        defer { runtime.close() }
        let bytes = 4 * 65536
        let input = try runtime.makeHostBuffer(bytes: bytes), output = try runtime.makeHostBuffer(bytes: bytes)
        for index in 0..<bytes { input.data.storeBytes(of: UInt8(truncatingIfNeeded: index * 13), toByteOffset: index, as: UInt8.self) }
        let queue = try device.openQueue(core: 1, engine: 15, queue: 15), neighbour = try device.openQueue(core: 1, engine: 15, queue: 14)
        let far = try other.openQueue(core: 1, engine: 15, queue: 15)
        let whole = DmaTransfer(destination: .host(output, offset: 0), source: .host(input, offset: 0), bytes: UInt64(bytes))
        #expect(failure { try device.injectFault(Fault(.dmaAbort(.init(core: .core(-1))))) }
                == .invalidArgument("core -1 does not exist: device \(device.index) (Trainium1) has 2 cores (0-1)"))
        #expect(failure { try device.injectFault(Fault(.dmaHang(.init(engine: -2)))) }?.message.hasPrefix("DMA engine -2 does not exist") == true)
        #expect(failure { try device.injectFault(Fault(.engineHang(core: 7, engine: .pe))) }?.status == .invalidArgument)
        #expect(try device.injectFault(Fault(.dmaAbort(.init(core: .core(1), engine: 15, queue: 15)), after: 1)) == 1)
        try queue.enqueue([whole])
        let failed = try queue.submit()
        try neighbour.enqueue([whole])
        try far.enqueue([whole])
        let expected = "DMA abort on queue 15 of DMA engine 15 of core 1 of device \(device.index): descriptor 1 (ring slot 1) failed "
            + "with a descriptor error (injected fault 1 (dma-abort:core=1:engine=15:queue=15:after=1)); sequence 1 failed "
            + "(descriptors 1-3 did not complete); the queue goes on with later submissions"
        #expect(failure { try queue.wait(for: failed) } == VtrnError(.dmaFault, expected))
        #expect(failure { try queue.wait(for: failed, timeoutNanoseconds: 0) } == VtrnError(.dmaFault, expected))
        try neighbour.wait(for: try neighbour.submit())
        try far.wait(for: try far.submit())
        #expect(memcmp(input.data, output.data, bytes) == 0)
        memset(output.data, 0, bytes)
        try queue.enqueue([whole])
        try queue.wait(for: try queue.submit())
        #expect(memcmp(input.data, output.data, bytes) == 0)
        #expect(try device.errorCounters.counters.dmaAborts == 1 && device.errorCounters.armedFaults == 0)
        #expect(try other.errorCounters.counters == ErrorCounters.Snapshot())
    }

    @Test func anHbmErrorFailsReadsWithHardwareUntilAReset() throws {
        let (runtime, device) = try isolatedDevice()
        defer { runtime.close() }
        let data = try prepare(device)
        let kernel = try doublingKernel(device, core: 0)
        try execute(kernel, data).wait()
        #expect(try doubledCorrectly(data))
        try device.injectFault(Fault(.hbmUncorrectable(address: data.input.address + 64, bytes: 64), sticky: true))
        let fence = try execute(kernel, data)
        let error = failure { try fence.wait() }
        #expect(error?.status == .hardware && fence.status == .hardware)
        #expect(error?.message.hasPrefix("uncorrectable HBM error on device \(device.index): instruction 0 (DMA_COPY on DMA) of the "
                                         + "execution on core 0 read src (parameter \"in\") at HBM bytes [0x") == true, "\(error as Any)")
        let host = try runtime.makeHostBuffer(bytes: 256)
        let copyError = failure { try device.copy(to: .host(host, offset: 0), from: .device(data.input, offset: 0), bytes: 256) }
        #expect(copyError?.status == .hardware)
        #expect(copyError?.message.contains("read HBM bytes [0x\(String(data.input.address, radix: 16)), 0x\(String(data.input.address + 256, radix: 16))) at descriptor") == true,
                "\(copyError as Any)")
        // A write to it succeeds; a read beside it too.
        try device.copy(to: .device(data.input, offset: 0), from: .host(host, offset: 0), bytes: 256)
        try device.copy(to: .host(host, offset: 0), from: .device(data.input, offset: 128), bytes: 128)
        #expect(try device.errorCounters.counters.hbmUncorrectableErrors == 2)
        try device.reset()
        try execute(kernel, prepare(device)).wait()
    }

    @Test func anEngineHangIsCaughtByTheExecutionTimeoutWhileTheOtherCoreWorks() throws {
        let (runtime, device, _) = try isolatedDevices(environment: ["VTRN_EXEC_TIMEOUT_MS": "200"])
        defer { runtime.close() }
        let hungData = try prepare(device), otherData = try prepare(device)
        let hungKernel = try doublingKernel(device, core: 0), otherKernel = try doublingKernel(device, core: 1)
        try device.injectFault(Fault(.engineHang(core: 0, engine: .dve)))
        let start = vtrnsys_monotonic_ns()
        let hung = try execute(hungKernel, hungData)
        try waitForHangs(device, 1)
        try execute(otherKernel, otherData).wait()
        #expect(hung.status == .notReady)
        #expect(try doubledCorrectly(otherData))
        #expect(failure { try hung.wait() } == VtrnError(.timeout,
            "instruction 1 (TENSOR_SCALAR on DVE) never finished: DVE of core 0 of device \(device.index) hung (injected fault 1 "
            + "(engine-hang:core=0:engine=dve)); the execution timeout of 200 ms (VTRN_EXEC_TIMEOUT_MS) ended it"))
        #expect(vtrnsys_monotonic_ns() - start >= 200_000_000)
        // One-shot: the next one runs.
        try execute(hungKernel, hungData).wait()
        #expect(try doubledCorrectly(hungData))
        let counters = try device.errorCounters.counters
        #expect(counters.hangs == 1 && counters.executionTimeouts == 1)
    }

    @Test func aDmaHangEndsAWaitForeverAtTheExecutionTimeout() throws {
        let (runtime, device, _) = try isolatedDevices(environment: ["VTRN_EXEC_TIMEOUT_MS": "200"])
        defer { runtime.close() }
        let buffer = try runtime.makeHostBuffer(bytes: 8192)
        let queue = try device.openQueue(core: 0, engine: 3, queue: 0)
        try device.injectFault(Fault(.dmaHang(.init(core: .core(0), engine: 3)), sticky: true))
        try queue.enqueue([DmaTransfer(destination: .host(buffer, offset: 0), source: .host(buffer, offset: 4096), bytes: 4096)])
        let sequence = try queue.submit()
        let start = vtrnsys_monotonic_ns()
        let error = failure { try queue.wait(for: sequence) }
        #expect(vtrnsys_monotonic_ns() - start >= 150_000_000)
        #expect(error == VtrnError(.timeout, "queue 0 of DMA engine 3 of core 0 of device \(device.index) hung at descriptor 0 (ring slot 0) "
                                   + "(injected fault 1 (dma-hang:core=0:engine=3:sticky)); the execution timeout of 200 ms "
                                   + "(VTRN_EXEC_TIMEOUT_MS) ended the wait for it; sequence 1 failed (descriptor 0 did not complete); "
                                   + "the queue goes on with later submissions"))
        // Sticky: the next one hangs too, until a reset.
        try queue.enqueue([DmaTransfer(destination: .host(buffer, offset: 0), source: .host(buffer, offset: 4096), bytes: 4096)])
        let next = try queue.submit()
        try waitForHangs(device, 2)
        #expect(failure { try queue.wait(for: next, timeoutNanoseconds: 0) }?.status == .notReady)
        try device.reset()
        #expect(failure { try queue.wait(for: next) }?.status == .reset)
        try queue.enqueue([DmaTransfer(destination: .host(buffer, offset: 0), source: .host(buffer, offset: 4096), bytes: 4096)])
        try queue.wait(for: try queue.submit())
        #expect(try device.errorCounters.counters.hangs == 2 && device.errorCounters.counters.resets == 1)
    }

    @Test func aLostDeviceFailsEveryCallTheOtherWorksAndAResetBringsItBack() throws {
        let (runtime, alive, lost) = try isolatedDevices()
        defer { runtime.close() }
        let lostData = try prepare(lost), aliveData = try prepare(alive)
        let lostKernel = try doublingKernel(lost, core: 0), aliveKernel = try doublingKernel(alive, core: 0)
        let queue = try lost.openQueue(core: 1, engine: 0, queue: 0)
        #expect(try lost.injectFault(Fault(.deviceLoss)) == 1)
        let why = VtrnError(.deviceLost, "device \(lost.index) is lost (lost by injected fault 1 (device-loss)); vtrn_device_reset brings it back")
        #expect(failure { _ = try lost.allocate(64) } == why)
        #expect(failure { _ = try lost.openQueue(core: 1, engine: 0, queue: 1) } == why)
        #expect(failure { _ = try queue.submit() } == why)
        #expect(failure { _ = try execute(lostKernel, lostData) } == why)
        #expect(failure { _ = try lost.load(runtime.makeProgram(), core: 1) } == why)
        #expect(failure { try lost.copy(to: .device(lostData.output, offset: 0), from: .device(lostData.input, offset: 0), bytes: 4) } == why)
        #expect(failure { try lost.injectFault(Fault(.deviceLoss)) } == why)
        #expect(try lost.info.index == lost.index && lost.errorCounters.isLost)
        try execute(aliveKernel, aliveData).wait()
        #expect(try doubledCorrectly(aliveData))
        try lost.reset()
        try execute(lostKernel, lostData).wait()
        #expect(try doubledCorrectly(lostData))
        let counters = try lost.errorCounters
        #expect(!counters.isLost && counters.counters.deviceLosses == 1 && counters.counters.resets == 1)
        try lost.reset(clearingCounters: true)
        #expect(try lost.errorCounters.counters == ErrorCounters.Snapshot())
    }

    @Test func resetsDuringTrafficCompleteOrFailEverySequenceExactly() throws {
        let (runtime, device) = try isolatedDevice()
        defer { runtime.close() }
        let bytes = 1 << 20
        let source = try runtime.makeHostBuffer(bytes: bytes)
        for index in 0..<bytes { source.data.storeBytes(of: UInt8(truncatingIfNeeded: index &* 7), toByteOffset: index, as: UInt8.self) }
        let workers = 3, rounds = 100
        let outcomes = VtrnDevice.Mutex<[Status: Int]>([:])
        let finished = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: workers + 1) { worker in
            if worker == workers {
                // Resets, and now and then an abort, while the others copy.
                var count = 0
                while finished.load(ordering: .relaxed) < workers {
                    usleep(300)
                    if count % 4 == 0 {
                        _ = try? device.injectFault(Fault(.dmaAbort(.init(core: .core(0))), after: 7))
                    } else {
                        _ = try? device.reset()
                    }
                    count += 1
                }
                return
            }
            defer { finished.add(1, ordering: .relaxed) }
            do {
                let queue = try device.openQueue(core: 0, engine: worker, queue: 0, ringEntries: 64)
                let sink = try runtime.makeHostBuffer(bytes: bytes)
                for _ in 0..<rounds {
                    memset(sink.data, 0, bytes)
                    try queue.enqueue([DmaTransfer(destination: .host(sink, offset: 0), source: .host(source, offset: 0), bytes: UInt64(bytes))])
                    let sequence = try queue.submit()
                    var status = Status.success
                    if let error = failure({ try queue.wait(for: sequence, timeoutNanoseconds: 10_000_000_000) }) { status = error.status }
                    if status == .success { #expect(memcmp(sink.data, source.data, bytes) == 0) }
                    outcomes.withLock { $0[status, default: 0] += 1 }
                }
                queue.close()
            } catch {
                Issue.record("worker \(worker): \(error)")
            }
        }
        let seen = outcomes.withLock { $0 }
        #expect(seen.values.reduce(0, +) == workers * rounds)
        #expect(Set(seen.keys).isSubset(of: [.success, .reset, .dmaFault]), "\(seen)")
        #expect(seen[.success, default: 0] > 0)
    }

    @Test func resetsDuringExecutionsCompleteOrFailEveryExecutionExactly() throws {
        let (runtime, device) = try isolatedDevice()
        defer { runtime.close() }
        let cores = 2, rounds = 40
        let kernels = try (0..<cores).map { try doublingKernel(device, core: $0) }
        let data = try (0..<cores).map { _ in try prepare(device) }
        let outcomes = VtrnDevice.Mutex<[Status: Int]>([:])
        let finished = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: cores + 1) { core in
            if core == cores {
                while finished.load(ordering: .relaxed) < cores {
                    usleep(500)
                    _ = try? device.reset()
                }
                return
            }
            defer { finished.add(1, ordering: .relaxed) }
            for _ in 0..<rounds {
                var status = Status.success
                if let error = failure({ try execute(kernels[core], data[core]).wait(timeoutNanoseconds: 10_000_000_000) }) {
                    status = error.status
                }
                if status == .success {
                    // The read back is DMA too: a reset may fail it; read again.
                    var correct: Bool?
                    for _ in 0..<20 where correct == nil { correct = try? doubledCorrectly(data[core]) }
                    #expect(correct == true)
                }
                outcomes.withLock { $0[status, default: 0] += 1 }
            }
        }
        let seen = outcomes.withLock { $0 }
        #expect(seen.values.reduce(0, +) == cores * rounds)
        #expect(Set(seen.keys).isSubset(of: [.success, .reset]), "\(seen)")
    }

    @Test func aResetFailsWorkInFlightAndKeepsMemory() throws {
        let (runtime, device, _) = try isolatedDevices(environment: ["VTRN_EXEC_TIMEOUT_MS": "0"])
        defer { runtime.close() }
        let data = try prepare(device)
        let kernel = try doublingKernel(device, core: 1)
        // With no timeout, a hang lasts until the reset.
        try device.injectFault(Fault(.engineHang(core: 1, engine: nil), after: 2))
        let running = try execute(kernel, data), queued = try execute(kernel, data)
        try waitForHangs(device, 1)
        try device.reset()
        #expect(running.status == .reset && queued.status == .reset)
        #expect(failure { try running.wait() }?.message.contains("instruction 2 (DMA_COPY on DMA) never finished") == true)
        #expect(failure { try queued.wait() }?.message.contains("it did not run") == true)
        // Memory and its contents stay; the core runs again.
        try execute(kernel, data).wait()
        #expect(try doubledCorrectly(data))
    }
}
