import CVtrnSystem
import VtrnDevice

#if canImport(Glibc)
import Glibc
#endif

/// How much the runtime says on stderr. Raw values are `vtrn_log_level_t`'s.
public enum LogLevel: Int, Sendable, Comparable, CaseIterable, CustomStringConvertible {
    case error = 1, warning, info, debug, trace

    public var description: String {
        switch self {
        case .error: "error"
        case .warning: "warning"
        case .info: "info"
        case .debug: "debug"
        case .trace: "trace"
        }
    }

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }

    public static func parse(_ text: String, source: String = "VTRN_LOG_LEVEL") throws(VtrnError) -> LogLevel {
        let name = text.trimmingSpaces.lowercased()
        if let level = allCases.first(where: { $0.description == name }) { return level }
        if name == "warn" { return .warning }
        throw .invalidArgument("\(source)=\"\(text)\" is not a log level; accepted: error, warning, info, debug, trace")
    }
}

/// What a caller may set in code; nil fields come from the environment, then defaults.
public struct RuntimeOptions: Sendable, Equatable {
    public var topology: String?
    public var visibleCores: String?
    public var logLevel: LogLevel?

    public init(topology: String? = nil, visibleCores: String? = nil, logLevel: LogLevel? = nil) {
        self.topology = topology
        self.visibleCores = visibleCores
        self.logLevel = logLevel
    }
}

/// The configuration in force for one runtime, resolved from options, environment and defaults.
public struct RuntimeConfiguration: Sendable, Equatable {
    public static let defaultTopology = "trn1"
    public static let defaultExecTimeoutMilliseconds: UInt64 = 30_000

    public let topology: Topology
    /// NUMA node of each device.
    public let deviceNodes: [Int]
    public let visibleCores: CoreSet
    public let logLevel: LogLevel
    /// nil: executions never time out (VTRN_EXEC_TIMEOUT_MS=0).
    public let execTimeoutMilliseconds: UInt64?
    /// Where to write a trace, or nil.
    public let tracePath: String?
    /// Where core claims are recorded for every process of the host (VTRN_LOCK_DIR, else the
    /// first usable of /run/vtrn, $XDG_RUNTIME_DIR/vtrn, /tmp/vtrn-UID); made if missing.
    public let lockDirectory: String
    /// Faults to inject into the devices when the runtime is created (VTRN_FAULTS).
    public let faults: [DeviceFault]
    /// The all-reduce algorithm of the runtime's communicators (VTRN_CC_ALGORITHM: ring, the
    /// default, or torus).
    public var collectiveAlgorithm: CollectiveAlgorithm = .ring
    /// Whether collectives in one process run the algorithm's steps one by one, each rank's DMA
    /// sending to its neighbour with a barrier between steps (VTRN_CC_STEPS=1), or move each
    /// rank's share directly (0, the default): the same results either way.
    public var collectiveSteps = false

    public var coreCount: Int { topology.devices.reduce(0) { $0 + $1.architecture.preset.coresPerDevice } }

    /// The environment variables vtrn reads (XDG_RUNTIME_DIR for the default lock directory).
    public static let variableNames = ["VTRN_TOPOLOGY", "VTRN_VISIBLE_CORES", "VTRN_LOG_LEVEL",
                                       "VTRN_EXEC_TIMEOUT_MS", "VTRN_TRACE", "VTRN_MONITOR_PERIOD_MS", "VTRN_LOCK_DIR",
                                       "XDG_RUNTIME_DIR", "VTRN_FAULTS", "VTRN_CC_ALGORITHM", "VTRN_CC_STEPS"]

    /// This process's values of `variableNames`.
    /// An empty variable counts as unset, as shells make it easy to leave one empty.
    public static func processEnvironment() -> [String: String] {
        var environment: [String: String] = [:]
        for name in variableNames {
            if let value = getenv(name), value.pointee != 0 { environment[name] = String(cString: value) }
        }
        return environment
    }

    /// Resolves options over `environment` over defaults. A function of its inputs, but for the
    /// lock directory, which it makes when missing and checks that it can write.
    public static func resolve(options: RuntimeOptions, environment: [String: String],
                               host: HostTopology) throws(VtrnError) -> RuntimeConfiguration {
        let topologySource = options.topology != nil ? "options.topology" : "VTRN_TOPOLOGY"
        let topologyText = options.topology ?? environment["VTRN_TOPOLOGY"] ?? defaultTopology
        let topology = try Topology.parse(topologyText, source: topologySource)
        let nodes = try host.assignNodes(to: topology, source: topologySource)

        let coreCount = topology.devices.reduce(0) { $0 + $1.architecture.preset.coresPerDevice }
        let visible: CoreSet
        if let text = options.visibleCores ?? environment["VTRN_VISIBLE_CORES"] {
            let source = options.visibleCores != nil ? "options.visible_cores" : "VTRN_VISIBLE_CORES"
            visible = try CoreSet.parse(text, coreCount: coreCount, topology: topology.description, source: source)
        } else {
            visible = CoreSet(0..<coreCount)
        }

        var level = LogLevel.warning
        if let chosen = options.logLevel {
            level = chosen
        } else if let text = environment["VTRN_LOG_LEVEL"] {
            level = try LogLevel.parse(text)
        }

        var timeout: UInt64? = defaultExecTimeoutMilliseconds
        if let text = environment["VTRN_EXEC_TIMEOUT_MS"] {
            // Below 2^44 ms (~557 years) so that the value in nanoseconds fits in 64 bits.
            let digits = text.trimmingSpaces
            guard !digits.isEmpty, digits.allSatisfy(\.isASCIIDigit), let value = UInt64(digits), value < (1 << 44) else {
                throw .invalidArgument("VTRN_EXEC_TIMEOUT_MS=\"\(text)\" is not a number of milliseconds from 0 to "
                                       + "\((UInt64(1) << 44) - 1); accepted: 0 (no timeout) or a positive number such as 30000")
            }
            timeout = value == 0 ? nil : value
        }

        var trace: String?
        if let path = environment["VTRN_TRACE"], !path.isEmpty {
            let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
            guard access(directory.isEmpty ? "/" : directory, W_OK) == 0 else {
                throw .invalidArgument("VTRN_TRACE=\"\(path)\": the folder \"\(directory)\" does not exist or cannot be "
                                       + "written; accepted: a file path in a writable folder, or empty for no trace")
            }
            trace = path
        }

        let lockDirectory = try LockDirectory.resolve(environment: environment)
        let faults = try environment["VTRN_FAULTS"].map { (text: String) throws(VtrnError) in
            try DeviceFault.parse(text, topology: topology)
        } ?? []

        var configuration = RuntimeConfiguration(topology: topology, deviceNodes: nodes, visibleCores: visible,
                                                 logLevel: level, execTimeoutMilliseconds: timeout, tracePath: trace,
                                                 lockDirectory: lockDirectory, faults: faults)
        if let text = environment["VTRN_CC_ALGORITHM"] {
            guard let algorithm = CollectiveAlgorithm(rawValue: text.trimmingSpaces.lowercased()) else {
                throw .invalidArgument("VTRN_CC_ALGORITHM=\"\(text)\" is not an all-reduce algorithm; accepted: ring (the default: one "
                                       + "ring over every rank), torus (rows of 4 ranks, then columns: groups of 8, 12 or 16 ranks in "
                                       + "one process)")
            }
            configuration.collectiveAlgorithm = algorithm
        }
        if let text = environment["VTRN_CC_STEPS"] {
            switch text.trimmingSpaces {
            case "0", "": configuration.collectiveSteps = false
            case "1": configuration.collectiveSteps = true
            default:
                throw .invalidArgument("VTRN_CC_STEPS=\"\(text)\" is neither 0 (the default: each rank moves its share of a collective "
                                       + "directly) nor 1 (the algorithm's steps one by one, as the chip runs them)")
            }
        }
        return configuration
    }
}
