// Enumerates the virtual devices from Swift, through the runtime's own Swift API.
//   swift run vtrn-swift-enumerate [TOPOLOGY]
import Vtrn

let topology = CommandLine.arguments.dropFirst().first ?? "trn1,trn2"
do {
    let runtime = try Runtime(options: RuntimeOptions(topology: topology))
    defer { runtime.close() }
    print("vtrn \(Vtrn.version): topology \(runtime.configuration.topology), \(runtime.devices.count) devices")
    for device in runtime.devices {
        let info = try device.info
        print("device \(info.index): \(info.name) (\(info.architecture)), \(info.coreCount) cores, "
              + "\(info.hbmBytes >> 30) GiB HBM, NUMA node \(info.numaNode), \(info.busAddress), uuid \(info.uuid)")
        for core in device.cores {
            print("  core \(core.index) (global \(core.globalIndex)): SBUF \(core.sbufPartitions) x "
                  + "\(core.sbufBytesPerPartition / 1024) KiB, PSUM \(core.psumBanks) banks, "
                  + "\(core.semaphores) semaphores, \(core.visible ? "visible" : "hidden")")
        }
    }
    runtime.close()
    do {
        _ = try runtime.devices[0].info
    } catch {
        print("after close: \(error)")
    }
} catch {
    print("error: \(error)")
    exit(1)
}

#if canImport(Glibc)
import Glibc
#endif
