import Foundation
import Testing

/// Builds and runs the C examples against the built libvtrn.so, and checks that the library
/// exports exactly what the header declares. Needs `swift build` to have run first (the test
/// script does): a test cannot build the library product from inside `swift test`.
@Suite(.serialized) struct CHostTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// The folder holding the test bundle, which is also where `swift build` put libvtrn.so.
    static var binPath: URL {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    }

    @discardableResult
    func run(_ arguments: [String]) throws -> String {
        let (status, output) = try runProgram(URL(fileURLWithPath: "/usr/bin/env"), arguments)
        #expect(status == 0, "\(arguments.joined(separator: " ")) failed:\n\(output)")
        return output
    }

    func requireLibrary() throws -> URL {
        let library = Self.binPath.appendingPathComponent("libvtrn.so")
        try #require(FileManager.default.fileExists(atPath: library.path),
                     "\(library.path) is missing: run `swift build` before `swift test`")
        return library
    }

    @Test func cExamplesBuildAndRun() throws {
        _ = try requireLibrary()
        let output = try run(["make", "-s", "-C", "Examples/c", "run", "BIN=\(Self.binPath.path)"])
        #expect(output.contains("Trainium1"))
        #expect(output.contains("Trainium2"))
        #expect(output.contains("VTRN_ERROR_INVALID_HANDLE") || output.contains("invalid handle"))
    }

    @Test func readmeCExampleBuildsAndRuns() throws {
        _ = try requireLibrary()
        let readme = try String(contentsOf: Self.packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let start = try #require(readme.range(of: "```c\n"))
        let end = try #require(readme.range(of: "```", range: start.upperBound..<readme.endIndex))
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("vtrn-readme-\(getpid())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let source = folder.appendingPathComponent("example.c"), program = folder.appendingPathComponent("example")
        try String(readme[start.upperBound..<end.lowerBound]).write(to: source, atomically: true, encoding: .utf8)
        try run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-Iinclude", source.path, "-L\(Self.binPath.path)", "-lvtrn",
                 "-Wl,-rpath,\(Self.binPath.path)", "-o", program.path])
        let output = try run([program.path])
        #expect(output.contains("invalid handle:"), "\(output)")
        #expect(output.contains("is stale"), "\(output)")
    }

    @Test func libraryExportsExactlyTheHeader() throws {
        let library = try requireLibrary()
        try run(["bash", "Tests/c/check-exports.sh", library.path, "include/vtrn.h"])
    }

    @Test func libraryHasSonameAndNeedsNoLibraryPath() throws {
        let library = try requireLibrary()
        let dynamic = try run(["readelf", "-d", library.path])
        #expect(dynamic.contains("Library soname: [libvtrn.so]"))
        #expect(dynamic.contains("$ORIGIN"))
    }
}

/// The `vtrn` tool as a user runs it.
@Suite struct ToolTests {
    func tool(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        try runProgram(try builtProduct("vtrn-cli"), arguments, adding: environment)
    }

    @Test func lsShowsEachDevicesStateAndErrorCounters() throws {
        let faults = ["VTRN_FAULTS": "device-loss:device=1,hbm-ue:address=0:bytes=64:sticky"]
        let (status, output) = try tool(["ls", "--topology", "trn1:2"], environment: faults)
        #expect(status == 0, "\(output)")
        #expect(output.contains("| DEVICE | STATE | DMA ABORTS | HBM UE | EXEC TIMEOUTS | HANGS | LOSSES | RESETS | FAULTS ARMED/INJECTED |"))
        #expect(output.contains("| 0      | ok    | 0          | 0      | 0             | 0     | 0      | 0      | 1/1 "), "\(output)")
        #expect(output.contains("| 1      | LOST  | 0          | 0      | 0             | 0     | 1      | 0      | 0/1 "), "\(output)")
        let (_, json) = try tool(["ls", "--json", "--topology", "trn1:2"], environment: faults)
        let devices = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
        let errors = devices.map { $0["errors"] as? [String: Any] }
        #expect(errors.map { $0?["lost"] as? Bool } == [false, true])
        #expect(errors[1]?["loss"] as? String == "lost by injected fault 1 (device-loss)")
        #expect(errors.map { $0?["armed_faults"] as? Int } == [1, 0])
        let (badStatus, bad) = try tool(["ls"], environment: ["VTRN_FAULTS": "device-loss:device=1"])
        #expect(badStatus != 0 && bad.contains("names device 1, which does not exist: the topology \"trn1\" has 1 device"), "\(bad)")
    }

    @Test func lsPrintsATableLikeNeuronLs() throws {
        let (status, output) = try tool(["ls", "--topology", "trn1,trn2"])
        #expect(status == 0)
        for column in ["DEVICE", "ARCH", "CORES", "HBM", "NUMA NODE", "BUS ADDRESS"] { #expect(output.contains(column)) }
        #expect(output.contains("| 0      | Trainium1 | trn1 | 2     | 0-1      | 32 GiB |"))
        #expect(output.contains("| 1      | Trainium2 | trn2 | 8     | 2-9      | 96 GiB |"))
    }

    /// `neuron-ls --topology`'s grid, as aws-neuron-sdk's tools/neuron-sys-tools/neuron-ls.rst
    /// shows it (less the 2 spaces that indent the documentation's block), trailing spaces included.
    static let neuronLsGrid = """
            Neuron Device Topology
                  *        *        *        *      
                  │        │        │        │      
                  ▼        ▼        ▼        ▼      
            *––►[ 0 ]◄––►[ 1 ]◄––►[ 2 ]◄––►[ 3 ]◄––*
                  ▲        ▲        ▲        ▲      
                  │        │        │        │      
                  ▼        ▼        ▼        ▼      
            *––►[ 4 ]◄––►[ 5 ]◄––►[ 6 ]◄––►[ 7 ]◄––*
                  ▲        ▲        ▲        ▲      
                  │        │        │        │      
                  ▼        ▼        ▼        ▼      
            *––►[ 8 ]◄––►[ 9 ]◄––►[10 ]◄––►[11 ]◄––*
                  ▲        ▲        ▲        ▲      
                  │        │        │        │      
                  ▼        ▼        ▼        ▼      
            *––►[12 ]◄––►[13 ]◄––►[14 ]◄––►[15 ]◄––*
                  ▲        ▲        ▲        ▲      
                  │        │        │        │      
                  *        *        *        *      

            Legend:

                    *––► = Wrap-around link
            """

    @Test(arguments: ["trn1.32xlarge", "trn2.48xlarge"])
    func lsTopologyPrintsLikeNeuronLsTopology(instance: String) throws {
        let (status, output) = try tool(["ls", "-t", "--topology", instance])
        #expect(status == 0, "\(output)")
        let lines = output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first == "instance-type: \(instance)")
        #expect(output.contains("""
            +--------+--------+--------+---------------+---------+
            | NEURON | NEURON | NEURON |   CONNECTED   |   PCI   |
            | DEVICE | CORES  | MEMORY |    DEVICES    |   BDF   |
            +--------+--------+--------+---------------+---------+
            """), "\(output)")
        let cores = instance.hasPrefix("trn1") ? "2      | 32 GB" : "8      | 96 GB"
        #expect(output.contains("| 0      | \(cores)  | 12, 3, 4, 1   | 10:1e.0 |"), "\(output)")
        #expect(output.contains("| 15     | \(cores)  | 11, 14, 3, 12 | 1f:1e.0 |"), "\(output)")
        #expect(output.hasSuffix("\n\n\n" + Self.neuronLsGrid + "\n"), "\(output)")
        // The long form, and the plain table's column.
        #expect(try tool(["ls", "--show-topology", "--topology", instance]).output == output)
        let (_, plain) = try tool(["ls", "--topology", instance])
        #expect(plain.contains("| CONNECTED DEVICES |") && plain.contains("| 12, 3, 4, 1       |"), "\(plain)")
    }

    @Test func lsTopologyDrawsDeviceListsAsRings() throws {
        let (status, output) = try tool(["ls", "-t", "--topology", "trn1:3,trn2:2"])
        #expect(status == 0, "\(output)")
        #expect(output.hasPrefix("instance-type: none (the device list trn1:3,trn2:2: the devices of each architecture form a ring)\n"))
        #expect(output.hasSuffix("""
            Neuron Device Topology
            *––►[ 0 ]◄––►[ 1 ]◄––►[ 2 ]◄––*
                [ 3 ]◄––►[ 4 ]             

            Legend:

                    *––► = Wrap-around link

            """), "\(output)")
        let (_, json) = try tool(["ls", "--json", "--topology", "trn1:3,trn2:2"])
        let devices = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
        #expect(devices.map { $0["connected_to"] as? [Int] } == [[2, 1], [0, 2], [1, 0], [4], [3]])
        #expect((devices[3]["interconnect"] as? [String: Any])?["name"] as? String == "NeuronLink-v3")
    }

    @Test func lsJsonHasEveryDevice() throws {
        let (status, output) = try tool(["ls", "--json", "--topology", "trn2:2", "--visible-cores", "0-3"])
        #expect(status == 0)
        let devices = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]])
        #expect(devices.count == 2)
        #expect(devices.map { $0["core_count"] as? Int } == [8, 8])
        #expect(devices.map { $0["visible_core_count"] as? Int } == [4, 0])
        #expect(devices[1]["bus_address"] as? String == "0000:11:1e.0")
        #expect((devices[0]["cores"] as? [[String: Any]])?.count == 8)
    }

    @Test func lsShowsWhichProcessHoldsWhichCore() throws {
        // Its own lock directory, so that no test of this process meets the holder's claims.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("vtrn-ls-locks-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var environment = ProcessInfo.processInfo.environment
        environment["VTRN_LOCK_DIR"] = folder
        let (built, buildOutput) = try runProgram(URL(fileURLWithPath: "/usr/bin/env"),
                                                  ["make", "-s", "-C", "Tests/c", "build/claims_helper", "BIN=\(CHostTests.binPath.path)"])
        try #require(built == 0, "building Tests/c/build/claims_helper failed:\n\(buildOutput)")

        let holder = Process(), input = Pipe(), output = Pipe()
        holder.executableURL = CHostTests.packageRoot.appendingPathComponent("Tests/c/build/claims_helper")
        holder.arguments = ["hold", "trn1,trn2", "1", "3", "5"]
        holder.environment = environment
        holder.standardInput = input
        holder.standardOutput = output
        try holder.run()
        defer {
            try? input.fileHandleForWriting.close()
            holder.waitUntilExit()
        }
        var said = Data()
        while !said.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            said += chunk
        }
        let pid = holder.processIdentifier
        #expect(String(decoding: said, as: UTF8.self) == "held \(pid)\n")

        let (status, table) = try runProgram(try builtProduct("vtrn-cli"), ["ls", "--topology", "trn1,trn2"], environment: environment)
        #expect(status == 0)
        #expect(table.contains("core claims in \(folder)"), "\(table)")
        #expect(table.contains("| DEVICE | CORE | GLOBAL CORE | PID"), "\(table)")
        #expect(table.contains("| 1      | 3    | 5           | \(pid)"), "\(table)")
        #expect(table.contains("| 1      | 5    | 7           | \(pid)"), "\(table)")
        #expect(table.contains("claims_helper hold trn1,trn2 1 3 5"), "\(table)")

        let (jsonStatus, json) = try runProgram(try builtProduct("vtrn-cli"), ["ls", "--json", "--topology", "trn1,trn2"],
                                                environment: environment)
        #expect(jsonStatus == 0)
        let devices = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
        let cores = try #require(devices[1]["cores"] as? [[String: Any]])
        let held = try #require(cores[3]["holder"] as? [String: Any])
        #expect(held["pid"] as? Int == Int(pid) && held["runtime"] as? Int == 1 && held["this_process"] as? Bool == false)
        #expect((held["command"] as? String)?.hasSuffix("claims_helper hold trn1,trn2 1 3 5") == true)
        #expect(cores[0]["holder"] is NSNull)

        try input.fileHandleForWriting.close()
        holder.waitUntilExit()
        let (_, after) = try runProgram(try builtProduct("vtrn-cli"), ["ls", "--topology", "trn1,trn2"], environment: environment)
        #expect(after.hasSuffix("no core is claimed\n"), "\(after)")
    }

    @Test func badTopologyExitsWithTheMessage() throws {
        let (status, output) = try tool(["ls", "--topology", "trn9"])
        #expect(status != 0)
        #expect(output.contains("names architecture \"trn9\", which is not trn1 or trn2"))
    }
}

/// The Swift examples, as built by `swift build`.
@Suite struct SwiftExampleTests {
    @Test(arguments: [("vtrn-swift-enumerate", "Trainium2"), ("vtrn-swift-gemm", "largest error"),
                      ("vtrn-swift-data-parallel", "against the host's sum")])
    func exampleRuns(name: String, expected: String) throws {
        let (status, output) = try runProgram(try builtProduct(name), [])
        #expect(status == 0, "\(output)")
        #expect(output.contains(expected), "\(output)")
    }
}

/// Runs a program in the package root (in `environment`, else this process's environment with
/// `adding` over it and a lock directory of its own); its exit status and its stdout and stderr
/// together.
func runProgram(_ executable: URL, _ arguments: [String], environment: [String: String]? = nil,
                adding overrides: [String: String] = [:]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    process.currentDirectoryURL = CHostTests.packageRoot
    var ownLocks: String?
    if let environment {
        process.environment = environment
    } else {
        // Claims are the host's: programs these tests run at the same time (a C example and a
        // Swift one both on core 0) would get VTRN_ERROR_BUSY from each other. Each runs with a
        // lock directory of its own unless a test chose one.
        var own = ProcessInfo.processInfo.environment
        ownLocks = FileManager.default.temporaryDirectory
            .appendingPathComponent("vtrn-program-locks-\(getpid())-\(UUID().uuidString)").path
        own["VTRN_LOCK_DIR"] = ownLocks
        process.environment = own.merging(overrides) { $1 }
    }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    if let ownLocks { try? FileManager.default.removeItem(atPath: ownLocks) }
    return (process.terminationStatus, output)
}

/// A product `swift build` made, or a failure saying to build first.
func builtProduct(_ name: String) throws -> URL {
    let executable = CHostTests.binPath.appendingPathComponent(name)
    try #require(FileManager.default.fileExists(atPath: executable.path), "\(executable.path) is missing: run `swift build` before `swift test`")
    return executable
}
