"""Host buffers: NUMA placement, huge pages, mlock, numpy views, registered numpy arrays, and
every error a caller can hit, with its status and message."""

import ctypes
import gc
import os
import re
import shutil
import weakref
from ctypes import byref

import numpy as np
import pytest

import vtrn
from vtrn import Status
from vtrn._library import HostBufferHandle, HostBufferInfoStruct, HostBufferOptionsStruct, lib

from support import (
    PAGE_SIZE,
    node_list,
    open_runtime,
    pages,
    run_python,
    transparent_huge_pages,
    usable_numa_nodes,
)

NODES = usable_numa_nodes()
PLACEMENT_FORMS = ("accepted: VTRN_NUMA_DEVICE_LOCAL (0), VTRN_NUMA_NODE (1), VTRN_NUMA_INTERLEAVE (2), "
                   "VTRN_NUMA_ANY (3)")
ONLINE = f"this host's online NUMA node{' is' if len(NODES) == 1 else 's are'} {node_list(NODES)}"


@pytest.fixture
def runtime():
    with open_runtime(topology="trn1") as runtime:
        yield runtime


def create_raw(runtime, size, **fields):
    """vtrn_host_buffer_create with the options struct as given: (status, handle, message)."""
    options = HostBufferOptionsStruct.init(**fields)
    handle = HostBufferHandle(0x5555)
    status = lib.vtrn_host_buffer_create(runtime.handle, size, byref(options), byref(handle))
    message = vtrn.last_error()
    if status == Status.SUCCESS:
        lib.vtrn_host_buffer_destroy(handle)
    else:
        assert handle.value == 0x5555  # out-parameter untouched on failure
    return status, message


def failure(error_class, call):
    with pytest.raises(error_class) as caught:
        call()
    assert caught.value.status == error_class.status
    return caught.value.message


# -- creation and placement -------------------------------------------------------------------------

def test_default_buffer_is_device_local_and_zeroed(runtime):
    size = 3 * PAGE_SIZE + 5
    with runtime.host_buffer(size) as buffer:
        node = runtime.device(0).info.numa_node
        assert buffer.bytes == size
        assert buffer.info == vtrn.HostBufferInfo(address=buffer.address, bytes=size, placement="device_local",
                                                  requested_node=node, flags=frozenset(), huge_pages=False,
                                                  locked=False, registered=False, note="")
        assert buffer.address % PAGE_SIZE == 0
        assert buffer.numa_node == node
        counts = buffer.node_pages()
        assert len(counts) >= max(NODES) + 1
        assert counts[node] == sum(counts) == pages(size)  # touched (zeroed) at creation
        assert not buffer.numpy().any()


def test_zero_bytes(runtime):
    message = failure(vtrn.InvalidArgumentError, lambda: runtime.host_buffer(0))
    assert message == "vtrn_host_buffer_create: bytes is 0; a host buffer holds at least 1 byte"


@pytest.mark.parametrize("placement", [4, 1000, 0x7FFFFFFF])
def test_bad_placement_number(runtime, placement):
    status, message = create_raw(runtime, 64, placement=placement)
    assert status == Status.ERROR_INVALID_ARGUMENT
    assert message == f"vtrn_host_buffer_create: options.placement is {placement}; {PLACEMENT_FORMS}"


def test_bad_placement_name_is_refused_in_python(runtime):
    with pytest.raises(ValueError) as caught:
        runtime.host_buffer(64, placement="local")
    assert str(caught.value) == "placement 'local' is not one of device_local, node, interleave, any"


@pytest.mark.parametrize("flags", [1 << 2, 1 << 31, 0xFF])
def test_unknown_flag_bits(runtime, flags):
    status, message = create_raw(runtime, 64, flags=flags)
    assert status == Status.ERROR_INVALID_ARGUMENT
    unknown = flags & ~0b11
    assert message == (f"vtrn_host_buffer_create: options.flags has unknown bits {unknown:#x}; "
                       "accepted: VTRN_HOST_BUFFER_HUGEPAGES, VTRN_HOST_BUFFER_LOCKED")


def test_device_out_of_range_for_device_local():
    with open_runtime(topology="trn1,trn2") as runtime:
        message = failure(vtrn.InvalidArgumentError, lambda: runtime.host_buffer(64, device=2))
        assert message == "vtrn_host_buffer_create: options.device is 2, but the runtime has 2 devices (0-1)"
        status, raw = create_raw(runtime, 64, device=0xFFFF_FFFF)
        assert status == Status.ERROR_INVALID_ARGUMENT
        assert raw == "vtrn_host_buffer_create: options.device is 4294967295, but the runtime has 2 devices (0-1)"


def test_device_out_of_range_single_device(runtime):
    message = failure(vtrn.InvalidArgumentError, lambda: runtime.host_buffer(64, device=1))
    # The library says "1 device (0-0)" here, where vtrn_device_get says "(only device 0)".
    assert message.startswith("vtrn_host_buffer_create: options.device is 1, but the runtime has 1 device")


def test_device_index_that_does_not_fit_uint32_is_refused_in_python(runtime):
    with pytest.raises(ValueError) as caught:
        runtime.host_buffer(64, device=-1)
    assert str(caught.value) == "device index -1 is out of range: it must be 0 to 4294967295 (a uint32_t)"


@pytest.mark.parametrize("node", [max(NODES) + 1, 999, 0x7FFF_FFFF])
def test_numa_node_that_does_not_exist(runtime, node):
    message = failure(vtrn.InvalidArgumentError, lambda: runtime.host_buffer(64, placement="node", numa_node=node))
    assert message == f"vtrn_host_buffer_create: options.numa_node is {node}, but {ONLINE}"


def test_node_placement_needs_a_node(runtime):
    message = failure(vtrn.InvalidArgumentError, lambda: runtime.host_buffer(64, placement="node"))
    assert message == (f"vtrn_host_buffer_create: options.numa_node is -1; VTRN_NUMA_NODE needs a node "
                       f"(online: {node_list(NODES)})")
    status, raw = create_raw(runtime, 64, placement=1, numa_node=-7)
    assert status == Status.ERROR_INVALID_ARGUMENT
    assert raw == f"vtrn_host_buffer_create: options.numa_node is -7; VTRN_NUMA_NODE needs a node (online: {node_list(NODES)})"


def test_numa_node_without_node_placement_is_refused_in_python(runtime):
    with pytest.raises(ValueError) as caught:
        runtime.host_buffer(64, numa_node=0)
    assert str(caught.value) == ("numa_node is 0, but placement is 'device_local': "
                                 "a node is only used with placement='node'")


def test_numa_node_is_ignored_by_other_placements(runtime):
    # The header: numa_node is for VTRN_NUMA_NODE and ignored otherwise.
    status, message = create_raw(runtime, 64, placement=2, numa_node=999)
    assert status == Status.SUCCESS, message


@pytest.mark.parametrize("node", NODES)
def test_node_placement_on_each_online_node(runtime, node):
    size = 64 * PAGE_SIZE
    with runtime.host_buffer(size, placement="node", numa_node=node) as buffer:
        assert buffer.numa_node == node
        info = buffer.info
        assert (info.placement, info.requested_node) == ("node", node)
        counts = buffer.node_pages()
        assert counts[node] == sum(counts) == pages(size)


@pytest.mark.parametrize("node", NODES)
def test_device_local_follows_the_device(node):
    with open_runtime(topology=f"trn1,trn2@node{node}") as runtime:
        for device in runtime.devices:
            with runtime.host_buffer(8 * PAGE_SIZE, device=device) as buffer:
                assert buffer.numa_node == device.info.numa_node
                assert buffer.info.requested_node == device.info.numa_node
        assert runtime.device(1).info.numa_node == node


def test_interleave(runtime):
    size = 64 * PAGE_SIZE + 1
    with runtime.host_buffer(size, placement="interleave") as buffer:
        counts = buffer.node_pages()
        assert sum(counts) == pages(size)
        assert (buffer.info.placement, buffer.info.requested_node) == ("interleave", None)
        if len(NODES) == 1:
            assert buffer.numa_node == NODES[0]
        else:
            assert buffer.numa_node is None  # spread
            assert all(counts[node] > 0 for node in NODES), counts


def test_any_placement_lands_on_first_touch(runtime):
    size = 16 * PAGE_SIZE
    with runtime.host_buffer(size, placement="any") as buffer:
        assert (buffer.info.placement, buffer.info.requested_node) == ("any", None)
        assert buffer.numa_node is None  # nothing resident yet
        assert sum(buffer.node_pages()) == 0
        view = buffer.numpy()
        view[: 3 * PAGE_SIZE] = 1
        del view
        assert buffer.numa_node in NODES
        assert 3 <= sum(buffer.node_pages()) <= 16  # the touched pages (more if the kernel faults around)


def test_node_pages_two_call_form_raw(runtime):
    with runtime.host_buffer(4 * PAGE_SIZE) as buffer:
        count = ctypes.c_uint32(0)
        assert lib.vtrn_host_buffer_node_pages(buffer.handle, None, byref(count)) == Status.SUCCESS
        nodes = count.value
        assert nodes == len(buffer.node_pages()) >= 1
        # A capacity too small fails and says what it must be.
        count = ctypes.c_uint32(0)
        counts = (ctypes.c_uint64 * 1)(77)
        assert lib.vtrn_host_buffer_node_pages(buffer.handle, counts, byref(count)) == Status.ERROR_INVALID_ARGUMENT
        assert re.fullmatch(rf"vtrn_host_buffer_node_pages: \*count is 0, but the host can have {nodes} nodes?; "
                            rf"pass an array of {nodes} \(count now holds it\)", vtrn.last_error()), vtrn.last_error()
        assert count.value == nodes and counts[0] == 77
        assert lib.vtrn_host_buffer_node_pages(buffer.handle, None, None) == Status.ERROR_INVALID_ARGUMENT
        assert vtrn.last_error() == "vtrn_host_buffer_node_pages: count is NULL"


# -- huge pages and locking -------------------------------------------------------------------------------

def test_huge_pages_match_the_system(runtime):
    setting = transparent_huge_pages()
    with runtime.host_buffer(4 << 20, huge_pages=True) as buffer:
        info = buffer.info
        assert info.flags == frozenset({"huge_pages"})
        if setting in ("always", "madvise"):
            assert info.huge_pages is True
            assert info.note == ""
        else:
            assert info.huge_pages is False
            shown = f"[{setting}]" if setting else "missing"
            assert info.note == ("transparent huge pages are not available on this system "
                                 f"(/sys/kernel/mm/transparent_hugepage/enabled is {shown})")
        assert sum(buffer.node_pages()) == pages(4 << 20)
    with runtime.host_buffer(4 << 20) as buffer:
        assert (buffer.info.huge_pages, buffer.info.note) == (False, "")


def test_locked(runtime):
    with runtime.host_buffer(64 * 1024, locked=True) as buffer:
        info = buffer.info
        assert (info.flags, info.locked, info.huge_pages) == (frozenset({"locked"}), True, False)
    with runtime.host_buffer(64 * 1024, locked=True, huge_pages=True) as buffer:
        assert buffer.info.flags == frozenset({"locked", "huge_pages"})


def test_locked_over_rlimit_memlock():
    # Root has CAP_IPC_LOCK, which lifts RLIMIT_MEMLOCK: the child drops it with setpriv.
    code = """
import resource, vtrn
resource.setrlimit(resource.RLIMIT_MEMLOCK, (65536, 65536))
with vtrn.Runtime(topology="trn1") as runtime:
    try:
        runtime.host_buffer(1 << 20, locked=True)
    except vtrn.OutOfHostMemoryError as error:
        print(error.message)
"""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: mlock ignores RLIMIT_MEMLOCK")
        prefix = ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "--"]
    child = run_python(code, prefix=prefix)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == (
        "vtrn_host_buffer_create: mlock of 1 MiB (1048576 bytes) failed (Cannot allocate memory): "
        "RLIMIT_MEMLOCK is 64 KiB (65536 bytes); raise it (ulimit -l) or do without VTRN_HOST_BUFFER_LOCKED")


# -- struct_size and NULL pointers, raw --------------------------------------------------------------------

def test_options_struct_size_too_small(runtime):
    options = HostBufferOptionsStruct.init()
    options.struct_size = 8
    handle = HostBufferHandle()
    assert lib.vtrn_host_buffer_create(runtime.handle, 64, byref(options), byref(handle)) == Status.ERROR_INVALID_ARGUMENT
    assert vtrn.last_error() == ("vtrn_host_buffer_create: options.struct_size is 8, smaller than 24, the size of the "
                                 "first vtrn_host_buffer_options_t; initialize it with VTRN_HOST_BUFFER_OPTIONS_INIT")


def test_info_struct_size_too_small(runtime):
    with runtime.host_buffer(64) as buffer:
        info = HostBufferInfoStruct.init()
        info.struct_size = 8
        assert lib.vtrn_host_buffer_get_info(buffer.handle, byref(info)) == Status.ERROR_INVALID_ARGUMENT
        assert vtrn.last_error() == ("vtrn_host_buffer_get_info: info.struct_size is 8, smaller than 208, the size of "
                                     "the first vtrn_host_buffer_info_t; initialize it with VTRN_HOST_BUFFER_INFO_INIT")


def test_null_options_mean_device_local_to_device_0(runtime):
    handle = HostBufferHandle()
    assert lib.vtrn_host_buffer_create(runtime.handle, 64, None, byref(handle)) == Status.SUCCESS
    info = HostBufferInfoStruct.init()
    assert lib.vtrn_host_buffer_get_info(handle, byref(info)) == Status.SUCCESS
    assert (info.placement, info.requested_node, info.flags) == (0, runtime.device(0).info.numa_node, 0)
    assert lib.vtrn_host_buffer_destroy(handle) == Status.SUCCESS


def test_null_pointers(runtime):
    with runtime.host_buffer(64) as buffer:
        calls = {
            "vtrn_host_buffer_create: out is NULL": lambda: lib.vtrn_host_buffer_create(runtime.handle, 64, None, None),
            "vtrn_host_buffer_register: out is NULL": lambda: lib.vtrn_host_buffer_register(runtime.handle, 0x1000, 8, None),
            "vtrn_host_buffer_register: pointer is NULL":
                lambda: lib.vtrn_host_buffer_register(runtime.handle, None, 8, byref(HostBufferHandle())),
            "vtrn_host_buffer_map: data is NULL": lambda: lib.vtrn_host_buffer_map(buffer.handle, None, None),
            "vtrn_host_buffer_numa_node: node is NULL": lambda: lib.vtrn_host_buffer_numa_node(buffer.handle, None),
            "vtrn_host_buffer_get_info: info is NULL": lambda: lib.vtrn_host_buffer_get_info(buffer.handle, None),
        }
        for expected, call in calls.items():
            assert call() == Status.ERROR_INVALID_ARGUMENT, expected
            assert vtrn.last_error() == expected
        # The size is optional.
        data = ctypes.c_void_p()
        assert lib.vtrn_host_buffer_map(buffer.handle, byref(data), None) == Status.SUCCESS
        assert data.value == buffer.address


# -- numpy views -------------------------------------------------------------------------------------------

def test_numpy_views_share_the_memory(runtime):
    with runtime.host_buffer(4096) as buffer:
        words = buffer.numpy(np.uint32)
        assert words.shape == (1024,) and words.dtype == np.uint32
        words[:] = np.arange(1024, dtype=np.uint32)
        matrix = buffer.numpy(np.uint32, (32, 32))
        assert matrix[1, 0] == 32
        tail = buffer.numpy(np.uint8, 4, offset=4092)
        assert bytes(tail) == (1023).to_bytes(4, "little")
        assert buffer.numpy(np.float64, (), offset=8).shape == ()
        assert words.ctypes.data == buffer.address and words.flags.writeable
        del words, matrix, tail


def test_numpy_view_shape_errors(runtime):
    with runtime.host_buffer(10) as buffer:
        with pytest.raises(ValueError) as caught:
            buffer.numpy(np.float32)
        assert str(caught.value) == ("the 10 bytes from offset 0 are not a whole number of float32 (4 bytes each); "
                                     "pass a shape")
        with pytest.raises(ValueError) as caught:
            buffer.numpy(np.float32, 3)
        assert str(caught.value) == "a (3,) array of float32 at offset 0 needs 12 bytes; the host buffer has 10"
        with pytest.raises(ValueError) as caught:
            buffer.numpy(offset=11)
        assert str(caught.value) == "offset 11 is past the end of the 10-byte host buffer"
        assert buffer.numpy(np.float32, 2, offset=2).nbytes == 8
        assert buffer.numpy(offset=10).shape == (0,)


def test_view_keeps_the_buffer_alive(runtime):
    buffer = runtime.host_buffer(4096)
    handle = buffer.handle.value
    view = buffer.numpy()
    view[:] = 7
    del buffer
    gc.collect()
    assert view.sum() == 7 * 4096  # still mapped
    info = HostBufferInfoStruct.init()
    assert lib.vtrn_host_buffer_get_info(HostBufferHandle(handle), byref(info)) == Status.SUCCESS
    del view
    gc.collect()
    # Dropped with its last view: destroyed.
    assert lib.vtrn_host_buffer_get_info(HostBufferHandle(handle), byref(info)) == Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error() == f"vtrn_host_buffer_get_info: vtrn_host_buffer_t {handle:#x} is stale: it was destroyed"


def test_closing_under_a_live_view_is_refused(runtime):
    buffer = runtime.host_buffer(4096)
    view = buffer.numpy()[100:200]
    with pytest.raises(BufferError) as caught:
        buffer.close()
    assert str(caught.value) == ("cannot close the 4096-byte host buffer: 1 numpy view(s) of its memory are alive and "
                                 "would point to unmapped memory; delete them (copy what you keep) first")
    with pytest.raises(BufferError) as caught:
        runtime.close()
    assert str(caught.value) == ("cannot close the runtime: 1 of its host buffers have numpy views alive, which would "
                                 "point to unmapped memory; delete them (copy what you keep) first")
    assert not buffer.closed and not runtime.closed
    view[:] = 1  # still mapped
    del view
    buffer.close()
    assert buffer.closed


def test_numpy_after_close(runtime):
    buffer = runtime.host_buffer(64)
    handle = buffer.handle.value
    buffer.close()
    message = failure(vtrn.InvalidHandleError, buffer.numpy)
    assert message == f"vtrn_host_buffer_map: vtrn_host_buffer_t {handle:#x} is stale: it was destroyed"


# -- registered numpy arrays --------------------------------------------------------------------------------

def test_register_wraps_the_array_without_a_copy(runtime):
    array = np.arange(1000, dtype=np.float64)
    with runtime.register(array) as buffer:
        assert buffer.registered
        assert (buffer.bytes, buffer.address) == (array.nbytes, array.ctypes.data)
        info = buffer.info
        assert info == vtrn.HostBufferInfo(address=array.ctypes.data, bytes=8000, placement="any", requested_node=None,
                                           flags=frozenset(), huge_pages=False, locked=False, registered=True, note="")
        view = buffer.numpy(np.float64)
        assert np.shares_memory(view, array)
        view[3] = -1
        assert array[3] == -1
        assert buffer.numa_node in NODES  # the array's pages are resident
        # A registered buffer's memory is the array's: closing under a view is safe.
    assert view[3] == -1


def test_register_keeps_the_array_alive(runtime):
    array = np.zeros(100, dtype=np.uint8)
    alive = weakref.ref(array)
    buffer = runtime.register(array)
    del array
    gc.collect()
    assert alive() is not None
    buffer.close()
    del buffer
    gc.collect()
    assert alive() is None


def test_register_fortran_order_is_contiguous(runtime):
    array = np.asfortranarray(np.ones((4, 5), dtype=np.int32))
    with runtime.register(array) as buffer:
        assert buffer.bytes == 80


def test_register_refuses_a_non_contiguous_array(runtime):
    array = np.zeros((10, 10), dtype=np.float32)[:, ::2]
    with pytest.raises(ValueError) as caught:
        runtime.register(array)
    assert str(caught.value) == ("the array (shape (10, 5), strides (40, 8)) is not contiguous: DMA needs one block of "
                                 "memory; register numpy.ascontiguousarray(array), a copy, instead")


def test_register_refuses_a_read_only_array(runtime):
    array = np.zeros(10)
    array.flags.writeable = False
    with pytest.raises(ValueError) as caught:
        runtime.register(array)
    assert str(caught.value) == ("the array is read-only, and DMA may write to a registered buffer; "
                                 "register a writable array (array.copy())")
    with pytest.raises(ValueError):
        runtime.register(np.frombuffer(b"bytes are read-only", dtype=np.uint8))


def test_register_refuses_what_is_not_an_array(runtime):
    with pytest.raises(TypeError) as caught:
        runtime.register(bytearray(10))
    assert str(caught.value) == "register takes a numpy array, not a bytearray"


def test_register_an_empty_array(runtime):
    message = failure(vtrn.InvalidArgumentError, lambda: runtime.register(np.zeros(0)))
    assert message == "vtrn_host_buffer_register: bytes is 0; a host buffer holds at least 1 byte"


# -- lifetime and stale handles ------------------------------------------------------------------------------

def test_destroy_twice_raw_and_close_twice(runtime):
    buffer = runtime.host_buffer(64)
    handle = buffer.handle
    assert lib.vtrn_host_buffer_destroy(handle) == Status.SUCCESS
    assert lib.vtrn_host_buffer_destroy(handle) == Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error() == f"vtrn_host_buffer_destroy: vtrn_host_buffer_t {handle.value:#x} is stale: it was destroyed"
    message = failure(vtrn.InvalidHandleError, buffer.close)  # destroyed behind its back: says so once
    assert message == f"vtrn_host_buffer_destroy: vtrn_host_buffer_t {handle.value:#x} is stale: it was destroyed"
    buffer.close()
    assert lib.vtrn_host_buffer_destroy(None) == Status.SUCCESS


def test_stale_after_destroy(runtime):
    buffer = runtime.host_buffer(64)
    value = buffer.handle.value
    buffer.close()
    assert buffer.closed and "closed" in repr(buffer)
    stale = f"vtrn_host_buffer_t {value:#x} is stale: it was destroyed"
    for use, function in ((lambda: buffer.info, "vtrn_host_buffer_get_info"),
                          (lambda: buffer.numa_node, "vtrn_host_buffer_numa_node"),
                          (buffer.node_pages, "vtrn_host_buffer_node_pages")):
        assert failure(vtrn.InvalidHandleError, use) == f"{function}: {stale}"
    buffer.close()  # again: nothing


def test_stale_after_runtime_close():
    with open_runtime(topology="trn1") as runtime:
        buffer = runtime.host_buffer(64)
        registered = runtime.register(np.zeros(8))
    value = buffer.handle.value
    assert buffer.closed and registered.closed
    message = failure(vtrn.InvalidHandleError, lambda: buffer.info)
    assert re.fullmatch(rf"vtrn_host_buffer_get_info: vtrn_host_buffer_t {value:#x} is stale: runtime \d+, which "
                        r"owned it, was destroyed", message), message
    buffer.close()  # the runtime released it: nothing to do
    registered.close()
    assert lib.vtrn_host_buffer_destroy(HostBufferHandle(value)) == Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error().startswith(f"vtrn_host_buffer_destroy: vtrn_host_buffer_t {value:#x} is stale: runtime ")


def test_garbage_and_foreign_handles(runtime):
    info = HostBufferInfoStruct.init()
    assert lib.vtrn_host_buffer_get_info(HostBufferHandle(0x1234), byref(info)) == Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error() == ("vtrn_host_buffer_get_info: 0x1234 is not a vtrn handle "
                                 "(garbage, uninitialized, or a pointer)")
    device = runtime.device(0).handle.value
    assert lib.vtrn_host_buffer_get_info(HostBufferHandle(device), byref(info)) == Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error() == f"vtrn_host_buffer_get_info: {device:#x} is a vtrn_device_t, not a vtrn_host_buffer_t"


def test_buffers_left_open_at_interpreter_exit():
    code = """
import numpy, vtrn
runtime = vtrn.Runtime(topology="trn1")
buffer = runtime.host_buffer(1 << 20, placement="any")
view = buffer.numpy()
view[:10] = 1
registered = runtime.register(numpy.zeros(100))
cycle = runtime.host_buffer(64)
cycle.me = cycle
print("done")
"""
    child = run_python(code)
    assert child.returncode == 0, child.stderr
    assert (child.stdout, child.stderr) == ("done\n", "")
