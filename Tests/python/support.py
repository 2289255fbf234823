"""Helpers shared by the Python tests: where things are, the host's NUMA nodes, a parser for
include/vtrn.h (so that tests check the package against the header, not against a copy of it),
running Python in a child process, and runtimes that never outlive their test."""

import contextlib
import gc
import os
import re
import subprocess
import threading
import sys

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON_FOLDER = os.path.join(REPOSITORY, "python")
HEADER = os.path.join(REPOSITORY, "include", "vtrn.h")

# Configuration variables the library reads; VTRN_LIBRARY is the package's own.
CONFIGURATION_VARIABLES = ("VTRN_TOPOLOGY", "VTRN_VISIBLE_CORES", "VTRN_LOG_LEVEL", "VTRN_EXEC_TIMEOUT_MS", "VTRN_TRACE",
                           "VTRN_MONITOR_PERIOD_MS", "VTRN_LOCK_DIR", "VTRN_FAULTS", "VTRN_CC_ALGORITHM", "VTRN_MPI_LIBRARY")


def _node_list(text):
    nodes = set()
    for part in text.strip().split(","):
        if part:
            first, _, last = part.partition("-")
            nodes.update(range(int(first), int(last or first) + 1))
    return nodes


def usable_numa_nodes():
    """The NUMA nodes that are online and that this process may allocate on, ascending."""
    try:
        with open("/sys/devices/system/node/online") as file:
            nodes = _node_list(file.read())
    except OSError:
        nodes = {0}
    try:
        with open("/proc/self/status") as file:
            for line in file:
                if line.startswith("Mems_allowed_list:"):
                    nodes &= _node_list(line.split(":", 1)[1])
    except OSError:
        pass
    return sorted(nodes) or [0]


def node_list(nodes):
    """Nodes as the library's messages list them: "0", "0 and 1", "0, 1 and 3"."""
    names = [str(node) for node in nodes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def pages(size):
    """The pages that ``size`` bytes take."""
    return -(-size // PAGE_SIZE)


def transparent_huge_pages():
    """The bracketed word of /sys/kernel/mm/transparent_hugepage/enabled, or None without the file."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as file:
            match = re.search(r"\[(\w+)\]", file.read())
    except OSError:
        return None
    return match.group(1) if match else None


@contextlib.contextmanager
def open_runtime(**arguments):
    """A vtrn.Runtime that is destroyed when the block ends, even when a failed test's traceback
    keeps numpy views of its host buffers alive: devices, their cores and HBM are shared by every
    runtime of the process, so a leaked runtime would fail the tests after it."""
    import vtrn

    runtime = vtrn.Runtime(**arguments)
    try:
        yield runtime
    finally:
        try:
            runtime.close()
        except BufferError:
            gc.collect()
            try:
                runtime.close()
            except BufferError:
                vtrn._library.lib.vtrn_runtime_destroy(runtime.handle)
                runtime._closed = True
                raise


# -- include/vtrn.h --------------------------------------------------------------------------

class Header:
    """What the tests need of the header: macros, enums, structs, function declarations."""

    def __init__(self, path=HEADER):
        self.path = path
        with open(path) as file:
            raw = file.read()
        # Comments out, line continuations joined.
        text = re.sub(r"/\*.*?\*/", " ", raw, flags=re.S)
        text = re.sub(r"//[^\n]*", " ", text).replace("\\\n", " ")
        # Object-like macros only ("VTRN_MAKE_VERSION(major, ...)" is left out).
        self.macros = dict(re.findall(r"^[ \t]*#[ \t]*define[ \t]+(\w+)(?:[ \t]+(.*?))?[ \t]*$", text, flags=re.M))
        code = re.sub(r"^[ \t]*#[^\n]*$", " ", text, flags=re.M)

        # enum name -> {member: value}
        self.enums = {}
        for name, body, _typedef in re.findall(r"typedef\s+enum\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", code, flags=re.S):
            members = {}
            following = 0  # C's value for a member without "=": the previous one's plus 1
            for member in body.split(","):
                if "=" in member:
                    key, value = (part.strip() for part in member.split("=", 1))
                    members[key] = eval(re.sub(r"(\d)u\b", r"\1", value), {}, {})  # "1u << 2", "0x7fffffff"
                elif member.strip():
                    key = member.strip()
                    members[key] = following
                else:
                    continue
                following = members[key] + 1
            self.enums[name] = members

        # struct typedef -> [(C type, field name, array length or None)]
        self.structs = {}
        for _name, body, typedef in re.findall(r"typedef\s+struct\s+(\w+)\s*\{(.*?)\}\s*(\w+)\s*;", code, flags=re.S):
            fields = []
            for declaration in body.split(";"):
                declaration = " ".join(declaration.split())
                if declaration:
                    match = re.fullmatch(r"(.*?)\s*\b(\w+)\s*(?:\[(\d+)\])?", declaration)
                    ctype, field, length = match.groups()
                    fields.append((_normal_type(ctype), field, int(length) if length else None))
            self.structs[typedef] = fields

        # function name -> (return C type, [parameter C types]), in header order
        self.functions = {}
        for result, name, parameters in re.findall(r"([A-Za-z_][\w\s\*]*?)\b(vtrn_\w+)\s*\(([^()]*)\)\s*;", code):
            types = []
            for parameter in parameters.split(","):
                parameter = " ".join(parameter.split())
                if parameter and parameter != "void":
                    types.append(_normal_type(re.fullmatch(r"(.*?)\s*\b\w+", parameter).group(1)))
            self.functions[name] = (_normal_type(result), types)

    def init_macro(self, typedef):
        """The initializer list of a struct's _INIT macro, split at top-level commas."""
        name = "VTRN_" + typedef[len("vtrn_"):-len("_t")].upper() + "_INIT"
        body = self.macros[name].strip()
        assert body.startswith("{") and body.endswith("}"), body
        items, depth, current = [], 0, ""
        for character in body[1:-1]:
            if character == "," and depth == 0:
                items.append(current.strip())
                current = ""
                continue
            depth += {"{": 1, "(": 1, "}": -1, ")": -1}.get(character, 0)
            current += character
        items.append(current.strip())
        return name, items


def _normal_type(text):
    """"const  char*" -> "const char *", "void**" -> "void * *": one spelling per C type."""
    return " ".join(text.replace("*", " * ").split())


# -- child processes ---------------------------------------------------------------------------

def child_environment(**overrides):
    """This process's environment without vtrn variables but the test session's VTRN_LOCK_DIR
    (conftest.py), plus ``overrides``."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("VTRN_") or key == "VTRN_LOCK_DIR"}
    environment.update(overrides)
    return environment


def run_python(code, python_path=PYTHON_FOLDER, cwd=None, prefix=(), **environment):
    """Runs ``code`` in a fresh interpreter with ``python_path`` first on sys.path; ``prefix`` is
    a command that runs the interpreter (e.g. setpriv and its options)."""
    environment = child_environment(**environment)
    environment["PYTHONPATH"] = python_path
    return subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                          cwd=cwd, timeout=120)


# -- kernels ---------------------------------------------------------------------------------

def failure(error_class, call):
    """Runs ``call``, which must raise ``error_class`` with its status; returns the message."""
    import pytest

    with pytest.raises(error_class) as caught:
        call()
    assert caught.value.status == error_class.status
    return caught.value.message


class SerialProgram:
    """A vtrn.Program whose instructions run one after the other whatever their engines: each
    waits for semaphore ``semaphore`` to count the instructions before it, and adds 1 when done.
    Tests pass ``**serial()`` to every instruction; ``load`` and ``store`` move numpy arrays in
    and out through parameters of the same names, and ``run`` executes and returns the outputs."""

    def __init__(self, runtime, semaphore=255):
        self.program = runtime.program()
        self.semaphore = semaphore
        self.count = 0
        self.inputs = {}
        self.outputs = []
        self.hbm = {}  # parameter name -> its AccessPattern

    def __call__(self):
        sync = {"wait": (self.semaphore, self.count), "signal": (self.semaphore, 1)}
        self.count += 1
        return sync

    def load(self, name, array, dtype=None, partition=0, space="sbuf"):
        """A new SBUF tile of ``dtype`` (the array's by default) holding ``array`` (P, F...): a
        DMA from parameter ``name``, which has the array's dtype."""
        import vtrn

        parameter = self.hbm[name] = self.program.parameter(name, array.shape, vtrn.dtype_name(array.dtype))
        tile = self.program.sbuf(array.shape, dtype or array.dtype, partition=partition)
        self.program.dma_copy(tile, parameter, **self())
        self.inputs[name] = array
        return tile

    def output(self, name, shape, dtype):
        """A new parameter that ``run`` returns."""
        self.hbm[name] = self.program.parameter(name, shape, dtype)
        self.outputs.append(name)
        return self.hbm[name]

    def store(self, name, tile):
        """Copies ``tile`` out to a new parameter ``name`` of its shape and dtype (through an SBUF
        tile for PSUM, which DMA does not reach)."""
        if tile.space == "psum":
            staging = self.program.sbuf(tile.shape, tile.dtype, partition=tile.start_partition)
            self.program.tensor_copy(staging, tile, **self())
            tile = staging
        self.program.dma_copy(self.output(name, tile.shape, tile.dtype), tile, **self())

    def run(self, device, core=0):
        """Loads the program on ``core``, executes it once and returns {output name: array}. An
        output that is also an input (in both ``inputs`` and ``outputs``) starts with its array."""
        with self.program, device.load(self.program, core=core) as kernel, \
                kernel.execute(**{**{name: None for name in self.outputs}, **self.inputs}) as fence:
            return {name: fence.result(name) for name in self.outputs}


def run_threads(count, work):
    """Runs work(index) on `count` threads; fails if one raised or hung."""
    errors = []

    def guarded(index):
        try:
            work(index)
        except BaseException as error:  # reported in the main thread
            errors.append((index, error))

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert errors == []
