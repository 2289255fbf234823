/*
 * abi_layout.h — compile-time pins of vtrn.h's ABI, included by header_check.c (as C11) and
 * header_check.cpp (as C++17).
 *
 * The sizes and offsets below are those of the first version of each struct on x86_64 Linux,
 * which the library also hard-codes as the smallest struct_size it accepts. Appending a field
 * changes a size on purpose (update the size here, never the offsets); anything else failing
 * here is an ABI break.
 */
#ifndef VTRN_TEST_ABI_LAYOUT_H
#define VTRN_TEST_ABI_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "vtrn.h"

#ifdef __cplusplus
#define VT_STATIC_ASSERT(condition, message) static_assert(condition, message)
#else
#define VT_STATIC_ASSERT(condition, message) _Static_assert(condition, message)
#endif

#define VT_SIZE(type, size) VT_STATIC_ASSERT(sizeof(type) == (size), "sizeof(" #type ") changed")
#define VT_OFFSET(type, field, offset) \
    VT_STATIC_ASSERT(offsetof(type, field) == (offset), "offsetof(" #type ", " #field ") changed")

/* header_inventory.h is generated from vtrn.h by header-inventory.sh: every enum and every
 * versioned struct the header defines, so new ones are checked without editing this file. */
#include "header_inventory.h"

/* Every enum is 32 bits wide, on every platform (each has a _FORCE32 member). */
#define VT_ENUM_IS_32_BITS(type) VT_SIZE(type, 4);
VT_EACH_ENUM(VT_ENUM_IS_32_BITS)

/* A size_t struct_size comes first in every versioned struct, on every platform. */
#define VT_STRUCT_SIZE_FIRST(type)                                                        \
    VT_OFFSET(type, struct_size, 0);                                                      \
    VT_STATIC_ASSERT(sizeof(((type *)0)->struct_size) == sizeof(size_t), #type ".struct_size is a size_t");
VT_EACH_VERSIONED(VT_STRUCT_SIZE_FIRST)

/* Handles are pointer-sized tokens. */
VT_SIZE(vtrn_runtime_t, sizeof(void *));
VT_SIZE(vtrn_device_t, sizeof(void *));
VT_SIZE(vtrn_host_buffer_t, sizeof(void *));
VT_SIZE(vtrn_device_memory_t, sizeof(void *));
VT_SIZE(vtrn_dma_queue_t, sizeof(void *));
VT_SIZE(vtrn_program_t, sizeof(void *));
VT_SIZE(vtrn_kernel_t, sizeof(void *));
VT_SIZE(vtrn_fence_t, sizeof(void *));

/* Status values are part of the ABI (Python and Swift bind the numbers). */
VT_STATIC_ASSERT(VTRN_SUCCESS == 0 && VTRN_NOT_READY == 1 && VTRN_ERROR_INVALID_ARGUMENT == 2 &&
                     VTRN_ERROR_INVALID_HANDLE == 3 && VTRN_ERROR_NOT_FOUND == 4 &&
                     VTRN_ERROR_OUT_OF_BOUNDS == 5 && VTRN_ERROR_OUT_OF_HOST_MEMORY == 6 &&
                     VTRN_ERROR_OUT_OF_DEVICE_MEMORY == 7 && VTRN_ERROR_BUSY == 8 &&
                     VTRN_ERROR_TIMEOUT == 9 && VTRN_ERROR_QUEUE_FULL == 10 &&
                     VTRN_ERROR_UNSUPPORTED == 11 && VTRN_ERROR_INVALID_PROGRAM == 12 &&
                     VTRN_ERROR_DMA_FAULT == 13 && VTRN_ERROR_HARDWARE == 14 &&
                     VTRN_ERROR_DEADLOCK == 15 && VTRN_ERROR_INTERNAL == 16 && VTRN_ERROR_RESET == 17 &&
                     VTRN_ERROR_DEVICE_LOST == 18,
                 "vtrn_status_t values changed");
VT_STATIC_ASSERT(VTRN_FAULT_NONE == 0 && VTRN_FAULT_DMA_ABORT == 1 && VTRN_FAULT_DMA_HANG == 2 && VTRN_FAULT_HBM_UE == 3 &&
                     VTRN_FAULT_ENGINE_HANG == 4 && VTRN_FAULT_DEVICE_LOSS == 5,
                 "vtrn_fault_kind_t values changed");
VT_STATIC_ASSERT(VTRN_FAULT_STICKY == 1 && VTRN_DEVICE_RESET_CLEAR_COUNTERS == 1, "fault and reset flags changed");
VT_STATIC_ASSERT(VTRN_FAULT_ANY == -1 && VTRN_FAULT_HOST == -2, "VTRN_FAULT_ANY and VTRN_FAULT_HOST changed");
VT_STATIC_ASSERT(VTRN_ARCH_TRN1 == 1 && VTRN_ARCH_TRN2 == 2, "vtrn_architecture_t values changed");
VT_STATIC_ASSERT(VTRN_LOG_LEVEL_DEFAULT == 0 && VTRN_LOG_LEVEL_ERROR == 1 && VTRN_LOG_LEVEL_WARNING == 2 &&
                     VTRN_LOG_LEVEL_INFO == 3 && VTRN_LOG_LEVEL_DEBUG == 4 && VTRN_LOG_LEVEL_TRACE == 5,
                 "vtrn_log_level_t values changed");
VT_STATIC_ASSERT(VTRN_ENGINE_PE == 1 && VTRN_ENGINE_ACT == 2 && VTRN_ENGINE_DVE == 4 && VTRN_ENGINE_POOL == 8,
                 "vtrn_engine_flags_t values changed");
VT_STATIC_ASSERT(VTRN_ENGINE_DMA == 16, "vtrn_engine_flags_t values changed");
VT_STATIC_ASSERT(VTRN_DTYPE_FP32 == 1 && VTRN_DTYPE_BF16 == 2 && VTRN_DTYPE_FP16 == 3 && VTRN_DTYPE_FP8_E4M3 == 4 &&
                     VTRN_DTYPE_FP8_E5M2 == 5 && VTRN_DTYPE_INT32 == 6 && VTRN_DTYPE_INT8 == 7 &&
                     VTRN_DTYPE_UINT8 == 8,
                 "vtrn_dtype_t values changed");
VT_STATIC_ASSERT(VTRN_MEMORY_SBUF == 1 && VTRN_MEMORY_PSUM == 2 && VTRN_MEMORY_HBM == 3,
                 "vtrn_memory_space_t values changed");
VT_STATIC_ASSERT(VTRN_ALU_ADD == 1 && VTRN_ALU_SUBTRACT == 2 && VTRN_ALU_MULTIPLY == 3 && VTRN_ALU_MAX == 4 &&
                     VTRN_ALU_MIN == 5 && VTRN_ALU_EQUAL == 6 && VTRN_ALU_NOT_EQUAL == 7 && VTRN_ALU_GREATER == 8 &&
                     VTRN_ALU_GREATER_EQUAL == 9 && VTRN_ALU_LESS == 10 && VTRN_ALU_LESS_EQUAL == 11 &&
                     VTRN_ALU_POW == 12 && VTRN_ALU_ABS == 13 && VTRN_ALU_RECIPROCAL == 14 && VTRN_ALU_RSQRT == 15 &&
                     VTRN_ALU_DIVIDE == 16 && VTRN_ALU_BITWISE_AND == 17 && VTRN_ALU_BITWISE_OR == 18 &&
                     VTRN_ALU_BITWISE_XOR == 19 && VTRN_ALU_SHIFT_LEFT == 20 && VTRN_ALU_SHIFT_RIGHT == 21 &&
                     VTRN_ALU_BYPASS == 22,
                 "vtrn_alu_op_t values changed");
VT_STATIC_ASSERT(VTRN_ACT_COPY == 1 && VTRN_ACT_EXP == 2 && VTRN_ACT_LOG == 3 && VTRN_ACT_TANH == 4 &&
                     VTRN_ACT_SIGMOID == 5 && VTRN_ACT_RELU == 6 && VTRN_ACT_GELU == 7 && VTRN_ACT_GELU_TANH == 8 &&
                     VTRN_ACT_SILU == 9 && VTRN_ACT_SQUARE == 10 && VTRN_ACT_SQRT == 11 && VTRN_ACT_RSQRT == 12 &&
                     VTRN_ACT_RECIPROCAL == 13,
                 "vtrn_activation_t values changed");
VT_STATIC_ASSERT(VTRN_SEMAPHORE_ADD == 1 && VTRN_SEMAPHORE_SET == 2, "vtrn_semaphore_op_t values changed");
VT_STATIC_ASSERT(VTRN_STATUS_FORCE32 == 0x7fffffff && VTRN_ARCH_FORCE32 == 0x7fffffff &&
                     VTRN_LOG_LEVEL_FORCE32 == 0x7fffffff && VTRN_ENGINE_FORCE32 == 0x7fffffff &&
                     VTRN_DTYPE_FORCE32 == 0x7fffffff && VTRN_MEMORY_FORCE32 == 0x7fffffff &&
                     VTRN_ALU_FORCE32 == 0x7fffffff && VTRN_ACT_FORCE32 == 0x7fffffff &&
                     VTRN_SEMAPHORE_FORCE32 == 0x7fffffff && VTRN_FAULT_KIND_FORCE32 == 0x7fffffff &&
                     VTRN_FAULT_FLAGS_FORCE32 == 0x7fffffff && VTRN_DEVICE_RESET_FLAGS_FORCE32 == 0x7fffffff,
                 "_FORCE32 members changed");

/* The version macros agree with each other. */
VT_STATIC_ASSERT(VTRN_VERSION == VTRN_MAKE_VERSION(VTRN_VERSION_MAJOR, VTRN_VERSION_MINOR, VTRN_VERSION_PATCH),
                 "VTRN_VERSION");
VT_STATIC_ASSERT(VTRN_VERSION_GET_MAJOR(VTRN_VERSION) == VTRN_VERSION_MAJOR &&
                     VTRN_VERSION_GET_MINOR(VTRN_VERSION) == VTRN_VERSION_MINOR &&
                     VTRN_VERSION_GET_PATCH(VTRN_VERSION) == VTRN_VERSION_PATCH,
                 "VTRN_VERSION_GET_*");
VT_STATIC_ASSERT(VTRN_MAKE_VERSION(1, 2, 3) == 0x010203u, "VTRN_MAKE_VERSION packing");

#if defined(__x86_64__) && defined(__linux__)
/* First-version sizes: the library rejects a struct_size below these. A struct that has grown
 * since pins its first version as the offset of its first appended field (below) and its size
 * now here. */
VT_SIZE(vtrn_runtime_options_t, 32);
VT_SIZE(vtrn_runtime_info_t, 320);   /* first version 288: + instance_type */
VT_SIZE(vtrn_device_info_t, 288);    /* first version 224: + the interconnect fields */
VT_SIZE(vtrn_core_info_t, 88);
VT_SIZE(vtrn_core_holder_t, 280);

/* The structs of host buffers, device memory and DMA: first versions as the library knows them. */
VT_SIZE(vtrn_host_buffer_options_t, 24);
VT_SIZE(vtrn_host_buffer_info_t, 208);
VT_SIZE(vtrn_device_memory_info_t, 40);
VT_SIZE(vtrn_memory_usage_t, 72);
VT_SIZE(vtrn_dma_queue_options_t, 24);
VT_SIZE(vtrn_dma_queue_info_t, 64);
/* Not versioned (no struct_size): passed in arrays, so their layout can never change. */
VT_SIZE(vtrn_memory_ref_t, 16);
VT_SIZE(vtrn_dma_transfer_t, 40);
VT_OFFSET(vtrn_memory_ref_t, offset, 8);
VT_OFFSET(vtrn_dma_transfer_t, src, 16);
VT_OFFSET(vtrn_dma_transfer_t, bytes, 32);

/* The structs of programs, kernels and executions. vtrn_execution_info_t is versioned (its first
 * version is 128 bytes); the others are passed by value or in arrays, so their layout can never
 * change. */
VT_SIZE(vtrn_execution_info_t, 144); /* second version: cc_instructions, cc_busy_ns appended */
VT_OFFSET(vtrn_execution_info_t, cc_instructions, 128);
VT_OFFSET(vtrn_execution_info_t, cc_busy_ns, 136);
VT_SIZE(vtrn_handle_counts_t, 96); /* second version: comms appended to the first's 88 bytes */
VT_OFFSET(vtrn_handle_counts_t, runtimes, 8);
VT_OFFSET(vtrn_handle_counts_t, total, 72);
VT_OFFSET(vtrn_handle_counts_t, orphaned_host_bytes, 80);
VT_OFFSET(vtrn_handle_counts_t, comms, 88);

/* Collectives. vtrn_comm_info_t is versioned; vtrn_comm_member_t is passed in arrays. */
VT_SIZE(vtrn_comm_info_t, 40);
VT_OFFSET(vtrn_comm_info_t, ranks, 8);
VT_OFFSET(vtrn_comm_info_t, first_local_rank, 12);
VT_OFFSET(vtrn_comm_info_t, collectives_completed, 16);
VT_OFFSET(vtrn_comm_info_t, local_ranks, 24);
VT_OFFSET(vtrn_comm_info_t, processes, 32);
VT_SIZE(vtrn_comm_member_t, 16);
VT_OFFSET(vtrn_comm_member_t, core, 8);
VT_SIZE(vtrn_access_t, 88);
VT_SIZE(vtrn_scalar_t, 96);
VT_SIZE(vtrn_sync_t, 20);
VT_SIZE(vtrn_binding_t, 24);
VT_SIZE(vtrn_dma_copy_options_t, 32); /* versioned: its first version */
VT_OFFSET(vtrn_dma_copy_options_t, dst_rmw_op, 8);
VT_OFFSET(vtrn_dma_copy_options_t, indirect, 12);
VT_OFFSET(vtrn_dma_copy_options_t, index, 16);
VT_OFFSET(vtrn_dma_copy_options_t, oob_mode, 24);

VT_OFFSET(vtrn_access_t, space, 0);
VT_OFFSET(vtrn_access_t, dtype, 4);
VT_OFFSET(vtrn_access_t, start_partition, 8);
VT_OFFSET(vtrn_access_t, partitions, 12);
VT_OFFSET(vtrn_access_t, offset, 16);
VT_OFFSET(vtrn_access_t, parameter, 24);
VT_OFFSET(vtrn_access_t, dims, 28);
VT_OFFSET(vtrn_access_t, size, 32);
VT_OFFSET(vtrn_access_t, stride, 48);
VT_OFFSET(vtrn_access_t, partition_stride, 80);

VT_OFFSET(vtrn_scalar_t, is_tile, 0);
VT_OFFSET(vtrn_scalar_t, value, 4);
VT_OFFSET(vtrn_scalar_t, tile, 8);

VT_OFFSET(vtrn_sync_t, wait_semaphore, 0);
VT_OFFSET(vtrn_sync_t, wait_value, 4);
VT_OFFSET(vtrn_sync_t, signal_semaphore, 8);
VT_OFFSET(vtrn_sync_t, signal_op, 12);
VT_OFFSET(vtrn_sync_t, signal_value, 16);

VT_OFFSET(vtrn_binding_t, name, 0);
VT_OFFSET(vtrn_binding_t, memory, 8);
VT_OFFSET(vtrn_binding_t, offset, 16);

VT_OFFSET(vtrn_execution_info_t, status, 8);
VT_OFFSET(vtrn_execution_info_t, reserved, 12);
VT_OFFSET(vtrn_execution_info_t, wall_ns, 16);
VT_OFFSET(vtrn_execution_info_t, queued_ns, 24);
VT_OFFSET(vtrn_execution_info_t, device_ns, 32);
VT_OFFSET(vtrn_execution_info_t, device_cycles, 40);
VT_OFFSET(vtrn_execution_info_t, instructions, 48);
VT_OFFSET(vtrn_execution_info_t, engine_busy_ns, 88);

VT_OFFSET(vtrn_runtime_options_t, topology, 8);
VT_OFFSET(vtrn_runtime_options_t, visible_cores, 16);
VT_OFFSET(vtrn_runtime_options_t, log_level, 24);

VT_OFFSET(vtrn_runtime_info_t, device_count, 8);
VT_OFFSET(vtrn_runtime_info_t, core_count, 12);
VT_OFFSET(vtrn_runtime_info_t, visible_core_count, 16);
VT_OFFSET(vtrn_runtime_info_t, log_level, 20);
VT_OFFSET(vtrn_runtime_info_t, exec_timeout_ns, 24);
VT_OFFSET(vtrn_runtime_info_t, topology, 32);
VT_OFFSET(vtrn_runtime_info_t, instance_type, 288); /* appended: the first version ends at 288 */

VT_OFFSET(vtrn_device_info_t, index, 8);
VT_OFFSET(vtrn_device_info_t, architecture, 12);
VT_OFFSET(vtrn_device_info_t, name, 16);
VT_OFFSET(vtrn_device_info_t, core_count, 80);
VT_OFFSET(vtrn_device_info_t, first_core, 84);
VT_OFFSET(vtrn_device_info_t, hbm_bytes, 88);
VT_OFFSET(vtrn_device_info_t, hbm_used_bytes, 96);
VT_OFFSET(vtrn_device_info_t, hbm_bandwidth, 104);
VT_OFFSET(vtrn_device_info_t, numa_node, 112);
VT_OFFSET(vtrn_device_info_t, pci_vendor_id, 116);
VT_OFFSET(vtrn_device_info_t, pci_device_id, 118);
VT_OFFSET(vtrn_device_info_t, bus_address, 120);
VT_OFFSET(vtrn_device_info_t, uuid, 152);
VT_OFFSET(vtrn_device_info_t, dma_engines_per_core, 192);
VT_OFFSET(vtrn_device_info_t, queues_per_dma_engine, 196);
VT_OFFSET(vtrn_device_info_t, sbuf_bytes_per_core, 200);
VT_OFFSET(vtrn_device_info_t, psum_bytes_per_core, 208);
VT_OFFSET(vtrn_device_info_t, semaphores_per_core, 216);
VT_OFFSET(vtrn_device_info_t, visible_core_count, 220);
/* Appended: the first version ends at 224. */
VT_OFFSET(vtrn_device_info_t, interconnect, 224);
VT_OFFSET(vtrn_device_info_t, link_count, 256);
VT_OFFSET(vtrn_device_info_t, links_per_device, 260);
VT_OFFSET(vtrn_device_info_t, link_bandwidth, 264);
VT_OFFSET(vtrn_device_info_t, device_link_bandwidth, 272);
VT_OFFSET(vtrn_device_info_t, hop_latency_ns, 280);

VT_OFFSET(vtrn_core_info_t, device_index, 8);
VT_OFFSET(vtrn_core_info_t, index, 12);
VT_OFFSET(vtrn_core_info_t, global_index, 16);
VT_OFFSET(vtrn_core_info_t, visible, 20);
VT_OFFSET(vtrn_core_info_t, engines, 24);
VT_OFFSET(vtrn_core_info_t, sbuf_partitions, 28);
VT_OFFSET(vtrn_core_info_t, sbuf_bytes_per_partition, 32);
VT_OFFSET(vtrn_core_info_t, psum_bytes_per_partition, 36);
VT_OFFSET(vtrn_core_info_t, psum_banks, 40);
VT_OFFSET(vtrn_core_info_t, semaphores, 44);
VT_OFFSET(vtrn_core_info_t, dma_engines, 48);
VT_OFFSET(vtrn_core_info_t, queues_per_dma_engine, 52);
VT_OFFSET(vtrn_core_info_t, pe_clock_hz, 56);
VT_OFFSET(vtrn_core_info_t, act_clock_hz, 64);
VT_OFFSET(vtrn_core_info_t, dve_clock_hz, 72);
VT_OFFSET(vtrn_core_info_t, pool_clock_hz, 80);

VT_OFFSET(vtrn_core_holder_t, held, 8);
VT_OFFSET(vtrn_core_holder_t, pid, 12);
VT_OFFSET(vtrn_core_holder_t, runtime, 16);
VT_OFFSET(vtrn_core_holder_t, this_process, 20);
VT_OFFSET(vtrn_core_holder_t, command, 24);
/* Faults and error counters: first versions. */
VT_SIZE(vtrn_fault_t, 56);
VT_OFFSET(vtrn_fault_t, kind, 8);
VT_OFFSET(vtrn_fault_t, flags, 12);
VT_OFFSET(vtrn_fault_t, core, 16);
VT_OFFSET(vtrn_fault_t, engine, 20);
VT_OFFSET(vtrn_fault_t, queue, 24);
VT_OFFSET(vtrn_fault_t, reserved, 28);
VT_OFFSET(vtrn_fault_t, after, 32);
VT_OFFSET(vtrn_fault_t, address, 40);
VT_OFFSET(vtrn_fault_t, bytes, 48);
VT_SIZE(vtrn_device_error_counters_t, 72);
VT_OFFSET(vtrn_device_error_counters_t, lost, 8);
VT_OFFSET(vtrn_device_error_counters_t, armed_faults, 12);
VT_OFFSET(vtrn_device_error_counters_t, dma_aborts, 16);
VT_OFFSET(vtrn_device_error_counters_t, hbm_uncorrectable_errors, 24);
VT_OFFSET(vtrn_device_error_counters_t, execution_timeouts, 32);
VT_OFFSET(vtrn_device_error_counters_t, hangs, 40);
VT_OFFSET(vtrn_device_error_counters_t, device_losses, 48);
VT_OFFSET(vtrn_device_error_counters_t, resets, 56);
VT_OFFSET(vtrn_device_error_counters_t, faults_injected, 64);
#endif

#endif /* VTRN_TEST_ABI_LAYOUT_H */
