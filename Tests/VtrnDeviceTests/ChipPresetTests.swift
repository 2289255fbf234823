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
