import Foundation
import Synchronization
import VtrnTestIsolation
@testable import Vtrn

#if canImport(Glibc)
import Glibc
#endif

/// The environment of a test's runtime: `variables`, and this test process's own lock directory
/// (VtrnTestIsolation made it), so that claims never meet a user's or another test run's.
func testEnvironment(_ variables: [String: String] = [:]) -> [String: String] {
    variables.merging(["VTRN_LOCK_DIR": String(cString: vtrn_test_lock_directory())]) { given, _ in given }
}

/// Devices are the process's, as on a real host: two runtimes with the same topology share
/// device 0's cores and HBM. Tests run in parallel, so each takes a device index no other test
/// uses: a runtime over `ARCH:(k+1)` and its last device, k unique per call.
private let nextIndex = Atomic<Int>(8)

/// A device index no other test uses, for a test that makes its own runtime over `ARCH:(k+1)`.
func isolatedIndex() -> Int { nextIndex.add(1, ordering: .relaxed).newValue % 64 }

func isolatedDevice(_ architecture: String = "trn1", visibleCores: String? = nil) throws -> (Runtime, Device) {
    let index = isolatedIndex()
    let runtime = try Runtime(options: .init(topology: "\(architecture):\(index + 1)", visibleCores: visibleCores), environment: testEnvironment())
    return (runtime, runtime.devices[index])
}

/// Two devices no other test uses, in one runtime (its last two), made with `environment`;
/// `faults` (VTRN_FAULTS) name them as "{0}" and "{1}".
func isolatedDevices(environment: [String: String] = [:], faults: String? = nil) throws -> (Runtime, Device, Device) {
    var index = nextIndex.add(2, ordering: .relaxed).newValue % 64
    if index == 0 { index = 2 }
    var environment = environment
    environment["VTRN_FAULTS"] = faults.map {
        $0.replacingOccurrences(of: "{0}", with: "\(index - 1)").replacingOccurrences(of: "{1}", with: "\(index)")
    }
    let runtime = try Runtime(options: .init(topology: "trn1:\(index + 1)"), environment: environment)
    return (runtime, runtime.devices[index - 1], runtime.devices[index])
}

/// `count` trn2 devices from index `first`, in one runtime over `trn2:(first+count)`. The
/// collective suites are serialized and each keeps a range of its own (CollectiveTests 2-5,
/// CollectiveWorldTests 6-9, DmaQueueTests' trn2 test 10): no other helper hands out trn2 devices,
/// and 0-1 are RuntimeTests'.
func isolatedDeviceGroup(_ count: Int, first: Int, environment: [String: String] = [:]) throws -> (Runtime, [Device]) {
    let runtime = try Runtime(options: .init(topology: "trn2:\(first + count)"), environment: testEnvironment(environment))
    return (runtime, Array(runtime.devices[first..<(first + count)]))
}
