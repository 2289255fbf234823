"""`vtrn monitor` and `vtrn top` watching a real child process that runs kernels, as neuron-monitor
and neuron-top watch a training job: its counters rise while it runs, and when it is killed -9 its
shared-memory segment is removed by the next monitor."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import vtrn
from vtrn import _library
from support import PYTHON_FOLDER, REPOSITORY, child_environment

TOOL = os.path.join(os.path.dirname(_library.path), "vtrn-cli")

CHILD = f"""
import sys
sys.path.insert(0, {os.path.join(REPOSITORY, "Tests", "python")!r})
import numpy as np, vtrn
from support import SerialProgram
with vtrn.Runtime(topology="trn1") as runtime:
    device = runtime.devices[0]
    serial = SerialProgram(runtime)
    x = np.arange(512, dtype=np.float32).reshape(16, 32)
    serial.store("y", serial.load("x", x))
    kernel = device.load(serial.program, core=1)
    print("ready", flush=True)
    while True:
        with kernel.execute(x=x, y=None) as fence:
            fence.result("y")
"""


@pytest.fixture
def child(tmp_path):
    """A process executing kernels on core 1 in a loop, publishing every 100 ms."""
    if not os.path.exists(TOOL):
        pytest.skip(f"{TOOL} is not built")
    environment = child_environment(PYTHONPATH=PYTHON_FOLDER, VTRN_MONITOR_PERIOD_MS="100",
                                    VTRN_LOCK_DIR=str(tmp_path / "locks"))
    process = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=environment)
    assert process.stdout.readline().strip() == "ready", process.stderr.read()
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def monitor(*arguments):
    result = subprocess.run([TOOL, "monitor", "--json", *arguments], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_monitor_sees_a_running_process_and_forgets_a_killed_one(child):
    documents = monitor("--period", "300ms", "--count", "3")
    seen = [next((process for process in document["processes"] if process["pid"] == child.pid), None)
            for document in documents]
    assert all(seen), f"pid {child.pid} missing from {documents}"
    assert "python" in seen[0]["command"]
    assert seen[0]["runtimes"] == 1
    cores = [process["devices"][0]["cores"] for process in seen]
    executions = [core[1]["executions"] for core in cores]
    assert executions[0] < executions[1] < executions[2], executions
    assert cores[-1][1]["utilization"] > 0
    assert cores[-1][1]["holder_runtime"] is not None
    assert cores[-1][1]["collectives"] == 0 and cores[-1][1]["collective_device_ns"] == 0
    assert all(core[0]["executions"] == 0 for core in cores)   # core 0 is idle
    device = seen[-1]["devices"][0]
    assert device["name"] == "Trainium1" and device["hbm_used_bytes"] > 0
    assert device["dma_bytes"] > 0 and len(device["dma_bytes_per_engine"]) == 2 * 16 + 2
    assert device["errors"]["lost"] is False and device["errors"]["dma_aborts"] == 0

    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert os.path.exists(f"/dev/shm/vtrn-{child.pid}")       # a killed process cannot clean up
    after = monitor("--count", "1")[0]
    assert child.pid in after["removed_pids"]
    assert all(process["pid"] != child.pid for process in after["processes"])
    assert not os.path.exists(f"/dev/shm/vtrn-{child.pid}")


def test_top_draws_the_process_and_its_cores(child):
    result = subprocess.run([TOOL, "top", "--period", "200ms", "--iterations", "2"], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    screen = result.stdout.split("\x1b[H\x1b[2J")[-1]
    assert f"pid {child.pid}" in screen
    assert "device 0 Trainium1" in screen
    assert "    core 1 [" in screen and "executions" in screen


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed: the interactive test needs a terminal")
def test_top_in_a_terminal_quits_on_q(child):
    session = f"vtrn-top-{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40", TOOL, "top", "--period", "200ms"],
                   check=True)
    try:
        deadline = time.monotonic() + 20
        screen = ""
        while time.monotonic() < deadline and f"pid {child.pid}" not in screen:
            time.sleep(0.3)
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
        assert f"pid {child.pid}" in screen, screen
        assert "core 1 [" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("vtrn top did not quit on q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_publishing_can_be_turned_off_and_a_bad_period_is_refused(monkeypatch):
    monkeypatch.setenv("VTRN_MONITOR_PERIOD_MS", "0")
    with vtrn.Runtime():
        assert not os.path.exists(f"/dev/shm/vtrn-{os.getpid()}")
    monkeypatch.setenv("VTRN_MONITOR_PERIOD_MS", "soon")
    with pytest.raises(vtrn.InvalidArgumentError, match="VTRN_MONITOR_PERIOD_MS=\"soon\" is not a number of milliseconds"):
        vtrn.Runtime()
    monkeypatch.setenv("VTRN_MONITOR_PERIOD_MS", "50")
    with vtrn.Runtime():
        assert os.path.exists(f"/dev/shm/vtrn-{os.getpid()}")
    # The last runtime's close removes the segment (unless another runtime of this process is open).
    if vtrn.handle_counts().runtimes == 0:
        assert not os.path.exists(f"/dev/shm/vtrn-{os.getpid()}")
