import CVtrnSystem
import Synchronization
import VtrnDevice

#if canImport(Glibc)
import Glibc
#endif

// Core claims across processes. Each core of the host's virtual hardware has a lock file in the
// lock directory; a process claims the core by taking an open-file-description lock on it
// (fcntl F_OFD_SETLK, through CVtrnSystem) and then writes its pid and command line into it.
// The kernel drops the lock when the descriptor closes, so a process that dies, even by
// SIGKILL, frees its cores at once. Descriptors are O_CLOEXEC: a program the holder execs does
// not inherit its claims. Lock files are never deleted (deleting one under a holder would let a
// second process lock a new file of the same name).
//
// OFD locks rather than flock(2): both belong to the open file description and die with it, but
// only fcntl can ask whether a file is locked without taking a lock (F_OFD_GETLK). A probe that
// took a shared flock for an instant, as `vtrn ls` would need, could make a concurrent claim fail.

/// Who holds a core, as `Device.coreHolder(_:)` reports it: a runtime of this process or of
/// another one.
public struct CoreHolder: Sendable, Equatable, CustomStringConvertible {
    /// The holding process; nil when its lock file names no live process (the holder is still
    /// writing it, or it was inherited by a child forked without exec after the writer exited).
    public var processID: Int32?
    /// The holder's command line, arguments separated by spaces; "" when unknown.
    public var commandLine: String
    /// The holding runtime's number in its process ("runtime 3" in messages), when known.
    public var runtime: Int?
    /// True when the holder is a runtime of this process.
    public var isThisProcess: Bool

    public init(processID: Int32?, commandLine: String, runtime: Int?, isThisProcess: Bool) {
        self.processID = processID
        self.commandLine = commandLine
        self.runtime = runtime
        self.isThisProcess = isThisProcess
    }

    /// "runtime 2 of process 1234 (python3 train.py)"; "process 1234 (...)" when the runtime is
    /// unknown; "a process that has not recorded itself" when the pid is.
    public var description: String {
        guard let processID else { return "a process that has not recorded itself in the lock file" }
        var text = "process \(processID)"
        if !commandLine.isEmpty { text += " (\(commandLine))" }
        if let runtime { text = "runtime \(runtime) of " + text }
        return text
    }
}

/// Where claims are recorded for every process of the host: `VTRN_LOCK_DIR`, else the first
/// usable of /run/vtrn, $XDG_RUNTIME_DIR/vtrn and /tmp/vtrn-UID.
enum LockDirectory {
    /// A default directory: its path and whether it must be this user's alone.
    struct Candidate: Sendable, Equatable {
        let path: String
        /// /tmp is shared by everyone: vtrn makes its directory there 0700 and refuses one that
        /// another user owns (who could otherwise read or hold our claims).
        let isPrivate: Bool
    }

    /// The defaults, in order. /run/vtrn is shared by the host's users: root makes it (0755, so
    /// only root's processes use it) and an administrator may make it writable for all (1777) to
    /// make claims contend between users. Otherwise each user has their own directory.
    static func defaultCandidates(environment: [String: String], userID: uid_t) -> [Candidate] {
        var candidates = [Candidate(path: "/run/vtrn", isPrivate: false)]
        if let runtimeDirectory = environment["XDG_RUNTIME_DIR"], runtimeDirectory.hasPrefix("/") {
            candidates.append(Candidate(path: normalized(runtimeDirectory) + "/vtrn", isPrivate: false))
        }
        candidates.append(Candidate(path: "/tmp/vtrn-\(userID)", isPrivate: true))
        return candidates
    }

    /// The default list as messages and the header spell it.
    static let defaultsText = "/run/vtrn if this process can write it, else $XDG_RUNTIME_DIR/vtrn, else /tmp/vtrn-UID"

    /// The lock directory for a runtime configured with `environment`, made if missing. Fails
    /// with `.invalidArgument` when VTRN_LOCK_DIR cannot be used, or no default can: claims
    /// never go unrecorded.
    static func resolve(environment: [String: String]) throws(VtrnError) -> String {
        if let text = environment["VTRN_LOCK_DIR"], !text.isEmpty {
            let path = absolute(text)
            if let problem = prepare(path, isPrivate: false, createMode: 0o777) {
                throw .invalidArgument("VTRN_LOCK_DIR=\"\(text)\": cannot keep core claims in \"\(path)\": \(problem); "
                                       + "accepted: a directory this process can write (made if missing), or empty for "
                                       + "the default (\(defaultsText))")
            }
            return path
        }
        var problems: [String] = []
        for candidate in defaultCandidates(environment: environment, userID: getuid()) {
            guard let problem = prepare(candidate.path, isPrivate: candidate.isPrivate,
                                        createMode: candidate.isPrivate ? 0o700 : 0o755) else { return candidate.path }
            problems.append("\"\(candidate.path)\": \(problem)")
        }
        throw .invalidArgument("no directory for core claims is usable (\(problems.joined(separator: "; "))); "
                               + "set VTRN_LOCK_DIR to a directory this process can write")
    }

    /// Makes `path` and its missing parents, then checks that it is a directory this process can
    /// write. nil when it can be used, else what is wrong ("Permission denied (mkdir /run/vtrn)").
    static func prepare(_ path: String, isPrivate: Bool, createMode: mode_t) -> String? {
        var prefix = ""
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, createMode) != 0 && errno != EEXIST {
                let failure = errno
                // An existing directory we cannot write into a parent of is fine: only the last
                // component has to be ours.
                var status = stat()
                if stat(prefix, &status) == 0 && status.st_mode & S_IFMT == S_IFDIR { continue }
                return "\(errorText(failure)) (mkdir \(prefix))"
            }
        }
        var status = stat()
        if isPrivate {
            guard lstat(path, &status) == 0 else { return errorText(errno) }
            guard status.st_mode & S_IFMT == S_IFDIR else { return "it is not a directory (or is a symbolic link)" }
            guard status.st_uid == getuid() else { return "it belongs to user \(status.st_uid), not to this user (\(getuid()))" }
            guard status.st_mode & 0o077 == 0 else {
                return "its mode is \(String(status.st_mode & 0o7777, radix: 8)): other users could use it; "
                    + "it must be 700"
            }
        } else {
            guard stat(path, &status) == 0 else { return errorText(errno) }
            guard status.st_mode & S_IFMT == S_IFDIR else { return errorText(ENOTDIR) }
        }
        guard access(path, W_OK | X_OK) == 0 else { return errorText(errno) }
        return nil
    }

    /// `text` made absolute against the working directory, without trailing slashes.
    static func absolute(_ text: String) -> String {
        if text.hasPrefix("/") { return normalized(text) }
        // A buffer of our own: getcwd(NULL, 0)'s allocation is glibc's internal malloc, which
        // AddressSanitizer does not see, so freeing it is reported as a free of foreign memory.
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return text }
        return normalized(String(cString: buffer) + "/" + text)
    }

    private static func normalized(_ path: String) -> String {
        var path = path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        return path
    }
}

/// The lock file of one core while this process claims it: open, locked, and holding this
/// process's record. `release()` gives the claim up.
final class CoreLock: Sendable {
    let path: String
    /// -1 once released.
    private let descriptor: Mutex<Int32>
    /// The process that took the lock and wrote the record.
    private let owner: Int32

    private init(path: String, descriptor: Int32, owner: Int32) {
        self.path = path
        self.descriptor = Mutex(descriptor)
        self.owner = owner
    }

    deinit { release() }

    /// The lock file's name for core `core` of the device at `index` with this architecture on
    /// this NUMA node: the identity SharedDevice gives a device in one process, so that two
    /// runtimes contend for a core across processes exactly when they would share it in one.
    static func fileName(architecture: Architecture, device index: Int, numaNode: Int, core: Int) -> String {
        "\(architecture)@node\(numaNode)-device\(index)-core\(core).lock"
    }

    /// Takes the lock file at `path` for runtime `runtime` of this process: the lock, or nil when
    /// another open of the file (another process, or a child it forked) holds it. Throws the
    /// system's reason when the file cannot be opened or locked.
    static func acquire(path: String, runtime: Int) throws(LockFileError) -> CoreLock? {
        let descriptor = try openForClaim(path)
        guard vtrnsys_file_lock_try_exclusive(descriptor) == 0 else {
            let failure = errno
            close(descriptor)
            if failure == EAGAIN || failure == EACCES { return nil }
            throw LockFileError(path: path, operation: "lock", code: failure)
        }
        let record = HolderRecord(processID: getpid(), runtime: runtime, commandLine: currentCommandLine())
        let bytes = Array(record.text.utf8)
        // Written whole, then cut to length: a reader never sees an empty record while we hold it.
        _ = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
        _ = ftruncate(descriptor, off_t(bytes.count))
        return CoreLock(path: path, descriptor: descriptor, owner: record.processID)
    }

    /// Gives the claim up: empties the record (so the file reads as free) and closes the file,
    /// which drops the lock once no other descriptor of it is open. Idempotent. A child forked
    /// without exec shares the file (and the lock) with its parent: it closes its copy but leaves
    /// the parent's record alone.
    func release() {
        let descriptor = self.descriptor.withLock { descriptor in
            defer { descriptor = -1 }
            return descriptor
        }
        guard descriptor >= 0 else { return }
        if getpid() == owner { _ = ftruncate(descriptor, 0) }
        close(descriptor)
    }

    /// Who holds the lock file at `path`, asked without taking any lock; nil when nobody does.
    static func holder(path: String) throws(LockFileError) -> CoreHolder? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if descriptor < 0 {
            if errno == ENOENT { return nil } // never claimed
            throw LockFileError(path: path, operation: "open", code: errno)
        }
        defer { close(descriptor) }
        // A new holder writes its record right after it locks: give it up to ~50 ms.
        for _ in 0..<50 {
            switch vtrnsys_file_lock_is_locked(descriptor) {
            case 0: return nil
            case 1: break
            default: throw LockFileError(path: path, operation: "query the lock of", code: errno)
            }
            if let record = HolderRecord(text: readAll(descriptor)), isAlive(record.processID) {
                return CoreHolder(processID: record.processID, commandLine: record.commandLine, runtime: record.runtime,
                                  isThisProcess: record.processID == getpid())
            }
            usleep(1000)
        }
        return CoreHolder(processID: nil, commandLine: "", runtime: nil, isThisProcess: false)
    }

    /// Opens the lock file for reading and writing, making it (mode 0666, so that the users who
    /// share a directory can all claim) when missing. An existing file is opened without O_CREAT,
    /// which fs.protected_regular refuses in world-writable sticky directories for another
    /// user's file.
    private static func openForClaim(_ path: String) throws(LockFileError) -> Int32 {
        for _ in 0..<8 {
            let existing = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            if existing >= 0 { return existing }
            guard errno == ENOENT else { throw LockFileError(path: path, operation: "open", code: errno) }
            let made = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o666)
            if made >= 0 {
                _ = fchmod(made, 0o666) // past the umask
                return made
            }
            guard errno == EEXIST else { throw LockFileError(path: path, operation: "create", code: errno) }
            // Another process made it between our two opens: open it again.
        }
        throw LockFileError(path: path, operation: "open", code: EAGAIN)
    }

    private static func isAlive(_ processID: Int32) -> Bool {
        processID > 0 && (kill(processID, 0) == 0 || errno == EPERM)
    }

    private static func readAll(_ descriptor: Int32) -> String {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 64 * 1024 {
            let count = chunk.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, off_t(bytes.count)) }
            if count <= 0 { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A lock file the system refused to open, lock or query: its path and the reason.
struct LockFileError: Error {
    let path: String
    let operation: String
    let code: Int32

    /// "cannot open the lock file /run/vtrn/x.lock: Permission denied".
    var message: String { "cannot \(operation) the lock file \(path): \(errorText(code))" }
}

/// What a holder writes into its lock file, one "key value" line each:
/// "pid 1234\nruntime 2\ncommand python3 train.py\nvtrn 0.1.0\n". Readers ignore unknown keys.
struct HolderRecord: Equatable {
    var processID: Int32
    var runtime: Int?
    var commandLine: String

    init(processID: Int32, runtime: Int?, commandLine: String) {
        self.processID = processID
        self.runtime = runtime
        self.commandLine = commandLine
    }

    /// Parses a record; nil without a pid line.
    init?(text: String) {
        var processID: Int32?
        var runtime: Int?
        var commandLine = ""
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "pid": processID = Int32(parts[1])
            case "runtime": runtime = Int(parts[1])
            case "command": commandLine = String(parts[1])
            default: break
            }
        }
        guard let processID else { return nil }
        self.init(processID: processID, runtime: runtime, commandLine: commandLine)
    }

    var text: String {
        var text = "pid \(processID)\n"
        if let runtime { text += "runtime \(runtime)\n" }
        return text + "command \(commandLine)\nvtrn \(version)\n"
    }
}

/// This process's command line from /proc/self/cmdline, arguments joined by spaces, control
/// characters made spaces, at most 1024 bytes.
func currentCommandLine() -> String {
    let descriptor = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return "" }
    defer { close(descriptor) }
    var bytes = [UInt8](repeating: 0, count: 1024)
    let count = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
    guard count > 0 else { return "" }
    var line = Array(bytes[..<count])
    while line.last == 0 { line.removeLast() }
    for index in line.indices where line[index] < 0x20 || line[index] == 0x7f { line[index] = 0x20 }
    return String(decoding: line, as: UTF8.self)
}

/// strerror's text for an errno value.
func errorText(_ code: Int32) -> String { String(cString: strerror(code)) }
