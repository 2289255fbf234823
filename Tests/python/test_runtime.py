"""Runtime and Device: enumeration, the chip presets, identifiers, visible cores and lifetime."""

import gc
import re

import pytest

import vtrn

from support import run_python, usable_numa_nodes

KIB, GIB = 1024, 1 << 30

TRN1 = dict(architecture="trn1", name="Trainium1", core_count=2, hbm_bytes=32 * GIB, hbm_bandwidth=820_000_000_000,
            pci_vendor_id=0x1D0F, pci_device_id=0x7164, sbuf_bytes_per_core=128 * 192 * KIB,
            psum_bytes_per_core=128 * 16 * KIB, dma_engines_per_core=16, queues_per_dma_engine=16,
            semaphores_per_core=256, hbm_used_bytes=0, interconnect="NeuronLink-v2", links_per_device=4,
            link_bandwidth=96 * GIB, device_link_bandwidth=384 * GIB, hop_latency_ns=1500)
TRN2 = dict(TRN1, architecture="trn2", name="Trainium2", core_count=8, hbm_bytes=96 * GIB,
            hbm_bandwidth=2_900_000_000_000, pci_device_id=0x7364, sbuf_bytes_per_core=128 * 224 * KIB,
            interconnect="NeuronLink-v3", link_bandwidth=256_000_000_000, device_link_bandwidth=1_024_000_000_000)

TRN1_CORE = dict(engines=frozenset({"pe", "act", "dve", "pool"}), sbuf_partitions=128,
                 sbuf_bytes_per_partition=192 * KIB, psum_bytes_per_partition=16 * KIB, psum_banks=8,
                 semaphores=256, dma_engines=16, queues_per_dma_engine=16, pe_clock_hz=2_800_000_000,
                 act_clock_hz=1_400_000_000, dve_clock_hz=1_120_000_000, pool_clock_hz=1_400_000_000)
TRN2_CORE = dict(TRN1_CORE, sbuf_bytes_per_partition=224 * KIB, pe_clock_hz=2_400_000_000,
                 act_clock_hz=1_200_000_000, dve_clock_hz=960_000_000, pool_clock_hz=1_200_000_000)


@pytest.fixture
def runtime():
    with vtrn.Runtime(topology="trn1,trn2") as runtime:
        yield runtime


def test_trn1_trn2_presets(runtime):
    assert runtime.info == vtrn.RuntimeInfo(device_count=2, core_count=10, visible_core_count=10, log_level="warning",
                                            exec_timeout_ns=30_000 * 1_000_000, topology="trn1,trn2")
    devices = runtime.devices
    assert [device.index for device in devices] == [0, 1]
    first, second = devices[0].info, devices[1].info
    for info, preset, index, first_core in ((first, TRN1, 0, 0), (second, TRN2, 1, 2)):
        for field, value in preset.items():
            assert getattr(info, field) == value, field
        assert info.index == index
        assert info.first_core == first_core
        assert info.visible_core_count == info.core_count
        assert info.numa_node in usable_numa_nodes()
        # A trn1 and a trn2 are never linked (README "Topology and NeuronLink").
        assert info.link_count == 0 and devices[index].links == []
    assert first.sbuf_bytes_per_core == 25165824 and first.psum_bytes_per_core == 2097152


def test_core_info_presets(runtime):
    for device, preset in zip(runtime.devices, (TRN1_CORE, TRN2_CORE)):
        cores = device.cores()
        assert len(cores) == device.info.core_count
        for core_index, core in enumerate(cores):
            assert core.device_index == device.index
            assert core.index == core_index
            assert core.global_index == device.info.first_core + core_index
            assert core.visible is True
            for field, value in preset.items():
                assert getattr(core, field) == value, (device.index, core_index, field)


def test_info_objects_are_frozen(runtime):
    info = runtime.device(0).info
    with pytest.raises(AttributeError):
        info.core_count = 3
    with pytest.raises(AttributeError):
        runtime.info.device_count = 3
    with pytest.raises(AttributeError):
        runtime.device(0).core_info(0).visible = False


def test_same_index_gives_same_handle(runtime):
    assert runtime.device(1).handle.value == runtime.device(1).handle.value
    assert runtime.device(0).handle.value != runtime.device(1).handle.value


def test_bus_addresses_are_pci_style_and_distinct():
    with vtrn.Runtime(topology="trn1:3,trn2") as runtime:
        addresses = [device.info.bus_address for device in runtime.devices]
    assert all(re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", address) for address in addresses), addresses
    assert len(set(addresses)) == 4


def uuids(topology):
    with vtrn.Runtime(topology=topology) as runtime:
        return [device.info.uuid for device in runtime.devices]


def test_uuid_is_stable_for_the_same_topology_and_differs_by_index():
    first, second = uuids("trn1,trn2"), uuids("trn1,trn2")
    assert first == second
    assert first[0] != first[1]
    for uuid in first:
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", uuid), uuid
    same_architecture = uuids("trn1:2")
    assert same_architecture[0] != same_architecture[1]


def test_uuid_is_stable_across_processes():
    child = run_python("import vtrn\nwith vtrn.Runtime('trn1,trn2') as r: print(' '.join(d.info.uuid for d in r.devices))")
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == uuids("trn1,trn2")


def test_canonical_topology_and_counts():
    with vtrn.Runtime(topology=" trn1 , TRN1:2 ,trn2:1") as runtime:
        info = runtime.info
        assert info.topology == "trn1,trn1:2,trn2"
        assert (info.device_count, info.core_count) == (4, 2 + 4 + 8)
        assert [device.info.first_core for device in runtime.devices] == [0, 2, 4, 6]


def test_default_topology_is_one_trn1():
    with vtrn.Runtime() as runtime:
        assert runtime.info.topology == "trn1"
        assert [device.info.architecture for device in runtime.devices] == ["trn1"]


def test_topology_from_environment(monkeypatch):
    monkeypatch.setenv("VTRN_TOPOLOGY", "trn2:2")
    with vtrn.Runtime() as runtime:
        assert runtime.info.topology == "trn2:2"
        assert runtime.device_count == 2
    # An argument overrides the environment.
    monkeypatch.setenv("VTRN_TOPOLOGY", "trn3")
    with vtrn.Runtime(topology="trn1") as runtime:
        assert runtime.info.topology == "trn1"


@pytest.mark.parametrize("node", usable_numa_nodes())
def test_pinned_numa_node(node):
    with vtrn.Runtime(topology=f"trn1,trn2@node{node}") as runtime:
        assert runtime.info.topology == f"trn1,trn2@node{node}"
        assert runtime.device(1).info.numa_node == node


def test_devices_spread_over_numa_nodes_in_blocks():
    nodes = usable_numa_nodes()
    with vtrn.Runtime(topology="trn1:16") as runtime:
        assigned = [device.info.numa_node for device in runtime.devices]
    assert assigned == sorted(assigned)  # blocks: the first devices on the first node
    assert set(assigned) <= set(nodes)
    if len(nodes) <= 16:
        counts = [assigned.count(node) for node in nodes]
        assert min(counts) >= 1 and max(counts) - min(counts) <= 1, counts


# -- visible cores ---------------------------------------------------------------------------

def visibility(runtime):
    return [[core.visible for core in device.cores()] for device in runtime.devices]


def test_visible_cores_range():
    with vtrn.Runtime(topology="trn1,trn2", visible_cores="0-1") as runtime:
        assert runtime.info.visible_core_count == 2
        assert [device.info.visible_core_count for device in runtime.devices] == [2, 0]
        assert visibility(runtime) == [[True, True], [False] * 8]


def test_visible_cores_single():
    with vtrn.Runtime(topology="trn1,trn2", visible_cores="1") as runtime:
        assert runtime.info.visible_core_count == 1
        assert runtime.device(0).core_info(1).visible is True
        assert runtime.device(0).core_info(0).visible is False
        assert visibility(runtime) == [[False, True], [False] * 8]


def test_visible_cores_list_across_devices():
    with vtrn.Runtime(topology="trn1,trn2", visible_cores="0,3-4,9") as runtime:
        assert [device.info.visible_core_count for device in runtime.devices] == [1, 3]
        assert visibility(runtime) == [[True, False], [False, True, True, False, False, False, False, True]]


def test_visible_cores_from_environment(monkeypatch):
    monkeypatch.setenv("VTRN_VISIBLE_CORES", "3")
    with vtrn.Runtime(topology="trn1,trn2") as runtime:
        assert runtime.info.visible_core_count == 1
        assert runtime.device(1).core_info(1).visible is True
    with vtrn.Runtime(topology="trn1,trn2", visible_cores="0") as runtime:  # the argument wins
        assert runtime.device(0).core_info(0).visible is True


# -- log level and execution timeout ----------------------------------------------------------

@pytest.mark.parametrize("level", ["error", "warning", "info", "debug", "trace"])
def test_log_level_from_argument(level):
    with vtrn.Runtime(topology="trn1", log_level=level) as runtime:
        assert runtime.info.log_level == level


def test_log_level_from_environment(monkeypatch):
    monkeypatch.setenv("VTRN_LOG_LEVEL", "error")
    with vtrn.Runtime(topology="trn1") as runtime:
        assert runtime.info.log_level == "error"
    with vtrn.Runtime(topology="trn1", log_level="warning") as runtime:
        assert runtime.info.log_level == "warning"


@pytest.mark.parametrize("text,nanoseconds", [("250", 250_000_000), ("30000", 30_000_000_000), ("0", vtrn.WAIT_FOREVER)])
def test_exec_timeout(monkeypatch, text, nanoseconds):
    monkeypatch.setenv("VTRN_EXEC_TIMEOUT_MS", text)
    with vtrn.Runtime(topology="trn1") as runtime:
        assert runtime.info.exec_timeout_ns == nanoseconds


def test_exec_timeout_default():
    with vtrn.Runtime(topology="trn1") as runtime:
        assert runtime.info.exec_timeout_ns == 30_000_000_000


# -- lifetime ------------------------------------------------------------------------------------

def test_several_runtimes_at_once():
    runtimes = [vtrn.Runtime(topology=topology) for topology in ("trn1", "trn2:2", "trn1,trn2")]
    try:
        assert len({runtime.handle.value for runtime in runtimes}) == 3
        assert [runtime.info.device_count for runtime in runtimes] == [1, 2, 2]
        runtimes[1].close()
        assert runtimes[0].device(0).info.architecture == "trn1"
        assert runtimes[2].device(1).info.architecture == "trn2"
        with pytest.raises(vtrn.InvalidHandleError):
            runtimes[1].info
    finally:
        for runtime in runtimes:
            runtime.close()


def test_close_is_idempotent_and_context_manager_closes():
    with vtrn.Runtime(topology="trn1") as runtime:
        pass
    runtime.close()
    runtime.close()
    with pytest.raises(vtrn.InvalidHandleError):
        runtime.info
    assert "closed" in repr(runtime)


def test_dropped_runtime_is_destroyed():
    runtime = vtrn.Runtime(topology="trn1")
    handle = vtrn._library.RuntimeHandle(runtime.handle.value)
    del runtime
    gc.collect()
    count = vtrn._library.ctypes.c_uint32()
    assert vtrn._library.lib.vtrn_device_count(handle, vtrn._library.ctypes.byref(count)) == vtrn.Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error() == f"vtrn_device_count: vtrn_runtime_t {handle.value:#x} is stale: it was destroyed"


def test_device_keeps_its_runtime_alive():
    device = vtrn.Runtime(topology="trn2").device(0)
    gc.collect()
    assert device.info.core_count == 8
    assert device.runtime.info.topology == "trn2"


def test_runtimes_left_open_at_interpreter_exit():
    code = """
import vtrn
kept = vtrn.Runtime(topology="trn1,trn2")
device = kept.device(1)
cycle = vtrn.Runtime(topology="trn2")
cycle.self_reference = cycle
class Holder:
    pass
holder = Holder()
holder.runtime = vtrn.Runtime(topology="trn1")
holder.me = holder
print("done")
"""
    child = run_python(code)
    assert child.returncode == 0, child.stderr
    assert child.stdout == "done\n"
    assert child.stderr == ""


def test_failed_creation_leaves_nothing_to_finalize():
    with pytest.raises(vtrn.InvalidArgumentError):
        vtrn.Runtime(topology="trn3")
    gc.collect()  # an exception in Runtime.__del__ would fail this test (see pytest.ini)


def test_runtime_destroyed_behind_our_back_is_finalized_quietly():
    runtime = vtrn.Runtime(topology="trn1")
    assert vtrn._library.lib.vtrn_runtime_destroy(runtime.handle) == vtrn.Status.SUCCESS
    del runtime
    gc.collect()
