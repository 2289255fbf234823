"""Copies a numpy array to a virtual Trainium's HBM and back through a DMA queue, checks every
byte, and prints how fast each direction went.

    python3 Examples/python/dma_copy.py        # 256 MiB
    python3 Examples/python/dma_copy.py 64     # 64 MiB

Run it from anywhere after `swift build`; set VTRN_LIBRARY to use another libvtrn.so.
For a one-off copy, ``device.to_device(array)`` and ``device.from_device(memory, dtype, shape)``
do all of this in one call each.
"""

import os
import sys
import time

# The package lives in the repository's python/ folder, two levels above this file.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import numpy as np  # noqa: E402

import vtrn  # noqa: E402


def copy(queue, destination, source, size):
    """One DMA transfer of ``size`` bytes, start to finish; returns the seconds it took."""
    start = time.perf_counter()
    queue.enqueue([(destination, source, size)])
    queue.wait(queue.submit())
    return time.perf_counter() - start


def main():
    mebibytes = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    size = mebibytes << 20

    with vtrn.Runtime(topology="trn1") as runtime:
        device = runtime.device(0)
        try:
            hbm = device.allocate(size)
        except vtrn.OutOfDeviceMemoryError as error:
            print(f"too large: {error.message}", file=sys.stderr)
            return 1
        data = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)
        # One ring entry per 64 KiB descriptor, so that the whole copy is one transfer.
        descriptors = -(-size // vtrn.DMA_MAX_DESCRIPTOR_BYTES)
        ring_entries = min(max(descriptors, vtrn.DMA_MIN_RING_ENTRIES), vtrn.DMA_MAX_RING_ENTRIES)
        # DMA works on host buffers: this one is on the device's NUMA node, as a driver would put it.
        with hbm, runtime.host_buffer(size) as staging, device.dma_queue(ring_entries=ring_entries) as queue:
            staging.numpy()[:] = data
            print(f"copying {mebibytes} MiB through queue 0 of DMA engine 0 of core 0 of {device.info.name}")
            first = copy(queue, hbm, staging, size)
            again = copy(queue, hbm, staging, size)
            staging.numpy()[:] = 0
            back = copy(queue, staging, hbm, size)
            same = np.array_equal(staging.numpy(), data)
        print(f"  host -> HBM  {size / first / 1e9:6.2f} GB/s  (the first write commits the HBM pages)")
        print(f"  host -> HBM  {size / again / 1e9:6.2f} GB/s")
        print(f"  HBM -> host  {size / back / 1e9:6.2f} GB/s")
    if not same:
        print("the data came back different", file=sys.stderr)
        return 1
    print(f"verified: all {size} bytes came back as they went")
    return 0


if __name__ == "__main__":
    sys.exit(main())
