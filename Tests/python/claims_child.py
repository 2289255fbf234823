"""A child process for test_claims.py, the Python twin of Tests/c/claims_helper.c: it claims
cores the way users do (a DMA queue on each) and speaks one line at a time on stdin and stdout.

    claims_child.py hold TOPOLOGY DEVICE CORE...
        claims the cores, prints "held PID" and holds them until stdin closes.
    claims_child.py race TOPOLOGY DEVICE CORE
        for each line "claim": a new runtime tries the core and prints "won" or "lost MESSAGE";
        for each line "release": that runtime (if any) is closed and it prints "released". A
        runtime that never claims keeps the virtual device up between rounds.
"""

import os
import sys

import vtrn


def main(mode, topology, device, *cores):
    device, cores = int(device), [int(core) for core in cores]
    if mode == "hold":
        runtime = vtrn.Runtime(topology=topology)
        queues = [runtime.device(device).dma_queue(core=core) for core in cores]  # noqa: F841 (held)
        print("held", os.getpid(), flush=True)
        sys.stdin.read()
        return
    keeper = vtrn.Runtime(topology=topology)  # noqa: F841 (keeps the device up)
    runtime = None
    for line in sys.stdin:
        if line.startswith("claim"):
            runtime = vtrn.Runtime(topology=topology)
            try:
                runtime.device(device).dma_queue(core=cores[0])
                print("won", flush=True)
            except vtrn.BusyError as error:
                print("lost", error.message, flush=True)
                runtime.close()
                runtime = None
        elif line.startswith("release"):
            if runtime is not None:
                runtime.close()
                runtime = None
            print("released", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
