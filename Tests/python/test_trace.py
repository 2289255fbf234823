"""VTRN_TRACE as a user reads it: every engine, semaphore waits, DMA queues and host API calls,
valid JSON at every moment (also when the process exits without destroying its runtime), and
`vtrn trace summary` / `vtrn trace render` over it, the SVG checked by parsing it."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

import vtrn
from vtrn import _library
from support import PYTHON_FOLDER, REPOSITORY, SerialProgram, child_environment

TOOL = os.path.join(os.path.dirname(_library.path), "vtrn-cli")
SVG = "{http://www.w3.org/2000/svg}"


def workload(runtime):
    """A kernel with cross-engine semaphores (DMA in, ACT, DMA out), a DMA queue and a memcpy."""
    device = runtime.devices[0]
    serial = SerialProgram(runtime)
    x = np.arange(2048, dtype=np.float32).reshape(64, 32)
    tile = serial.load("x", x)
    doubled = serial.program.sbuf((64, 32), np.float32)
    serial.program.activate(doubled, "copy", tile, scale=2.0, **serial())
    serial.store("y", doubled)
    with device.load(serial.program, core=0) as kernel, kernel.execute(x=x, y=None) as fence:
        assert np.array_equal(fence.result("y"), 2 * x)
    buffer, memory = runtime.host_buffer(1 << 20), device.allocate(1 << 20)
    queue = device.dma_queue(core=1, engine=2)
    queue.enqueue([(memory, buffer, 1 << 20), (buffer, memory, 1 << 20)])
    queue.wait(queue.submit())
    device.memcpy(memory, buffer, 4096)


@pytest.fixture
def traced(tmp_path, monkeypatch):
    path = tmp_path / "trace.json"
    monkeypatch.setenv("VTRN_TRACE", str(path))
    return path


def load(path):
    with open(path) as file:
        return json.load(file)["traceEvents"]


def test_the_trace_shows_engines_waits_dma_and_host_calls(traced):
    with vtrn.Runtime(topology="trn1") as runtime:
        workload(runtime)
        # Valid JSON while the runtime is still open: the file is closed after every batch.
        events = load(traced)
        assert any(event.get("cat") == "instruction" for event in events)
    events = load(traced)
    categories = {event.get("cat") for event in events}
    assert {"instruction", "semaphore", "api", "dma", "flow", "host"} <= categories, categories
    names = {event["args"]["name"] for event in events if event.get("name") == "process_name"}
    assert any(name.endswith("— device clock") for name in names) and "host — wall clock" in names
    instructions = [event for event in events if event.get("cat") == "instruction"]
    activate = next(event for event in instructions if event["name"] == "ACTIVATE")
    assert activate["args"]["cycles"] > 0 and "dst=SBUF[0:64]" in activate["args"]["operands"]
    waits = [event for event in events if event.get("cat") == "semaphore"]
    assert waits and all(event["name"].startswith("wait sem ") and event["dur"] > 0 for event in waits)
    calls = {event["name"] for event in events if event.get("cat") == "api"}
    assert {"execute", "fence wait", "dma enqueue", "dma submit", "dma wait", "memcpy"} <= calls, calls
    transfers = [event for event in events if event.get("cat") == "dma"]
    queued = next(event for event in transfers if event["args"]["transfers"] == 2)
    assert queued["args"]["bytes"] == 2 << 20 and queued["args"]["direction"] == "mixed"
    assert queued["args"]["rate_gb_per_s"] > 0
    assert any(event["args"]["direction"] == "host to device" and event["args"]["bytes"] == 4096 for event in transfers)
    # A flow arrow from the execute call to its execution.
    starts = {event["id"] for event in events if event.get("ph") == "s"}
    ends = {event["id"] for event in events if event.get("ph") == "f"}
    assert starts and starts == ends


def test_a_process_that_exits_without_destroying_its_runtime_leaves_a_valid_trace(tmp_path):
    path = tmp_path / "exit.json"
    code = f"""
import os, sys
sys.path.insert(0, {os.path.join(REPOSITORY, "Tests", "python")!r})
import vtrn, test_trace
runtime = vtrn.Runtime(topology="trn1")
test_trace.workload(runtime)
os._exit(0)   # no destroy, no atexit, no interpreter teardown
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=child_environment(PYTHONPATH=PYTHON_FOLDER, VTRN_TRACE=str(path),
                                                  VTRN_LOCK_DIR=str(tmp_path / "locks")))
    assert result.returncode == 0, result.stderr
    events = load(path)
    assert any(event.get("name") == "ACTIVATE" for event in events)
    assert any(event.get("cat") == "dma" for event in events)


def test_a_failed_execution_is_in_the_trace_with_its_status(traced):
    with vtrn.Runtime(topology="trn1") as runtime:
        program = runtime.program()
        tile = program.sbuf((1, 4), np.float32)
        program.memset(tile, 1.0, wait=(5, 1))   # semaphore 5 never rises: a deadlock
        with runtime.devices[0].load(program, core=0) as kernel:
            fence = kernel.execute()
            with pytest.raises(vtrn.DeadlockError):
                fence.wait()
            fence.close()
    executions = [event for event in load(traced) if event.get("name") == "execution"]
    assert executions and "deadlock" in executions[-1]["args"]["status"]


@pytest.fixture
def trace_file(traced):
    with vtrn.Runtime(topology="trn1") as runtime:
        workload(runtime)
    return traced


def tool(*arguments):
    if not os.path.exists(TOOL):
        pytest.skip(f"{TOOL} is not built")
    result = subprocess.run([TOOL, *arguments], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_summary_says_where_the_time_went(trace_file):
    text = tool("trace", "summary", str(trace_file))
    assert "engines (device clock" in text and "device 0 core 0 ACT" in text
    assert "DMA (host clock" in text and "core 1 DMA engine 2 queue 0" in text and "GB/s" in text
    assert "top instructions by time" in text and "ACTIVATE" in text
    assert "longest semaphore stalls" in text and "wait sem" in text


def test_render_draws_rows_bars_an_axis_and_a_legend(trace_file, tmp_path):
    for extra in ([], ["--execution", "1"]):
        output = tmp_path / "timeline.svg"
        tool("trace", "render", str(trace_file), "-o", str(output), *extra)
        root = ElementTree.parse(output).getroot()
        assert root.tag == SVG + "svg"
        rows = [group for group in root.iter(SVG + "g") if group.get("class") == "row"]
        names = [row.get("data-name") for row in rows]
        assert "device 0 core 0 ACT" in names and "device 0 core 0 DMA" in names
        bars = [rect for rect in root.iter(SVG + "rect") if rect.get("class") == "bar"]
        assert len(bars) > 5 and all(float(bar.get("width")) > 0 for bar in bars)
        device_rows = [row for row in rows if row.get("data-clock") == "device"]
        assert device_rows and any(rect.get("class") == "bar" for row in device_rows for rect in row)
        ticks = [float(text.get("data-time-us")) for text in root.iter(SVG + "text") if text.get("class") == "tick"]
        assert len(ticks) >= 3 and ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
        legend = next(group for group in root.iter(SVG + "g") if group.get("class") == "legend")
        labels = {text.text for text in legend.iter(SVG + "text")}
        assert "ACTIVATE" in labels and "semaphore" in labels
        if extra:
            assert not any(row.get("data-name", "").startswith("host") for row in rows)
