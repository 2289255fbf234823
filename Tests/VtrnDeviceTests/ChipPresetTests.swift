import Testing
@testable import VtrnDevice

@Suite struct ChipPresetTests {
    @Test func trn1MatchesPublishedNumbers() {
        let preset = ChipPreset.trn1
        #expect(preset.name == "Trainium1")
        #expect(preset.coresPerDevice == 2)
        #expect(preset.sbufBytesPerCore == 128 * 192 * 1024)
        #expect(preset.psumBytesPerCore == 128 * 16 * 1024)
        #expect(preset.psumBanks == 8)
        #expect(preset.psumBytesPerPartition / preset.psumBanks == 2048)
        #expect(preset.semaphoresPerCore == 256)
        #expect(preset.hbmBytes == 32 << 30)
        #expect(preset.hbmBandwidth == 820_000_000_000)
        #expect(preset.dmaEnginesPerCore == 16 && preset.queuesPerDmaEngine == 16)
        #expect(preset.peClockHz == 2_800_000_000 && preset.dveClockHz == 1_120_000_000)
        #expect(preset.actClockHz == 1_400_000_000 && preset.poolClockHz == 1_400_000_000)
        #expect(preset.pciVendorId == 0x1d0f && preset.pciDeviceId == 0x7164)
    }

    @Test func trn2MatchesPublishedNumbers() {
        let preset = ChipPreset.trn2
        #expect(preset.name == "Trainium2")
        #expect(preset.coresPerDevice == 8)
        #expect(preset.sbufBytesPerCore == 128 * 224 * 1024)
        #expect(preset.hbmBytes == 96 << 30)
        #expect(preset.hbmBandwidth == 2_900_000_000_000)
        #expect(preset.peClockHz == 2_400_000_000 && preset.dveClockHz == 960_000_000)
        #expect(preset.actClockHz == 1_200_000_000 && preset.poolClockHz == 1_200_000_000)
        #expect(preset.pciDeviceId == 0x7364)
    }

    @Test func interconnectsSplitThePublishedAggregatesOverFourLinks() {
        let gib = Double(1 << 30)
        let v2 = ChipPreset.trn1.interconnect
        #expect(v2.name == "NeuronLink-v2" && v2.linksPerDevice == 4)
        #expect(v2.deviceBytesPerSecond == 384 * gib && v2.linkBytesPerSecond == 96 * gib)
        #expect(v2.hopLatencyNanoseconds == 1500)
        let v3 = ChipPreset.trn2.interconnect
        #expect(v3.name == "NeuronLink-v3" && v3.linksPerDevice == 4)
        #expect(v3.deviceBytesPerSecond == 1024e9 && v3.linkBytesPerSecond == 256e9)
        #expect(v3.hopLatencyNanoseconds == 1500)
        #expect(v2.description == "NeuronLink-v2, 4 links of 96 GiB/s (384 GiB/s per device), 1500 ns per hop")
        #expect(v3.description == "NeuronLink-v3, 4 links of 256 GB/s (1024 GB/s per device), 1500 ns per hop")
    }

    @Test func instanceTypesMatchThePublishedTable() {
        let gib = Double(1 << 30)
        #expect(InstanceType.allCases.map(\.name) == ["trn1.2xlarge", "trn1.32xlarge", "trn1n.32xlarge", "trn2.48xlarge", "trn2u.48xlarge"])
        #expect(InstanceType.allCases.map(\.deviceCount) == [1, 16, 16, 16, 16])
        #expect(InstanceType.allCases.map(\.architecture) == [.trn1, .trn1, .trn1, .trn2, .trn2])
        #expect(InstanceType.trn1_2xlarge.torus == nil)
        #expect(InstanceType.trn2_48xlarge.torus.map { [$0.rows, $0.columns] } == [4, 4])
        #expect(InstanceType.trn1_32xlarge.interconnect == .neuronLinkV2)
        #expect(InstanceType.trn1n_32xlarge.interconnect.deviceBytesPerSecond == 768 * gib)
        #expect(InstanceType.trn1n_32xlarge.interconnect.linkBytesPerSecond == 192 * gib)
        #expect(InstanceType.trn2u_48xlarge.interconnect == .neuronLinkV3)
        #expect(InstanceType.allCases.map(\.efaBitsPerSecond) == [25e9, 800e9, 1600e9, 3200e9, 3200e9])
        #expect(InstanceType.trn2u_48xlarge.ultraServer == .init(hosts: 4, linksPerDevice: 2, linkBytesPerSecond: 128e9))
        #expect(InstanceType.trn2_48xlarge.ultraServer == nil)
        #expect(InstanceType(name: "TRN1.32XLARGE") == .trn1_32xlarge)
        #expect(InstanceType(name: "trn2n.48xlarge") == nil)
    }

    @Test func architectureNamesRoundTrip() {
        for architecture in Architecture.allCases {
            #expect(Architecture(name: architecture.description) == architecture)
            #expect(Architecture(name: architecture.description.uppercased()) == architecture)
            #expect(architecture.preset.architecture == architecture)
        }
        #expect(Architecture(name: "trn3") == nil)
        #expect(Architecture(name: "") == nil)
    }

    @Test func busAddressesArePciStyleAndDistinct() throws {
        let addresses = try (0..<ChipPreset.maxDevices).map {
            try VirtualDevice(preset: .trn1, index: $0, numaNode: 0).busAddress
        }
        #expect(addresses[0] == "0000:10:1e.0")
        #expect(addresses[63] == "0000:4f:1e.0")
        #expect(Set(addresses).count == addresses.count)
    }
}
