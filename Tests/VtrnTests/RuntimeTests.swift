import Testing
import VtrnDevice
@testable import Vtrn

@Suite struct ConfigurationTests {
    let host = HostTopology(nodes: [0, 1])

    @Test func defaultsAreOneTrn1AllCoresWarning() throws {
        let configuration = try RuntimeConfiguration.resolve(options: .init(), environment: [:], host: host)
        #expect(configuration.topology.description == "trn1")
        #expect(configuration.visibleCores.description == "0-1")
        #expect(configuration.logLevel == .warning)
        #expect(configuration.execTimeoutMilliseconds == 30_000)
        #expect(configuration.tracePath == nil)
    }

    @Test func environmentIsReadAndOptionsOverrideIt() throws {
        let environment = ["VTRN_TOPOLOGY": "trn2:2", "VTRN_VISIBLE_CORES": "8-15", "VTRN_LOG_LEVEL": "DEBUG",
                           "VTRN_EXEC_TIMEOUT_MS": "0"]
        let fromEnvironment = try RuntimeConfiguration.resolve(options: .init(), environment: environment, host: host)
        #expect(fromEnvironment.topology.description == "trn2:2")
        #expect(fromEnvironment.deviceNodes == [0, 1])
        #expect(fromEnvironment.visibleCores.description == "8-15")
        #expect(fromEnvironment.logLevel == .debug)
        #expect(fromEnvironment.execTimeoutMilliseconds == nil)
        let overridden = try RuntimeConfiguration.resolve(
            options: .init(topology: "trn1", visibleCores: "1", logLevel: .error), environment: environment, host: host)
        #expect(overridden.topology.description == "trn1")
        #expect(overridden.visibleCores.cores == [1])
        #expect(overridden.logLevel == .error)
    }

    @Test func errorsNameTheirSource() {
        func message(_ options: RuntimeOptions, _ environment: [String: String]) -> String? {
            #expect(throws: VtrnError.self) {
                try RuntimeConfiguration.resolve(options: options, environment: environment, host: host)
            }?.message
        }
        #expect(message(.init(topology: "x"), [:])?.hasPrefix("options.topology=\"x\"") == true)
        #expect(message(.init(), ["VTRN_TOPOLOGY": "x"])?.hasPrefix("VTRN_TOPOLOGY=\"x\"") == true)
        #expect(message(.init(visibleCores: "7"), [:])?.hasPrefix("options.visible_cores=\"7\"") == true)
        #expect(message(.init(), ["VTRN_VISIBLE_CORES": "2"])?.contains("core 2 does not exist") == true)
        #expect(message(.init(), ["VTRN_LOG_LEVEL": "loud"]) ==
                "VTRN_LOG_LEVEL=\"loud\" is not a log level; accepted: error, warning, info, debug, trace")
        #expect(message(.init(), ["VTRN_EXEC_TIMEOUT_MS": "-5"])?.contains("is not a number of milliseconds from 0 to") == true)
        #expect(message(.init(), ["VTRN_EXEC_TIMEOUT_MS": "1e3"])?.contains("VTRN_EXEC_TIMEOUT_MS=\"1e3\"") == true)
        #expect(message(.init(), ["VTRN_TRACE": "/no/such/folder/trace.json"])?.contains("the folder \"/no/such/folder\"") == true)
        #expect(message(.init(), ["VTRN_TOPOLOGY": "trn1@node7"])?.contains("online nodes are 0 and 1") == true)
    }
}

@Suite struct RuntimeTests {
    @Test func enumeratesPresetNumbers() throws {
        let runtime = try Runtime(options: .init(topology: "trn1,trn2"), environment: testEnvironment())
        #expect(runtime.devices.count == 2)
        let trn1 = try runtime.device(0).info, trn2 = try runtime.device(1).info
        #expect(trn1.architecture == .trn1 && trn1.coreCount == 2 && trn1.firstCore == 0)
        #expect(trn2.architecture == .trn2 && trn2.coreCount == 8 && trn2.firstCore == 2)
        #expect(trn1.hbmBytes == 32 << 30 && trn2.hbmBytes == 96 << 30)
        #expect(trn1.sbufBytesPerCore == 25_165_824 && trn2.sbufBytesPerCore == 29_360_128)
        #expect(trn1.psumBytesPerCore == 2_097_152 && trn1.semaphoresPerCore == 256)
        #expect(trn1.busAddress != trn2.busAddress)
        #expect(try runtime.device(1).coreInfo(7).globalIndex == 9)
        #expect(runtime.coreCount == 10)
    }

    @Test func uuidIsStableForTheSameTopology() throws {
        let first = try Runtime(options: .init(topology: "trn1,trn2"), environment: testEnvironment())
        let second = try Runtime(options: .init(topology: "trn1:1,trn2"), environment: testEnvironment())
        let other = try Runtime(options: .init(topology: "trn2,trn1"), environment: testEnvironment())
        let uuids = try first.devices.map { try $0.info.uuid }
        #expect(uuids == (try second.devices.map { try $0.info.uuid }))
        #expect(uuids[0] != uuids[1])
        #expect(try other.devices[0].info.uuid != uuids[0])
        #expect(uuids[0].count == 36)
        #expect(first.serial != second.serial)
    }

    @Test func devicesReportTheirLinksAndInterconnect() throws {
        // No core is claimed: the devices may be other tests' too.
        let runtime = try Runtime(options: .init(topology: "trn1n.32xlarge"), environment: testEnvironment())
        #expect(runtime.configuration.topology.instance == .trn1n_32xlarge)
        #expect(runtime.devices.map(\.links) == TopologyTests.driverTorus)
        let info = try runtime.device(5).info
        #expect(info.connectedDevices == [1, 4, 9, 6])
        #expect(info.interconnect.linkBytesPerSecond == 192 * Double(1 << 30))
        #expect(runtime.devices[0].interconnect == InstanceType.trn1n_32xlarge.interconnect)
        // The same devices as a list are a ring, with the chip's figures and other serials.
        let list = try Runtime(options: .init(topology: "trn1:16"), environment: testEnvironment())
        #expect(list.devices[5].links == [4, 6] && list.devices[0].links == [15, 1])
        #expect(list.devices[5].interconnect == .neuronLinkV2)
        #expect(try list.device(5).info.uuid != info.uuid)
        let again = try Runtime(options: .init(topology: "TRN1N.32xlarge"), environment: testEnvironment())
        #expect(try again.device(5).info.uuid == info.uuid)
    }

    @Test func visibleCoresMarkCores() throws {
        let runtime = try Runtime(options: .init(topology: "trn1:2", visibleCores: "1-2"), environment: testEnvironment())
        #expect(runtime.devices.flatMap(\.cores).map(\.visible) == [false, true, true, false])
        #expect(try runtime.devices.map { try $0.info.visibleCoreCount } == [1, 1])
    }

    @Test func badIndicesSayWhatExists() throws {
        let runtime = try Runtime(options: .init(topology: "trn1"), environment: testEnvironment())
        let device = #expect(throws: VtrnError.self) { try runtime.device(1) }
        #expect(device == VtrnError(.notFound, "device 1 does not exist: the topology \"trn1\" has 1 device (only device 0)"))
        let core = #expect(throws: VtrnError.self) { try runtime.devices[0].coreInfo(5) }
        #expect(core == VtrnError(.notFound, "device 0 has 2 cores (0-1); core 5 requested"))
    }

    @Test func closedRuntimeRejectsUse() throws {
        let runtime = try Runtime(options: .init(topology: "trn1"), environment: testEnvironment())
        let device = runtime.devices[0]
        runtime.close()
        runtime.close()
        #expect(runtime.isClosed)
        let error = #expect(throws: VtrnError.self) { try device.info }
        #expect(error?.status == .invalidHandle)
        #expect(error?.message == "runtime \(runtime.serial) was destroyed")
        #expect(throws: VtrnError.self) { try runtime.device(0) }
    }

    @Test func severalRuntimesLiveTogether() throws {
        let runtimes = try (0..<16).map { _ in try Runtime(options: .init(topology: "trn2:2"), environment: testEnvironment()) }
        #expect(Set(runtimes.map(\.serial)).count == 16)
        runtimes[3].close()
        #expect(try runtimes[4].devices[1].info.coreCount == 8)
    }
}
