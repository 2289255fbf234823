"""`vtrn demo` and `vtrn bench` say what they are doing as they go: a plain line per step when
standard output is a pipe (flushed at once, so a log shows it while the step runs), one line
rewritten in place on a terminal (erased before each result, so the screen keeps only results).
Runs the build's vtrn-cli beside the library under test, with small sizes."""

import os
import pty
import re
import subprocess

import pytest

from vtrn import _library
from vtrn.nki import _bench

from support import REPOSITORY, child_environment

ERASE = "\r\x1b[K"
DEMO = ["demo", "--mebibytes", "8", "--gemm-size", "128"]


def tool():
    path = os.path.join(os.path.dirname(os.path.realpath(_library.path)), "vtrn-cli")
    if not path.startswith(os.path.join(REPOSITORY, ".build") + os.sep) or not os.path.isfile(path):
        pytest.skip(f"no vtrn-cli beside the library under test ({_library.path})")
    return path


def piped(*arguments):
    result = subprocess.run([tool(), *arguments], capture_output=True, text=True, timeout=120, env=child_environment())
    assert result.returncode == 0, result.stderr
    return result.stdout


def on_terminal(*arguments):
    """The bytes the tool writes to a pseudo-terminal, as text (the terminal turns \\n into \\r\\n)."""
    main, secondary = pty.openpty()
    process = subprocess.Popen([tool(), *arguments], stdout=secondary, stderr=subprocess.PIPE, env=child_environment())
    os.close(secondary)
    output = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the tool exited and closed its side
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    assert process.wait(timeout=120) == 0, process.stderr.read()
    return output.decode().replace("\r\n", "\n")


def steps(output, title):
    return re.findall(rf"^{re.escape(title)} \[(\d+)/(\d+)\] (.*)\.\.\.$", output, flags=re.M)


def test_demo_prints_a_plain_line_per_step_into_a_pipe():
    output = piped(*DEMO)
    found = steps(output, "demo")
    assert [(int(number), int(total)) for number, total, _ in found] == [(index, 14) for index in range(1, 15)]
    assert found[0][2] == "making 2 host buffers of 8 MiB"
    assert "\r" not in output and "\x1b" not in output
    lines = output.splitlines()
    # Each step's line comes before its result line.
    assert lines.index("demo [4/14] DMA host -> HBM...") + 1 == next(
        index for index, line in enumerate(lines) if line.startswith("  DMA host -> HBM (first touch"))
    assert lines[-1].startswith("  total ")


def test_demo_rewrites_one_line_on_a_terminal():
    output = on_terminal(*DEMO)
    assert output.count(ERASE + "demo [") == 14
    # What the screen shows: each line as the last erase left it. No progress line remains.
    screen = [line.rsplit(ERASE, 1)[-1] for line in output.split("\n")]
    assert not [line for line in screen if line.startswith("demo [")]
    assert screen[-1] == ""
    results = [line for line in screen if line.startswith("  ")]
    assert results[0].startswith("  2 host buffers on node ")
    assert results[-1].startswith("  total ")
    plain = [line for line in piped(*DEMO).splitlines() if line.startswith("  ")]
    assert [line.split()[0] for line in results] == [line.split()[0] for line in plain]


def test_bench_dma_shows_its_steps_before_the_report():
    output = piped("bench", "dma", "--mebibytes", "4", "--seconds", "0.05")
    found = steps(output, "bench dma")
    assert [int(number) for number, _, _ in found] == list(range(1, 9))
    assert found[-1][2] == "CPU used while idle (1 s)"
    assert output.index("bench dma [8/8]") < output.index("vtrn bench dma (")


def test_nki_bench_progress(capsys):
    progress = _bench._Progress("bench nki", 2)
    progress.step("tracing")
    progress.step("running")
    progress.print("| result |")
    assert capsys.readouterr().out == "bench nki [1/2] tracing...\nbench nki [2/2] running...\n| result |\n"
