import CVtrn
import CVtrnSystem
import Vtrn

#if canImport(Glibc)
import Glibc
#endif

// The one funnel every export goes through: runs the body, and turns a thrown VtrnError into
// its status plus this thread's last-error message, prefixed with the C function's name.
// Bodies validate their arguments before touching anything that could trap, so no Swift error
// or trap reaches C.
@inline(__always)
func exported(_ function: StaticString = #function, _ body: () throws -> Void) -> vtrn_status_t {
    do {
        try body()
        return VTRN_SUCCESS
    } catch let error as VtrnError {
        fail(error, in: function)
        return vtrn_status_t(rawValue: UInt32(error.status.rawValue))
    } catch {
        fail(VtrnError(.internal, "unexpected error \(error)"), in: function)
        return VTRN_ERROR_INTERNAL
    }
}

@inline(never)
func fail(_ error: VtrnError, in function: StaticString) {
    var name = "\(function)"
    if let parenthesis = name.firstIndex(of: "(") { name = String(name[..<parenthesis]) }
    vtrnsys_set_last_error("\(name): \(error.message)")
}

extension UnsafeMutablePointer {
    /// The out-parameter, or `.invalidArgument` naming it when it is NULL.
    static func required(_ pointer: UnsafeMutablePointer?, _ name: String) throws(VtrnError) -> UnsafeMutablePointer {
        guard let pointer else { throw .invalidArgument("\(name) is NULL") }
        return pointer
    }
}

func handleBits(_ handle: OpaquePointer?) -> UInt64 {
    UInt64(UInt(bitPattern: handle.map { UnsafeRawPointer($0) }))
}

func handle(_ bits: UInt64) -> OpaquePointer? {
    OpaquePointer(bitPattern: UInt(bits))
}

// MARK: - Versioned structs (struct_size first)

/// A C struct that begins with `size_t struct_size`. `firstVersionSize` is the size of the
/// struct's first published version, the smallest a caller may pass: it must never change when
/// fields are appended (a test pins the numbers).
protocol VersionedStruct {
    static var cName: String { get }
    static var firstVersionSize: Int { get }
    var struct_size: Int { get set }
    init()
}

extension VersionedStruct {
    /// The caller's struct_size, read on its own: `pointee` would copy the whole struct as this
    /// header knows it, reading past a caller's smaller (older, or wrongly sized) struct. A size_t:
    /// a huge value is large, not negative.
    static func structSize(_ pointer: UnsafeRawPointer) -> UInt {
        pointer.loadUnaligned(as: UInt.self)
    }

    /// The caller's input struct, read up to its own struct_size over `defaults`; nil for NULL.
    static func read(_ pointer: UnsafePointer<Self>?, name: String, defaults: Self) throws(VtrnError) -> Self? {
        guard let pointer else { return nil }
        let size = structSize(pointer)
        try checkSize(size, name: name)
        var value = defaults
        withUnsafeMutableBytes(of: &value) { destination in
            destination.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: Int(Swift.min(size, UInt(MemoryLayout<Self>.size)))))
        }
        return value
    }

    /// Checks an output struct's struct_size before any work is done; returns the caller's size.
    static func checkOutput(_ pointer: UnsafeMutablePointer<Self>?, name: String) throws(VtrnError) -> UnsafeMutablePointer<Self> {
        let pointer = try UnsafeMutablePointer.required(pointer, name)
        try checkSize(structSize(pointer), name: name)
        return pointer
    }

    /// Writes `value` into the caller's struct, filling only what its struct_size holds.
    func write(to pointer: UnsafeMutablePointer<Self>) {
        let size = Self.structSize(pointer)
        var value = self
        value.struct_size = Int(bitPattern: size)
        let count = Int(Swift.min(size, UInt(MemoryLayout<Self>.size)))
        withUnsafeBytes(of: &value) { source in
            UnsafeMutableRawPointer(pointer).copyMemory(from: source.baseAddress!, byteCount: count)
        }
    }

    private static func checkSize(_ size: UInt, name: String) throws(VtrnError) {
        guard size >= UInt(firstVersionSize) else {
            let macro = cName.dropLast(2).uppercased() + "_INIT"
            throw .invalidArgument("\(name).struct_size is \(size), smaller than \(firstVersionSize), the size of the first "
                                   + "\(cName); initialize it with \(macro)")
        }
    }
}

extension vtrn_handle_counts_t: VersionedStruct {
    static let cName = "vtrn_handle_counts_t"
    static let firstVersionSize = 88
}
extension vtrn_runtime_options_t: VersionedStruct {
    static let cName = "vtrn_runtime_options_t"
    static let firstVersionSize = 32
}
extension vtrn_runtime_info_t: VersionedStruct {
    static let cName = "vtrn_runtime_info_t"
    static let firstVersionSize = 288
}
extension vtrn_device_info_t: VersionedStruct {
    static let cName = "vtrn_device_info_t"
    static let firstVersionSize = 224
}
extension vtrn_core_info_t: VersionedStruct {
    static let cName = "vtrn_core_info_t"
    static let firstVersionSize = 88
}
extension vtrn_core_holder_t: VersionedStruct {
    static let cName = "vtrn_core_holder_t"
    static let firstVersionSize = 280
}

extension vtrn_host_buffer_options_t: VersionedStruct {
    static let cName = "vtrn_host_buffer_options_t"
    static let firstVersionSize = 24
}
extension vtrn_host_buffer_info_t: VersionedStruct {
    static let cName = "vtrn_host_buffer_info_t"
    static let firstVersionSize = 208
}
extension vtrn_device_memory_info_t: VersionedStruct {
    static let cName = "vtrn_device_memory_info_t"
    static let firstVersionSize = 40
}
extension vtrn_memory_usage_t: VersionedStruct {
    static let cName = "vtrn_memory_usage_t"
    static let firstVersionSize = 72
}
extension vtrn_dma_queue_options_t: VersionedStruct {
    static let cName = "vtrn_dma_queue_options_t"
    static let firstVersionSize = 24
}
extension vtrn_dma_queue_info_t: VersionedStruct {
    static let cName = "vtrn_dma_queue_info_t"
    static let firstVersionSize = 64
}

extension vtrn_dma_copy_options_t: VersionedStruct {
    static let cName = "vtrn_dma_copy_options_t"
    static let firstVersionSize = 32
}

extension vtrn_execution_info_t: VersionedStruct {
    static let cName = "vtrn_execution_info_t"
    static let firstVersionSize = 128
}

extension vtrn_fault_t: VersionedStruct {
    static let cName = "vtrn_fault_t"
    static let firstVersionSize = 56
}
extension vtrn_device_error_counters_t: VersionedStruct {
    static let cName = "vtrn_device_error_counters_t"
    static let firstVersionSize = 72
}

// MARK: - Strings

/// Copies `text` into a fixed C char array (a tuple), truncating at a UTF-8 boundary and always
/// NUL-terminating.
func copyCString<Tuple>(_ text: String, into field: inout Tuple) {
    withUnsafeMutableBytes(of: &field) { bytes in
        let capacity = bytes.count - 1
        var utf8 = Array(text.utf8.prefix(capacity))
        while let last = utf8.last, utf8.count == capacity, last & 0xC0 == 0x80 { utf8.removeLast() }
        if let last = utf8.last, utf8.count < text.utf8.count, last & 0xC0 == 0xC0 { utf8.removeLast() }
        bytes.copyBytes(from: utf8)
        bytes[utf8.count] = 0
    }
}

/// A C string argument; `.invalidArgument` naming it when it is not valid UTF-8.
func string(_ pointer: UnsafePointer<CChar>?, _ name: String) throws(VtrnError) -> String? {
    guard let pointer else { return nil }
    guard let text = String(validatingCString: pointer) else { throw .invalidArgument("\(name) is not valid UTF-8") }
    return text
}

/// Static C strings for `vtrn_status_string`, made once and never freed.
struct StaticCStrings: @unchecked Sendable {
    let pointers: [UnsafePointer<CChar>]
    init(_ texts: [String]) { pointers = texts.map { UnsafePointer(strdup($0)!) } }
}
extension vtrn_comm_info_t: VersionedStruct {
    static let cName = "vtrn_comm_info_t"
    static let firstVersionSize = 40
}
