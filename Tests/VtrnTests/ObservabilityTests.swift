import Foundation
import Testing
import VtrnKernels
@testable import Vtrn

#if canImport(Glibc)
import Glibc
#endif

/// VTRN_TRACE and the monitor segment, from Swift.
@Suite struct ObservabilityTests {
    @Test func theTraceIsValidWhileTheRuntimeRunsAndShowsEnginesWaitsAndCalls() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vtrn-swift-trace-\(getpid())-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let index = isolatedIndex()
        let runtime = try Runtime(options: .init(topology: "trn1:\(index + 1)"), environment: testEnvironment(["VTRN_TRACE": path]))
        let device = runtime.devices[index]
        let program = runtime.makeProgram()
        try StandardKernels.softmax(program, rows: 128, columns: 64)
        let kernel = try device.load(program, core: 0)
        let x = try device.allocate(128 * 64 * 4), y = try device.allocate(128 * 64 * 4)
        try kernel.execute([.init(name: "x", memory: x), .init(name: "y", memory: y)]).wait()

        func categories() throws -> Set<String> {
            let data = try #require(FileManager.default.contents(atPath: path))
            let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            let events = try #require(root["traceEvents"] as? [[String: Any]])
            return Set(events.compactMap { $0["cat"] as? String })
        }
        // Valid JSON before the runtime is destroyed: the file ends with "]}" after every batch.
        #expect(try categories().isSuperset(of: ["instruction", "host", "api", "flow"]))
        runtime.close()
        #expect(try categories().contains("semaphore"))
    }

    @Test func aRuntimePublishesItsCountersForMonitors() throws {
        let (runtime, device) = try isolatedDevice()
        defer { runtime.close() }
        let program = runtime.makeProgram()
        try StandardKernels.softmax(program, rows: 16, columns: 16)
        let kernel = try device.load(program, core: 1)
        let x = try device.allocate(16 * 16 * 4), y = try device.allocate(16 * 16 * 4)
        try kernel.execute([.init(name: "x", memory: x), .init(name: "y", memory: y)]).wait()
        // The process's segment, as `vtrn monitor` reads it, names this device with its execution.
        let name = MonitorSegment.name(pid: getpid())
        var found = false
        let deadline = Date().addingTimeInterval(10)
        while !found && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.1)
            let descriptor = shm_open(name, O_RDONLY, 0)
            guard descriptor >= 0 else { continue }
            defer { close(descriptor) }
            guard let mapping = mmap(nil, MonitorSegment.size, PROT_READ, MAP_SHARED, descriptor, 0), mapping != MAP_FAILED else { continue }
            defer { munmap(mapping, MonitorSegment.size) }
            guard let text = MonitorSegment.read(mapping),
                  let document = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
                  let devices = document["devices"] as? [[String: Any]] else { continue }
            #expect(document["pid"] as? Int == Int(getpid()))
            if let mine = devices.first(where: { $0["index"] as? Int == device.index }),
               let cores = mine["cores"] as? [[String: Any]], (cores[1]["executions"] as? Int ?? 0) >= 1 {
                #expect(cores[1]["holder_runtime"] as? Int == runtime.serial)
                found = true
            }
        }
        #expect(found, "device \(device.index)'s execution never showed in \(name)")
    }
}
