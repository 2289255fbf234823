"""Instance types in the topology and the devices' NeuronLinks through the package: Device.links
against the driver's 4x4 torus table, the rings of device lists, the interconnect figures of
DeviceInfo and the instance type of RuntimeInfo. No core is claimed."""

import ctypes

import pytest

import vtrn
from vtrn._library import lib

GIB = 1 << 30

# aws-neuron-driver v2/neuron_dhal_v2.c, trn1_32xl_neigbor_ids, verbatim.
DRIVER_TORUS = [
    [12, 3, 4, 1], [13, 0, 5, 2], [14, 1, 6, 3], [15, 2, 7, 0], [0, 7, 8, 5], [1, 4, 9, 6], [2, 5, 10, 7],
    [3, 6, 11, 4], [4, 11, 12, 9], [5, 8, 13, 10], [6, 9, 14, 11], [7, 10, 15, 8], [8, 15, 0, 13], [9, 12, 1, 14],
    [10, 13, 2, 15], [11, 14, 3, 12],
]

INSTANCES = {
    # name: (architecture, interconnect, link bandwidth, device bandwidth)
    "trn1.32xlarge": ("trn1", "NeuronLink-v2", 96 * GIB, 384 * GIB),
    "trn1n.32xlarge": ("trn1", "NeuronLink-v2", 192 * GIB, 768 * GIB),
    "trn2.48xlarge": ("trn2", "NeuronLink-v3", 256_000_000_000, 1_024_000_000_000),
    "trn2u.48xlarge": ("trn2", "NeuronLink-v3", 256_000_000_000, 1_024_000_000_000),
}


@pytest.mark.parametrize("name", INSTANCES)
def test_sixteen_device_instances_are_the_drivers_torus(name):
    architecture, interconnect, link, aggregate = INSTANCES[name]
    with vtrn.Runtime(topology=name.upper()) as runtime:
        assert runtime.info.topology == name
        assert runtime.info.instance_type == name
        assert runtime.device_count == 16
        assert [device.links for device in runtime.devices] == DRIVER_TORUS
        info = runtime.device(7).info
        assert info.architecture == architecture
        assert (info.interconnect, info.link_count, info.links_per_device) == (interconnect, 4, 4)
        assert (info.link_bandwidth, info.device_link_bandwidth, info.hop_latency_ns) == (link, aggregate, 1500)


def test_single_device_instance():
    with vtrn.Runtime(topology="trn1.2xlarge") as runtime:
        assert runtime.info.instance_type == "trn1.2xlarge"
        assert runtime.info.device_count == 1 and runtime.info.core_count == 2
        assert runtime.device(0).links == []
        assert runtime.device(0).info.link_count == 0


@pytest.mark.parametrize("topology,links", [
    ("trn1", [[]]),
    ("trn2:2", [[1], [0]]),
    ("trn1:4", [[3, 1], [0, 2], [1, 3], [2, 0]]),
    # Each architecture its own ring, in device order; a trn1 and a trn2 are never linked.
    ("trn1,trn2,trn1:2,trn2", [[3, 2], [4], [0, 3], [2, 0], [1]]),
])
def test_device_lists_are_rings_per_architecture(topology, links):
    with vtrn.Runtime(topology=topology) as runtime:
        assert runtime.info.instance_type is None
        assert [device.links for device in runtime.devices] == links
        assert [device.info.link_count for device in runtime.devices] == [len(each) for each in links]


def test_instance_pinned_to_a_node_spells_it():
    with vtrn.Runtime(topology="trn1.32xlarge@node0") as runtime:
        assert runtime.info.topology == "trn1.32xlarge@node0"
        assert {device.info.numa_node for device in runtime.devices} == {0}


def test_uuids_are_stable_per_topology():
    with vtrn.Runtime(topology="trn1.32xlarge") as first, vtrn.Runtime(topology="trn1.32xlarge") as second, \
            vtrn.Runtime(topology="trn1:16") as listed:
        uuids = [device.info.uuid for device in first.devices]
        assert uuids == [device.info.uuid for device in second.devices]
        assert len(set(uuids)) == 16
        assert not set(uuids) & {device.info.uuid for device in listed.devices}


def test_get_links_too_small_array_raw():
    with vtrn.Runtime(topology="trn2.48xlarge") as runtime:
        device = runtime.device(9)
        count = ctypes.c_uint32(2)
        devices = (ctypes.c_uint32 * 2)(77, 77)
        assert lib.vtrn_device_get_links(device.handle, devices, ctypes.byref(count)) == vtrn.Status.ERROR_INVALID_ARGUMENT
        assert vtrn.last_error() == ("vtrn_device_get_links: *count is 2, but device 9 has 4 links; pass an array of 4 "
                                     "(count now holds it)")
        assert count.value == 4 and list(devices) == [77, 77]
        assert lib.vtrn_device_get_links(device.handle, None, None) == vtrn.Status.ERROR_INVALID_ARGUMENT
        assert vtrn.last_error() == "vtrn_device_get_links: count is NULL"
