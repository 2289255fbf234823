import Foundation
import Testing
import VtrnDevice
@testable import Vtrn

#if canImport(Glibc)
import Glibc
#endif

/// The lock directory: VTRN_LOCK_DIR, the defaults, and what makes a directory unusable.
@Suite struct LockDirectoryTests {
    /// A fresh folder under /tmp, removed by the caller.
    func temporaryFolder() throws -> String {
        var template = Array("/tmp/vtrn-lock-test-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) != nil }
        try #require(made)
        return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    @Test func defaultsAreRunThenXdgRuntimeDirThenAPrivateTmpFolder() {
        let candidates = LockDirectory.defaultCandidates(environment: ["XDG_RUNTIME_DIR": "/run/user/1000/"], userID: 1000)
        #expect(candidates.map(\.path) == ["/run/vtrn", "/run/user/1000/vtrn", "/tmp/vtrn-1000"])
        #expect(candidates.map(\.isPrivate) == [false, false, true])
        // A relative XDG_RUNTIME_DIR is invalid by its specification: ignored.
        #expect(LockDirectory.defaultCandidates(environment: ["XDG_RUNTIME_DIR": "run"], userID: 7).map(\.path)
                == ["/run/vtrn", "/tmp/vtrn-7"])
        #expect(LockDirectory.defaultCandidates(environment: [:], userID: 0).map(\.path) == ["/run/vtrn", "/tmp/vtrn-0"])
    }

    @Test func vtrnLockDirIsMadeWithItsParentsAndReported() throws {
        let folder = try temporaryFolder()
        defer { _ = try? FileManager.default.removeItem(atPath: folder) }
        let wanted = folder + "/a/b/c/"
        let runtime = try Runtime(options: .init(topology: "trn1"), environment: ["VTRN_LOCK_DIR": wanted])
        #expect(runtime.configuration.lockDirectory == folder + "/a/b/c")
        var status = stat()
        #expect(stat(folder + "/a/b/c", &status) == 0 && status.st_mode & S_IFMT == S_IFDIR)
        runtime.close()
    }

    @Test func aRelativeVtrnLockDirIsTakenFromTheWorkingDirectory() {
        let directory = FileManager.default.currentDirectoryPath
        #expect(LockDirectory.absolute("locks/") == directory + "/locks")
        #expect(LockDirectory.absolute("/x//") == "/x")
        #expect(LockDirectory.absolute("/") == "/")
    }

    @Test func anUnusableVtrnLockDirFailsRuntimeCreationNamingIt() throws {
        let folder = try temporaryFolder()
        defer { _ = try? FileManager.default.removeItem(atPath: folder) }
        let file = folder + "/file"
        #expect(FileManager.default.createFile(atPath: file, contents: Data()))
        let error = #expect(throws: VtrnError.self) {
            try Runtime(options: .init(topology: "trn1"), environment: ["VTRN_LOCK_DIR": file])
        }
        #expect(error == .invalidArgument(
            "VTRN_LOCK_DIR=\"\(file)\": cannot keep core claims in \"\(file)\": Not a directory; accepted: a directory this "
            + "process can write (made if missing), or empty for the default (\(LockDirectory.defaultsText))"))
        let below = #expect(throws: VtrnError.self) {
            try Runtime(options: .init(topology: "trn1"), environment: ["VTRN_LOCK_DIR": file + "/locks"])
        }
        #expect(below?.message.contains("Not a directory (mkdir \(file)/locks)") == true)
    }

    @Test func aPrivateDefaultMustBeThisUsersAloneAndNoSymbolicLink() throws {
        let folder = try temporaryFolder()
        defer { _ = try? FileManager.default.removeItem(atPath: folder) }
        let shared = folder + "/shared", link = folder + "/link", mine = folder + "/mine"
        #expect(mkdir(shared, 0o755) == 0 && chmod(shared, 0o755) == 0)
        #expect(LockDirectory.prepare(shared, isPrivate: true, createMode: 0o700)
                == "its mode is 755: other users could use it; it must be 700")
        #expect(symlink(shared, link) == 0)
        #expect(LockDirectory.prepare(link, isPrivate: true, createMode: 0o700)
                == "it is not a directory (or is a symbolic link)")
        #expect(LockDirectory.prepare(link, isPrivate: false, createMode: 0o755) == nil) // VTRN_LOCK_DIR may be a link
        #expect(LockDirectory.prepare(mine, isPrivate: true, createMode: 0o700) == nil)
        var status = stat()
        #expect(stat(mine, &status) == 0 && status.st_mode & 0o777 == 0o700)
    }

    @Test func aLockDirectoryThatVanishesFailsTheClaimNamingTheFile() throws {
        let (isolated, reserved) = try isolatedDevice() // a device index no other test uses
        let folder = try temporaryFolder()
        let runtime = try Runtime(options: .init(topology: isolated.configuration.topology.description),
                                  environment: ["VTRN_LOCK_DIR": folder + "/locks"])
        try FileManager.default.removeItem(atPath: folder)
        let device = runtime.devices[reserved.index]
        let error = #expect(throws: VtrnError.self) { try device.openQueue(core: 0, engine: 0, queue: 0) }
        #expect(error?.status == .invalidArgument)
        #expect(error?.message.hasPrefix("cannot claim core 0 of device \(device.index): cannot create the lock file "
                                         + "\(folder)/locks/trn1@node\(device.hardware.numaNode)-device\(device.index)-core0.lock: "
                                         + "No such file or directory; the lock directory (VTRN_LOCK_DIR, else ") == true)
        runtime.close()
        isolated.close()
    }

    @Test func holderRecordsRoundTripAndIgnoreWhatTheyDoNotKnow() {
        let record = HolderRecord(processID: 42, runtime: 3, commandLine: "python3 train.py --epochs 2")
        #expect(record.text == "pid 42\nruntime 3\ncommand python3 train.py --epochs 2\nvtrn \(Vtrn.version)\n")
        #expect(HolderRecord(text: record.text) == record)
        #expect(HolderRecord(text: "future yes\npid 7\ncommand x\n") == HolderRecord(processID: 7, runtime: nil, commandLine: "x"))
        #expect(HolderRecord(text: "") == nil)
        #expect(HolderRecord(text: "runtime 1\ncommand x\n") == nil)
    }
}

/// Claims between runtimes of this process, whatever their lock directories.
@Suite struct ClaimTests {
    @Test func runtimesOfThisProcessContendEvenWithDifferentLockDirectories() throws {
        let (first, device) = try isolatedDevice()
        _ = try device.openQueue(core: 0, engine: 0, queue: 0)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("vtrn-other-locks-\(getpid())").path
        defer { _ = try? FileManager.default.removeItem(atPath: folder) }
        let second = try Runtime(options: .init(topology: first.configuration.topology.description),
                                 environment: ["VTRN_LOCK_DIR": folder])
        let error = #expect(throws: VtrnError.self) { try second.devices[device.index].openQueue(core: 0, engine: 1, queue: 0) }
        #expect(error == VtrnError(.busy, "core 0 of device \(device.index) is claimed by runtime \(first.serial) until it is destroyed"))
        let holder = try #require(try second.devices[device.index].coreHolder(0))
        #expect(holder == CoreHolder(processID: getpid(), commandLine: currentCommandLine(), runtime: first.serial, isThisProcess: true))
        #expect(try device.coreHolder(1) == nil)
        first.close()
        #expect(try second.devices[device.index].coreHolder(0) == nil)
        _ = try second.devices[device.index].openQueue(core: 0, engine: 1, queue: 0)
        second.close()
    }

    @Test func coreHolderChecksItsCore() throws {
        let (runtime, device) = try isolatedDevice()
        #expect(throws: VtrnError.notFound("device \(device.index) has 2 cores (0-1); core 2 requested")) { try device.coreHolder(2) }
        #expect(throws: VtrnError.self) { try device.coreHolder(-1) }
        runtime.close()
        #expect(throws: VtrnError(.invalidHandle, "runtime \(runtime.serial) was destroyed")) { try device.coreHolder(0) }
    }

    @Test func theRecordNamesThisProcessWhileItHoldsTheCore() throws {
        let (runtime, device) = try isolatedDevice()
        _ = try device.openQueue(core: 1, engine: 0, queue: 0)
        let path = device.shared.lockPath(core: 1, in: runtime.configuration.lockDirectory)
        let record = try String(contentsOfFile: path, encoding: .utf8)
        #expect(record == HolderRecord(processID: getpid(), runtime: runtime.serial, commandLine: currentCommandLine()).text)
        runtime.close()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "")
    }
}

// MARK: - Real processes

/// claims_helper (Tests/c/claims_helper.c), compiled once per test process against the libvtrn.so
/// `swift build` put beside the test bundle; it inherits this process's VTRN_LOCK_DIR.
private let claimsHelper: Result<String, HelperBuildError> = {
    let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let binPath = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path
    guard FileManager.default.fileExists(atPath: binPath + "/libvtrn.so") else {
        return .failure(HelperBuildError(message: "\(binPath)/libvtrn.so is missing: run `swift build` before `swift test`"))
    }
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("vtrn-claims-helper-\(getpid())").path
    let output = folder + "/claims_helper"
    do {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    } catch {
        return .failure(HelperBuildError(message: "cannot make \(folder): \(error)"))
    }
    let compiler = Process()
    compiler.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    compiler.arguments = ["cc", "-std=c11", "-O1", "-I", packageRoot.path + "/include", packageRoot.path + "/Tests/c/claims_helper.c",
                          "-L", binPath, "-lvtrn", "-Wl,-rpath," + binPath, "-o", output]
    do {
        try compiler.run()
    } catch {
        return .failure(HelperBuildError(message: "cannot run cc: \(error)"))
    }
    compiler.waitUntilExit()
    guard compiler.terminationStatus == 0 else { return .failure(HelperBuildError(message: "cc failed building claims_helper")) }
    atexit {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("vtrn-claims-helper-\(getpid())").path
        unlink(folder + "/claims_helper")
        rmdir(folder)
    }
    return .success(output)
}()

private struct HelperBuildError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// A running claims_helper: its pid, and its stdin and stdout, a line at a time.
private final class Helper {
    let process = Process()
    private let input = Pipe(), output = Pipe()
    private var buffered: [UInt8] = []

    init(_ arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: try claimsHelper.get())
        process.arguments = arguments
        process.standardInput = input
        process.standardOutput = output
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    func send(_ line: String) {
        input.fileHandleForWriting.write(Data((line + "\n").utf8))
    }

    /// The next line without its newline; "" at end of output.
    func readLine() -> String {
        let descriptor = output.fileHandleForReading.fileDescriptor
        while !buffered.contains(UInt8(ascii: "\n")) {
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            buffered += chunk[..<count]
        }
        let end = buffered.firstIndex(of: UInt8(ascii: "\n")) ?? buffered.endIndex
        defer { buffered.removeSubrange(..<min(end + 1, buffered.endIndex)) }
        return String(decoding: buffered[..<end], as: UTF8.self)
    }

    /// Closes its stdin and waits for it to exit.
    func finish() -> Int32 {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
        return process.terminationStatus
    }
}

/// Claims against another process: the Swift API's side of "Core ownership" in include/vtrn.h.
@Suite struct ClaimsAcrossProcessesTests {
    @Test func anotherProcessIsNamedAndItsDeathBySigkillFreesTheCoresAtOnce() throws {
        let (runtime, device) = try isolatedDevice()
        let topology = runtime.configuration.topology.description
        let helper = try Helper(["hold", topology, "\(device.index)", "0", "1"])
        #expect(helper.readLine() == "held \(helper.pid)")

        let holder = try #require(try device.coreHolder(0))
        #expect(holder.processID == helper.pid && holder.runtime == 1 && !holder.isThisProcess)
        #expect(holder.commandLine.hasSuffix("claims_helper hold \(topology) \(device.index) 0 1"))
        let lockFile = device.shared.lockPath(core: 0, in: runtime.configuration.lockDirectory)
        let error = #expect(throws: VtrnError.self) { try device.openQueue(core: 0, engine: 0, queue: 0) }
        #expect(error == VtrnError(.busy, "core 0 of device \(device.index) is claimed by runtime 1 of process \(helper.pid) "
                                   + "(\(holder.commandLine)) until the holder's runtime is destroyed or its process exits "
                                   + "(lock file \(lockFile))"))

        #expect(kill(helper.pid, SIGKILL) == 0)
        helper.process.waitUntilExit()
        #expect(helper.process.terminationReason == .uncaughtSignal)
        let start = ContinuousClock.now
        #expect(try device.coreHolder(0) == nil)
        _ = try device.openQueue(core: 0, engine: 0, queue: 0)
        _ = try device.openQueue(core: 1, engine: 0, queue: 0)
        #expect(ContinuousClock.now - start < .seconds(1))
        #expect(try device.coreHolder(1)?.isThisProcess == true)
        runtime.close()
    }

    @Test func thisProcessAndAnotherRaceForACore200TimesAndExactlyOneWinsEachTime() throws {
        let (keeper, device) = try isolatedDevice() // keeps the devices up between rounds
        let topology = keeper.configuration.topology.description
        let helper = try Helper(["race", topology, "\(device.index)", "1"])
        var wins = (this: 0, other: 0)
        let start = ContinuousClock.now
        for round in 0..<200 {
            helper.send("claim")
            // Vary who comes first: the helper needs a moment to read its line.
            usleep(UInt32.random(in: 0...600))
            let runtime = try Runtime(options: .init(topology: topology), environment: testEnvironment())
            var won = true
            do {
                _ = try runtime.devices[device.index].openQueue(core: 1, engine: 0, queue: 0)
            } catch {
                won = false
                #expect(error.status == .busy && error.message.contains("of process \(helper.pid) ("), "round \(round): \(error)")
            }
            let answer = helper.readLine()
            #expect(won != (answer == "won"), "round \(round): this process \(won ? "won" : "lost"), the other said \(answer)")
            if !won && answer != "won" { break }
            if won { wins.this += 1 } else { wins.other += 1 }
            if won {
                #expect(answer.hasPrefix("lost 8 ") && answer.contains("of process \(getpid()) ("), "round \(round): \(answer)")
            }
            runtime.close()
            helper.send("release")
            #expect(helper.readLine() == "released")
        }
        #expect(wins.this + wins.other == 200)
        print("ClaimsAcrossProcessesTests: 200 rounds of this process racing claims_helper for a core in "
              + "\(ContinuousClock.now - start); this process won \(wins.this), the helper \(wins.other)")
        #expect(helper.finish() == 0)
        keeper.close()
    }
}
