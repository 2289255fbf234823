"""Lists the virtual Trainium devices of a topology and their cores, then shows what a stale
handle does.

    python3 Examples/python/enumerate.py                # topology "trn1,trn2"
    python3 Examples/python/enumerate.py trn2:2@node0   # any VTRN_TOPOLOGY form

Run it from anywhere after `swift build`; set VTRN_LIBRARY to use another libvtrn.so.
"""

import os
import sys

# The package lives in the repository's python/ folder, two levels above this file.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import vtrn  # noqa: E402


def gigabytes(count):
    return f"{count / 1e9:g} GB"


def main():
    topology = sys.argv[1] if len(sys.argv) > 1 else "trn1,trn2"
    print("vtrn library %d.%d.%d" % vtrn.version())
    try:
        runtime = vtrn.Runtime(topology=topology)
    except vtrn.InvalidArgumentError as error:
        print(f"bad topology: {error.message}", file=sys.stderr)
        return 2

    with runtime:
        info = runtime.info
        print(f"topology {info.topology}: {info.device_count} devices, "
              f"{info.visible_core_count} of {info.core_count} cores visible")
        for device in runtime.devices:
            d = device.info
            print(f"\n/dev/neuron{d.index}: {d.name} ({d.architecture}), PCI {d.pci_vendor_id:04x}:{d.pci_device_id:04x} "
                  f"at {d.bus_address}, NUMA node {d.numa_node}")
            print(f"  uuid {d.uuid}")
            print(f"  HBM {d.hbm_bytes >> 30} GiB at {gigabytes(d.hbm_bandwidth)}/s, {d.hbm_used_bytes} bytes used")
            print(f"  per core: SBUF {d.sbuf_bytes_per_core >> 20} MiB, PSUM {d.psum_bytes_per_core >> 20} MiB, "
                  f"{d.dma_engines_per_core} DMA engines x {d.queues_per_dma_engine} queues, "
                  f"{d.semaphores_per_core} semaphores")
            for core in device.cores():
                print(f"  core {core.index} (global {core.global_index}){'' if core.visible else ' [not visible]'}: "
                      f"PE {core.pe_clock_hz / 1e9:g} GHz, ACT {core.act_clock_hz / 1e9:g} GHz, "
                      f"DVE {core.dve_clock_hz / 1e9:g} GHz, POOL {core.pool_clock_hz / 1e9:g} GHz")
        first_device = runtime.device(0)

    # The runtime is closed: its device handles are stale, and the library says so.
    try:
        first_device.info
    except vtrn.InvalidHandleError as error:
        print(f"\nafter close, device 0 says: {error.status_name}: {error.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
