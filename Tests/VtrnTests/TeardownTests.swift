import Foundation
import Synchronization
import Testing
import VtrnKernels
import VtrnDevice
@testable import Vtrn

/// `Runtime.close()` while other threads use the runtime: each of their calls succeeds or throws
/// `.invalidHandle`; nothing crashes or hangs, and the runtime's memory and queues are released.
@Suite struct TeardownTests {
    @Test func closingWhileThreadsCopyTransferAndExecuteOnlyInvalidatesTheirCalls() throws {
        let (runtime, device) = try isolatedDevice()
        let index = device.index
        let program = runtime.makeProgram()
        try StandardKernels.softmax(program, rows: 64, columns: 64)
        let kernel = try device.load(program, core: 0)
        let succeeded = Atomic<Int>(0), invalidated = Atomic<Int>(0)
        let unexpected = VtrnDevice.Mutex<[String]>([])
        let stop = Atomic<Bool>(false)

        @Sendable func attempt(_ work: () throws(VtrnError) -> Void) {
            do {
                try work()
                succeeded.add(1, ordering: .relaxed)
            } catch where error.status == .invalidHandle {
                invalidated.add(1, ordering: .relaxed)
            } catch {
                unexpected.withLock { $0.append(error.message) }
            }
        }

        // Threads of their own: a pool's threads may all be busy with the tests running beside this one.
        let finished = DispatchSemaphore(value: 0)
        for worker in 0..<4 {
            Thread.detachNewThread {
                defer { finished.signal() }
                var queue: DmaQueue?
                while !stop.load(ordering: .relaxed) {
                    attempt { () throws(VtrnError) in
                        let bytes = 16384
                        let host = try runtime.makeHostBuffer(bytes: bytes)
                        let memory = try device.allocate(UInt64(bytes))
                        defer { memory.free(); host.close() }
                        switch worker {
                        case 0, 1:
                            try device.copy(to: .device(memory, offset: 0), from: .host(host, offset: 0), bytes: UInt64(bytes))
                            try device.copy(to: .host(host, offset: 0), from: .device(memory, offset: 0), bytes: UInt64(bytes))
                        case 2:
                            if queue == nil { queue = try device.openQueue(core: 1, engine: 2, queue: 0) }
                            try queue!.enqueue([DmaTransfer(destination: .device(memory, offset: 0), source: .host(host, offset: 0),
                                                            bytes: UInt64(bytes))])
                            try queue!.wait(for: try queue!.submit())
                        default:
                            let x = try device.allocate(64 * 64 * 4), y = try device.allocate(64 * 64 * 4)
                            defer { x.free(); y.free() }
                            try kernel.execute([.init(name: "x", memory: x), .init(name: "y", memory: y)]).wait()
                        }
                    }
                }
            }
        }
        // Close once the workers are under way (a loaded machine may take a while to start them).
        let deadline = Date().addingTimeInterval(30)
        while succeeded.load(ordering: .relaxed) < 8 && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        runtime.close()
        Thread.sleep(forTimeInterval: 0.1)
        stop.store(true, ordering: .relaxed)
        for _ in 0..<4 {
            #expect(finished.wait(timeout: .now() + 60) == .success, "a worker hung after the runtime closed")
        }
        #expect(unexpected.withLock { $0 } == [])
        #expect(succeeded.load(ordering: .relaxed) > 0)
        #expect(invalidated.load(ordering: .relaxed) > 0)
        // Everything the runtime held on its device is back: no block of it survives the close.
        let other = try Runtime(options: .init(topology: "trn1:\(index + 1)"), environment: testEnvironment())
        defer { other.close() }
        #expect(try other.devices[index].memoryUsage.used == 0)
    }
}
