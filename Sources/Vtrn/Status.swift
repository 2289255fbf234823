/// The outcome of a call, with the same numbers as `vtrn_status_t` in include/vtrn.h (a test
/// checks every case against the header).
public enum Status: Int32, Sendable, CaseIterable, CustomStringConvertible {
    case success = 0
    case notReady = 1
    case invalidArgument = 2
    case invalidHandle = 3
    case notFound = 4
    case outOfBounds = 5
    case outOfHostMemory = 6
    case outOfDeviceMemory = 7
    case busy = 8
    case timeout = 9
    case queueFull = 10
    case unsupported = 11
    case invalidProgram = 12
    case dmaFault = 13
    case hardware = 14
    case deadlock = 15
    case `internal` = 16
    case reset = 17
    case deviceLost = 18

    /// The C name, e.g. "VTRN_ERROR_INVALID_HANDLE".
    public var name: String {
        switch self {
        case .success: "VTRN_SUCCESS"
        case .notReady: "VTRN_NOT_READY"
        case .invalidArgument: "VTRN_ERROR_INVALID_ARGUMENT"
        case .invalidHandle: "VTRN_ERROR_INVALID_HANDLE"
        case .notFound: "VTRN_ERROR_NOT_FOUND"
        case .outOfBounds: "VTRN_ERROR_OUT_OF_BOUNDS"
        case .outOfHostMemory: "VTRN_ERROR_OUT_OF_HOST_MEMORY"
        case .outOfDeviceMemory: "VTRN_ERROR_OUT_OF_DEVICE_MEMORY"
        case .busy: "VTRN_ERROR_BUSY"
        case .timeout: "VTRN_ERROR_TIMEOUT"
        case .queueFull: "VTRN_ERROR_QUEUE_FULL"
        case .unsupported: "VTRN_ERROR_UNSUPPORTED"
        case .invalidProgram: "VTRN_ERROR_INVALID_PROGRAM"
        case .dmaFault: "VTRN_ERROR_DMA_FAULT"
        case .hardware: "VTRN_ERROR_HARDWARE"
        case .deadlock: "VTRN_ERROR_DEADLOCK"
        case .internal: "VTRN_ERROR_INTERNAL"
        case .reset: "VTRN_ERROR_RESET"
        case .deviceLost: "VTRN_ERROR_DEVICE_LOST"
        }
    }

    /// The fixed text `vtrn_status_string` returns.
    public var description: String {
        switch self {
        case .success: "success"
        case .notReady: "not ready"
        case .invalidArgument: "invalid argument"
        case .invalidHandle: "invalid handle"
        case .notFound: "not found"
        case .outOfBounds: "out of bounds"
        case .outOfHostMemory: "out of host memory"
        case .outOfDeviceMemory: "out of device memory"
        case .busy: "busy"
        case .timeout: "timeout"
        case .queueFull: "queue full"
        case .unsupported: "unsupported"
        case .invalidProgram: "invalid program"
        case .dmaFault: "DMA fault"
        case .hardware: "hardware error"
        case .deadlock: "deadlock"
        case .internal: "internal error in vtrn"
        case .reset: "device reset"
        case .deviceLost: "device lost"
        }
    }
}

/// Every failure of the runtime: a status and a message that says what to do about it.
public struct VtrnError: Error, Sendable, Equatable, CustomStringConvertible {
    public let status: Status
    public let message: String

    public init(_ status: Status, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { "\(status.name): \(message)" }

    public static func invalidArgument(_ message: String) -> VtrnError { .init(.invalidArgument, message) }
    public static func notFound(_ message: String) -> VtrnError { .init(.notFound, message) }
    public static func unsupported(_ message: String) -> VtrnError { .init(.unsupported, message) }
    public static func internalError(_ message: String) -> VtrnError { .init(.internal, message) }
}

/// "1 device", "2 devices": counts in messages.
func counted(_ count: some BinaryInteger, _ noun: String) -> String {
    "\(count) \(noun)\(count == 1 ? "" : "s")"
}

/// "(only device 0)" or "(0-3)": the valid indices of `count` things.
func indexRange(_ count: Int, _ noun: String) -> String {
    count == 1 ? "(only \(noun) 0)" : "(0-\(count - 1))"
}

/// The library's version, as `vtrn_version()` reports it (the header's VTRN_VERSION_* must match;
/// a test checks).
public enum Version {
    public static let major = 0
    public static let minor = 2
    public static let patch = 0
}

/// "0.2.0".
public let version = "\(Version.major).\(Version.minor).\(Version.patch)"
