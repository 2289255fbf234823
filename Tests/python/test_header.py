"""The package against include/vtrn.h: status numbers, the function table, the struct mirrors,
the _INIT defaults and the version, all read from the header itself."""

import ctypes
import os
import re

import pytest

import vtrn
from vtrn import _library, errors
from vtrn._library import (
    FUNCTIONS,
    CoreHolderStruct,
    CoreInfoStruct,
    DeviceHandle,
    DeviceInfoStruct,
    DeviceMemoryHandle,
    DeviceMemoryInfoStruct,
    DmaQueueHandle,
    DmaQueueInfoStruct,
    DmaQueueOptionsStruct,
    DmaTransferStruct,
    DmaCopyOptionsStruct,
    DeviceErrorCountersStruct,
    FaultStruct,
    AccessStruct,
    BindingStruct,
    ExecutionInfoStruct,
    HandleCountsStruct,
    FenceHandle,
    HostBufferHandle,
    KernelHandle,
    ProgramHandle,
    ScalarStruct,
    SyncStruct,
    HostBufferInfoStruct,
    HostBufferOptionsStruct,
    MemoryRefStruct,
    MemoryUsageStruct,
    RuntimeHandle,
    RuntimeInfoStruct,
    RuntimeOptionsStruct,
)

from support import Header

HEADER = Header()

STRUCTS = {
    "vtrn_runtime_options_t": RuntimeOptionsStruct,
    "vtrn_runtime_info_t": RuntimeInfoStruct,
    "vtrn_device_info_t": DeviceInfoStruct,
    "vtrn_core_info_t": CoreInfoStruct,
    "vtrn_core_holder_t": CoreHolderStruct,
    "vtrn_host_buffer_options_t": HostBufferOptionsStruct,
    "vtrn_host_buffer_info_t": HostBufferInfoStruct,
    "vtrn_device_memory_info_t": DeviceMemoryInfoStruct,
    "vtrn_memory_usage_t": MemoryUsageStruct,
    "vtrn_dma_queue_options_t": DmaQueueOptionsStruct,
    "vtrn_dma_queue_info_t": DmaQueueInfoStruct,
    "vtrn_memory_ref_t": MemoryRefStruct,
    "vtrn_dma_transfer_t": DmaTransferStruct,
    "vtrn_access_t": AccessStruct,
    "vtrn_scalar_t": ScalarStruct,
    "vtrn_sync_t": SyncStruct,
    "vtrn_binding_t": BindingStruct,
    "vtrn_execution_info_t": ExecutionInfoStruct,
    "vtrn_handle_counts_t": HandleCountsStruct,
    "vtrn_dma_copy_options_t": DmaCopyOptionsStruct,
    "vtrn_fault_t": FaultStruct,
    "vtrn_device_error_counters_t": DeviceErrorCountersStruct,
    "vtrn_comm_member_t": _library.CommMemberStruct,
    "vtrn_comm_info_t": _library.CommInfoStruct,
}
# Structs that begin with struct_size and have an _INIT macro.
VERSIONED = [typedef for typedef, fields in HEADER.structs.items() if fields[0][1] == "struct_size"]

# The ctypes type each C type of the header must be declared with: fixed widths, enums 32 bits.
SCALARS = {
    "uint16_t": ctypes.c_uint16,
    "uint32_t": ctypes.c_uint32,
    "uint64_t": ctypes.c_uint64,
    "int32_t": ctypes.c_int32,
    "int64_t": ctypes.c_int64,
    "float": ctypes.c_float,
    "size_t": ctypes.c_size_t,
    "const char *": ctypes.c_char_p,
    "void *": ctypes.c_void_p,
    "vtrn_status_t": ctypes.c_uint32,
    "vtrn_architecture_t": ctypes.c_uint32,
    "vtrn_log_level_t": ctypes.c_uint32,
    "vtrn_numa_placement_t": ctypes.c_uint32,
    "vtrn_engine_flags_t": ctypes.c_uint32,
    "vtrn_dtype_t": ctypes.c_uint32,
    "vtrn_memory_space_t": ctypes.c_uint32,
    "vtrn_alu_op_t": ctypes.c_uint32,
    "vtrn_activation_t": ctypes.c_uint32,
    "vtrn_semaphore_op_t": ctypes.c_uint32,
    "vtrn_dma_indirect_t": ctypes.c_uint32,
    "vtrn_dma_oob_mode_t": ctypes.c_uint32,
    "vtrn_fault_kind_t": ctypes.c_uint32,
    "vtrn_collective_t": ctypes.c_uint32,
    "vtrn_comm_t": _library.CommHandle,
    "vtrn_runtime_t": RuntimeHandle,
    "vtrn_device_t": DeviceHandle,
    "vtrn_host_buffer_t": HostBufferHandle,
    "vtrn_device_memory_t": DeviceMemoryHandle,
    "vtrn_dma_queue_t": DmaQueueHandle,
    "vtrn_program_t": ProgramHandle,
    "vtrn_kernel_t": KernelHandle,
    "vtrn_fence_t": FenceHandle,
    **STRUCTS,
}


def expected_ctype(c_type):
    if c_type in SCALARS:
        return SCALARS[c_type]
    assert c_type.endswith(" *"), f"no ctypes mapping for C type {c_type!r}"
    pointee = c_type[: -len(" *")]
    if pointee.startswith("const "):
        pointee = pointee[len("const "):]
    return ctypes.POINTER(expected_ctype(pointee))


def test_status_table_matches_header():
    in_header = {name: value for name, value in HEADER.enums["vtrn_status"].items() if not name.endswith("FORCE32")}
    in_package = {status.c_name: status.value for status in errors.Status}
    assert in_package == in_header


def test_one_exception_class_per_error_status():
    error_statuses = [status for status in errors.Status if status.name.startswith("ERROR_")]
    assert sorted(errors.ERROR_CLASSES) == sorted(error_statuses)
    assert len(set(errors.ERROR_CLASSES.values())) == len(error_statuses)
    for status, cls in errors.ERROR_CLASSES.items():
        assert issubclass(cls, vtrn.VtrnError) and cls.status == status
        assert getattr(vtrn, cls.__name__) is cls, f"{cls.__name__} is not exported by the package"
    # Not an exception: polling calls return it.
    assert errors.Status.NOT_READY not in errors.ERROR_CLASSES
    # Builtins are not shadowed.
    assert not hasattr(vtrn, "TimeoutError")


def test_function_table_is_exactly_the_header():
    assert [name for name, _, _ in FUNCTIONS] == list(HEADER.functions)


@pytest.mark.parametrize("name", list(HEADER.functions))
def test_function_types_match_header(name):
    result, parameters = HEADER.functions[name]
    declared = {entry[0]: entry for entry in FUNCTIONS}[name]
    assert declared[1] is expected_ctype(result)
    assert declared[2] == [expected_ctype(parameter) for parameter in parameters]
    if name in _library.missing_functions:
        pytest.skip(f"{_library.path} does not export {name}")
    function = getattr(_library.lib, name)
    assert function.restype is declared[1]
    assert list(function.argtypes) == declared[2]


@pytest.mark.parametrize("typedef", list(HEADER.structs))
def test_struct_mirrors_header_field_for_field(typedef):
    mirror = STRUCTS[typedef]
    fields = HEADER.structs[typedef]
    assert [name for name, _ in mirror._fields_] == [field for _, field, _ in fields]
    for (_, declared), (c_type, field, length) in zip(mirror._fields_, fields):
        if length is None:
            assert declared is expected_ctype(c_type), field
        elif c_type == "char":
            assert declared._type_ is ctypes.c_char and declared._length_ == length, field
        else:
            assert declared._type_ is expected_ctype(c_type) and declared._length_ == length, field


def test_every_header_struct_has_a_mirror():
    assert sorted(HEADER.structs) == sorted(STRUCTS)


@pytest.mark.parametrize("typedef", VERSIONED)
def test_init_helper_matches_init_macro(typedef):
    mirror = STRUCTS[typedef]
    macro, values = HEADER.init_macro(typedef)
    made = mirror.init()
    assert len(values) == len(mirror._fields_), macro
    constants = {name: value for members in HEADER.enums.values() for name, value in members.items()}
    for (field, _), text in zip(mirror._fields_, values):
        if text == f"sizeof({typedef})":
            expected = ctypes.sizeof(mirror)
        elif text == "NULL":  # None for char pointers, a false NULL pointer object for others
            assert not getattr(made, field), f"{macro}: {field}"
            continue
        elif text == "{0}":
            expected = b""
        elif text.startswith("{"):  # a numeric array: "{ 0, 0, 0, 0, 0 }"
            expected = [int(item, 0) for item in text.strip("{} ").split(",")]
            assert list(getattr(made, field)) == expected, f"{macro}: {field}"
            continue
        else:
            expected = constants[text] if text in constants else int(text, 0)
        assert getattr(made, field) == expected, f"{macro}: {field}"


def test_struct_sizes_are_the_first_versions():
    # The library rejects a struct_size below its first version's size and names that size;
    # ours must be exactly that, or, for a struct that has grown, its first appended field must
    # begin there (fields are only ever appended).
    assert [ctypes.sizeof(cls) for cls in STRUCTS.values()][:4] == [32, 320, 288, 88]
    assert RuntimeInfoStruct.instance_type.offset == 288
    assert DeviceInfoStruct.interconnect.offset == 224
    assert ExecutionInfoStruct.cc_instructions.offset == 128
    assert HandleCountsStruct.comms.offset == 88


def test_version_constants_match_header():
    assert _library.VTRN_VERSION_MAJOR == int(HEADER.macros["VTRN_VERSION_MAJOR"]) == 0
    assert _library.VTRN_VERSION_MINOR == int(HEADER.macros["VTRN_VERSION_MINOR"])
    assert _library.VTRN_VERSION_PATCH == int(HEADER.macros["VTRN_VERSION_PATCH"])
    assert vtrn.version() == (_library.VTRN_VERSION_MAJOR, _library.VTRN_VERSION_MINOR, _library.VTRN_VERSION_PATCH)


def test_library_module_uses_fixed_width_types_only():
    with open(_library.__file__) as file:
        source = file.read()
    loose = re.findall(r"\bc_(?:u?int|u?long|u?longlong|u?short|byte|ubyte)\b", source)
    assert loose == [], "use c_uint32, c_int32, c_uint64, c_size_t... for C fixed-width types"


def test_library_module_declares_handles_as_typed_pointers():
    assert issubclass(RuntimeHandle, ctypes.c_void_p) and issubclass(DeviceHandle, ctypes.c_void_p)
    assert RuntimeHandle is not DeviceHandle
    assert os.path.basename(_library.path) == "libvtrn.so"


def test_library_exports_every_function_of_the_header():
    # A library older than the header still loads (calling a missing function raises
    # LibraryError), but the repository's build must implement every declaration.
    assert _library.missing_functions == [], f"{_library.path} does not export functions of include/vtrn.h"


def test_a_function_the_library_lacks_raises_library_error(monkeypatch):
    name = "vtrn_memcpy"
    monkeypatch.setattr(_library.lib, name, _library._missing_function(name, "/x/libvtrn.so", "0.1.0"))
    with pytest.raises(vtrn.LibraryError) as caught:
        _library.lib.vtrn_memcpy(None, None, None, 0)
    assert str(caught.value) == ("/x/libvtrn.so (libvtrn 0.1.0) does not export vtrn_memcpy, which include/vtrn.h "
                                 "declares: the library is older than the header; rebuild it with `swift build`")


def test_memory_refs_mirror_the_inline_helpers():
    reference = _library.host_ref(HostBufferHandle(0x7630000000000001), 128)
    assert (reference.memory, reference.offset) == (0x7630000000000001, 128)
    reference = _library.device_ref(DeviceMemoryHandle(0x7640000000000001))
    assert (reference.memory, reference.offset) == (0x7640000000000001, 0)
    with pytest.raises(TypeError):
        _library.host_ref(DeviceMemoryHandle(1))
    assert ctypes.sizeof(DmaTransferStruct) == 40


@pytest.mark.parametrize("enum, prefix, table", [
    ("vtrn_engine_flags", "VTRN_ENGINE_", _library.ENGINE_FLAGS),
    ("vtrn_dtype", "VTRN_DTYPE_", _library.DTYPES),
    ("vtrn_memory_space", "VTRN_MEMORY_", _library.MEMORY_SPACES),
    ("vtrn_alu_op", "VTRN_ALU_", _library.ALU_OPS),
    ("vtrn_activation", "VTRN_ACT_", _library.ACTIVATIONS),
    ("vtrn_semaphore_op", "VTRN_SEMAPHORE_", _library.SEMAPHORE_OPS),
    ("vtrn_scalar_kind", "VTRN_SCALAR_", _library.SCALAR_KINDS),
    ("vtrn_dma_indirect", "VTRN_DMA_INDIRECT_", _library.DMA_INDIRECT),
    ("vtrn_dma_oob_mode", "VTRN_DMA_OOB_", _library.DMA_OOB_MODES),
    ("vtrn_fault_kind", "VTRN_FAULT_", _library.FAULT_KINDS),
    ("vtrn_fault_flags", "VTRN_FAULT_", _library.FAULT_FLAGS),
    ("vtrn_device_reset_flags", "VTRN_DEVICE_RESET_", _library.DEVICE_RESET_FLAGS),
    ("vtrn_collective", "VTRN_COLLECTIVE_", _library.COLLECTIVES),
])
def test_instruction_set_enums_match_header(enum, prefix, table):
    members = HEADER.enums[enum]
    in_header = {name[len(prefix):].lower(): value for name, value in members.items() if not name.endswith("FORCE32")}
    assert table == in_header


def test_scalar_int32_mirrors_the_inline_helper():
    # vtrn_scalar_int32: kind VTRN_SCALAR_INT32, the int32's bits in value, tile vtrn_sbuf(0, 1, 0, INT32, 1).
    for number in (0x7fffffff, -1, -(2**31), 0x7fc00001, 0x7f800001):  # the last two read as NaNs
        scalar = ScalarStruct.int32(number)
        assert scalar.is_tile == HEADER.enums["vtrn_scalar_kind"]["VTRN_SCALAR_INT32"] == 2
        assert bytes(scalar)[ScalarStruct.value.offset:ScalarStruct.value.offset + 4] == number.to_bytes(4, "little",
                                                                                                          signed=True)
    tile = ScalarStruct.int32(5).tile
    assert (tile.space, tile.dtype, tile.start_partition, tile.partitions, tile.offset, tile.dims) == (1, 6, 0, 1, 0, 1)
    assert list(tile.size) == [1, 1, 1, 1] and list(tile.stride) == [1, 0, 0, 0]


def test_sync_none_matches_macro():
    items = HEADER.macros["VTRN_SYNC_NONE"].strip("{} ").split(",")
    constants = HEADER.enums["vtrn_semaphore_op"]
    expected = [constants[item.strip()] if item.strip() in constants else int(item, 0) for item in items]
    none = SyncStruct.none()
    assert [getattr(none, name) for name, _ in SyncStruct._fields_] == expected


def test_access_struct_layout():
    # vtrn_sbuf and friends are static inline: Python builds the struct, so its layout must be C's.
    # (The numbers are what a C compiler gives for include/vtrn.h on x86_64 and aarch64 Linux.)
    assert ctypes.sizeof(AccessStruct) == 88
    assert (AccessStruct.size.offset, AccessStruct.stride.offset, AccessStruct.partition_stride.offset) == (32, 48, 80)
    assert ctypes.sizeof(ScalarStruct) == 96 and ScalarStruct.tile.offset == 8
    assert ctypes.sizeof(SyncStruct) == 20 and ctypes.sizeof(BindingStruct) == 24
    assert ctypes.sizeof(ExecutionInfoStruct) == 144  # 128 in the first version, then the CC engine's fields


def test_dma_limits_match_header():
    assert _library.DMA_MAX_DESCRIPTOR_BYTES == eval(HEADER.macros["VTRN_DMA_MAX_DESCRIPTOR_BYTES"].rstrip("u"))
    assert _library.DMA_MIN_RING_ENTRIES == eval(HEADER.macros["VTRN_DMA_MIN_RING_ENTRIES"].rstrip("u"))
    assert _library.DMA_MAX_RING_ENTRIES == eval(HEADER.macros["VTRN_DMA_MAX_RING_ENTRIES"].replace("u", ""))


@pytest.mark.parametrize("name", list(HEADER.functions))
def test_every_function_is_documented_with_what_it_returns(name):
    """Each declaration follows a /** ... */ comment that says what it returns ("Returns ...", or
    "Never fails"); the program builders share their section's "Every builder: returns ..."
    paragraph. Ownership and threading follow the header's stated conventions unless the comment
    says otherwise."""
    raw = open(HEADER.path).read()
    declaration = re.search(rf"^(?:vtrn_status_t|uint32_t|const char \*)\s*{name}\s*\(", raw, flags=re.M)
    before = raw[:declaration.start()].rstrip()
    assert before.endswith("*/"), f"{name} has no doc comment right above its declaration"
    comment = before[before.rfind("/**"):]
    assert comment.startswith("/**"), f"{name}'s comment is not a /** doc comment */"
    if name.startswith("vtrn_program_") and name not in (
            "vtrn_program_create", "vtrn_program_destroy", "vtrn_program_add_parameter", "vtrn_program_instruction_count"):
        section = raw[:declaration.start()]
        section = section[section.rfind("Functions: programs"):]
        assert "Every builder: returns" in section, f"{name} is a builder outside the programs section"
        return
    assert re.search(r"\bReturns\b|Never fails", comment), f"{name}'s doc comment does not say what it returns:\n{comment}"


def test_fault_constants_and_sizes_match_header():
    assert _library.FAULT_ANY == eval(HEADER.macros["VTRN_FAULT_ANY"]) == -1
    assert _library.FAULT_HOST == eval(HEADER.macros["VTRN_FAULT_HOST"]) == -2
    # First versions, as Tests/c/abi_layout.h pins them.
    assert ctypes.sizeof(FaultStruct) == 56 and FaultStruct.after.offset == 32
    assert ctypes.sizeof(DeviceErrorCountersStruct) == 72 and DeviceErrorCountersStruct.dma_aborts.offset == 16
