#if canImport(Glibc)
import Glibc
#endif

/// Messages to stderr, as "vtrn[runtime 1] warning: ...", filtered by the runtime's level.
public struct Logger: Sendable {
    public let level: LogLevel
    public let label: String

    public func callAsFunction(_ level: LogLevel, _ message: @autoclosure () -> String) {
        guard level <= self.level else { return }
        // One write(2) per line, so lines from several threads do not interleave.
        var line = "vtrn[\(label)] \(level): \(message())\n"
        line.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
    }
}
