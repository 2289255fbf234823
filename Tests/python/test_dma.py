"""DMA: queues, their rings and sequences, vtrn_memcpy and the numpy helpers. Every byte that
moves is checked, and so is every byte that must not move; every error is checked with its
status and message."""

import gc
import re
import weakref

import numpy as np
import pytest

import vtrn
from vtrn import Status
from vtrn._library import (
    DeviceHandle,
    DmaQueueHandle,
    DmaQueueInfoStruct,
    DmaQueueOptionsStruct,
    DmaTransferStruct,
    MemoryRefStruct,
    lib,
)

from support import open_runtime, run_threads

KIB, MIB = 1 << 10, 1 << 20
DESCRIPTOR = 65536  # VTRN_DMA_MAX_DESCRIPTOR_BYTES
STALE = "is stale: it was destroyed"


@pytest.fixture
def runtime():
    with open_runtime(topology="trn1") as runtime:
        yield runtime


@pytest.fixture
def device(runtime):
    return runtime.device(0)


@pytest.fixture
def queue(device):
    with device.dma_queue() as queue:
        yield queue


def pattern(size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)


def filled(runtime, data):
    """A host buffer holding ``data`` (bytes as uint8)."""
    buffer = runtime.host_buffer(len(data))
    buffer.numpy()[:] = data
    return buffer


def read(device, memory, size=None, offset=0):
    return device.from_device(memory, np.uint8, memory.bytes - offset if size is None else size, offset)


def failure(error_class, call):
    with pytest.raises(error_class) as caught:
        call()
    assert caught.value.status == error_class.status
    return caught.value.message


def run(queue, transfers):
    """Enqueues, submits and waits; returns the sequence."""
    queue.enqueue(transfers)
    sequence = queue.submit()
    assert queue.wait(sequence) is True
    return sequence


# -- data moves -------------------------------------------------------------------------------------------

def test_numpy_to_hbm_to_hbm_and_back(runtime, device, queue):
    size = 5 * MIB + 123
    source = pattern(size, 1)
    with filled(runtime, source) as staging_in, runtime.host_buffer(size) as staging_out, \
            device.allocate(size) as first, device.allocate(size) as second:
        run(queue, [(first, staging_in, size)])
        run(queue, [(second, first, size)])
        run(queue, [(staging_out, second, size)])
        result = staging_out.numpy().copy()
        # The same path as one batch: transfers of a queue complete in order.
        staging_out.numpy()[:] = 0
        run(queue, [(first, staging_in, size), (second, first, size), (staging_out, second, size)])
        again = staging_out.numpy().copy()
    assert np.array_equal(result, source)
    assert np.array_equal(again, source)


def test_to_device_and_from_device(device):
    data = np.random.default_rng(2).standard_normal((300, 257)).astype(np.float32)
    with device.to_device(data) as memory:
        assert memory.bytes == data.nbytes
        assert np.array_equal(device.from_device(memory, np.float32, data.shape), data)
        assert np.array_equal(device.from_device(memory, np.float32), data.ravel())
        assert np.array_equal(device.from_device(memory, np.float32, (10,), offset=257 * 4), data[1, :10])
        assert device.from_device(memory, np.float32, (0,)).shape == (0,)
        with pytest.raises(ValueError) as caught:
            device.from_device(memory, offset=data.nbytes + 1)
        assert str(caught.value) == f"offset {data.nbytes + 1} is past the end of the {data.nbytes}-byte device memory block"
        with pytest.raises(ValueError) as caught:
            device.from_device(memory, np.float64, offset=4)
        assert str(caught.value) == (f"the {data.nbytes - 4} bytes from offset 4 are not a whole number of float64 "
                                     "(8 bytes each); pass a shape")
        with pytest.raises(vtrn.OutOfBoundsError) as caught:
            device.from_device(memory, np.float32, (301, 257))
        assert caught.value.message == (f"vtrn_memcpy: src range [0, 0 + {301 * 257 * 4}) runs past the end of the "
                                        f"{data.nbytes}-byte device memory block")


def test_to_device_takes_any_layout_and_read_only_arrays(device):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    base = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
    cases = [base.T, base[::2, 1::3], base.astype(ml_dtypes.bfloat16), [1, 2, 3]]
    read_only = base.copy()
    read_only.flags.writeable = False
    cases.append(read_only)
    for array in cases:
        expected = np.ascontiguousarray(array)
        with device.to_device(array) as memory:
            back = device.from_device(memory, expected.dtype, expected.shape)
        assert back.dtype == expected.dtype and np.array_equal(back.view(np.uint8), expected.view(np.uint8))


def test_to_device_of_an_empty_array(device):
    message = failure(vtrn.InvalidArgumentError, lambda: device.to_device(np.zeros(0)))
    assert message == "vtrn_device_memory_alloc: bytes is 0; a device memory block holds at least 1 byte"


def test_dma_into_and_out_of_a_registered_array(runtime, device, queue):
    source = np.arange(100_000, dtype=np.uint32)
    target = np.zeros_like(source)
    with runtime.register(source) as source_buffer, runtime.register(target) as target_buffer, \
            device.allocate(source.nbytes) as memory:
        run(queue, [(memory, source_buffer, source.nbytes)])
        run(queue, [((target_buffer, 8), (memory, 4), source.nbytes - 8)])
    assert np.array_equal(target[2:], source[1:-1])  # in place, no copy
    assert target[:2].tolist() == [0, 0]


OFFSETS = [(0, 0), (1, 3), (4097, 65537)]


@pytest.mark.parametrize("size", [1, 65535, 65536, 65537, 3 * MIB + 7])
@pytest.mark.parametrize("source_offset,target_offset", OFFSETS)
def test_odd_sizes_and_offsets(runtime, device, queue, size, source_offset, target_offset):
    guard = 100
    source = pattern(source_offset + size, size)
    with filled(runtime, source) as host, device.allocate(target_offset + size + guard) as memory, \
            filled(runtime, np.full(memory.bytes, 0xAA, np.uint8)) as background, \
            runtime.host_buffer(size + 2 * guard + 1) as back:
        run(queue, [(memory, background, memory.bytes)])
        run(queue, [((memory, target_offset), (host, source_offset), size)])
        on_device = read(device, memory)
        assert np.array_equal(on_device[target_offset:target_offset + size], source[source_offset:])
        assert (on_device[:target_offset] == 0xAA).all() and (on_device[target_offset + size:] == 0xAA).all()
        # Back to the host at an odd offset: the neighbours stay as they were.
        back.numpy()[:] = 0x55
        run(queue, [((back, guard + 1), (memory, target_offset), size)])
        result = back.numpy().copy()
    assert np.array_equal(result[guard + 1:guard + 1 + size], source[source_offset:])
    assert (result[:guard + 1] == 0x55).all() and (result[guard + 1 + size:] == 0x55).all()


def random_layout(rng, space, count):
    """``count`` non-overlapping (offset, size) ranges in [0, space): mostly small, some large."""
    sizes = [int(rng.integers(1, 300)) if rng.random() < 0.75 else int(rng.integers(64 * KIB, 600 * KIB))
             for _ in range(count)]
    while sum(sizes) > space * 3 // 4:
        sizes.pop()
    slack = space - sum(sizes)
    gaps = np.sort(rng.integers(0, slack, len(sizes)))
    gaps = np.diff(gaps, prepend=0)
    ranges, offset = [], 0
    for gap, size in zip(gaps, sizes):
        offset += int(gap)
        ranges.append((offset, size))
        offset += size
    return ranges


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_transfer_lists(runtime, device, queue, seed):
    rng = np.random.default_rng(seed)
    space = 8 * MIB
    source = pattern(space, seed)
    with filled(runtime, source) as host, device.allocate(space) as memory, \
            filled(runtime, np.full(space, 0x5A, np.uint8)) as background, runtime.host_buffer(space) as back:
        run(queue, [(memory, background, space)])
        # Host to device: destinations never overlap; sources may, anywhere in the buffer.
        targets = random_layout(rng, space, int(rng.integers(200, 400)))
        transfers, expected = [], np.full(space, 0x5A, np.uint8)
        for target, size in targets:
            start = int(rng.integers(0, space - size + 1))
            transfers.append(((memory, target), (host, start), size))
            expected[target:target + size] = source[start:start + size]
        rng.shuffle(transfers)
        run(queue, transfers)
        assert np.array_equal(read(device, memory), expected)
        # Device to host, in pieces of another random layout, in one batch.
        back.numpy()[:] = 0
        pieces = random_layout(rng, space, 300)
        transfers = [((back, offset), (memory, offset), size) for offset, size in pieces]
        rng.shuffle(transfers)
        run(queue, transfers)
        result = back.numpy().copy()
    for offset, size in pieces:
        assert np.array_equal(result[offset:offset + size], expected[offset:offset + size]), (offset, size)
    covered = np.zeros(space, bool)
    for offset, size in pieces:
        covered[offset:offset + size] = True
    assert not result[~covered].any()


# -- batches are all or nothing ---------------------------------------------------------------------------

def test_out_of_bounds_in_the_middle_of_a_batch(runtime, device, queue):
    source = pattern(256 * KIB, 3)
    with filled(runtime, source) as host, device.allocate(MIB) as memory, \
            filled(runtime, np.full(MIB, 0xEE, np.uint8)) as background:
        run(queue, [(memory, background, MIB)])
        before = queue.info
        batch = [((memory, 0), host, 1000), ((memory, 4096), host, 70000), ((memory, MIB - 10), host, 11),
                 ((memory, 8192), host, 5)]
        message = failure(vtrn.OutOfBoundsError, lambda: queue.enqueue(batch))
        assert message == ("vtrn_dma_queue_enqueue: transfer 2: dst range [1048566, 1048566 + 11) runs past the end "
                           "of the 1048576-byte device memory block")
        assert queue.info == before
        message = failure(vtrn.OutOfBoundsError,
                          lambda: queue.enqueue([(memory, host, 10), ((memory, 100), (host, 256 * KIB - 5), 6)]))
        assert message == ("vtrn_dma_queue_enqueue: transfer 1: src range [262139, 262139 + 6) runs past the end of "
                           "the 262144-byte host buffer")
        message = failure(vtrn.OutOfBoundsError, lambda: queue.enqueue([(memory, (host, 2 ** 64 - 1), 2)]))
        assert message == ("vtrn_dma_queue_enqueue: transfer 0: src range [18446744073709551615, "
                           "18446744073709551615 + 2) runs past the end of the 262144-byte host buffer")
        assert queue.info == before
        # Only what a later batch asks for moves.
        run(queue, [((memory, 500_000), host, 100)])
        after = queue.info
        assert after.descriptors_completed - before.descriptors_completed == 1
        assert after.bytes_completed - before.bytes_completed == 100
        on_device = read(device, memory)
    assert np.array_equal(on_device[500_000:500_100], source[:100])
    on_device[500_000:500_100] = 0xEE
    assert (on_device == 0xEE).all()


def test_zero_byte_transfer(runtime, device, queue):
    with runtime.host_buffer(64) as host, device.allocate(64) as memory:
        free = queue.info.free_entries
        message = failure(vtrn.InvalidArgumentError, lambda: queue.enqueue([(memory, host, 8), (memory, host, 0)]))
        assert message == "vtrn_dma_queue_enqueue: transfer 1: bytes is 0"
        assert queue.info.free_entries == free
        queue.enqueue([])  # an empty batch is nothing to do
        assert queue.submit() == 0


def test_ring_full(device):
    with device.dma_queue(ring_entries=32) as queue, device.allocate(33 * DESCRIPTOR) as first, \
            device.allocate(33 * DESCRIPTOR) as second:
        assert queue.info.free_entries == 32
        message = failure(vtrn.QueueFullError, lambda: queue.enqueue([(first, second, 33 * DESCRIPTOR)]))
        assert message == ("vtrn_dma_queue_enqueue: the batch needs 33 descriptors and the ring has 32 free of 32 "
                           "(0 enqueued and not yet completed); wait for completions, submit, or open the queue with "
                           "more ring entries")
        # Two transfers that fit alone but not together: neither is enqueued.
        failure(vtrn.QueueFullError, lambda: queue.enqueue([(first, second, 20 * DESCRIPTOR),
                                                            ((first, 20 * DESCRIPTOR), (second, 0), 13 * DESCRIPTOR)]))
        assert queue.info.free_entries == 32
        queue.enqueue([(first, second, DESCRIPTOR + 1)])  # 2 descriptors
        assert queue.info.free_entries == 30
        queue.enqueue([((first, 2 * DESCRIPTOR), (second, 2 * DESCRIPTOR), 30 * DESCRIPTOR)])
        assert queue.info.free_entries == 0
        message = failure(vtrn.QueueFullError, lambda: queue.enqueue([(first, second, 1)]))
        assert message.startswith("vtrn_dma_queue_enqueue: the batch needs 1 descriptor and the ring has 0 free of 32 "
                                  "(32 enqueued and not yet completed)")
        assert queue.wait(queue.submit())
        assert queue.info.free_entries == 32
        assert queue.info.descriptors_completed == 32


@pytest.mark.parametrize("entries", [0, 31, 1 << 24, 0xFFFF_FFFF])
def test_ring_size_out_of_range(device, entries):
    message = failure(vtrn.InvalidArgumentError, lambda: device.dma_queue(ring_entries=entries))
    assert message == f"vtrn_dma_queue_create: ring_entries is {entries}; udma rings hold 32 to 16777200 descriptors"


def test_smallest_ring(device):
    with device.dma_queue(ring_entries=32) as queue:
        assert queue.info.ring_entries == 32


# -- opening queues -----------------------------------------------------------------------------------------

def test_queue_info(device):
    with device.dma_queue(core=1, engine=15, queue=7, ring_entries=100) as queue:
        assert queue.info == vtrn.DmaQueueInfo(device_index=0, core=1, engine=15, queue=7, ring_entries=100,
                                               free_entries=100, submitted_sequence=0, completed_sequence=0,
                                               descriptors_completed=0, bytes_completed=0)
        assert queue.device is device and "open" in repr(queue)


def test_queue_opened_twice(device, queue):
    message = failure(vtrn.BusyError, lambda: device.dma_queue())
    assert message == ("vtrn_dma_queue_create: queue 0 of DMA engine 0 of core 0 of device 0 is open already; "
                       "destroy it first or pick another queue")
    with device.dma_queue(queue=1), device.dma_queue(engine=1):
        pass
    queue.close()
    with device.dma_queue():  # free again
        pass


@pytest.mark.parametrize("arguments,problem", [
    (dict(core=2), "device 0 has 2 cores (0-1); core 2 requested"),
    (dict(engine=16), "a core has 16 DMA engines (0-15); engine 16 requested"),
    (dict(queue=16), "a DMA engine has 16 queues (0-15); queue 16 requested"),
    (dict(core=0xFFFF_FFFF), "device 0 has 2 cores (0-1); core 4294967295 requested"),
])
def test_hardware_queue_out_of_range(device, arguments, problem):
    message = failure(vtrn.InvalidArgumentError, lambda: device.dma_queue(**arguments))
    assert message == f"vtrn_dma_queue_create: {problem}"


def test_core_out_of_range_on_trn2():
    with open_runtime(topology="trn1,trn2") as runtime:
        message = failure(vtrn.InvalidArgumentError, lambda: runtime.device(1).dma_queue(core=8))
        assert message == "vtrn_dma_queue_create: device 1 has 8 cores (0-7); core 8 requested"
        with runtime.device(1).dma_queue(core=7) as queue:
            assert queue.info.device_index == 1


def test_negative_indexes_are_refused_in_python(device):
    with pytest.raises(ValueError) as caught:
        device.dma_queue(engine=-1)
    assert str(caught.value) == "engine -1 is out of range: it must be 0 to 4294967295 (a uint32_t)"


def runtime_serial(runtime, hidden_core):
    """The runtime's serial number, as the library's messages name it (read from one)."""
    with pytest.raises(vtrn.InvalidArgumentError) as caught:
        runtime.device(0).dma_queue(core=hidden_core)
    return int(re.search(r"is not visible to runtime (\d+)", caught.value.message).group(1))


def test_core_hidden_by_visible_cores():
    with open_runtime(topology="trn1,trn2", visible_cores="0,3") as runtime:
        serial = runtime_serial(runtime, 1)
        message = failure(vtrn.InvalidArgumentError, lambda: runtime.device(0).dma_queue(core=1))
        assert message == (f"vtrn_dma_queue_create: core 1 of device 0 (global core 1) is not visible to runtime "
                           f"{serial}: its visible cores are 0,3 (options.visible_cores or VTRN_VISIBLE_CORES)")
        message = failure(vtrn.InvalidArgumentError, lambda: runtime.device(1).dma_queue(core=0))
        assert message == (f"vtrn_dma_queue_create: core 0 of device 1 (global core 2) is not visible to runtime "
                           f"{serial}: its visible cores are 0,3 (options.visible_cores or VTRN_VISIBLE_CORES)")
        with runtime.device(0).dma_queue(core=0), runtime.device(1).dma_queue(core=1):
            pass


def test_core_claimed_by_another_runtime():
    with open_runtime(topology="trn1", visible_cores="0") as first, open_runtime(topology="trn1") as second:
        holder = runtime_serial(first, 1)
        with first.device(0).dma_queue(queue=3):
            message = failure(vtrn.BusyError, lambda: second.device(0).dma_queue(queue=4))
            assert message == (f"vtrn_dma_queue_create: core 0 of device 0 is claimed by runtime {holder} until it is "
                               "destroyed")
            with second.device(0).dma_queue(core=1):  # the other core is free
                pass
        # Closing the queue keeps the claim: the core is the runtime's until it is destroyed.
        failure(vtrn.BusyError, lambda: second.device(0).dma_queue(queue=4))
        first.close()
        with second.device(0).dma_queue(queue=4):
            pass


def test_memcpy_claims_no_core():
    with open_runtime(topology="trn1", visible_cores="0") as holder, \
            open_runtime(topology="trn1,trn2", visible_cores="2") as hidden:
        with holder.device(0).dma_queue():
            device = hidden.device(0)  # both of its cores hidden, core 0 held by another runtime
            data = pattern(1000, 4)
            with device.to_device(data) as memory:
                assert np.array_equal(read(device, memory), data)


# -- what transfers may name -----------------------------------------------------------------------------

def test_memory_of_another_device():
    with open_runtime(topology="trn1:2") as runtime:
        first, second = runtime.devices
        with first.dma_queue() as queue, first.allocate(64) as here, second.allocate(64) as there, \
                runtime.host_buffer(64) as host:
            message = failure(vtrn.InvalidArgumentError, lambda: queue.enqueue([(here, host, 8), (there, host, 8)]))
            assert message == ("vtrn_dma_queue_enqueue: transfer 1: dst is memory of device 1, not of device 0, "
                               "which runs the copy")
            message = failure(vtrn.InvalidArgumentError, lambda: queue.enqueue([(host, there, 8)]))
            assert message == ("vtrn_dma_queue_enqueue: transfer 0: src is memory of device 1, not of device 0, "
                               "which runs the copy")
            assert queue.info.free_entries == 4096
            message = failure(vtrn.InvalidArgumentError, lambda: first.memcpy(there, host, 8))
            assert message == "vtrn_memcpy: dst is memory of device 1, not of device 0, which runs the copy"
            # Host buffers are not tied to a device.
            run(queue, [(host, here, 8)])
            second.memcpy(there, host, 8)


def test_host_buffer_of_another_runtime_is_refused(runtime, device, queue):
    with open_runtime(topology="trn1") as other, other.host_buffer(64) as foreign, device.allocate(64) as memory:
        with pytest.raises(vtrn.InvalidArgumentError) as caught:
            queue.enqueue([(memory, foreign, 8)])
        assert caught.value.message.startswith("vtrn_dma_queue_enqueue: transfer 0: src is a host buffer of runtime ")
        assert "which runs the copy" in caught.value.message
        with pytest.raises(vtrn.InvalidArgumentError):
            device.memcpy(memory, foreign, 8)


def test_overlapping_source_and_destination(runtime, device, queue):
    with device.allocate(1000) as memory, runtime.host_buffer(1000) as host:
        message = failure(vtrn.InvalidArgumentError, lambda: queue.enqueue([((memory, 0), (memory, 10), 20)]))
        assert message == ("vtrn_dma_queue_enqueue: transfer 0: dst and src overlap (offsets 0 and 10 of the same "
                           "memory, 20 bytes)")
        message = failure(vtrn.InvalidArgumentError,
                          lambda: queue.enqueue([(memory, host, 1), ((host, 500), (host, 300), 201)]))
        assert message == ("vtrn_dma_queue_enqueue: transfer 1: dst and src overlap (offsets 500 and 300 of the same "
                           "memory, 201 bytes)")
        message = failure(vtrn.InvalidArgumentError, lambda: queue.enqueue([(host, host, 1)]))
        assert message == ("vtrn_dma_queue_enqueue: transfer 0: dst and src overlap (offsets 0 and 0 of the same "
                           "memory, 1 byte)")
        message = failure(vtrn.InvalidArgumentError, lambda: device.memcpy((memory, 5), memory, 6))
        assert message == "vtrn_memcpy: dst and src overlap (offsets 5 and 0 of the same memory, 6 bytes)"
        # Adjacent ranges do not overlap.
        host.numpy()[:] = np.arange(1000) % 251
        run(queue, [((host, 0), (host, 10), 10)])
        device.memcpy((host, 990), (host, 980), 10)
        result = host.numpy().copy()
    expected = np.arange(1000) % 251
    assert np.array_equal(result[:10], expected[10:20]) and np.array_equal(result[990:], expected[980:990])


def test_transfer_and_reference_shapes_are_checked_in_python(runtime, device, queue):
    with runtime.host_buffer(64) as host:
        with pytest.raises(TypeError) as caught:
            queue.enqueue([(host, host)])
        assert str(caught.value).startswith("transfer 0 is (<vtrn.HostBuffer open handle=")
        assert str(caught.value).endswith("; a transfer is (dst, src, bytes)")
        with pytest.raises(TypeError) as caught:
            queue.enqueue([((host, 0), (host, 8), 4), (host, b"bytes", 4)])
        assert str(caught.value) == ("transfer 1: src is a bytes; a memory reference is a HostBuffer, a DeviceMemory, "
                                     "or a (HostBuffer | DeviceMemory, offset) tuple")
        with pytest.raises(TypeError) as caught:
            device.memcpy((host, 0, 1), host, 1)
        assert str(caught.value) == "dst is a tuple of 3; a memory reference tuple is (memory, offset)"
        with pytest.raises(ValueError) as caught:
            device.memcpy((host, -1), host, 1)
        assert str(caught.value) == "dst offset -1 is out of range: it must be 0 to 18446744073709551615 (a uint64_t)"
        assert queue.info.free_entries == 4096


def raw_enqueue(queue, *pairs):
    """vtrn_dma_queue_enqueue of transfers given as (dst handle value, src handle value, bytes)."""
    batch = (DmaTransferStruct * len(pairs))(*(DmaTransferStruct(MemoryRefStruct(dst, 0), MemoryRefStruct(src, 0), size)
                                              for dst, src, size in pairs))
    status = lib.vtrn_dma_queue_enqueue(queue.handle, batch, len(pairs))
    return status, vtrn.last_error()


def test_bad_handles_in_transfers_raw(runtime, device, queue):
    with runtime.host_buffer(64) as host:
        good = host.handle.value
        cases = [
            ((good, 0x1234, 1), "transfer 0: src.memory: 0x1234 is not a vtrn handle"),
            ((None, good, 1), "transfer 0: dst.memory: it is NULL"),
            ((device.handle.value, good, 1),
             f"transfer 0: dst.memory: {device.handle.value:#x} is a vtrn_device_t, not a vtrn_host_buffer_t or "
             "vtrn_device_memory_t"),
            ((good, queue.handle.value, 1),
             f"transfer 0: src.memory: {queue.handle.value:#x} is a vtrn_dma_queue_t, not a vtrn_host_buffer_t or "
             "vtrn_device_memory_t"),
        ]
        for transfer, expected in cases:
            assert raw_enqueue(queue, transfer) == (Status.ERROR_INVALID_HANDLE, f"vtrn_dma_queue_enqueue: {expected}")
        assert lib.vtrn_dma_queue_enqueue(queue.handle, None, 2) == Status.ERROR_INVALID_ARGUMENT
        assert vtrn.last_error() == "vtrn_dma_queue_enqueue: transfers is NULL and count is 2"
        assert lib.vtrn_dma_queue_enqueue(queue.handle, None, 0) == Status.SUCCESS
        status = lib.vtrn_memcpy(device.handle, MemoryRefStruct(good, 0), MemoryRefStruct(0x1234, 0), 1)
        assert (status, vtrn.last_error()) == (Status.ERROR_INVALID_HANDLE, "vtrn_memcpy: src.memory: 0x1234 is not a vtrn handle")
        assert queue.info.free_entries == 4096


def test_null_pointers_and_struct_sizes_raw(device, queue):
    from ctypes import byref, c_uint64
    assert lib.vtrn_dma_queue_create(device.handle, None, None) == Status.ERROR_INVALID_ARGUMENT
    assert vtrn.last_error() == "vtrn_dma_queue_create: out is NULL"
    options = DmaQueueOptionsStruct.init(queue=9)
    options.struct_size = 8
    assert lib.vtrn_dma_queue_create(device.handle, byref(options), byref(DmaQueueHandle())) == Status.ERROR_INVALID_ARGUMENT
    assert vtrn.last_error() == ("vtrn_dma_queue_create: options.struct_size is 8, smaller than 24, the size of the first "
                                 "vtrn_dma_queue_options_t; initialize it with VTRN_DMA_QUEUE_OPTIONS_INIT")
    info = DmaQueueInfoStruct.init()
    info.struct_size = 8
    assert lib.vtrn_dma_queue_get_info(queue.handle, byref(info)) == Status.ERROR_INVALID_ARGUMENT
    assert vtrn.last_error() == ("vtrn_dma_queue_get_info: info.struct_size is 8, smaller than 64, the size of the first "
                                 "vtrn_dma_queue_info_t; initialize it with VTRN_DMA_QUEUE_INFO_INIT")
    assert lib.vtrn_dma_queue_completed(queue.handle, None) == Status.ERROR_INVALID_ARGUMENT
    assert vtrn.last_error() == "vtrn_dma_queue_completed: sequence is NULL"
    assert lib.vtrn_dma_queue_submit(queue.handle, None) == Status.SUCCESS  # the sequence is optional
    # NULL options: the defaults (queue 0 of engine 0 of core 0, 4096 entries); that queue is open.
    assert lib.vtrn_dma_queue_create(device.handle, None, byref(DmaQueueHandle())) == Status.ERROR_BUSY
    queue.close()
    handle = DmaQueueHandle()
    assert lib.vtrn_dma_queue_create(device.handle, None, byref(handle)) == Status.SUCCESS
    info = DmaQueueInfoStruct.init()
    assert lib.vtrn_dma_queue_get_info(handle, byref(info)) == Status.SUCCESS
    assert (info.core, info.engine, info.queue, info.ring_entries) == (0, 0, 0, 4096)
    sequence = c_uint64(99)
    assert lib.vtrn_dma_queue_completed(handle, byref(sequence)) == Status.SUCCESS and sequence.value == 0
    assert lib.vtrn_dma_queue_destroy(handle) == Status.SUCCESS


# -- sequences ------------------------------------------------------------------------------------------------

def test_sequences_count_submits(runtime, device, queue):
    assert (queue.submit(), queue.completed) == (0, 0)
    assert queue.wait(0) is True  # nothing to wait for
    with filled(runtime, pattern(300 * KIB, 5)) as host, device.allocate(300 * KIB) as memory:
        sizes = [1, 65536, 65537, 200 * KIB, 7]
        for expected, size in enumerate(sizes, start=1):
            queue.enqueue([(memory, host, size)])
            assert queue.submit() == expected
            assert queue.submit() == expected  # nothing new: the same sequence
        assert queue.wait(len(sizes))
        assert queue.completed == len(sizes)
        assert queue.wait(2) is True  # an earlier one is done too
        info = queue.info
        assert (info.submitted_sequence, info.completed_sequence) == (5, 5)
        assert info.descriptors_completed == sum(-(-size // DESCRIPTOR) for size in sizes)
        assert info.bytes_completed == sum(sizes)


def test_wait_on_a_sequence_never_submitted(runtime, device, queue):
    message = failure(vtrn.InvalidArgumentError, lambda: queue.wait(1))
    assert message == "vtrn_dma_queue_wait: sequence 1 was never submitted on this queue; the last submitted is 0"
    with runtime.host_buffer(64) as host, device.allocate(64) as memory:
        run(queue, [(memory, host, 64)])
        message = failure(vtrn.InvalidArgumentError, lambda: queue.wait(2, timeout_ns=0))
        assert message == "vtrn_dma_queue_wait: sequence 2 was never submitted on this queue; the last submitted is 1"


def test_poll_and_timeout(runtime, device, queue):
    size = 64 * MIB
    with device.allocate(size) as first, device.allocate(size) as second:
        queue.enqueue([(first, second, size), (second, first, size)])  # fresh HBM: every page is committed now
        sequence = queue.submit()
        assert queue.wait(sequence, timeout_ns=0) in (True, False)
        try:
            done = queue.wait(sequence, timeout_ns=1)
        except vtrn.DeviceTimeoutError as error:
            assert error.message == (f"vtrn_dma_queue_wait: sequence {sequence} did not complete within 1 ns on queue 0 "
                                     "of DMA engine 0 of core 0 of device 0; the last completed is 0")
        else:
            assert done is True
        assert queue.wait(sequence, timeout_ns=None) is True
        assert queue.wait(sequence, timeout_ns=0) is True
        assert queue.wait(sequence, timeout_ns=vtrn.WAIT_FOREVER) is True


# -- lifetimes --------------------------------------------------------------------------------------------------

def test_stale_queue_after_close(device):
    queue = device.dma_queue()
    value = queue.handle.value
    queue.close()
    stale = f"vtrn_dma_queue_t {value:#x} {STALE}"
    for use, function in ((queue.submit, "vtrn_dma_queue_submit"),
                          (lambda: queue.enqueue([]), "vtrn_dma_queue_enqueue"),
                          (lambda: queue.wait(0), "vtrn_dma_queue_wait"),
                          (lambda: queue.completed, "vtrn_dma_queue_completed"),
                          (lambda: queue.info, "vtrn_dma_queue_get_info")):
        assert failure(vtrn.InvalidHandleError, use) == f"{function}: {stale}"
    queue.close()
    assert lib.vtrn_dma_queue_destroy(queue.handle) == Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error() == f"vtrn_dma_queue_destroy: {stale}"
    assert lib.vtrn_dma_queue_destroy(None) == Status.SUCCESS
    assert lib.vtrn_dma_queue_destroy(DmaQueueHandle(device.handle.value)) == Status.ERROR_INVALID_HANDLE
    assert vtrn.last_error() == f"vtrn_dma_queue_destroy: {device.handle.value:#x} is a vtrn_device_t, not a vtrn_dma_queue_t"


def test_stale_objects_after_runtime_close():
    with open_runtime(topology="trn1") as runtime:
        device = runtime.device(0)
        queue = device.dma_queue()
        host = runtime.host_buffer(64)
        memory = device.allocate(64)
        run(queue, [(memory, host, 64)])
    assert queue.closed and host.closed and memory.closed
    pattern_text = r"vtrn_{kind}_t {value:#x} is stale: runtime \d+, which owned it, was destroyed"
    for use, function, kind in ((queue.submit, "vtrn_dma_queue_submit", "dma_queue"),
                                (lambda: queue.info, "vtrn_dma_queue_get_info", "dma_queue"),
                                (lambda: host.info, "vtrn_host_buffer_get_info", "host_buffer"),
                                (lambda: memory.info, "vtrn_device_memory_get_info", "device_memory")):
        handle = {"dma_queue": queue, "host_buffer": host, "device_memory": memory}[kind].handle.value
        message = failure(vtrn.InvalidHandleError, use)
        assert re.fullmatch(f"{function}: " + pattern_text.format(kind=kind, value=handle), message), message
    message = failure(vtrn.InvalidHandleError, lambda: device.memcpy(memory, host, 1))
    assert re.fullmatch(rf"vtrn_memcpy: vtrn_device_t {device.handle.value:#x} is stale: runtime \d+, which owned it, "
                        r"was destroyed", message), message
    message = failure(vtrn.InvalidHandleError, lambda: device.dma_queue())
    assert message.startswith(f"vtrn_dma_queue_create: vtrn_device_t {device.handle.value:#x} is stale")
    for thing in (queue, host, memory):
        thing.close()  # released with the runtime: nothing to do


def test_destroyed_buffer_and_freed_memory_in_transfers(runtime, device, queue):
    host = runtime.host_buffer(64)
    memory = device.allocate(64)
    with runtime.host_buffer(64) as other:
        host_value, memory_value = host.handle.value, memory.handle.value
        host.close()
        memory.free()
        message = failure(vtrn.InvalidHandleError, lambda: queue.enqueue([(other, (other, 32), 8), (host, other, 8)]))
        assert message == f"vtrn_dma_queue_enqueue: transfer 1: dst.memory: vtrn_host_buffer_t {host_value:#x} {STALE}"
        message = failure(vtrn.InvalidHandleError, lambda: queue.enqueue([(other, memory, 8)]))
        assert message == (f"vtrn_dma_queue_enqueue: transfer 0: src.memory: vtrn_device_memory_t {memory_value:#x} is "
                           "stale: it was freed")
        message = failure(vtrn.InvalidHandleError, lambda: device.memcpy(other, memory, 8))
        assert message == f"vtrn_memcpy: src.memory: vtrn_device_memory_t {memory_value:#x} is stale: it was freed"
        assert queue.info.free_entries == 4096


def test_destroying_memory_with_a_transfer_in_flight(runtime, device, queue):
    size = 32 * MIB
    source = pattern(size, 6)
    host = filled(runtime, source)
    with device.allocate(size) as target:
        queue.enqueue([(target, host, size)])
        sequence = queue.submit()
        host.close()  # the library keeps its memory mapped until the transfer is done
        assert queue.wait(sequence)
        assert np.array_equal(read(device, target), source)
    # Freeing device memory under a transfer: its data is undefined, but nothing breaks.
    with runtime.host_buffer(size) as back:
        memory = device.to_device(source)
        queue.enqueue([(back, memory, size)])
        sequence = queue.submit()
        memory.free()
        assert queue.wait(sequence)
    assert device.memory_usage().used_bytes == 0


def test_queue_keeps_registered_arrays_until_their_transfers_complete(runtime, device, queue):
    size = 32 * MIB
    source = pattern(size, 7)
    whole = np.zeros(size + 1, np.uint8)  # kept here to check the data; the queue must keep `target`
    target = whole[1:]
    alive = weakref.ref(target)
    with device.to_device(source) as memory:
        buffer = runtime.register(target)
        queue.enqueue([(buffer, memory, size)])
        sequence = queue.submit()
        buffer.close()
        del buffer, target
        gc.collect()
        assert alive() is not None  # the queue holds it while the transfer writes into it
        assert queue.wait(sequence)
        gc.collect()
        assert alive() is None  # and lets it go once the transfer is done
    assert np.array_equal(whole[1:], source) and whole[0] == 0


def test_closing_a_queue_waits_for_what_was_submitted(runtime, device):
    size = 16 * MIB
    source = pattern(size, 8)
    with filled(runtime, source) as host, device.allocate(size) as memory, device.allocate(size) as unsent:
        queue = device.dma_queue()
        queue.enqueue([(memory, host, size)])
        queue.submit()
        queue.enqueue([(unsent, host, size)])  # never submitted: dropped
        queue.close()
        assert np.array_equal(read(device, memory), source)


def test_runtime_close_with_transfers_in_flight():
    with open_runtime(topology="trn1") as runtime:
        device = runtime.device(0)
        queue = device.dma_queue()
        first, second = device.allocate(64 * MIB), device.allocate(64 * MIB)
        queue.enqueue([(first, second, 64 * MIB), (second, first, 64 * MIB)])
        queue.submit()
    assert queue.closed


# -- threads ------------------------------------------------------------------------------------------------------

def test_concurrent_submitters_on_different_queues(runtime, device):
    size, rounds = 256 * KIB + 3, 20

    def work(index):
        # Engines 0-2 of core 0, and a second queue of engine 0.
        engine, queue_index = (index, 0) if index < 3 else (0, 1)
        with device.dma_queue(engine=engine, queue=queue_index) as queue, runtime.host_buffer(size) as host, \
                runtime.host_buffer(size) as back, device.allocate(size) as memory:
            for round_ in range(rounds):
                data = pattern(size, 1000 * index + round_)
                host.numpy()[:] = data
                run(queue, [(memory, host, size), (back, memory, size)])
                assert np.array_equal(back.numpy(), data), (index, round_)

    run_threads(4, work)


def test_concurrent_submitters_on_one_queue(runtime, device, queue):
    size, rounds = 64 * KIB + 1, 20

    def work(index):
        with runtime.host_buffer(size) as host, runtime.host_buffer(size) as back, device.allocate(size) as memory:
            for round_ in range(rounds):
                data = pattern(size, 5000 + 100 * index + round_)
                host.numpy()[:] = data
                queue.enqueue([(memory, host, size), (back, memory, size)])
                assert queue.wait(queue.submit())
                assert np.array_equal(back.numpy(), data), (index, round_)

    run_threads(4, work)
    assert queue.info.completed_sequence == queue.info.submitted_sequence <= 80


# -- vtrn_memcpy ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 4095, 65536, 65537, 3 * MIB + 7])
def test_memcpy_every_direction(runtime, device, size):
    source = pattern(size + 11, size)
    with filled(runtime, source) as host, runtime.host_buffer(size + 5) as other, \
            device.allocate(size + 64) as first, device.allocate(size) as second:
        device.memcpy((first, 64), (host, 11), size)  # host to device
        device.memcpy(second, (first, 64), size)  # device to device
        device.memcpy((other, 5), second, size)  # device to host
        assert np.array_equal(other.numpy()[5:], source[11:])
        other.numpy()[:] = 0
        device.memcpy(other, (host, 11), size)  # host to host
        assert np.array_equal(other.numpy()[:size], source[11:])


def test_memcpy_larger_than_a_ring(runtime, device):
    # A host queue's ring holds 4096 descriptors of 64 KiB (256 MiB): more takes several rounds.
    size = 256 * MIB + 3 * DESCRIPTOR + 1
    source = np.empty(size, np.uint8)
    source[::4096] = pattern(len(source[::4096]), 9)
    source[-1] = 0x7F
    target = np.ones(size, np.uint8)
    with runtime.register(source) as host, runtime.register(target) as back:
        device.memcpy(back, host, size)
    assert np.array_equal(target[::4096], source[::4096]) and target[-1] == 0x7F


def test_memcpy_errors(runtime, device):
    with runtime.host_buffer(1000) as host, device.allocate(1000) as memory:
        # 0 bytes copies nothing, but the references are still checked.
        device.memcpy(memory, host, 0)
        device.memcpy((memory, 1000), (host, 1000), 0)
        message = failure(vtrn.OutOfBoundsError, lambda: device.memcpy((memory, 1001), host, 0))
        assert message == "vtrn_memcpy: dst range [1001, 1001 + 0) runs past the end of the 1000-byte device memory block"
        message = failure(vtrn.OutOfBoundsError, lambda: device.memcpy(memory, (host, 500), 501))
        assert message == "vtrn_memcpy: src range [500, 500 + 501) runs past the end of the 1000-byte host buffer"
        message = failure(vtrn.OutOfBoundsError, lambda: device.memcpy((memory, 1000), host, 1))
        assert message == "vtrn_memcpy: dst range [1000, 1000 + 1) runs past the end of the 1000-byte device memory block"
        status = lib.vtrn_memcpy(DeviceHandle(0x1234), MemoryRefStruct(memory.handle.value, 0),
                                 MemoryRefStruct(host.handle.value, 0), 1)
        assert (status, vtrn.last_error()) == (
            Status.ERROR_INVALID_HANDLE, "vtrn_memcpy: 0x1234 is not a vtrn handle (garbage, uninitialized, or a pointer)")
