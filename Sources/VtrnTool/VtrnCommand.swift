import ArgumentParser
import Vtrn

@main
struct VtrnCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vtrn",
        abstract: "A virtual AWS Trainium device and its runtime.",
        discussion: """
            Devices come from VTRN_TOPOLOGY (e.g. "trn1", "trn2:2", "trn1,trn2@node1"), or --topology.
            """,
        version: "vtrn \(Vtrn.version)",
        subcommands: [DemoCommand.self, ListCommand.self, BenchCommand.self, TraceCommand.self, MonitorCommand.self, TopCommand.self])
}

/// Options every subcommand that builds a runtime takes.
struct RuntimeArguments: ParsableArguments {
    @Option(help: "The virtual devices, e.g. trn1, trn2:2, trn1,trn2@node1, trn1.32xlarge (default: VTRN_TOPOLOGY, else trn1).")
    var topology: String?

    @Option(help: "The cores this runtime may use, e.g. 0-3 (default: VTRN_VISIBLE_CORES, else all).")
    var visibleCores: String?

    func makeRuntime() throws -> Runtime {
        // A VtrnError prints as "Error: VTRN_ERROR_...: message" and exits 1, without the usage text.
        try Runtime(options: RuntimeOptions(topology: topology, visibleCores: visibleCores))
    }
}
