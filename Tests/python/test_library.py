"""Finding and loading libvtrn.so: VTRN_LIBRARY, the repository's build folders, version checks
and the errors when something is wrong. Each case runs in a child interpreter so that the
library loaded by this one stays as it is. Also runs the example programs."""

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import vtrn
from vtrn import _library

from support import PYTHON_FOLDER, REPOSITORY, child_environment, run_python

PRINT_PATH = "import vtrn, vtrn._library as l; print(l.path)"


def import_error(child):
    assert child.returncode != 0
    assert "vtrn._library.LibraryError: " in child.stderr, child.stderr
    return child.stderr.split("vtrn._library.LibraryError: ", 1)[1].strip()


def test_library_error_is_an_import_error():
    assert issubclass(vtrn.LibraryError, ImportError)


def test_vtrn_library_chooses_the_file():
    child = run_python(PRINT_PATH, VTRN_LIBRARY=_library.path)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == _library.path


def test_vtrn_library_missing_file(tmp_path):
    missing = str(tmp_path / "nowhere" / "libvtrn.so")
    message = import_error(run_python("import vtrn", VTRN_LIBRARY=missing))
    assert message == (f"VTRN_LIBRARY={missing!r}: no such file; point it at a built libvtrn.so "
                       "or unset it to use the repository's build")


def test_vtrn_library_not_a_library(tmp_path):
    text = tmp_path / "libvtrn.so"
    text.write_text("not an ELF file\n")
    message = import_error(run_python("import vtrn", VTRN_LIBRARY=str(text)))
    assert message.startswith(f"cannot load {text}: ")
    assert "invalid ELF header" in message or "too short" in message, message


def copy_package(root, checkout=True):
    """The package alone under ``root``/python, so that ``root`` plays the repository (with a
    Package.swift, which is how the package knows it runs from a checkout) or, without
    ``checkout``, a folder the package was copied to."""
    shutil.copytree(os.path.join(PYTHON_FOLDER, "vtrn"), root / "python" / "vtrn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if checkout:
        (root / "Package.swift").write_text("// plays the repository's\n")
    return str(root / "python")


def installed_places():
    """Where the package looks for an installed library (after the repository's builds)."""
    return [os.path.join(sys.prefix, "lib", _library.SONAME), _library._BY_NAME,
            os.path.join("/usr/local/lib", _library.SONAME)]


def skip_if_installed():
    """These tests need a machine where no libvtrn is installed (Scripts/install /usr/local)."""
    import ctypes

    for place in installed_places():
        try:
            ctypes.CDLL(_library.SONAME if place == _library._BY_NAME else place)
        except OSError:
            continue
        pytest.skip(f"a libvtrn is installed ({place}), so the package finds one")


def test_no_library_built(tmp_path):
    skip_if_installed()
    message = import_error(run_python("import vtrn", python_path=copy_package(tmp_path)))
    release = tmp_path / ".build" / "release" / "libvtrn.so"
    debug = tmp_path / ".build" / "debug" / "libvtrn.so"
    assert message.splitlines() == [
        "libvtrn.so not found; tried:",
        f"  {release}",
        f"  {debug}",
        *(f"  {place}" for place in installed_places()),
        f"build it with `swift build` in {tmp_path} (or set VTRN_LIBRARY to the path of a libvtrn.so)",
    ]


def test_no_library_installed(tmp_path):
    skip_if_installed()
    message = import_error(run_python("import vtrn", python_path=copy_package(tmp_path, checkout=False)))
    assert message.splitlines() == [
        "libvtrn.so not found; tried:",
        *(f"  {place}" for place in installed_places()),
        "install it with the vtrn repository's Scripts/install (or set VTRN_LIBRARY to the path of a libvtrn.so)",
    ]


@pytest.mark.parametrize("newest", ["release", "debug"])
def test_most_recent_build_wins(tmp_path, newest):
    python_path = copy_package(tmp_path)
    for age, kind in enumerate(["release", "debug"] if newest == "debug" else ["debug", "release"]):
        folder = tmp_path / ".build" / kind
        folder.mkdir(parents=True)
        shutil.copy2(_library.path, folder / "libvtrn.so")
        os.utime(folder / "libvtrn.so", (1_700_000_000 + age * 1000,) * 2)
    child = run_python(PRINT_PATH, python_path=python_path)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == str(tmp_path / ".build" / newest / "libvtrn.so")


def test_only_debug_build(tmp_path):
    python_path = copy_package(tmp_path)
    (tmp_path / ".build" / "debug").mkdir(parents=True)
    shutil.copy2(_library.path, tmp_path / ".build" / "debug" / "libvtrn.so")
    child = run_python(PRINT_PATH + "; print(vtrn.version())", python_path=python_path)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split("\n")[0] == str(tmp_path / ".build" / "debug" / "libvtrn.so")


def build_fake_library(tmp_path, source):
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler to build a fake libvtrn.so")
    (tmp_path / "fake.c").write_text(textwrap.dedent(source))
    output = tmp_path / "libvtrn.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(output), str(tmp_path / "fake.c")], check=True)
    return str(output)


def test_wrong_major_version(tmp_path):
    fake = build_fake_library(tmp_path, """
        #include <stdint.h>
        uint32_t vtrn_version(void) { return (1u << 16) | (2u << 8) | 3u; }
    """)
    message = import_error(run_python("import vtrn", VTRN_LIBRARY=fake))
    assert message == (f"{fake} is libvtrn 1.2.3; this package needs major version 0 (it was written for 0.2.0); "
                       "rebuild the library or use the package of its version")


def test_not_libvtrn(tmp_path):
    fake = build_fake_library(tmp_path, "int something_else(void) { return 0; }\n")
    message = import_error(run_python("import vtrn", VTRN_LIBRARY=fake))
    assert message == f"{fake} is not libvtrn: it has no vtrn_version"


def test_older_library_loads_and_names_what_it_lacks(tmp_path):
    fake = build_fake_library(tmp_path, """
        #include <stdint.h>
        uint32_t vtrn_version(void) { return 1u << 8; }
        const char *vtrn_status_string(uint32_t status) { (void)status; return "fake"; }
    """)
    code = textwrap.dedent("""
        import vtrn, vtrn._library as l
        print(vtrn.status_string(0))
        print("vtrn_runtime_create" in l.missing_functions, "vtrn_status_string" in l.missing_functions)
        try:
            vtrn.Runtime()
        except vtrn.LibraryError as error:
            print(error)
    """)
    child = run_python(code, VTRN_LIBRARY=fake)
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == [
        "fake",
        "True False",
        f"{fake} (libvtrn 0.1.0) does not export vtrn_runtime_create, which include/vtrn.h declares: "
        "the library is older than the header; rebuild it with `swift build`",
    ]


# -- the example program ---------------------------------------------------------------------------

def run_example(*arguments, cwd=REPOSITORY, script="enumerate.py"):
    return subprocess.run([sys.executable, os.path.join("Examples", "python", script), *arguments],
                          capture_output=True, text=True, cwd=cwd, env=child_environment(), timeout=120)


def test_example_enumerates_and_shows_a_stale_handle():
    child = run_example()
    assert child.returncode == 0, child.stderr
    output = child.stdout
    assert "topology trn1,trn2: 2 devices, 10 of 10 cores visible" in output
    assert "/dev/neuron0: Trainium1 (trn1), PCI 1d0f:7164" in output
    assert "/dev/neuron1: Trainium2 (trn2), PCI 1d0f:7364" in output
    assert output.count("  core ") == 10
    assert "core 7 (global 9): PE 2.4 GHz, ACT 1.2 GHz, DVE 0.96 GHz, POOL 1.2 GHz" in output
    assert "after close, device 0 says: VTRN_ERROR_INVALID_HANDLE: vtrn_device_get_info: vtrn_device_t 0x" in output
    assert "is stale" in output


def test_example_takes_a_topology_and_reports_a_bad_one():
    child = run_example("trn2:2")
    assert child.returncode == 0, child.stderr
    assert "topology trn2:2: 2 devices, 16 of 16 cores visible" in child.stdout
    child = run_example("trn3")
    assert child.returncode == 2
    assert child.stderr.startswith('bad topology: vtrn_runtime_create: options.topology="trn3": entry 1 ("trn3") names')


def test_example_runs_from_another_folder(tmp_path):
    child = subprocess.run([sys.executable, os.path.join(REPOSITORY, "Examples", "python", "enumerate.py"), "trn1"],
                           capture_output=True, text=True, cwd=tmp_path, env=child_environment(), timeout=120)
    assert child.returncode == 0, child.stderr
    assert "topology trn1: 1 devices" in child.stdout


def test_dma_copy_example():
    child = run_example("8", script="dma_copy.py")
    assert child.returncode == 0, child.stderr
    lines = child.stdout.splitlines()
    assert lines[0] == "copying 8 MiB through queue 0 of DMA engine 0 of core 0 of Trainium1"
    assert re.fullmatch(r"  host -> HBM +\d+\.\d\d GB/s  \(the first write commits the HBM pages\)", lines[1]), lines
    assert re.fullmatch(r"  host -> HBM +\d+\.\d\d GB/s", lines[2]), lines
    assert re.fullmatch(r"  HBM -> host +\d+\.\d\d GB/s", lines[3]), lines
    assert lines[4:] == ["verified: all 8388608 bytes came back as they went"]


def test_dma_copy_example_too_large():
    child = run_example("40000", script="dma_copy.py")
    assert child.returncode == 1
    assert child.stdout == ""
    assert child.stderr.startswith("too large: vtrn_device_memory_alloc: device 0 (Trainium1) cannot allocate 39.1 GiB "
                                   "(41943040000 bytes)")


def test_the_readme_python_example_runs():
    with open(os.path.join(REPOSITORY, "README.md")) as readme:
        code = re.search(r"```python\n(.*?)```", readme.read(), re.S).group(1)
    result = run_python(code, cwd=REPOSITORY)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cannot allocate 40 GiB" in result.stdout
