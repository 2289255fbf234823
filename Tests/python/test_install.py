"""vtrn installed as users install it, and used from outside the repository:

- ``Scripts/install --bin BIN PREFIX`` (the build this suite tests, so no release build is needed)
  lays out include/, lib/ with the versioned file and its SONAME links, lib/pkgconfig/vtrn.pc and
  bin/vtrn; DESTDIR stages the same files elsewhere;
- a C example builds with nothing but ``cc $(pkg-config --cflags --libs vtrn)`` and runs;
- the installed ``vtrn ls`` runs from another folder and loads nothing from the repository;
- the Python package pip-installs (``./python`` and the repository root) into a virtual
  environment, offline, and an example runs from it with the library installed in that
  environment's prefix, or named by VTRN_LIBRARY.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

import vtrn
from vtrn import _library

from support import HEADER, REPOSITORY, Header, child_environment

VERSION = ".".join(Header().macros[f"VTRN_VERSION_{part}"] for part in ("MAJOR", "MINOR", "PATCH"))
MAJOR = VERSION.split(".")[0]


def build_folder():
    """The SwiftPM build folder of the library this suite loaded (its vtrn-cli beside it)."""
    folder = os.path.dirname(os.path.realpath(_library.path))
    if not folder.startswith(os.path.join(REPOSITORY, ".build") + os.sep):
        pytest.skip(f"the library under test ({_library.path}) is not a build of this repository")
    return folder


def outside_environment(**overrides):
    """An environment for programs run as a user outside the repository would run them: no vtrn
    variables, no PYTHONPATH and no LD_LIBRARY_PATH leading back to the repository."""
    environment = child_environment(**overrides)
    for name in ("PYTHONPATH", "LD_LIBRARY_PATH"):
        environment.pop(name, None)
    environment.update(overrides)
    return environment


def run(command, **keywords):
    keywords.setdefault("env", outside_environment())
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **keywords)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def install(prefix, **environment):
    return run(["bash", os.path.join(REPOSITORY, "Scripts", "install"), "--bin", build_folder(), str(prefix)],
               cwd=REPOSITORY, env=child_environment(**environment))


def dynamic_section(path):
    return run(["readelf", "-d", str(path)]).stdout


def no_repository_in_ldd(path):
    """ldd of ``path``: every library resolves, and none from the repository."""
    listing = run(["ldd", str(path)]).stdout
    assert "not found" not in listing, listing
    assert REPOSITORY not in listing, listing
    assert REPOSITORY not in dynamic_section(path)
    return listing


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prefix")
    output = install(folder).stdout
    assert f"install: vtrn {VERSION} into {folder}:" in output
    return folder


def test_layout_versioned_library_and_soname(prefix):
    lib = prefix / "lib"
    assert sorted(os.listdir(prefix)) == ["bin", "include", "lib"]
    assert os.listdir(prefix / "bin") == ["vtrn"]
    assert os.listdir(prefix / "include") == ["vtrn.h"]
    with open(HEADER, "rb") as header, open(prefix / "include" / "vtrn.h", "rb") as installed:
        assert header.read() == installed.read()
    assert sorted(os.listdir(lib)) == ["libvtrn.so", f"libvtrn.so.{MAJOR}", f"libvtrn.so.{VERSION}", "pkgconfig"]
    assert os.readlink(lib / "libvtrn.so") == f"libvtrn.so.{MAJOR}"
    assert os.readlink(lib / f"libvtrn.so.{MAJOR}") == f"libvtrn.so.{VERSION}"
    assert not os.path.islink(lib / f"libvtrn.so.{VERSION}")
    assert f"Library soname: [libvtrn.so.{MAJOR}]" in dynamic_section(lib / f"libvtrn.so.{VERSION}")
    # The build folder's library keeps its SONAME: programs linked against it load libvtrn.so.
    assert "Library soname: [libvtrn.so]" in dynamic_section(_library.path)
    for executable in (prefix / "bin" / "vtrn", lib / f"libvtrn.so.{VERSION}"):
        assert os.access(executable, os.X_OK)


def test_pkg_config_file(prefix):
    text = (prefix / "lib" / "pkgconfig" / "vtrn.pc").read_text()
    assert f"prefix={prefix}\n" in text
    assert f"Version: {VERSION}\n" in text
    environment = outside_environment(PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    assert run(["pkg-config", "--modversion", "vtrn"], env=environment).stdout.strip() == VERSION
    flags = run(["pkg-config", "--cflags", "--libs", "vtrn"], env=environment).stdout.split()
    # Not a prefix the loader searches by itself: the rpath makes programs run without LD_LIBRARY_PATH.
    assert flags == [f"-I{prefix}/include", f"-L{prefix}/lib", f"-Wl,-rpath,{prefix}/lib", "-lvtrn"]


@pytest.mark.parametrize("example", ["enumerate", "dma_copy"])
def test_c_example_builds_with_pkg_config_alone(prefix, tmp_path, example):
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.fail("no cc to build the example with")
    environment = outside_environment(PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"))
    flags = run(["pkg-config", "--cflags", "--libs", "vtrn"], env=environment).stdout.split()
    source = shutil.copy(os.path.join(REPOSITORY, "Examples", "c", f"{example}.c"), tmp_path)
    program = tmp_path / example
    run([compiler, source, *flags, "-o", str(program)], cwd=tmp_path, env=environment)
    section = dynamic_section(program)
    assert f"Shared library: [libvtrn.so.{MAJOR}]" in section
    assert "Shared library: [libvtrn.so]" not in section
    assert f"libvtrn.so.{MAJOR} => {prefix}/lib/libvtrn.so.{MAJOR} " in no_repository_in_ldd(program)
    output = run([str(program)], cwd=tmp_path, env=outside_environment()).stdout
    if example == "enumerate":
        assert output.startswith(f"vtrn {VERSION} (header {VERSION})\n"), output
        assert "device 1: Trainium2 (trn2)" in output
    else:
        assert output.rstrip().endswith("all bytes verified"), output


def test_installed_tool_runs_without_the_build_folder(prefix, tmp_path):
    tool = prefix / "bin" / "vtrn"
    no_repository_in_ldd(tool)
    no_repository_in_ldd(prefix / "lib" / f"libvtrn.so.{VERSION}")
    listing = run([str(tool), "ls", "--topology", "trn1,trn2"], cwd=tmp_path).stdout
    assert listing.startswith(f"vtrn {VERSION}, topology trn1,trn2, 10 cores (10 visible: 0-9)"), listing
    assert "| Trainium2 | trn2 |" in listing
    assert run([str(tool), "--version"], cwd=tmp_path).stdout.strip() == f"vtrn {VERSION}"


def test_destdir_stages_the_files_under_another_root(tmp_path):
    stage = tmp_path / "stage"
    output = install("/opt/vtrn", DESTDIR=str(stage)).stdout
    assert f"into {stage}/opt/vtrn:" in output
    assert os.path.isfile(stage / "opt" / "vtrn" / "lib" / f"libvtrn.so.{VERSION}")
    assert os.path.isfile(stage / "opt" / "vtrn" / "bin" / "vtrn")
    assert "prefix=/opt/vtrn\n" in (stage / "opt" / "vtrn" / "lib" / "pkgconfig" / "vtrn.pc").read_text()


def test_install_refuses_what_it_cannot_use(tmp_path):
    script = os.path.join(REPOSITORY, "Scripts", "install")
    relative = subprocess.run(["bash", script, "relative/prefix"], capture_output=True, text=True)
    assert relative.returncode == 2
    assert relative.stderr == "install: PREFIX must be an absolute path, not 'relative/prefix'\n"
    (tmp_path / "empty").mkdir()
    empty = subprocess.run(["bash", script, "--bin", str(tmp_path / "empty"), str(tmp_path / "prefix")],
                           capture_output=True, text=True)
    assert empty.returncode == 1
    assert empty.stderr.startswith(f"install: {tmp_path}/empty/libvtrn.so is missing; build it first"), empty.stderr
    assert not os.path.exists(tmp_path / "prefix")


# -- the Python package ------------------------------------------------------------------------------

def make_environment(folder):
    """A virtual environment that sees this interpreter's packages (numpy, offline; and pip, which
    installs into the environment it runs in, so the environment needs no pip of its own)."""
    if importlib.util.find_spec("wheel") is None:
        pytest.fail("pip needs the wheel package to build vtrn without build isolation: run Scripts/setup")
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(folder)])
    return folder / "bin" / "python"


def pip_install(python, source):
    run([str(python), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index", str(source)],
        cwd=source)


DESCRIBE = ("import os, vtrn, vtrn.nki; print(os.path.dirname(vtrn.__file__)); print(vtrn.__version__); "
            "print(vtrn.library_path()); print('.'.join(map(str, vtrn.version())))")


def check_installed_package(python, folder, library):
    """The package imports from the environment, not the repository, and loads ``library``."""
    description = run([str(python), "-c", DESCRIBE], cwd=folder).stdout.splitlines()
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    assert description == [os.path.join(site, "vtrn"), VERSION, str(library), VERSION]
    assert os.path.isfile(os.path.join(site, "vtrn", "py.typed"))
    assert os.path.isfile(os.path.join(site, "vtrn", "nki", "isa.py"))


def run_example(python, folder, **environment):
    """Examples/python/enumerate.py, copied outside the repository (so that its sys.path line,
    which points at the repository's python/, finds nothing) and run with the environment's Python."""
    script = shutil.copy(os.path.join(REPOSITORY, "Examples", "python", "enumerate.py"), folder)
    output = run([str(python), script, "trn1"], cwd=folder, env=outside_environment(**environment)).stdout
    assert output.startswith(f"vtrn library {VERSION}\ntopology trn1: 1 devices, 2 of 2 cores visible\n"), output
    return output


def test_pip_install_python_folder_into_a_virtual_environment(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(os.path.join(REPOSITORY, "python"), source, ignore=shutil.ignore_patterns("__pycache__", "build",
                                                                                              "*.egg-info"))
    environment = tmp_path / "venv"
    python = make_environment(environment)
    pip_install(python, source)
    # The library installed into the environment's prefix: sys.prefix/lib is where the package looks.
    install(environment)
    work = tmp_path / "work"
    work.mkdir()
    check_installed_package(python, work, environment / "lib" / f"libvtrn.so.{MAJOR}")
    run_example(python, work)
    # VTRN_LIBRARY wins over the installed library.
    named = run([str(python), "-c", "import vtrn; print(vtrn.library_path())"], cwd=work,
                env=outside_environment(VTRN_LIBRARY=_library.path)).stdout.strip()
    assert named == _library.path


def test_pip_install_from_the_repository_root(tmp_path):
    # The root's pyproject.toml and the package folder, as a checkout has them (copied: pip builds
    # in the tree it installs from).
    source = tmp_path / "checkout"
    shutil.copytree(os.path.join(REPOSITORY, "python", "vtrn"), source / "python" / "vtrn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(REPOSITORY, "pyproject.toml"), source)
    python = make_environment(tmp_path / "venv")
    pip_install(python, source)
    work = tmp_path / "work"
    work.mkdir()
    # No library in this environment's prefix: VTRN_LIBRARY names the repository's build.
    output = run_example(python, work, VTRN_LIBRARY=_library.path)
    assert "core 1 (global 1)" in output
    description = run([str(python), "-c", DESCRIBE], cwd=work,
                      env=outside_environment(VTRN_LIBRARY=_library.path)).stdout.splitlines()
    assert description[1:] == [VERSION, _library.path, VERSION]


def test_the_two_pyproject_files_agree():
    with open(os.path.join(REPOSITORY, "pyproject.toml"), "rb") as file:
        root = tomllib.load(file)
    with open(os.path.join(REPOSITORY, "python", "pyproject.toml"), "rb") as file:
        package = tomllib.load(file)
    assert root["tool"]["setuptools"].pop("package-dir") == {"": "python"}
    assert root == package


def test_versions_are_the_headers():
    assert vtrn.__version__ == VERSION
    assert re.fullmatch(r"\d+\.\d+\.\d+", vtrn.__version__)
    assert ".".join(map(str, vtrn.version())) == VERSION
    assert vtrn.library_path() == _library.path
