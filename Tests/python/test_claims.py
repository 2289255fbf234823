"""Core ownership across processes, from Python (include/vtrn.h, "Core ownership"): real child
interpreters (claims_child.py) hold cores, are killed with SIGKILL, and race for a core 200 times; BusyError and
Device.core_holder name the holder's pid and command line; an unusable VTRN_LOCK_DIR is an error
that names it. The children inherit the test session's lock directory (conftest.py)."""

import os
import signal
import subprocess
import sys
import time

import pytest

import vtrn
from support import PYTHON_FOLDER, child_environment, failure, open_runtime

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "claims_child.py")


def start(*arguments, **environment):
    """claims_child.py with ``arguments``, stdin and stdout piped (text)."""
    return subprocess.Popen([sys.executable, CHILD, *map(str, arguments)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1,
                            env=child_environment(PYTHONPATH=PYTHON_FOLDER, **environment))


def said(child):
    return child.stdout.readline().rstrip("\n")


def send(child, line):
    child.stdin.write(line + "\n")
    child.stdin.flush()


@pytest.fixture
def holder():
    """A child holding cores 0 and 1 of device 0 of "trn1:2"; killed at the end if still alive."""
    child = start("hold", "trn1:2", 0, 0, 1)
    assert said(child) == f"held {child.pid}"
    yield child
    if child.poll() is None:
        child.kill()
    child.wait()
    child.stdin.close()
    child.stdout.close()


def test_another_process_holding_a_core_is_named(holder):
    with open_runtime(topology="trn1:2") as runtime:
        device = runtime.device(0)
        found = device.core_holder(0)
        assert found.pid == holder.pid and found.runtime == 1 and not found.this_process
        assert found.command == f"{sys.executable} {CHILD} hold trn1:2 0 0 1"
        lock_file = os.path.join(os.environ["VTRN_LOCK_DIR"], "trn1@node0-device0-core0.lock")
        message = failure(vtrn.BusyError, lambda: device.dma_queue(core=0))
        assert message == (f"vtrn_dma_queue_create: core 0 of device 0 is claimed by runtime 1 of process {holder.pid} "
                           f"({sys.executable} {CHILD} hold trn1:2 0 0 1) until the holder's runtime is destroyed or "
                           f"its process exits (lock file {lock_file})")
        program = runtime.program()
        tile = program.sbuf((1, 4), "fp32")
        program.memset(tile, 0.0)
        assert f"process {holder.pid} (" in failure(vtrn.BusyError, lambda: device.load(program, core=1))
        # Another device of the same topology is free.
        assert runtime.device(1).core_holder(0) is None


def test_sigkilled_holder_frees_its_cores_at_once(holder):
    with open_runtime(topology="trn1:2") as runtime:
        device = runtime.device(0)
        holder.send_signal(signal.SIGKILL)
        assert holder.wait() == -signal.SIGKILL
        start_time = time.monotonic()
        assert device.core_holder(0) is None  # its record is still in the file; its lock is gone
        queues = [device.dma_queue(core=core) for core in (0, 1)]
        elapsed = time.monotonic() - start_time
        assert elapsed < 1.0
        mine = device.core_holder(1)
        assert mine.pid == os.getpid() and mine.this_process and "pytest" in mine.command
        for queue in queues:
            queue.close()


def test_closing_the_runtime_frees_its_cores_for_other_processes():
    racer = start("race", "trn1:3", 2, 1)
    try:
        with open_runtime(topology="trn1:3") as runtime:
            runtime.device(2).dma_queue(core=1).close()  # the claim outlives the queue
            send(racer, "claim")
            answer = said(racer)
            assert answer.startswith("lost vtrn_dma_queue_create: core 1 of device 2 is claimed by runtime ")
            assert f"of process {os.getpid()} (" in answer
            send(racer, "release")
            assert said(racer) == "released"
        send(racer, "claim")
        assert said(racer) == "won"
        with open_runtime(topology="trn1:3") as runtime:
            found = runtime.device(2).core_holder(1)
            assert found.pid == racer.pid and not found.this_process
        send(racer, "release")
        assert said(racer) == "released"
    finally:
        racer.stdin.close()
        assert racer.wait(timeout=60) == 0
        racer.stdout.close()


def test_two_processes_race_for_a_core_200_times_and_exactly_one_wins_each_time():
    racers = [start("race", "trn1:4", 3, 0) for _ in range(2)]
    wins = [0, 0]
    try:
        start_time = time.monotonic()
        for round_number in range(200):
            for racer in racers:
                send(racer, "claim")
            answers = [said(racer) for racer in racers]
            winners = [index for index, answer in enumerate(answers) if answer == "won"]
            assert len(winners) == 1, f"round {round_number}: {answers}"
            winner = winners[0]
            loser = answers[1 - winner]
            assert loser.startswith("lost ") and f"of process {racers[winner].pid} (" in loser, loser
            wins[winner] += 1
            for racer in racers:
                send(racer, "release")
            assert [said(racer) for racer in racers] == ["released", "released"]
        elapsed = time.monotonic() - start_time
        print(f"200 rounds of two processes racing for a core: {elapsed:.2f} s, wins {wins}")
    finally:
        for racer in racers:
            racer.stdin.close()
        for racer in racers:
            assert racer.wait(timeout=60) == 0
            racer.stdout.close()
    assert sum(wins) == 200


def test_a_lock_directory_that_is_a_file_is_refused(monkeypatch, tmp_path):
    path = tmp_path / "not-a-directory"
    path.write_text("")
    monkeypatch.setenv("VTRN_LOCK_DIR", str(path))
    message = failure(vtrn.InvalidArgumentError, lambda: vtrn.Runtime(topology="trn1"))
    assert message == (f'vtrn_runtime_create: VTRN_LOCK_DIR="{path}": cannot keep core claims in "{path}": Not a '
                       "directory; accepted: a directory this process can write (made if missing), or empty for the "
                       "default (/run/vtrn if this process can write it, else $XDG_RUNTIME_DIR/vtrn, else "
                       "/tmp/vtrn-UID)")
    below = path / "locks"
    monkeypatch.setenv("VTRN_LOCK_DIR", str(below))
    message = failure(vtrn.InvalidArgumentError, lambda: vtrn.Runtime(topology="trn1"))
    assert f'cannot keep core claims in "{below}": Not a directory (mkdir {below})' in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory whatever its mode")
def test_a_lock_directory_without_write_permission_is_refused(monkeypatch, tmp_path):
    path = tmp_path / "read-only"
    path.mkdir(mode=0o500)
    monkeypatch.setenv("VTRN_LOCK_DIR", str(path))
    message = failure(vtrn.InvalidArgumentError, lambda: vtrn.Runtime(topology="trn1"))
    assert f'cannot keep core claims in "{path}": Permission denied' in message


def test_a_relative_lock_directory_is_made_from_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VTRN_LOCK_DIR", "made/here")
    with open_runtime(topology="trn1:5") as runtime:
        runtime.device(4).dma_queue(core=1).close()
        assert (tmp_path / "made" / "here" / "trn1@node0-device4-core1.lock").is_file()


def default_lock_directory(environment):
    """The directory vtrn picks without VTRN_LOCK_DIR, by the header's rule."""
    candidates = ["/run/vtrn"]
    if environment.get("XDG_RUNTIME_DIR", "").startswith("/"):
        candidates.append(environment["XDG_RUNTIME_DIR"].rstrip("/") + "/vtrn")
    candidates.append(f"/tmp/vtrn-{os.getuid()}")
    for candidate in candidates:
        parent = os.path.dirname(candidate)
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
        if not os.path.exists(candidate) and os.access(parent, os.W_OK | os.X_OK):
            return candidate
    raise AssertionError("no default lock directory would be usable")


def test_without_vtrn_lock_dir_claims_go_to_the_default_directory(tmp_path):
    # A real claim in the user's default directory, on a device index nobody else uses: the child
    # tries devices of "trn1:64" from a random one until one is free (another run may hold one).
    environment = child_environment(PYTHONPATH=PYTHON_FOLDER, XDG_RUNTIME_DIR=str(tmp_path))
    del environment["VTRN_LOCK_DIR"]
    expected = default_lock_directory(environment)
    script = r"""
import os, random, sys, vtrn
runtime = vtrn.Runtime(topology="trn1:64")
for index in random.sample(range(64), 64):
    try:
        runtime.device(index).dma_queue(core=1)
    except vtrn.BusyError:
        continue
    print(index, flush=True)
    break
sys.stdin.read()
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=environment)
    try:
        index = int(child.stdout.readline())
        lock_file = os.path.join(expected, f"trn1@node0-device{index}-core1.lock")
        with open(lock_file) as file:
            record = file.read()
        assert record.startswith(f"pid {child.pid}\nruntime 1\ncommand {sys.executable} -c ")
        assert record.endswith(f"\nvtrn {'.'.join(map(str, vtrn.version()))}\n")
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0
        child.stdout.close()
    with open(lock_file) as file:
        assert file.read() == ""  # released: the record is emptied, the file stays


def test_core_holder_arguments():
    with open_runtime(topology="trn1:6") as runtime:
        device = runtime.device(5)
        assert device.core_holder(0) is None
        assert failure(vtrn.NotFoundError, lambda: device.core_holder(2)) == (
            "vtrn_device_get_core_holder: device 5 has 2 cores (0-1); core 2 requested")
        with pytest.raises(ValueError):
            device.core_holder(-1)
        queue = device.dma_queue(core=1)
        found = device.core_holder(1)
        assert isinstance(found, vtrn.CoreHolder)
        assert found.pid == os.getpid() and found.this_process and found.runtime > 0 and "pytest" in found.command
        queue.close()
    assert failure(vtrn.InvalidHandleError, lambda: device.core_holder(0)).startswith("vtrn_device_get_core_holder: ")
