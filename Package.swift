// swift-tools-version: 6.1
//
// vtrn: a virtual AWS Trainium device and its driver/runtime.
//
// Layers (see README "Layout"):
//   VtrnDevice  the virtual chip: presets, HBM, DMA engines, NeuronCores
//   Vtrn        the runtime as a Swift API (what Swift users import)
//   VtrnCABI    only `@c @implementation public func` exports of include/vtrn.h
//   CVtrn       include/vtrn.h as a Clang module (the contract)
//   CVtrnSystem tiny C shims where Swift cannot reach (futex, affinity, libnuma)
import PackageDescription

let package = Package(
    name: "vtrn",
    products: [
        // libvtrn.so, the C ABI. SwiftPM cannot give an executable the same product name,
        // so the command-line tool is the product `vtrn-cli` (its command name is `vtrn`).
        .library(name: "vtrn", type: .dynamic, targets: ["VtrnCABI"]),
        .library(name: "Vtrn", targets: ["Vtrn", "VtrnKernels"]),
        .executable(name: "vtrn-cli", targets: ["VtrnTool"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(name: "CVtrn", path: "include"),
        .target(
            name: "CVtrnSystem",
            cSettings: [.define("_GNU_SOURCE")],
            linkerSettings: [.linkedLibrary("numa"), .linkedLibrary("openblas")]
        ),
        .target(name: "VtrnDevice", dependencies: ["CVtrnSystem"]),
        .target(name: "Vtrn", dependencies: ["VtrnDevice", "CVtrnSystem"]),
        .target(name: "VtrnKernels", dependencies: ["Vtrn", "VtrnDevice"]),
        .target(
            name: "VtrnCABI",
            dependencies: ["Vtrn", "CVtrn", "CVtrnSystem"],
            exclude: ["exports.map"],
            linkerSettings: [.unsafeFlags([
                "-Xlinker", "-soname=libvtrn.so",
                // dlclose leaves the library mapped: the Swift runtime keeps the type metadata it
                // made for the library's types (C structs imported into Swift among them) and reads
                // them again when the library is loaded anew, which crashes once the new copy lands
                // at another address (README, "Teardown and concurrency").
                "-Xlinker", "-z", "-Xlinker", "nodelete",
                "-Xlinker", "--version-script=\(Context.packageDirectory)/Sources/VtrnCABI/exports.map",
            ])]
        ),
        .executableTarget(
            name: "VtrnTool",
            dependencies: ["Vtrn", "VtrnKernels", "CVtrnSystem", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(name: "vtrn-swift-enumerate", dependencies: ["Vtrn"], path: "Examples/swift/Enumerate"),
        .executableTarget(name: "vtrn-swift-gemm", dependencies: ["Vtrn", "VtrnKernels"], path: "Examples/swift/Gemm"),
        .executableTarget(name: "vtrn-swift-data-parallel", dependencies: ["Vtrn"], path: "Examples/swift/DataParallel"),

        // Gives the test process a lock directory of its own before any test runs (core claims are
        // the host's; a test run must not contend with a user's claims or with another run).
        .target(name: "VtrnTestIsolation", path: "Tests/VtrnTestIsolation"),
        .testTarget(name: "VtrnDeviceTests", dependencies: ["VtrnDevice"]),
        .testTarget(name: "VtrnTests", dependencies: ["Vtrn", "VtrnKernels", "CVtrnSystem", "VtrnTestIsolation"]),
        .testTarget(name: "VtrnCABITests", dependencies: ["VtrnCABI", "CVtrn", "VtrnTestIsolation"]),
        .testTarget(name: "VtrnIntegrationTests", dependencies: ["VtrnTestIsolation"]),
    ]
)
