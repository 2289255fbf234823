"""Bad configuration values, from arguments and from the environment: each fails
vtrn_runtime_create with InvalidArgumentError and a message naming the source, the bad value
and the accepted forms."""

import pytest

import vtrn

from support import CONFIGURATION_VARIABLES, usable_numa_nodes

TOPOLOGY_FORMS = ('accepted: entries ARCH[:COUNT][@nodeN] separated by commas, ARCH trn1 or trn2, COUNT 1-64 '
                  '(at most 64 devices in all), e.g. "trn1", "trn2:2", "trn1,trn2@node1"; or one instance type alone, '
                  'INSTANCE[@nodeN], INSTANCE trn1.2xlarge, trn1.32xlarge, trn1n.32xlarge, trn2.48xlarge or '
                  'trn2u.48xlarge')
CORE_FORMS = 'accepted: core numbers or ranges separated by commas, counted across all devices, e.g. "0", "0-3", "0,2,5-6"'

BAD_TOPOLOGIES = [
    ("trn3", 'entry 1 ("trn3") names architecture "trn3", which is not trn1 or trn2'),
    ("trn1:0", 'entry 1 ("trn1:0") has count "0", which is not a number from 1 to 64'),
    ("trn1:65", 'entry 1 ("trn1:65") has count "65", which is not a number from 1 to 64'),
    ("trn1:x", 'entry 1 ("trn1:x") has count "x", which is not a number from 1 to 64'),
    ("trn1,,trn2", "entry 2 is empty"),
    ("trn1,", "entry 2 is empty"),
    ("   ", "the topology is empty"),
    ("trn1@nodeX", 'entry 1 ("trn1@nodeX") has "@nodeX" where "@nodeN" (N a NUMA node number) belongs'),
    ("trn1@1", 'entry 1 ("trn1@1") has "@1" where "@nodeN" (N a NUMA node number) belongs'),
    # Signs and other spellings are refused: a count and a node are plain digits, "node" is lower case.
    ("trn1:+3", 'entry 1 ("trn1:+3") has count "+3", which is not a number from 1 to 64'),
    ("trn1@node-0", 'entry 1 ("trn1@node-0") has "@node-0" where "@nodeN" (N a NUMA node number) belongs'),
    ("trn1@node+0", 'entry 1 ("trn1@node+0") has "@node+0" where "@nodeN" (N a NUMA node number) belongs'),
    ("trn1@NODE0", 'entry 1 ("trn1@NODE0") has "@NODE0" where "@nodeN" (N a NUMA node number) belongs'),
    ("trn1:64,trn2", "it has more than 64 devices, the most one host can have"),
    # Instance types: known names only, alone, without a count.
    ("trn3.48xlarge", 'entry 1 ("trn3.48xlarge") names instance type "trn3.48xlarge", which vtrn does not model (it '
                      'models trn1.2xlarge, trn1.32xlarge, trn1n.32xlarge, trn2.48xlarge or trn2u.48xlarge)'),
    ("trn2n.48xlarge", 'entry 1 ("trn2n.48xlarge") names instance type "trn2n.48xlarge", which vtrn does not model (it '
                       'models trn1.2xlarge, trn1.32xlarge, trn1n.32xlarge, trn2.48xlarge or trn2u.48xlarge)'),
    ("trn1.32xlarge:2", 'entry 1 ("trn1.32xlarge:2") gives instance type trn1.32xlarge a count (":2"): an instance has '
                        '16 devices; for more devices list them, e.g. "trn1:32"'),
    ("trn1.2xlarge:2", 'entry 1 ("trn1.2xlarge:2") gives instance type trn1.2xlarge a count (":2"): an instance has '
                       '1 device; for more devices list them, e.g. "trn1:2"'),
    ("trn1.32xlarge,trn1", 'entry 1 ("trn1.32xlarge") is instance type trn1.32xlarge, which stands alone: an instance '
                           'type cannot be combined with other entries'),
    ("trn2,trn2.48xlarge", 'entry 2 ("trn2.48xlarge") is instance type trn2.48xlarge, which stands alone: an instance '
                           'type cannot be combined with other entries'),
    ("trn1.32xlarge,trn1.32xlarge", 'entry 1 ("trn1.32xlarge") is instance type trn1.32xlarge, which stands alone: an '
                                    'instance type cannot be combined with other entries'),
    ("trn1.32xlarge@node", 'entry 1 ("trn1.32xlarge@node") has "@node" where "@nodeN" (N a NUMA node number) belongs'),
]


def create_error(**arguments):
    with pytest.raises(vtrn.InvalidArgumentError) as caught:
        vtrn.Runtime(**arguments)
    error = caught.value
    assert error.status == vtrn.Status.ERROR_INVALID_ARGUMENT
    assert error.status_name == "VTRN_ERROR_INVALID_ARGUMENT"
    assert error.message.startswith("vtrn_runtime_create: ")
    return error.message


@pytest.mark.parametrize("text,problem", BAD_TOPOLOGIES)
def test_bad_topology_argument(text, problem):
    assert create_error(topology=text) == f'vtrn_runtime_create: options.topology="{text}": {problem}; {TOPOLOGY_FORMS}'


def test_empty_topology_argument():
    # An empty option is a value (unlike an empty variable, which counts as unset).
    assert create_error(topology="") == f'vtrn_runtime_create: options.topology="": the topology is empty; {TOPOLOGY_FORMS}'


@pytest.mark.parametrize("text,problem", BAD_TOPOLOGIES)
def test_bad_topology_environment(monkeypatch, text, problem):
    monkeypatch.setenv("VTRN_TOPOLOGY", text)
    assert create_error() == f'vtrn_runtime_create: VTRN_TOPOLOGY="{text}": {problem}; {TOPOLOGY_FORMS}'


@pytest.mark.parametrize("source", ["options.topology", "VTRN_TOPOLOGY"])
def test_topology_numa_node_not_online(monkeypatch, source):
    if source == "VTRN_TOPOLOGY":
        monkeypatch.setenv("VTRN_TOPOLOGY", "trn2@node999")
        message = create_error()
    else:
        message = create_error(topology="trn2@node999")
    assert message.startswith(f'vtrn_runtime_create: {source}="trn2@node999": ')
    assert "device 0 (trn2@node999) asks for NUMA node 999" in message
    assert "this host's online node" in message
    nodes = usable_numa_nodes()
    listed = message.split("online node", 1)[1]
    for node in nodes:
        assert str(node) in listed, (node, message)
    assert message.endswith("accepted: @nodeN with N one of those")


BAD_VISIBLE_CORES = [
    ("5", 'core 5 does not exist: the topology "trn1" has 2 cores (0-1)'),
    ("0-2", 'core 2 does not exist: the topology "trn1" has 2 cores (0-1)'),
    ("2-1", 'the range "2-1" ends before it starts'),
    ("a", '"a" is not a core number or a range like 0-3'),
    ("-1", '"-1" is not a core number or a range like 0-3'),
    ("0-", '"0-" is not a core number or a range like 0-3'),
    ("0,,1", '"" is not a core number or a range like 0-3'),
    ("+1", '"+1" is not a core number or a range like 0-3'),
    ("0-+1", '"0-+1" is not a core number or a range like 0-3'),
    ("0,+1", '"+1" is not a core number or a range like 0-3'),
    ("   ", "no core is listed"),
]


@pytest.mark.parametrize("text,problem", BAD_VISIBLE_CORES)
def test_bad_visible_cores_argument(text, problem):
    message = create_error(topology="trn1", visible_cores=text)
    assert message == f'vtrn_runtime_create: options.visible_cores="{text}": {problem}; {CORE_FORMS}'


@pytest.mark.parametrize("text,problem", BAD_VISIBLE_CORES)
def test_bad_visible_cores_environment(monkeypatch, text, problem):
    monkeypatch.setenv("VTRN_VISIBLE_CORES", text)
    message = create_error(topology="trn1")
    assert message == f'vtrn_runtime_create: VTRN_VISIBLE_CORES="{text}": {problem}; {CORE_FORMS}'


def test_empty_visible_cores_argument():
    message = create_error(topology="trn1", visible_cores="")
    assert message == f'vtrn_runtime_create: options.visible_cores="": no core is listed; {CORE_FORMS}'


def test_visible_cores_count_across_devices():
    message = create_error(topology="trn1,trn2", visible_cores="10")
    assert 'core 10 does not exist: the topology "trn1,trn2" has 10 cores (0-9)' in message


@pytest.mark.parametrize("text", ["loud", "3", "   ", "errors"])
def test_bad_log_level_environment(monkeypatch, text):
    monkeypatch.setenv("VTRN_LOG_LEVEL", text)
    assert create_error(topology="trn1") == (f'vtrn_runtime_create: VTRN_LOG_LEVEL="{text}" is not a log level; '
                                             "accepted: error, warning, info, debug, trace")


def test_log_level_argument_overrides_bad_environment(monkeypatch):
    monkeypatch.setenv("VTRN_LOG_LEVEL", "loud")
    with vtrn.Runtime(topology="trn1", log_level="error") as runtime:
        assert runtime.info.log_level == "error"


def test_bad_log_level_number_is_rejected_by_the_library():
    assert create_error(topology="trn1", log_level=9) == (
        "vtrn_runtime_create: options.log_level is 9; accepted: VTRN_LOG_LEVEL_DEFAULT (0) to VTRN_LOG_LEVEL_TRACE (5)")


def test_bad_log_level_name_is_rejected_in_python():
    with pytest.raises(ValueError) as caught:
        vtrn.Runtime(topology="trn1", log_level="loud")
    assert str(caught.value) == "log_level 'loud' is not one of default, error, warning, info, debug, trace"


@pytest.mark.parametrize("text", ["abc", "-5", "+5", "1.5", "   ", "17592186044416"])
def test_bad_exec_timeout(monkeypatch, text):
    monkeypatch.setenv("VTRN_EXEC_TIMEOUT_MS", text)
    assert create_error(topology="trn1") == (
        f'vtrn_runtime_create: VTRN_EXEC_TIMEOUT_MS="{text}" is not a number of milliseconds from 0 to 17592186044415; '
        "accepted: 0 (no timeout) or a positive number such as 30000")


def test_largest_exec_timeout(monkeypatch):
    # 2^44 - 1 ms is the most that fits in exec_timeout_ns (uint64_t nanoseconds).
    monkeypatch.setenv("VTRN_EXEC_TIMEOUT_MS", "17592186044415")
    with vtrn.Runtime(topology="trn1") as runtime:
        assert runtime.info.exec_timeout_ns == 17592186044415 * 1_000_000


@pytest.mark.parametrize("name", CONFIGURATION_VARIABLES)
def test_empty_variable_counts_as_unset(monkeypatch, name):
    monkeypatch.setenv(name, "")
    with vtrn.Runtime() as runtime:
        assert runtime.info == vtrn.RuntimeInfo(device_count=1, core_count=2, visible_core_count=2, log_level="warning",
                                                exec_timeout_ns=30_000 * 1_000_000, topology="trn1")


def test_bad_trace_folder(monkeypatch, tmp_path):
    path = tmp_path / "missing" / "trace.json"
    monkeypatch.setenv("VTRN_TRACE", str(path))
    assert create_error(topology="trn1") == (
        f'vtrn_runtime_create: VTRN_TRACE="{path}": the folder "{path.parent}" does not exist or cannot be written; '
        "accepted: a file path in a writable folder, or empty for no trace")
