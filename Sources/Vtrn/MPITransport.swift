import CVtrnSystem
import Synchronization
import VtrnDevice

#if canImport(Glibc)
import Glibc
#endif

/// Open MPI, loaded when a communicator first spans processes (`vtrn_comm_create_mpi`): libvtrn
/// does not link it, so programs that never use MPI never need it. `VTRN_MPI_LIBRARY` names the
/// library (default `libmpi.so.40`, Debian's Open MPI 4). Open MPI's ABI only: its handles are
/// pointers to predefined globals (`&ompi_mpi_comm_world`); MPICH's integer handles are not.
///
/// If the program initialised MPI itself, vtrn uses it (it needs MPI_THREAD_SERIALIZED at least:
/// vtrn's calls are serialised by one lock, and come from its core threads; with less than
/// MPI_THREAD_MULTIPLE the program must not call MPI while collectives run). Otherwise vtrn calls
/// MPI_Init_thread (asking for MPI_THREAD_MULTIPLE) and MPI_Finalize at exit.
final class MPILibrary: @unchecked Sendable {
    typealias Handle = UnsafeMutableRawPointer
    let initialized: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let finalized: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let initThread: @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?,
                                    Int32, UnsafeMutablePointer<Int32>) -> Int32
    let finalize: @convention(c) () -> Int32
    let queryThread: @convention(c) (UnsafeMutablePointer<Int32>) -> Int32
    let commRank: @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
    let commSize: @convention(c) (Handle, UnsafeMutablePointer<Int32>) -> Int32
    let commIdup: @convention(c) (Handle, UnsafeMutablePointer<Handle?>, UnsafeMutablePointer<Handle?>) -> Int32
    let commFree: @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    let setErrhandler: @convention(c) (Handle, Handle) -> Int32
    let isend: @convention(c) (UnsafeRawPointer?, Int32, Handle, Int32, Int32, Handle, UnsafeMutablePointer<Handle?>) -> Int32
    let irecv: @convention(c) (UnsafeMutableRawPointer?, Int32, Handle, Int32, Int32, Handle, UnsafeMutablePointer<Handle?>) -> Int32
    let iallgather: @convention(c) (UnsafeRawPointer?, Int32, Handle, UnsafeMutableRawPointer?, Int32, Handle, Handle,
                                    UnsafeMutablePointer<Handle?>) -> Int32
    let test: @convention(c) (UnsafeMutablePointer<Handle?>, UnsafeMutablePointer<Int32>, UnsafeMutableRawPointer?) -> Int32
    let cancel: @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    let requestFree: @convention(c) (UnsafeMutablePointer<Handle?>) -> Int32
    let getCount: @convention(c) (UnsafeRawPointer, Handle, UnsafeMutablePointer<Int32>) -> Int32
    let errorString: @convention(c) (Int32, UnsafeMutablePointer<CChar>, UnsafeMutablePointer<Int32>) -> Int32
    let commWorld: Handle
    let byte: Handle
    let int32: Handle
    let errorsReturn: Handle
    /// MPI_REQUEST_NULL: what a completed request becomes.
    let requestNull: Handle
    let path: String

    static let threadSerialized: Int32 = 2
    static let threadMultiple: Int32 = 3

    private init(handle: UnsafeMutableRawPointer, path: String) throws(VtrnError) {
        self.path = path
        func symbol(_ name: String) throws(VtrnError) -> UnsafeMutableRawPointer {
            guard let address = dlsym(handle, name) else {
                throw .unsupported("\(path) has no \(name): vtrn speaks Open MPI's ABI (libmpi.so.40 of openmpi-bin and "
                                   + "libopenmpi-dev); set VTRN_MPI_LIBRARY to an Open MPI library")
            }
            return address
        }
        func function<F>(_ name: String, as: F.Type) throws(VtrnError) -> F { unsafeBitCast(try symbol(name), to: F.self) }
        initialized = try function("MPI_Initialized", as: type(of: initialized))
        finalized = try function("MPI_Finalized", as: type(of: finalized))
        initThread = try function("MPI_Init_thread", as: type(of: initThread))
        finalize = try function("MPI_Finalize", as: type(of: finalize))
        queryThread = try function("MPI_Query_thread", as: type(of: queryThread))
        commRank = try function("MPI_Comm_rank", as: type(of: commRank))
        commSize = try function("MPI_Comm_size", as: type(of: commSize))
        commIdup = try function("MPI_Comm_idup", as: type(of: commIdup))
        commFree = try function("MPI_Comm_free", as: type(of: commFree))
        setErrhandler = try function("MPI_Comm_set_errhandler", as: type(of: setErrhandler))
        isend = try function("MPI_Isend", as: type(of: isend))
        irecv = try function("MPI_Irecv", as: type(of: irecv))
        iallgather = try function("MPI_Iallgather", as: type(of: iallgather))
        test = try function("MPI_Test", as: type(of: test))
        cancel = try function("MPI_Cancel", as: type(of: cancel))
        requestFree = try function("MPI_Request_free", as: type(of: requestFree))
        getCount = try function("MPI_Get_count", as: type(of: getCount))
        errorString = try function("MPI_Error_string", as: type(of: errorString))
        commWorld = try symbol("ompi_mpi_comm_world")
        byte = try symbol("ompi_mpi_byte")
        int32 = try symbol("ompi_mpi_int")
        errorsReturn = try symbol("ompi_mpi_errors_return")
        requestNull = try symbol("ompi_request_null")
    }

    /// The library, loaded and MPI initialised once per process.
    static func shared() throws(VtrnError) -> MPILibrary {
        let result: Result<MPILibrary, VtrnError> = loaded.withLock { loaded in
            if let loaded { return loaded }
            let result = load()
            loaded = result
            return result
        }
        return try result.get()
    }

    private static let loaded = Mutex<Result<MPILibrary, VtrnError>?>(nil)
    /// The library vtrn initialised MPI with, to finalise at exit.
    nonisolated(unsafe) static var finalizeAtExit: (@convention(c) () -> Int32)?

    private static func load() -> Result<MPILibrary, VtrnError> {
        let path = getenv("VTRN_MPI_LIBRARY").map { String(cString: $0) } ?? "libmpi.so.40"
        // RTLD_GLOBAL: Open MPI's own plugins, which it loads next, resolve its symbols.
        guard let handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown reason"
            return .failure(.unsupported("cannot load Open MPI (\(path), VTRN_MPI_LIBRARY): \(reason); install openmpi-bin and "
                                         + "libopenmpi-dev (Scripts/setup does), or name the library in VTRN_MPI_LIBRARY"))
        }
        do throws(VtrnError) {
            let library = try MPILibrary(handle: handle, path: path)
            try library.start()
            return .success(library)
        } catch {
            return .failure(error)
        }
    }

    private func start() throws(VtrnError) {
        var flag: Int32 = 0
        _ = finalized(&flag)
        if flag != 0 { throw .unsupported("MPI was finalised already (MPI_Finalize): communicators across processes need it running") }
        _ = initialized(&flag)
        var provided: Int32 = 0
        if flag == 0 {
            try check(initThread(nil, nil, Self.threadMultiple, &provided), "MPI_Init_thread")
            MPILibrary.finalizeAtExit = finalize
            atexit {
                var done: Int32 = 0
                if let finalize = MPILibrary.finalizeAtExit, (try? MPILibrary.shared())?.finalized(&done) != nil, done == 0 {
                    _ = finalize()
                }
            }
        } else {
            _ = queryThread(&provided)
        }
        guard provided >= Self.threadSerialized else {
            throw .unsupported("MPI was initialised with thread level \(provided); vtrn's core threads call MPI, which needs "
                               + "MPI_THREAD_SERIALIZED (2) at least: initialise with MPI_Init_thread(..., MPI_THREAD_MULTIPLE, ...)")
        }
    }

    func message(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 512)
        var length: Int32 = 0
        _ = errorString(code, &buffer, &length)
        return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Whether a request is still pending (neither completed nor freed).
    func isPending(_ request: Handle?) -> Bool { request != nil && request != requestNull }

    /// Cancels and frees a pending request (a receive or send nobody will match).
    func abandon(_ request: inout Handle?) {
        guard isPending(request) else { return }
        _ = cancel(&request)
        _ = requestFree(&request)
    }

    func check(_ code: Int32, _ function: String) throws(VtrnError) {
        if code != 0 { throw .internalError("\(function) failed: \(message(code)) (MPI error \(code))") }
    }
}

/// The transport of a communicator across MPI processes: its own duplicate of MPI_COMM_WORLD (so
/// its messages never meet the program's or another communicator's), errors returned rather than
/// aborting the job, nonblocking calls polled against the execution's deadline.
final class MPITransport: CollectiveTransport, @unchecked Sendable {
    let library: MPILibrary
    private let communicator: MPILibrary.Handle
    let processIndex: Int
    let processCount: Int
    /// Every MPI call of the process goes through this lock (MPI_THREAD_SERIALIZED suffices).
    static let lock = Mutex<Void>(())
    /// Messages larger than this go in pieces (MPI counts are ints).
    static let pieceBytes = 1 << 30

    init(deadline: UInt64?) throws(VtrnError) {
        let library = try MPILibrary.shared()
        self.library = library
        var duplicate: MPILibrary.Handle?
        var request: MPILibrary.Handle?
        try Self.lock.withLock { _ throws(VtrnError) in
            try library.check(library.commIdup(library.commWorld, &duplicate, &request), "MPI_Comm_idup")
        }
        try Self.wait(library, &request, deadline: deadline) {
            "MPI_Comm_idup of MPI_COMM_WORLD: not every process created the communicator (vtrn_comm_create_mpi) before the "
                + "execution timeout (VTRN_EXEC_TIMEOUT_MS)"
        }
        guard let duplicate else { throw .internalError("MPI_Comm_idup returned no communicator") }
        communicator = duplicate
        var rank: Int32 = 0, size: Int32 = 0
        try Self.lock.withLock { _ throws(VtrnError) in
            try library.check(library.setErrhandler(duplicate, library.errorsReturn), "MPI_Comm_set_errhandler")
            try library.check(library.commRank(duplicate, &rank), "MPI_Comm_rank")
            try library.check(library.commSize(duplicate, &size), "MPI_Comm_size")
        }
        processIndex = Int(rank)
        processCount = Int(size)
    }

    deinit {
        var handle: MPILibrary.Handle? = communicator
        var done: Int32 = 0
        _ = library.finalized(&done)
        if done == 0 { Self.lock.withLock { _ in _ = library.commFree(&handle) } }
    }

    /// Polls a request until it completes or the deadline passes (then cancels it).
    private static func wait(_ library: MPILibrary, _ request: inout MPILibrary.Handle?, deadline: UInt64?,
                             status: UnsafeMutableRawPointer? = nil, what: () -> String) throws(VtrnError) {
        var flag: Int32 = 0
        while true {
            let code = lock.withLock { _ in library.test(&request, &flag, status) }
            if code != 0 { throw .internalError("MPI_Test failed: \(library.message(code))") }
            if flag != 0 { return }
            if let deadline, vtrnsys_monotonic_ns() >= deadline {
                lock.withLock { _ in library.abandon(&request) }
                throw VtrnError(.timeout, what())
            }
            sched_yield()
        }
    }

    /// The counts of every process (an MPI_Iallgather of `mine`).
    func gatherCounts(_ mine: Int, deadline: UInt64?) throws(VtrnError) -> [Int] {
        var value = Int32(mine)
        var all = [Int32](repeating: 0, count: processCount)
        var request: MPILibrary.Handle?
        let library = self.library, communicator = self.communicator
        try withUnsafeMutablePointer(to: &value) { pointer throws(VtrnError) in
            try all.withUnsafeMutableBufferPointer { buffer throws(VtrnError) in
                let base = buffer.baseAddress
                try Self.lock.withLock { _ throws(VtrnError) in
                    try library.check(library.iallgather(pointer, 1, library.int32, base, 1, library.int32, communicator, &request),
                                      "MPI_Iallgather")
                }
                try Self.wait(library, &request, deadline: deadline) {
                    "MPI_Iallgather of the ranks per process: not every process created the communicator before the execution timeout"
                }
            }
        }
        return all.map(Int.init)
    }

    func exchange(send: UnsafeRawBufferPointer, to: Int, receive: UnsafeMutableRawBufferPointer, from: Int, tag: Int,
                  deadline: UInt64?) throws(TransportFailure) {
        let library = self.library, communicator = self.communicator
        var requests: [(request: MPILibrary.Handle?, receiving: Bool, bytes: Int)] = []
        var failure: String?
        Self.lock.withLock { _ in
            if to >= 0 {
                var offset = 0
                repeat {
                    let piece = min(Self.pieceBytes, send.count - offset)
                    var request: MPILibrary.Handle?
                    let code = library.isend(send.baseAddress.map { $0 + offset }, Int32(piece), library.byte, Int32(to), Int32(tag),
                                             communicator, &request)
                    if code != 0 { failure = "MPI_Isend to process \(to) failed: \(library.message(code))"; return }
                    requests.append((request, false, piece))
                    offset += piece
                } while offset < send.count
            }
            if from >= 0 {
                var offset = 0
                repeat {
                    let piece = min(Self.pieceBytes, receive.count - offset)
                    var request: MPILibrary.Handle?
                    let code = library.irecv(receive.baseAddress.map { $0 + offset }, Int32(piece), library.byte, Int32(from), Int32(tag),
                                             communicator, &request)
                    if code != 0 { failure = "MPI_Irecv from process \(from) failed: \(library.message(code))"; return }
                    requests.append((request, true, piece))
                    offset += piece
                } while offset < receive.count
            }
        }
        if let failure { throw .failed(failure) }
        let status = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 8)
        defer { status.deallocate() }
        for index in requests.indices {
            var flag: Int32 = 0
            while true {
                memset(status, 0, 64)
                let code = Self.lock.withLock { _ in library.test(&requests[index].request, &flag, status) }
                let peer = requests[index].receiving ? "from process \(from)" : "to process \(to)"
                if code != 0 { throw .failed("MPI_Test of a message \(peer) failed: \(library.message(code))") }
                if flag != 0 {
                    if requests[index].receiving {
                        var received: Int32 = 0
                        _ = Self.lock.withLock { _ in library.getCount(status, library.byte, &received) }
                        if Int(received) != requests[index].bytes {
                            throw .failed("process \(from) sent \(received) bytes where process \(processIndex) expected "
                                          + "\(requests[index].bytes)")
                        }
                    }
                    break
                }
                if let deadline, vtrnsys_monotonic_ns() >= deadline {
                    Self.lock.withLock { _ in
                        for other in requests.indices { library.abandon(&requests[other].request) }
                    }
                    throw .timeout("process \(requests[index].receiving ? from : to) did not \(requests[index].receiving ? "send to" : "receive from") "
                                   + "process \(processIndex) (MPI rank) before the execution timeout (VTRN_EXEC_TIMEOUT_MS)")
                }
                sched_yield()
            }
        }
    }
}

extension Runtime {
    /// A communicator across the processes of an MPI job (`mpirun`): this process's `members`
    /// take the next ranks after those of the processes of lower MPI rank. Every process of
    /// MPI_COMM_WORLD must call it, in the same order as its other communicators.
    public func makeMPICommunicator(_ members: [Communicator.Member]) throws(VtrnError) -> Communicator {
        try state.checkOpen()
        if configuration.collectiveAlgorithm == .torus {
            throw .unsupported("VTRN_CC_ALGORITHM=torus is one process's all-reduce; across processes collectives use the ring "
                               + "(unset VTRN_CC_ALGORITHM or set it to ring)")
        }
        let deadline = configuration.execTimeoutMilliseconds.map { vtrnsys_monotonic_ns() &+ $0 * 1_000_000 }
        let transport = try MPITransport(deadline: deadline)
        let counts = try transport.gatherCounts(members.count, deadline: deadline)
        // EFA between hosts: 15 us per message; per chip 6.25 GB/s on trn1.32xlarge (800 Gbps for
        // 16 chips), 25 GB/s on trn2 (a 200 Gbps EFA per chip).
        let architecture = members.first?.device.hardware.preset.architecture ?? .trn1
        let world = CollectiveWorld(transport: transport, counts: counts, latencyNanoseconds: 15_000,
                                    bytesPerNanosecond: architecture == .trn1 ? 6.25 : 25)
        if counts.contains(0) {
            let empty = counts.enumerated().filter { $0.element == 0 }.map { "\($0.offset)" }.joined(separator: ", ")
            throw .invalidArgument("MPI process(es) \(empty) gave no members; every process of the job takes at least one rank")
        }
        return try Communicator(runtime: self, members: members, world: world)
    }
}
