import CVtrn
import Testing
import Vtrn
@testable import VtrnCABI

#if canImport(Glibc)
import Glibc
#endif

/// The C ABI called from Swift, as a Swift host that embeds libvtrn would.
@Suite struct CABITests {
    func lastError() -> String { String(cString: vtrn_last_error()) }

    func makeRuntime(_ topology: String) throws -> vtrn_runtime_t? {
        var runtime: vtrn_runtime_t?
        let status = topology.withCString { text in
            var options = vtrn_runtime_options_t(struct_size: MemoryLayout<vtrn_runtime_options_t>.size,
                                                 topology: text, visible_cores: nil, log_level: VTRN_LOG_LEVEL_DEFAULT)
            return vtrn_runtime_create(&options, &runtime)
        }
        try #require(status == VTRN_SUCCESS, "\(lastError())")
        return runtime
    }

    @Test func statusNumbersAndTextsMatchTheHeader() {
        let header: [(vtrn_status_t, Status)] = [
            (VTRN_SUCCESS, .success), (VTRN_NOT_READY, .notReady), (VTRN_ERROR_INVALID_ARGUMENT, .invalidArgument),
            (VTRN_ERROR_INVALID_HANDLE, .invalidHandle), (VTRN_ERROR_NOT_FOUND, .notFound),
            (VTRN_ERROR_OUT_OF_BOUNDS, .outOfBounds), (VTRN_ERROR_OUT_OF_HOST_MEMORY, .outOfHostMemory),
            (VTRN_ERROR_OUT_OF_DEVICE_MEMORY, .outOfDeviceMemory), (VTRN_ERROR_BUSY, .busy),
            (VTRN_ERROR_TIMEOUT, .timeout), (VTRN_ERROR_QUEUE_FULL, .queueFull), (VTRN_ERROR_UNSUPPORTED, .unsupported),
            (VTRN_ERROR_INVALID_PROGRAM, .invalidProgram), (VTRN_ERROR_DMA_FAULT, .dmaFault),
            (VTRN_ERROR_HARDWARE, .hardware), (VTRN_ERROR_DEADLOCK, .deadlock), (VTRN_ERROR_INTERNAL, .internal),
            (VTRN_ERROR_RESET, .reset), (VTRN_ERROR_DEVICE_LOST, .deviceLost),
        ]
        #expect(header.count == Status.allCases.count)
        for (c, swift) in header {
            #expect(Int32(c.rawValue) == swift.rawValue, "\(swift.name)")
            #expect(String(cString: vtrn_status_string(c)) == swift.description)
        }
        #expect(String(cString: vtrn_status_string(vtrn_status_t(rawValue: 9999))) == "unknown status")
    }

    @Test func versionMatchesHeaderAndSwift() {
        let version = vtrn_version()
        #expect(version >> 16 == UInt32(VTRN_VERSION_MAJOR))
        #expect((version >> 8) & 0xff == UInt32(VTRN_VERSION_MINOR))
        #expect(version & 0xff == UInt32(VTRN_VERSION_PATCH))
        #expect(Vtrn.version == "\(VTRN_VERSION_MAJOR).\(VTRN_VERSION_MINOR).\(VTRN_VERSION_PATCH)")
    }

    @Test func firstVersionSizesArePinned() {
        // A struct may grow at its end; its first version's size must never change.
        #expect(vtrn_runtime_options_t.firstVersionSize == 32)
        #expect(vtrn_runtime_info_t.firstVersionSize == 288)
        #expect(vtrn_device_info_t.firstVersionSize == 224)
        #expect(vtrn_core_info_t.firstVersionSize == 88)
        #expect(MemoryLayout<vtrn_runtime_options_t>.size >= vtrn_runtime_options_t.firstVersionSize)
        #expect(MemoryLayout<vtrn_runtime_info_t>.size >= vtrn_runtime_info_t.firstVersionSize)
        #expect(MemoryLayout<vtrn_device_info_t>.size >= vtrn_device_info_t.firstVersionSize)
        #expect(MemoryLayout<vtrn_core_info_t>.size >= vtrn_core_info_t.firstVersionSize)
        #expect(vtrn_dma_copy_options_t.firstVersionSize == 32)
        #expect(MemoryLayout<vtrn_dma_copy_options_t>.size >= vtrn_dma_copy_options_t.firstVersionSize)
    }

    @Test func enumeratesTrn1AndTrn2() throws {
        let runtime = try makeRuntime("trn1,trn2")
        defer { _ = vtrn_runtime_destroy(runtime) }
        var count: UInt32 = 0
        #expect(vtrn_device_count(runtime, &count) == VTRN_SUCCESS && count == 2)
        var device: vtrn_device_t?
        #expect(vtrn_device_get(runtime, 1, &device) == VTRN_SUCCESS)
        var again: vtrn_device_t?
        #expect(vtrn_device_get(runtime, 1, &again) == VTRN_SUCCESS && again == device)
        var info = vtrn_device_info_t()
        info.struct_size = MemoryLayout<vtrn_device_info_t>.size
        #expect(vtrn_device_get_info(device, &info) == VTRN_SUCCESS)
        #expect(info.architecture == VTRN_ARCH_TRN2 && info.core_count == 8 && info.first_core == 2)
        #expect(withUnsafeBytes(of: info.name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) } == "Trainium2")
        var core = vtrn_core_info_t()
        core.struct_size = MemoryLayout<vtrn_core_info_t>.size
        #expect(vtrn_device_get_core_info(device, 7, &core) == VTRN_SUCCESS)
        #expect(core.global_index == 9 && core.visible == 1 && core.engines == 0xf)
    }

    @Test func errorPathsGiveStatusAndMessage() throws {
        let runtime = try makeRuntime("trn1")
        var device: vtrn_device_t?
        #expect(vtrn_device_get(runtime, 3, &device) == VTRN_ERROR_NOT_FOUND)
        #expect(lastError() == "vtrn_device_get: device 3 does not exist: the topology \"trn1\" has 1 device (only device 0)")
        #expect(device == nil, "out-parameter untouched on failure")
        #expect(vtrn_device_get(runtime, 0, nil) == VTRN_ERROR_INVALID_ARGUMENT)
        #expect(lastError() == "vtrn_device_get: out is NULL")
        #expect(vtrn_device_get(runtime, 0, &device) == VTRN_SUCCESS)

        var info = vtrn_device_info_t()
        info.struct_size = 8
        #expect(vtrn_device_get_info(device, &info) == VTRN_ERROR_INVALID_ARGUMENT)
        #expect(lastError().contains("info.struct_size is 8, smaller than 224"))

        #expect(vtrn_runtime_destroy(runtime) == VTRN_SUCCESS)
        info.struct_size = MemoryLayout<vtrn_device_info_t>.size
        #expect(vtrn_device_get_info(device, &info) == VTRN_ERROR_INVALID_HANDLE)
        #expect(lastError().contains("is stale: runtime"))
        #expect(vtrn_runtime_destroy(runtime) == VTRN_ERROR_INVALID_HANDLE)
        #expect(lastError().hasSuffix("is stale: it was destroyed"))
        #expect(vtrn_runtime_destroy(nil) == VTRN_SUCCESS)
        var count: UInt32 = 77
        #expect(vtrn_device_count(OpaquePointer(bitPattern: 0xdead_beef), &count) == VTRN_ERROR_INVALID_HANDLE)
        #expect(count == 77)
        #expect(vtrn_device_count(device, &count) == VTRN_ERROR_INVALID_HANDLE)
        #expect(lastError().contains("is a vtrn_device_t, not a vtrn_runtime_t"))
    }

    @Test func lastErrorIsPerThread() async {
        let messages = await withTaskGroup(of: (UInt32, String).self) { group in
            for index in UInt32(1)...4 {
                group.addTask {
                    var runtime: vtrn_runtime_t?
                    let topology = "trn\(index + 4)"
                    // Each task runs its failing call and reads the message on the same thread.
                    let message: String = topology.withCString { text in
                        var options = vtrn_runtime_options_t(struct_size: 32, topology: text, visible_cores: nil,
                                                             log_level: VTRN_LOG_LEVEL_DEFAULT)
                        _ = vtrn_runtime_create(&options, &runtime)
                        return String(cString: vtrn_last_error())
                    }
                    return (index, message)
                }
            }
            return await group.reduce(into: [(UInt32, String)]()) { $0.append($1) }
        }
        for (index, message) in messages { #expect(message.contains("\"trn\(index + 4)\"")) }
    }
}
