/*
 * vtrn.h — the C interface of vtrn, a virtual AWS Trainium device and its driver/runtime.
 *
 * This header is the contract. Everything the library exports is declared here and nothing else
 * is exported (a test compares `nm -D libvtrn.so` with this file in both directions).
 *
 * Conventions (they hold for every function unless its comment says otherwise):
 *  - Every function but vtrn_version, vtrn_status_string and vtrn_last_error returns a
 *    vtrn_status_t. Results come back through out-parameters, which are left untouched when the
 *    call fails.
 *  - On failure, vtrn_last_error() returns a message for this thread's most recent failed call,
 *    specific enough to act on ("device 1 has 2 cores; core 5 requested").
 *  - Handles are tokens, never pointers: a destroyed, stale, foreign (a handle of another kind)
 *    or garbage handle is reported as VTRN_ERROR_INVALID_HANDLE, never a crash. Destroying the
 *    runtime invalidates every handle it owns. vtrn_*_destroy(NULL) is a no-op that succeeds.
 *  - Option and info structs begin with `size_t struct_size`. Set it with the struct's _INIT macro
 *    (`vtrn_device_info_t info = VTRN_DEVICE_INFO_INIT;`). The library accepts any size at least
 *    as large as the first version of the struct, reads and fills only what that size holds, and
 *    rejects a smaller one with VTRN_ERROR_INVALID_ARGUMENT.
 *  - Enums are 32 bits wide (each has a _FORCE32 member). Flags are uint32_t bit sets; unknown
 *    bits are rejected with VTRN_ERROR_INVALID_ARGUMENT.
 *  - Timeouts are in nanoseconds: 0 polls (VTRN_NOT_READY when not done), UINT64_MAX waits forever.
 *  - Thread safety: every function may be called from several threads at once, on the same or
 *    on different handles, unless its comment says otherwise.
 *  - Strings passed in are NUL-terminated UTF-8 and are copied: the caller keeps ownership.
 *
 * Configuration comes from options passed in code, else from the environment, else defaults:
 *   VTRN_TOPOLOGY         the virtual devices: "trn1", "trn2:2", "trn1,trn2@node1", or an
 *                         instance type alone: "trn1.32xlarge", "trn2.48xlarge"...  (default "trn1")
 *   VTRN_VISIBLE_CORES    the cores this runtime may use: "0-3", "0,2,5"            (default: all)
 *   VTRN_LOG_LEVEL        error, warning, info, debug, trace                        (default warning)
 *   VTRN_EXEC_TIMEOUT_MS  executions running longer fail with VTRN_ERROR_TIMEOUT  (default 30000)
 *   VTRN_TRACE            write a trace of the runtime to this path as it runs (Chrome/Perfetto JSON,
 *                         valid at every moment, also when the process exits without destroying the
 *                         runtime): per device and core each engine's instructions (opcode, operands,
 *                         cycles) and semaphore waits on the device clock; per host thread its API
 *                         calls and per DMA queue its submissions (bytes, direction, rate) on the wall
 *                         clock, with arrows from an execute call to its execution. "%p" becomes the
 *                         process id and "%r" the runtime's number. `vtrn trace summary|render`
 *                         read it                                                      (default off)
 *   VTRN_MONITOR_PERIOD_MS while the process has a runtime, publish its counters for `vtrn top` and
 *                         `vtrn monitor` every this many ms in /dev/shm/vtrn-<pid>; 0: none (default 500)
 *   VTRN_LOCK_DIR         the directory of the cores' lock files, shared by the processes whose
 *                         claims must contend (see "Core ownership" below); made if missing. A
 *                         relative path is taken from the working directory.
 *                         (default: /run/vtrn if this process can write it, else
 *                         $XDG_RUNTIME_DIR/vtrn, else /tmp/vtrn-UID, which must be this user's
 *                         and mode 700)
 *   VTRN_FAULTS           faults to inject into the devices when the runtime is created, as
 *                         vtrn_device_inject_fault does: faults separated by commas, each
 *                         KIND[:OPTION]...; KIND dma-abort, dma-hang, hbm-ue, engine-hang or
 *                         device-loss; OPTIONs device=N (default 0), core=N|any (and core=host for
 *                         the DMA kinds), engine=N|any (DMA engine) or pe|act|dve|pool|dma|any
 *                         (engine-hang), queue=N|any, after=N, address=A and bytes=N (hbm-ue;
 *                         decimal or 0x hex), sticky or once; e.g.
 *                         "dma-abort:core=0:engine=1:queue=2:after=10,hbm-ue:device=1:address=0x0:bytes=4096:sticky"
 *                         The error for a bad string names the fault (by position and text) and
 *                         the part that is wrong                                        (default none)
 * An empty variable counts as unset. A bad value fails vtrn_runtime_create with VTRN_ERROR_INVALID_ARGUMENT and a message naming
 * the variable, the bad value and the accepted forms.
 *
 * Core ownership. The first DMA queue or kernel a runtime puts on a core claims the core until the
 * runtime is destroyed; while it holds it, every other runtime gets VTRN_ERROR_BUSY for that core,
 * whether it lives in the same process or in another one. Across processes a claim is a lock on
 * the core's file in the lock directory (VTRN_LOCK_DIR), taken with fcntl(F_OFD_SETLK), and the
 * holder writes its pid, runtime number and command line into the file; a BUSY message names
 * them, and vtrn_device_get_core_holder reports them. The kernel drops the lock when the holder's
 * file closes: when its runtime is destroyed, or when the process ends in any way (kill -9
 * included), so the core is free at once, with no stale owner to clean up. The lock files are
 * opened O_CLOEXEC: a program the holder starts with exec does not inherit its claims (a child
 * made by fork without exec shares them until it exits or execs). A core is named by its device's
 * architecture, device index and NUMA node and its core index,
 * "<lock dir>/trn1@node0-device0-core1.lock": the identity under which runtimes of one process
 * share a device, so runtimes of any processes with the same VTRN_TOPOLOGY and lock directory
 * contend for the same cores, whatever their VTRN_VISIBLE_CORES, and a device index is one device
 * whichever topology names it (device 0 of "trn1" and of "trn1:2" are the same). The lock
 * directory is made when a runtime is created; one that cannot be made or written fails
 * vtrn_runtime_create with VTRN_ERROR_INVALID_ARGUMENT naming it and the system's reason, never a
 * silent fallback to no locking. Lock files are never deleted; do not delete them while vtrn
 * processes run.
 */
#ifndef VTRN_H
#define VTRN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ============================================================================================
 * Version
 * ============================================================================================ */

#define VTRN_VERSION_MAJOR 0
#define VTRN_VERSION_MINOR 2
#define VTRN_VERSION_PATCH 0

/** Packs a version as vtrn_version() returns it: major in bits 16-31, minor 8-15, patch 0-7. */
#define VTRN_MAKE_VERSION(major, minor, patch) \
    ((((uint32_t)(major)) << 16) | (((uint32_t)(minor)) << 8) | ((uint32_t)(patch)))
/** The version of this header. Compare with vtrn_version() to detect a mismatched library. */
#define VTRN_VERSION VTRN_MAKE_VERSION(VTRN_VERSION_MAJOR, VTRN_VERSION_MINOR, VTRN_VERSION_PATCH)
#define VTRN_VERSION_GET_MAJOR(version) (((uint32_t)(version)) >> 16)
#define VTRN_VERSION_GET_MINOR(version) ((((uint32_t)(version)) >> 8) & 0xffu)
#define VTRN_VERSION_GET_PATCH(version) (((uint32_t)(version)) & 0xffu)

/* ============================================================================================
 * Status codes
 * ============================================================================================ */

typedef enum vtrn_status {
    /** The call did what it was asked. */
    VTRN_SUCCESS = 0,
    /** Not an error: the thing polled for (a sequence, a fence) has not completed yet. */
    VTRN_NOT_READY = 1,
    /** An argument is wrong: NULL out-pointer, bad index, bad struct_size, bad option value. */
    VTRN_ERROR_INVALID_ARGUMENT = 2,
    /** The handle is destroyed, stale (its runtime was destroyed), of another kind, or garbage. */
    VTRN_ERROR_INVALID_HANDLE = 3,
    /** The thing named (a kernel parameter, a binding, a file) does not exist. */
    VTRN_ERROR_NOT_FOUND = 4,
    /** An offset plus a size runs past the end of a buffer, memory block, SBUF or PSUM. */
    VTRN_ERROR_OUT_OF_BOUNDS = 5,
    /** The host could not provide memory (allocation, mlock, NUMA placement). */
    VTRN_ERROR_OUT_OF_HOST_MEMORY = 6,
    /** The device's HBM has no free block large enough. */
    VTRN_ERROR_OUT_OF_DEVICE_MEMORY = 7,
    /** The resource (a core, a DMA queue) is held by someone else. */
    VTRN_ERROR_BUSY = 8,
    /** A wait or an execution did not finish in time. */
    VTRN_ERROR_TIMEOUT = 9,
    /** A ring or command queue has no room for what was asked; nothing was enqueued. */
    VTRN_ERROR_QUEUE_FULL = 10,
    /** The request is understood but not supported by this device or build. */
    VTRN_ERROR_UNSUPPORTED = 11,
    /** A program broke an instruction-set rule; found at vtrn_kernel_load. */
    VTRN_ERROR_INVALID_PROGRAM = 12,
    /** A DMA transfer failed at run time (bad descriptor, injected fault). */
    VTRN_ERROR_DMA_FAULT = 13,
    /** The virtual hardware reported an error (uncorrectable error, injected fault). */
    VTRN_ERROR_HARDWARE = 14,
    /** Every unfinished engine waits on a semaphore that nothing pending can raise. */
    VTRN_ERROR_DEADLOCK = 15,
    /** A bug in vtrn itself; the message says where. Please report it. */
    VTRN_ERROR_INTERNAL = 16,
    /** The work was in flight (a DMA sequence, an execution) when its device was reset
     *  (vtrn_device_reset); it did not complete. Submit it again. */
    VTRN_ERROR_RESET = 17,
    /** The device is lost (fell off the bus; here, an injected VTRN_FAULT_DEVICE_LOSS): the call
     *  needs its hardware, or the work was in flight when it was lost. vtrn_device_reset brings
     *  it back. */
    VTRN_ERROR_DEVICE_LOST = 18,
    VTRN_STATUS_FORCE32 = 0x7fffffff
} vtrn_status_t;

/* ============================================================================================
 * Handles (opaque tokens; see the conventions above)
 * ============================================================================================ */

/** A runtime: a set of virtual devices described by a topology. */
typedef struct vtrn_runtime_s *vtrn_runtime_t;
/** A virtual Trainium device of a runtime. Owned by the runtime; never destroyed by itself. */
typedef struct vtrn_device_s *vtrn_device_t;
/** Host memory that DMA can use: allocated by vtrn with a NUMA placement, or registered. */
typedef struct vtrn_host_buffer_s *vtrn_host_buffer_t;
/** A block of a device's HBM. */
typedef struct vtrn_device_memory_s *vtrn_device_memory_t;
/** One DMA queue of one DMA engine of one NeuronCore: a descriptor ring and its doorbell. */
typedef struct vtrn_dma_queue_s *vtrn_dma_queue_t;
/** A program being built: instructions for a NeuronCore's engines, and named HBM parameters. */
typedef struct vtrn_program_s *vtrn_program_t;
/** A program validated and loaded on one core, ready to execute any number of times. */
typedef struct vtrn_kernel_s *vtrn_kernel_t;
/** One execution of a kernel: wait on it, read its status and its timings. */
typedef struct vtrn_fence_s *vtrn_fence_t;
/** A communicator: a replica group of cores that run collectives together. */
typedef struct vtrn_comm_s *vtrn_comm_t;

/* ============================================================================================
 * Enums and flags
 * ============================================================================================ */

typedef enum vtrn_architecture {
    VTRN_ARCH_TRN1 = 1, /**< Trainium1, NeuronCore-v2, PCI 1d0f:7164 */
    VTRN_ARCH_TRN2 = 2, /**< Trainium2, NeuronCore-v3, PCI 1d0f:7364 */
    VTRN_ARCH_FORCE32 = 0x7fffffff
} vtrn_architecture_t;

typedef enum vtrn_log_level {
    VTRN_LOG_LEVEL_DEFAULT = 0, /**< from VTRN_LOG_LEVEL, else warning */
    VTRN_LOG_LEVEL_ERROR = 1,
    VTRN_LOG_LEVEL_WARNING = 2,
    VTRN_LOG_LEVEL_INFO = 3,
    VTRN_LOG_LEVEL_DEBUG = 4,
    VTRN_LOG_LEVEL_TRACE = 5,
    VTRN_LOG_LEVEL_FORCE32 = 0x7fffffff
} vtrn_log_level_t;

/** The engines of a NeuronCore, as bits of vtrn_core_info_t.engines, and, one at a time, the
 *  engine an instruction runs on. Each engine runs its own in-order instruction stream. */
typedef enum vtrn_engine_flags {
    VTRN_ENGINE_PE = 1u << 0,   /**< Tensor engine (matmul, transpose) */
    VTRN_ENGINE_ACT = 1u << 1,  /**< Scalar engine (activation functions) */
    VTRN_ENGINE_DVE = 1u << 2,  /**< Vector engine (elementwise, reductions) */
    VTRN_ENGINE_POOL = 1u << 3, /**< GpSimd engine (iota, affine select, general purpose) */
    VTRN_ENGINE_DMA = 1u << 4,  /**< the core's DMA, for HBM <-> SBUF copies inside kernels */
    VTRN_ENGINE_CC = 1u << 5,   /**< the collective-communication engine (Neuron's CC cores): collectives */
    VTRN_ENGINE_FORCE32 = 0x7fffffff
} vtrn_engine_flags_t;

/** Element types. Engines compute in fp32 and round to the output type (nearest even; fp8
 *  e4m3 is Trainium's IEEE-like variant, max 240; conversions match ml_dtypes). */
typedef enum vtrn_dtype {
    VTRN_DTYPE_FP32 = 1,
    VTRN_DTYPE_BF16 = 2,
    VTRN_DTYPE_FP16 = 3,
    VTRN_DTYPE_FP8_E4M3 = 4,
    VTRN_DTYPE_FP8_E5M2 = 5,
    VTRN_DTYPE_INT32 = 6,
    VTRN_DTYPE_INT8 = 7,
    VTRN_DTYPE_UINT8 = 8,
    VTRN_DTYPE_FORCE32 = 0x7fffffff
} vtrn_dtype_t;

/** Where an access pattern points. */
typedef enum vtrn_memory_space {
    VTRN_MEMORY_SBUF = 1, /**< the core's state buffer: 128 partitions */
    VTRN_MEMORY_PSUM = 2, /**< the core's partial-sum buffer: 128 partitions x 8 banks of 2 KiB */
    VTRN_MEMORY_HBM = 3,  /**< a kernel parameter, bound to device memory at execution */
    VTRN_MEMORY_FORCE32 = 0x7fffffff
} vtrn_memory_space_t;

/** Arithmetic of TENSOR_TENSOR, TENSOR_SCALAR, TENSOR_REDUCE (the ops NKI can reduce with) and
 *  AFFINE_SELECT (the comparisons). Two kinds, as NKI's:
 *  - arithmetic ops (all but the bitvec ones) compute in fp32: operands of any dtype are widened
 *    to fp32 and the result rounded to the output's dtype (so int32 values beyond 2^24 round).
 *    Comparisons give 1.0 or 0.0.
 *  - bitvec ops (BITWISE_AND/OR/XOR, SHIFT_LEFT, SHIFT_RIGHT, INVERT) take integer dtypes only and act on
 *    32-bit two's complement patterns, exactly: int8 is sign-extended, uint8 zero-extended, and a
 *    result written to int8/uint8 keeps its low 8 bits (no saturation). Shift amounts count modulo
 *    32; SHIFT_RIGHT is logical (zeros come in, as NKI's right_shift). An fp32 immediate or tile
 *    operand of a bitvec op stands for the int32 it rounds to (nearest even, saturated); use
 *    vtrn_scalar_int32 for exact 32-bit immediates. TENSOR_SCALAR runs bitvec ops on DVE only,
 *    and its two stages are both bitvec or both arithmetic.
 *  One-operand ops (ABS, RECIPROCAL, RSQRT, LOGICAL_NOT, INVERT) ignore TENSOR_SCALAR's scalar
 *  and are refused by TENSOR_TENSOR. */
typedef enum vtrn_alu_op {
    VTRN_ALU_ADD = 1, VTRN_ALU_SUBTRACT, VTRN_ALU_MULTIPLY, VTRN_ALU_MAX, VTRN_ALU_MIN,
    VTRN_ALU_EQUAL, VTRN_ALU_NOT_EQUAL, VTRN_ALU_GREATER, VTRN_ALU_GREATER_EQUAL, VTRN_ALU_LESS, VTRN_ALU_LESS_EQUAL,
    VTRN_ALU_POW, VTRN_ALU_ABS, VTRN_ALU_RECIPROCAL, VTRN_ALU_RSQRT, VTRN_ALU_DIVIDE,
    VTRN_ALU_BITWISE_AND, VTRN_ALU_BITWISE_OR, VTRN_ALU_BITWISE_XOR, VTRN_ALU_SHIFT_LEFT, VTRN_ALU_SHIFT_RIGHT,
    VTRN_ALU_BYPASS, /**< the first operand as it is (an empty second stage of TENSOR_SCALAR) */
    /** NKI's logical ops, arithmetic: nonzero (NaN included) is true; the result is 1.0 or 0.0. */
    VTRN_ALU_LOGICAL_AND, VTRN_ALU_LOGICAL_OR, VTRN_ALU_LOGICAL_XOR,
    VTRN_ALU_LOGICAL_NOT, /**< one operand: 1.0 where it is 0, else 0.0 */
    VTRN_ALU_INVERT,      /**< bitvec, one operand: bitwise not (~x) */
    VTRN_ALU_FORCE32 = 0x7fffffff
} vtrn_alu_op_t;

/** Functions of ACTIVATE: fn(src * scale + bias), NKI's list for nki.isa.activation. vtrn
 *  computes each to fp32 accuracy over all inputs (composite ones in double, rounded once, in
 *  forms that do not cancel: GELU as x/2 * erfc(-x/sqrt 2), GELU_TANH as x * sigmoid(2u)); the
 *  Scalar Engine's polynomials are valid only in NKI's ranges (SIN in [-pi, pi], ARCTAN in
 *  [-pi/2, pi/2], LOG in [2^-64, 2^64], ...). */
typedef enum vtrn_activation {
    VTRN_ACT_COPY = 1, VTRN_ACT_EXP, VTRN_ACT_LOG, VTRN_ACT_TANH, VTRN_ACT_SIGMOID, VTRN_ACT_RELU,
    VTRN_ACT_GELU,      /**< x * Phi(x), the exact GELU (erf) */
    VTRN_ACT_GELU_TANH, /**< NKI's gelu_apprx_tanh: x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) */
    VTRN_ACT_SILU, VTRN_ACT_SQUARE, VTRN_ACT_SQRT, VTRN_ACT_RSQRT, VTRN_ACT_RECIPROCAL,
    VTRN_ACT_ABS,
    VTRN_ACT_SIGN,      /**< -1, 0 or 1 (NaN stays NaN), as numpy.sign */
    VTRN_ACT_ERF,
    VTRN_ACT_ERF_DX,    /**< 2/sqrt(pi) * exp(-x^2) */
    VTRN_ACT_SIN,
    VTRN_ACT_ARCTAN,
    VTRN_ACT_SOFTPLUS,  /**< log(1 + exp(x)) */
    VTRN_ACT_MISH,      /**< x * tanh(softplus(x)) */
    VTRN_ACT_GELU_DX,   /**< d/dx GELU: Phi(x) + x * phi(x) */
    VTRN_ACT_SILU_DX,   /**< d/dx x*sigmoid(x): sigmoid(x) * (1 + x * (1 - sigmoid(x))) */
    VTRN_ACT_GELU_APPRX_SIGMOID,    /**< x * sigmoid(1.702 x) */
    VTRN_ACT_GELU_APPRX_SIGMOID_DX, /**< its derivative: s + 1.702 x * s * (1 - s), s = sigmoid(1.702 x) */
    VTRN_ACT_FORCE32 = 0x7fffffff
} vtrn_activation_t;

/** What a vtrn_scalar_t holds, in its `is_tile` field. */
typedef enum vtrn_scalar_kind {
    VTRN_SCALAR_IMMEDIATE = 0, /**< the float `value` */
    VTRN_SCALAR_TILE = 1,      /**< the [P,1] `tile`, one value per partition */
    /** an int32 immediate, exact, whose 32 bits are stored in `value`'s bytes (vtrn_scalar_int32
     *  makes one): bitvec ops use the bits as they are, arithmetic ops its nearest fp32 */
    VTRN_SCALAR_INT32 = 2,
    VTRN_SCALAR_FORCE32 = 0x7fffffff
} vtrn_scalar_kind_t;

/** Which operand of a DMA_COPY an index tile addresses (vtrn_dma_copy_options_t.indirect). */
typedef enum vtrn_dma_indirect {
    VTRN_DMA_INDIRECT_NONE = 0, /**< a direct copy */
    VTRN_DMA_INDIRECT_SRC = 1,  /**< gather: dst row p = src row index[p] */
    VTRN_DMA_INDIRECT_DST = 2,  /**< scatter: dst row index[p] = src row p */
    VTRN_DMA_INDIRECT_FORCE32 = 0x7fffffff
} vtrn_dma_indirect_t;

/** What an indirect DMA_COPY does with an index outside its tensor's rows (NKI's oob_mode). */
typedef enum vtrn_dma_oob_mode {
    VTRN_DMA_OOB_ERROR = 0, /**< the execution fails with VTRN_ERROR_OUT_OF_BOUNDS naming the index */
    VTRN_DMA_OOB_SKIP = 1,  /**< that row is not moved */
    VTRN_DMA_OOB_FORCE32 = 0x7fffffff
} vtrn_dma_oob_mode_t;

/** How SEM_SIGNAL (and an instruction's signal) changes a semaphore. */
typedef enum vtrn_semaphore_op {
    VTRN_SEMAPHORE_ADD = 1,
    VTRN_SEMAPHORE_SET = 2,
    VTRN_SEMAPHORE_FORCE32 = 0x7fffffff
} vtrn_semaphore_op_t;

/** Where vtrn_host_buffer_create puts a buffer's pages. */
/** The collectives (vtrn_comm_collective, vtrn_program_collective). Counts are NCCL's: `count`
 *  is what each rank contributes (all-reduce, all-gather, broadcast, send/receive), receives
 *  (reduce-scatter: the source holds count * ranks), or sends to each rank (all-to-all: source and
 *  destination hold count * ranks). */
typedef enum vtrn_collective {
    VTRN_COLLECTIVE_ALL_REDUCE = 1,     /**< every rank gets the reduction of every rank's source */
    VTRN_COLLECTIVE_ALL_GATHER = 2,     /**< every rank gets every rank's source, in rank order */
    VTRN_COLLECTIVE_REDUCE_SCATTER = 3, /**< rank r gets chunk r of the reduction */
    VTRN_COLLECTIVE_ALL_TO_ALL = 4,     /**< chunk j of rank r's source goes to chunk r of rank j's destination */
    VTRN_COLLECTIVE_BROADCAST = 5,      /**< the root's source into every rank's destination */
    VTRN_COLLECTIVE_SEND = 6,           /**< to the peer rank, which receives it */
    VTRN_COLLECTIVE_RECV = 7,           /**< from the peer rank, which sends it */
    VTRN_COLLECTIVE_PERMUTE = 8,        /**< every rank to the rank its pair names (vtrn_collective_permute) */
    VTRN_COLLECTIVE_FORCE32 = 0x7fffffff
} vtrn_collective_t;

/** One rank of a communicator: a core of a device. */
typedef struct vtrn_comm_member {
    vtrn_device_t device;
    uint32_t core;
    uint32_t reserved; /**< 0 */
} vtrn_comm_member_t;

/** What vtrn_comm_get_info reports. */
typedef struct vtrn_comm_info {
    size_t struct_size;
    uint32_t ranks;                   /**< ranks of the communicator, in every process */
    uint32_t first_local_rank;        /**< this process's ranks: first_local_rank .. + local_ranks - 1 */
    uint64_t collectives_completed;   /**< collectives this process's ranks finished (sends and receives not counted) */
    uint32_t local_ranks;             /**< ranks of this process (its members) */
    uint32_t process;                 /**< this process's index (its MPI rank); 0 in one process */
    uint32_t processes;               /**< processes the communicator spans; 1 in one process */
    uint32_t reserved;
} vtrn_comm_info_t;
#define VTRN_COMM_INFO_INIT { sizeof(vtrn_comm_info_t), 0, 0, 0, 0, 0, 0, 0 }

typedef enum vtrn_numa_placement {
    /** On the NUMA node of options.device (device 0 by default): the default, and what DMA to
     *  that device wants. */
    VTRN_NUMA_DEVICE_LOCAL = 0,
    /** Exactly on options.numa_node (bound: allocation fails rather than spill elsewhere). */
    VTRN_NUMA_NODE = 1,
    /** Pages spread round robin over the host's online nodes. */
    VTRN_NUMA_INTERLEAVE = 2,
    /** No policy: each page lands where the thread that first touches it runs. */
    VTRN_NUMA_ANY = 3,
    VTRN_NUMA_FORCE32 = 0x7fffffff
} vtrn_numa_placement_t;

/** Bits of vtrn_host_buffer_options_t.flags. */
typedef enum vtrn_host_buffer_flags {
    /** Ask for transparent huge pages (madvise). vtrn_host_buffer_info_t.huge_pages says whether
     *  the system has them; their absence is not an error. */
    VTRN_HOST_BUFFER_HUGEPAGES = 1u << 0,
    /** Pin the pages in memory (mlock), as DMA buffers are on real hardware. Fails with
     *  VTRN_ERROR_OUT_OF_HOST_MEMORY and a message naming RLIMIT_MEMLOCK when over the limit. */
    VTRN_HOST_BUFFER_LOCKED = 1u << 1,
    VTRN_HOST_BUFFER_FLAGS_FORCE32 = 0x7fffffff
} vtrn_host_buffer_flags_t;

/** What an injected fault breaks (vtrn_fault_t.kind); each surfaces where the real one would. */
typedef enum vtrn_fault_kind {
    /** Not a fault: VTRN_FAULT_INIT's kind, rejected, so that a caller must choose one. */
    VTRN_FAULT_NONE = 0,
    /** A descriptor error on a DMA queue: the queue aborts at the descriptor (Neuron's DMA
     *  abort). The submitted sequences that had not completed fail with VTRN_ERROR_DMA_FAULT;
     *  the queue then goes on with later submissions. */
    VTRN_FAULT_DMA_ABORT = 1,
    /** A DMA descriptor that never completes: the queue stalls. A wait fails with
     *  VTRN_ERROR_TIMEOUT once the stall has lasted VTRN_EXEC_TIMEOUT_MS, even a wait with
     *  UINT64_MAX (the driver's DMA completion timeout); the sequences in flight then fail and the
     *  queue goes on with later submissions. With VTRN_EXEC_TIMEOUT_MS=0, only vtrn_device_reset
     *  ends the stall. */
    VTRN_FAULT_DMA_HANG = 2,
    /** An uncorrectable HBM error over [address, address + bytes) of the device's HBM address
     *  space (vtrn_device_memory_info_t.address): a read that reaches it fails with
     *  VTRN_ERROR_HARDWARE, whether by a DMA queue, vtrn_memcpy or a kernel's instruction (its
     *  fence). Writes succeed. */
    VTRN_FAULT_HBM_UE = 3,
    /** An instruction that never finishes: the execution hangs until VTRN_EXEC_TIMEOUT_MS, and
     *  its fence fails with VTRN_ERROR_TIMEOUT (with VTRN_EXEC_TIMEOUT_MS=0, until
     *  vtrn_device_reset, which fails it with VTRN_ERROR_RESET). The core is held meanwhile, as a
     *  hung core is; other cores go on. */
    VTRN_FAULT_ENGINE_HANG = 4,
    /** The device falls off the bus, at once: work in flight fails with VTRN_ERROR_DEVICE_LOST, and
     *  so does every later call that needs the device, until vtrn_device_reset. */
    VTRN_FAULT_DEVICE_LOSS = 5,
    VTRN_FAULT_KIND_FORCE32 = 0x7fffffff
} vtrn_fault_kind_t;

/** Bits of vtrn_fault_t.flags. */
typedef enum vtrn_fault_flags {
    /** Every event from the (after+1)-th on fails (every read of the range, for an HBM error),
     *  until vtrn_device_reset. Without it the fault is one-shot: it fires once and is disarmed. */
    VTRN_FAULT_STICKY = 1u << 0,
    VTRN_FAULT_FLAGS_FORCE32 = 0x7fffffff
} vtrn_fault_flags_t;

/** Bits of vtrn_device_reset's flags. */
typedef enum vtrn_device_reset_flags {
    /** Also set every error counter of the device to 0 (the reset itself is then not counted). */
    VTRN_DEVICE_RESET_CLEAR_COUNTERS = 1u << 0,
    VTRN_DEVICE_RESET_FLAGS_FORCE32 = 0x7fffffff
} vtrn_device_reset_flags_t;

/** vtrn_fault_t.core, .engine or .queue: any of them. */
#define VTRN_FAULT_ANY (-1)
/** vtrn_fault_t.core of a DMA fault: the device's 2 host DMA engines, which vtrn_memcpy uses. */
#define VTRN_FAULT_HOST (-2)

/* ============================================================================================
 * Structs
 * ============================================================================================ */

/** Options of vtrn_runtime_create. Fields left NULL or DEFAULT come from the environment. */
typedef struct vtrn_runtime_options {
    size_t struct_size;
    /** The virtual devices, e.g. "trn1", "trn1:2", "trn1,trn2@node1", "trn1.32xlarge". NULL:
     *  VTRN_TOPOLOGY, else "trn1". Grammar: entries separated by commas, each ARCH[:COUNT][@nodeN]
     *  with ARCH trn1 or trn2 (any case), COUNT 1-64 devices (at most 64 in all, as the driver
     *  allows) and N a NUMA node that is online on this host; COUNT and N are decimal digits only,
     *  and spaces around entries are ignored. Or one EC2 instance type alone, INSTANCE[@nodeN]:
     *  trn1.2xlarge (1 trn1), trn1.32xlarge and trn1n.32xlarge (16 trn1), trn2.48xlarge and
     *  trn2u.48xlarge (16 trn2; the latter one host of a Trn2 UltraServer), any case. Devices
     *  without @node are spread over the online nodes in blocks (the first devices on the first
     *  node), as on a trn1.32xlarge. Links: see vtrn_device_get_links. */
    const char *topology;
    /** The cores this runtime may use, numbered across all devices in order (device 0's cores
     *  first), e.g. "0-3" or "0,2,5-6" (decimal digits; spaces and repeats are ignored).
     *  NULL: VTRN_VISIBLE_CORES, else every core. */
    const char *visible_cores;
    /** VTRN_LOG_LEVEL_DEFAULT: VTRN_LOG_LEVEL, else warning. Messages go to stderr. */
    vtrn_log_level_t log_level;
} vtrn_runtime_options_t;
#define VTRN_RUNTIME_OPTIONS_INIT { sizeof(vtrn_runtime_options_t), NULL, NULL, VTRN_LOG_LEVEL_DEFAULT }

/** What vtrn_runtime_get_info reports. */
typedef struct vtrn_runtime_info {
    size_t struct_size;
    uint32_t device_count;
    uint32_t core_count;         /**< all cores of all devices */
    uint32_t visible_core_count; /**< the cores VTRN_VISIBLE_CORES lets this runtime use */
    vtrn_log_level_t log_level;  /**< the level in force */
    uint64_t exec_timeout_ns;    /**< from VTRN_EXEC_TIMEOUT_MS; UINT64_MAX when 0 (no timeout) */
    char topology[256];          /**< the topology in canonical form, e.g. "trn1:2,trn2@node1" */
    /* Appended after the first version (struct_size 288 holds the fields above). */
    char instance_type[32];      /**< the EC2 instance type the topology names, e.g.
                                      "trn1.32xlarge"; "" for a device list */
} vtrn_runtime_info_t;
#define VTRN_RUNTIME_INFO_INIT { sizeof(vtrn_runtime_info_t), 0, 0, 0, VTRN_LOG_LEVEL_DEFAULT, 0, {0}, {0} }

/** What vtrn_device_get_info reports. Numbers come from the chip presets (see README). */
typedef struct vtrn_device_info {
    size_t struct_size;
    uint32_t index;                   /**< position in the runtime, as /dev/neuron<index> */
    vtrn_architecture_t architecture;
    char name[64];                    /**< "Trainium1" or "Trainium2" */
    uint32_t core_count;              /**< 2 (trn1) or 8 (trn2) */
    uint32_t first_core;              /**< global index of core 0, as VTRN_VISIBLE_CORES counts */
    uint64_t hbm_bytes;               /**< 32 GiB (trn1) or 96 GiB (trn2) */
    uint64_t hbm_used_bytes;          /**< allocated device memory, all categories */
    uint64_t hbm_bandwidth;           /**< bytes per second: 820 GB/s (trn1), 2.9 TB/s (trn2) */
    int32_t numa_node;                /**< the host NUMA node the device is attached to */
    uint16_t pci_vendor_id;           /**< 0x1d0f (Amazon) */
    uint16_t pci_device_id;           /**< 0x7164 (trn1) or 0x7364 (trn2) */
    char bus_address[32];             /**< PCI style, "0000:10:1e.0" */
    char uuid[40];                    /**< stable for the same topology and index */
    uint32_t dma_engines_per_core;    /**< 16 */
    uint32_t queues_per_dma_engine;   /**< 16 */
    uint64_t sbuf_bytes_per_core;     /**< 128 partitions x 192 KiB (trn1) or 224 KiB (trn2) */
    uint64_t psum_bytes_per_core;     /**< 128 partitions x 16 KiB */
    uint32_t semaphores_per_core;     /**< 256 */
    uint32_t visible_core_count;      /**< cores of this device that this runtime may use */
    /* Appended after the first version (struct_size 224 holds the fields above): the device's
     * NeuronLinks in this topology (see README, "Topology and NeuronLink"). AWS publishes only
     * per-device aggregates; the per-link figure is vtrn's split of it over the ports. */
    char interconnect[32];            /**< "NeuronLink-v2" (trn1) or "NeuronLink-v3" (trn2) */
    uint32_t link_count;              /**< devices of this runtime it has a link to, as
                                           vtrn_device_get_links lists them: 4 on a 16-device
                                           instance, 0-2 on a device list (a ring) */
    uint32_t links_per_device;        /**< NeuronLink ports of the chip: 4 */
    uint64_t link_bandwidth;          /**< bytes per second of one link: device_link_bandwidth / 4,
                                           96 GiB/s (trn1), 192 GiB/s (trn1n.32xlarge), 256 GB/s (trn2) */
    uint64_t device_link_bandwidth;   /**< bytes per second, the published per-device aggregate:
                                           384 GiB/s (trn1), 768 GiB/s (trn1n.32xlarge), 1024 GB/s (trn2) */
    uint64_t hop_latency_ns;          /**< latency of one hop to a neighbour: 1500 (docs: 1-2 us) */
} vtrn_device_info_t;
#define VTRN_DEVICE_INFO_INIT \
    { sizeof(vtrn_device_info_t), 0, VTRN_ARCH_TRN1, {0}, 0, 0, 0, 0, 0, 0, 0, 0, {0}, {0}, 0, 0, 0, 0, 0, 0, \
      {0}, 0, 0, 0, 0, 0 }

/** What vtrn_device_get_core_info reports about one NeuronCore. */
typedef struct vtrn_core_info {
    size_t struct_size;
    uint32_t device_index;
    uint32_t index;                    /**< on its device: 0 .. core_count-1 */
    uint32_t global_index;             /**< across the runtime's devices, as VTRN_VISIBLE_CORES */
    uint32_t visible;                  /**< 1 if this runtime may use the core, else 0 */
    uint32_t engines;                  /**< vtrn_engine_flags_t bits: PE, ACT, DVE, POOL */
    uint32_t sbuf_partitions;          /**< 128 */
    uint32_t sbuf_bytes_per_partition; /**< 192 KiB (trn1) or 224 KiB (trn2) */
    uint32_t psum_bytes_per_partition; /**< 16 KiB */
    uint32_t psum_banks;               /**< 8 banks of 2 KiB per partition */
    uint32_t semaphores;               /**< 256 */
    uint32_t dma_engines;              /**< 16 */
    uint32_t queues_per_dma_engine;    /**< 16 */
    uint64_t pe_clock_hz;              /**< Tensor engine: 2.8 GHz (trn1), 2.4 GHz (trn2) */
    uint64_t act_clock_hz;             /**< Scalar engine: 1.4 GHz (trn1), 1.2 GHz (trn2) */
    uint64_t dve_clock_hz;             /**< Vector engine: 1.12 GHz (trn1), 0.96 GHz (trn2) */
    uint64_t pool_clock_hz;            /**< GpSimd engine: 1.4 GHz (trn1), 1.2 GHz (trn2) */
} vtrn_core_info_t;
#define VTRN_CORE_INFO_INIT \
    { sizeof(vtrn_core_info_t), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/** Who holds a NeuronCore, as vtrn_device_get_core_holder reports it (see "Core ownership"). */
typedef struct vtrn_core_holder {
    size_t struct_size;
    uint32_t held;         /**< 1 when a runtime, of this process or another, holds the core; else 0
                                and the other fields are 0 and "" */
    int32_t pid;           /**< the holding process (getpid() when it is this one); -1 when the lock
                                file names no live process: its holder is still writing it, or is a
                                child forked without exec whose parent wrote it and exited */
    uint32_t runtime;      /**< the holding runtime's number in its process ("runtime 3" in
                                messages); 0 when unknown */
    uint32_t this_process; /**< 1 when the holder is a runtime of this process, else 0 */
    char command[256];     /**< the holder's command line, arguments separated by spaces,
                                truncated to 255 bytes; "" when unknown */
} vtrn_core_holder_t;
#define VTRN_CORE_HOLDER_INIT { sizeof(vtrn_core_holder_t), 0, 0, 0, 0, {0} }

/** Options of vtrn_host_buffer_create. */
typedef struct vtrn_host_buffer_options {
    size_t struct_size;
    vtrn_numa_placement_t placement; /**< VTRN_NUMA_DEVICE_LOCAL by default */
    uint32_t device;                 /**< for VTRN_NUMA_DEVICE_LOCAL: the device's index */
    int32_t numa_node;               /**< for VTRN_NUMA_NODE: the node; ignored otherwise */
    uint32_t flags;                  /**< vtrn_host_buffer_flags_t bits */
} vtrn_host_buffer_options_t;
#define VTRN_HOST_BUFFER_OPTIONS_INIT { sizeof(vtrn_host_buffer_options_t), VTRN_NUMA_DEVICE_LOCAL, 0, -1, 0 }

/** What vtrn_host_buffer_get_info reports. */
typedef struct vtrn_host_buffer_info {
    size_t struct_size;
    void *data;                      /**< first byte; page aligned unless registered */
    size_t bytes;                    /**< as asked for (the mapping is rounded up to pages) */
    vtrn_numa_placement_t placement; /**< as asked for; VTRN_NUMA_ANY for registered memory */
    int32_t requested_node;          /**< the node the placement named, or -1 (interleave, any) */
    uint32_t flags;                  /**< as asked for */
    uint32_t huge_pages;             /**< 1 if huge pages were asked for and the system has them */
    uint32_t locked;                 /**< 1 if the pages are pinned with mlock */
    uint32_t registered;             /**< 1 if the memory is the caller's (vtrn_host_buffer_register) */
    char note[160];                  /**< why a flag had no effect, e.g. "transparent huge pages are
                                          disabled on this system (...enabled is [never])"; else "" */
} vtrn_host_buffer_info_t;
#define VTRN_HOST_BUFFER_INFO_INIT \
    { sizeof(vtrn_host_buffer_info_t), NULL, 0, VTRN_NUMA_DEVICE_LOCAL, 0, 0, 0, 0, 0, {0} }

/** What vtrn_device_memory_get_info reports about one block of HBM. */
typedef struct vtrn_device_memory_info {
    size_t struct_size;
    uint32_t device_index;
    uint32_t reserved;
    uint64_t address;   /**< the block's offset in the device's HBM address space */
    uint64_t bytes;     /**< as asked for */
    uint64_t alignment; /**< in force (the default is 64) */
} vtrn_device_memory_info_t;
#define VTRN_DEVICE_MEMORY_INFO_INIT { sizeof(vtrn_device_memory_info_t), 0, 0, 0, 0, 0 }

/** A device's HBM usage, as Neuron's out-of-memory report breaks it down. Shared by every
 *  runtime of the process that has the device (the hardware is the process's, as on a host). */
typedef struct vtrn_memory_usage {
    size_t struct_size;
    uint64_t total_bytes;
    uint64_t used_bytes;            /**< all categories */
    uint64_t free_bytes;
    uint64_t largest_free_block;    /**< the largest allocation that can succeed (alignment 64) */
    uint64_t tensor_bytes;          /**< vtrn_device_memory_alloc */
    uint64_t kernel_bytes;          /**< loaded kernels' instruction streams */
    uint64_t allocation_count;      /**< live blocks, all categories */
    uint64_t resident_bytes;        /**< host memory that backs touched HBM pages right now */
} vtrn_memory_usage_t;
#define VTRN_MEMORY_USAGE_INIT { sizeof(vtrn_memory_usage_t), 0, 0, 0, 0, 0, 0, 0, 0 }

/** Options of vtrn_dma_queue_create: which hardware queue, and its ring size. */
typedef struct vtrn_dma_queue_options {
    size_t struct_size;
    uint32_t core;         /**< NeuronCore of the device: 0 .. core_count-1 */
    uint32_t engine;       /**< DMA engine of the core: 0 .. 15 */
    uint32_t queue;        /**< queue of the engine: 0 .. 15 */
    uint32_t ring_entries; /**< descriptors in the ring: 32 .. 2^24-16 (udma's limits); 4096 default */
} vtrn_dma_queue_options_t;
#define VTRN_DMA_QUEUE_OPTIONS_INIT { sizeof(vtrn_dma_queue_options_t), 0, 0, 0, 4096 }

/** What vtrn_dma_queue_get_info reports. */
typedef struct vtrn_dma_queue_info {
    size_t struct_size;
    uint32_t device_index;
    uint32_t core;
    uint32_t engine;
    uint32_t queue;
    uint32_t ring_entries;
    uint32_t free_entries;           /**< descriptors that can be enqueued now */
    uint64_t submitted_sequence;     /**< the last sequence vtrn_dma_queue_submit returned */
    uint64_t completed_sequence;     /**< every sequence up to this one has completed */
    uint64_t descriptors_completed;  /**< since the queue was created */
    uint64_t bytes_completed;        /**< since the queue was created */
} vtrn_dma_queue_info_t;
#define VTRN_DMA_QUEUE_INFO_INIT { sizeof(vtrn_dma_queue_info_t), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/** One end of a DMA transfer: a host buffer or a block of device memory, plus a byte offset.
 *  Build it with vtrn_host_ref or vtrn_device_ref. `memory` holds the handle as it is. */
typedef struct vtrn_memory_ref {
    void *memory;
    uint64_t offset;
} vtrn_memory_ref_t;

/** A copy of `bytes` bytes from `src` to `dst`. Host to device, device to host, device to
 *  device and host to host are all allowed. The ranges must not overlap. */
typedef struct vtrn_dma_transfer {
    vtrn_memory_ref_t dst;
    vtrn_memory_ref_t src;
    uint64_t bytes;
} vtrn_dma_transfer_t;

/** An operand of an instruction: up to 4 free dimensions over a memory, NKI's access pattern.
 *  SBUF/PSUM: `partitions` partitions from `start_partition`, and in each partition the elements
 *  at byte `offset` + sum(i_d * stride[d]) * element size, i_d < size[d], for d < dims (dims 1-4;
 *  unused sizes are 1). HBM: the same over the bytes of kernel parameter `parameter`, where
 *  partition p starts `partition_stride` elements after partition p-1 (start_partition unused).
 *  Strides are in elements and may be 0 (broadcast reads) or negative. */
typedef struct vtrn_access {
    vtrn_memory_space_t space;
    vtrn_dtype_t dtype;
    uint32_t start_partition;
    uint32_t partitions;
    uint64_t offset;
    uint32_t parameter;
    uint32_t dims;
    uint32_t size[4];
    int64_t stride[4];
    int64_t partition_stride;
} vtrn_access_t;

/** `partitions` x `elements` of `dtype`, contiguous in each partition of SBUF from byte `offset`. */
static inline vtrn_access_t vtrn_sbuf(uint32_t start_partition, uint32_t partitions, uint64_t offset, vtrn_dtype_t dtype,
                                      uint32_t elements) {
    vtrn_access_t access = { VTRN_MEMORY_SBUF, dtype, start_partition, partitions, offset, 0, 1,
                             { elements, 1, 1, 1 }, { 1, 0, 0, 0 }, 0 };
    return access;
}

/** The same in PSUM. */
static inline vtrn_access_t vtrn_psum(uint32_t start_partition, uint32_t partitions, uint64_t offset, vtrn_dtype_t dtype,
                                      uint32_t elements) {
    vtrn_access_t access = vtrn_sbuf(start_partition, partitions, offset, dtype, elements);
    access.space = VTRN_MEMORY_PSUM;
    return access;
}

/** A `rows` x `columns` block of kernel parameter `parameter`, row-major with `row_stride`
 *  elements between rows, from byte `offset`: rows map to partitions in a DMA_COPY. */
static inline vtrn_access_t vtrn_hbm(uint32_t parameter, uint64_t offset, vtrn_dtype_t dtype, uint32_t rows,
                                     int64_t row_stride, uint32_t columns) {
    vtrn_access_t access = { VTRN_MEMORY_HBM, dtype, 0, rows, offset, parameter, 1,
                             { columns, 1, 1, 1 }, { 1, 0, 0, 0 }, row_stride };
    return access;
}

/** A scale or scalar operand: an immediate, or a [P,1] tile broadcast along the free axes. */
typedef struct vtrn_scalar {
    uint32_t is_tile;     /**< a vtrn_scalar_kind_t: 0 `value`; 1 `tile`; 2 an int32 in `value`'s bytes */
    float value;
    vtrn_access_t tile;
} vtrn_scalar_t;

/** An exact int32 immediate (VTRN_SCALAR_INT32) for the bitvec ALU ops, whose operands need all 32
 *  bits (0x7fffffff has no fp32); arithmetic ops see its nearest fp32. */
static inline vtrn_scalar_t vtrn_scalar_int32(int32_t value) {
    vtrn_scalar_t scalar = { VTRN_SCALAR_INT32, 0.0f, vtrn_sbuf(0, 1, 0, VTRN_DTYPE_INT32, 1) };
    memcpy(&scalar.value, &value, sizeof value);
    return scalar;
}

/** Semaphore work attached to an instruction: wait until semaphore `wait_semaphore` is at least
 *  `wait_value` before starting (-1: no wait), and change `signal_semaphore` by `signal_op` with
 *  `signal_value` when done (-1: no signal). Semaphores are the core's 0-255, zero at the start of
 *  each execution. */
typedef struct vtrn_sync {
    int32_t wait_semaphore;
    uint32_t wait_value;
    int32_t signal_semaphore;
    vtrn_semaphore_op_t signal_op;
    uint32_t signal_value;
} vtrn_sync_t;
#define VTRN_SYNC_NONE { -1, 0, -1, VTRN_SEMAPHORE_ADD, 0 }

/** Options of vtrn_program_dma_copy_ex (NKI's nki.isa.dma_copy arguments). */
typedef struct vtrn_dma_copy_options {
    size_t struct_size;
    /** NKI's dst_rmw_op: VTRN_ALU_BYPASS (the default) copies, dst = src; VTRN_ALU_ADD accumulates,
     *  dst = dst + src element by element, both widened to fp32 and the sum rounded to dst's dtype
     *  (NKI supports add only; other ops are refused at load). */
    vtrn_alu_op_t dst_rmw_op;
    /** Indirect (gather/scatter) addressing, NKI's vector_offset with indirect_dim 0.
     *  VTRN_DMA_INDIRECT_SRC or _DST makes that operand, which must be in HBM, a table of N rows
     *  (its `partitions`, `partition_stride` elements apart, each as its free dimensions say);
     *  the other operand's partition p pairs with the table's row index[p]. Each row moves as a
     *  direct copy would (bits for equal dtypes, else through fp32; accumulated with dst_rmw_op
     *  add), one after the other in index order, so a scatter-add with repeated indices adds
     *  them all. VTRN_DMA_INDIRECT_NONE (the default): a direct copy. */
    vtrn_dma_indirect_t indirect;
    /** [in] for an indirect copy: the [P,1] tile of row indices, integers (int32, int8, uint8)
     *  in SBUF, P the other operand's partitions, read when the instruction runs; the other
     *  operand has as many elements per partition as a row of the table. NULL otherwise. The
     *  builder copies it. */
    const vtrn_access_t *index;
    /** An index outside 0..N-1: VTRN_DMA_OOB_ERROR (the default) fails the execution with
     *  VTRN_ERROR_OUT_OF_BOUNDS, naming the index (the rows before it are done); VTRN_DMA_OOB_SKIP
     *  skips the row. Unused by a direct copy. */
    vtrn_dma_oob_mode_t oob_mode;
} vtrn_dma_copy_options_t;
#define VTRN_DMA_COPY_OPTIONS_INIT \
    { sizeof(vtrn_dma_copy_options_t), VTRN_ALU_BYPASS, VTRN_DMA_INDIRECT_NONE, NULL, VTRN_DMA_OOB_ERROR }

/** A kernel parameter bound to device memory for one execution. */
typedef struct vtrn_binding {
    const char *name;            /**< the parameter's name, as vtrn_program_add_parameter gave it */
    vtrn_device_memory_t memory; /**< of the kernel's device and runtime */
    uint64_t offset;             /**< where the parameter starts in the block */
} vtrn_binding_t;

/** What vtrn_fence_get_info reports about an execution. */
typedef struct vtrn_execution_info {
    size_t struct_size;
    vtrn_status_t status;              /**< VTRN_NOT_READY while it runs */
    uint32_t reserved;
    uint64_t wall_ns;                  /**< host time from start to end of the execution */
    uint64_t queued_ns;                /**< host time from vtrn_kernel_execute to its start */
    uint64_t device_ns;                /**< estimated device time: the latest engine's end */
    uint64_t device_cycles;            /**< device_ns in cycles of the PE clock */
    uint64_t instructions[5];          /**< executed per engine: PE, ACT, DVE, POOL, DMA */
    uint64_t engine_busy_ns[5];        /**< estimated busy time per engine */
    uint64_t cc_instructions;          /**< collectives executed by the CC engine */
    uint64_t cc_busy_ns;               /**< the CC engine's estimated busy time, waits for other ranks included */
} vtrn_execution_info_t;
#define VTRN_EXECUTION_INFO_INIT \
    { sizeof(vtrn_execution_info_t), VTRN_SUCCESS, 0, 0, 0, 0, 0, { 0, 0, 0, 0, 0 }, { 0, 0, 0, 0, 0 }, 0, 0 }

/** What vtrn_get_handle_counts reports: the process's live handles of each kind, for leak checks
 *  in tests (a program that destroyed everything it made sees zeros), and the address space kept
 *  by host buffers that a runtime's destruction orphaned (see vtrn_runtime_destroy). */
typedef struct vtrn_handle_counts {
    size_t struct_size;
    uint64_t runtimes;
    uint64_t devices;                  /**< one per device of each live runtime */
    uint64_t host_buffers;
    uint64_t device_memory;
    uint64_t dma_queues;
    uint64_t programs;
    uint64_t kernels;
    uint64_t fences;
    uint64_t total;                    /**< the sum of the handle counts (comms included) */
    uint64_t orphaned_host_bytes;      /**< address space reserved by orphaned host buffers */
    uint64_t comms;                    /**< communicators */
} vtrn_handle_counts_t;
#define VTRN_HANDLE_COUNTS_INIT { sizeof(vtrn_handle_counts_t), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/** A fault for vtrn_device_inject_fault. Fields a kind does not use are ignored (after must be 0
 *  for the kinds that count nothing). Events are counted from when the fault is armed.
 *  - VTRN_FAULT_DMA_ABORT, VTRN_FAULT_DMA_HANG: the DMA queues of `core` (0 .. core_count-1,
 *    VTRN_FAULT_HOST for the host engines of vtrn_memcpy, or VTRN_FAULT_ANY for every queue of
 *    the device), DMA engine `engine` (0-15; 0-1 on the host; or ANY) and queue `queue` (0-15 or
 *    ANY; ANY on the host, whose queues have no fixed numbers). The descriptor after `after`
 *    descriptors served on those queues fails. A core's CC ring (engine 15, the DMA queue its
 *    collectives move data with; see the collectives section) counts as a queue of the core and
 *    the engine, never of a numbered queue.
 *  - VTRN_FAULT_HBM_UE: `address` and `bytes`, the failing range of HBM (within the device's HBM).
 *  - VTRN_FAULT_ENGINE_HANG: `engine` (one VTRN_ENGINE_* bit: PE, ACT, DVE, POOL or DMA, the
 *    kernel's DMA; or ANY) of `core` (or ANY): the instruction after `after` instructions on it
 *    hangs (it is not executed).
 *  - VTRN_FAULT_DEVICE_LOSS: nothing else. */
typedef struct vtrn_fault {
    size_t struct_size;
    vtrn_fault_kind_t kind;
    uint32_t flags;    /**< vtrn_fault_flags_t bits: VTRN_FAULT_STICKY, else one-shot */
    int32_t core;      /**< a core, VTRN_FAULT_HOST (DMA kinds) or VTRN_FAULT_ANY */
    int32_t engine;    /**< a DMA engine (DMA kinds), a VTRN_ENGINE_* bit (ENGINE_HANG), or VTRN_FAULT_ANY */
    int32_t queue;     /**< a queue of the DMA engine, or VTRN_FAULT_ANY */
    uint32_t reserved; /**< 0 */
    uint64_t after;    /**< descriptors (DMA kinds) or instructions (ENGINE_HANG) that pass first */
    uint64_t address;  /**< HBM_UE: the first failing byte, an HBM address */
    uint64_t bytes;    /**< HBM_UE: how many bytes fail */
} vtrn_fault_t;
#define VTRN_FAULT_INIT { sizeof(vtrn_fault_t), VTRN_FAULT_NONE, 0, -1, -1, -1, 0, 0, 0, 0 }

/** A device's error counters, as the Neuron driver keeps them in sysfs (the names in parentheses).
 *  They count since the device was created in this process (it is shared by the process's
 *  runtimes) and only grow, unless vtrn_device_reset is asked to clear them. */
typedef struct vtrn_device_error_counters {
    size_t struct_size;
    uint32_t lost;                     /**< 1 while the device is lost (until vtrn_device_reset), else 0 */
    uint32_t armed_faults;             /**< injected faults still armed */
    uint64_t dma_aborts;               /**< DMA queues aborted by a descriptor error (hw_dma_abort_error) */
    uint64_t hbm_uncorrectable_errors; /**< reads failed by an uncorrectable HBM error (hw_hbm_ue_error, mem_ecc_uncorrected) */
    uint64_t execution_timeouts;       /**< executions failed with VTRN_ERROR_TIMEOUT (timeout) */
    uint64_t hangs;                    /**< instructions and DMA descriptors that hung */
    uint64_t device_losses;            /**< times the device was lost */
    uint64_t resets;                   /**< vtrn_device_reset calls (reset_req_count) */
    uint64_t faults_injected;          /**< vtrn_device_inject_fault and VTRN_FAULTS, all kinds */
} vtrn_device_error_counters_t;
#define VTRN_DEVICE_ERROR_COUNTERS_INIT { sizeof(vtrn_device_error_counters_t), 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/** The largest number of bytes one DMA descriptor moves (udma's MAX_DMA_DESC_SIZE). A transfer of
 *  N bytes takes ceil(N / VTRN_DMA_MAX_DESCRIPTOR_BYTES) descriptors of the queue's ring. */
#define VTRN_DMA_MAX_DESCRIPTOR_BYTES 65536u
#define VTRN_DMA_MIN_RING_ENTRIES 32u
#define VTRN_DMA_MAX_RING_ENTRIES ((1u << 24) - 16u)

/** A reference to `offset` bytes into a host buffer. */
static inline vtrn_memory_ref_t vtrn_host_ref(vtrn_host_buffer_t buffer, uint64_t offset) {
    vtrn_memory_ref_t ref;
    ref.memory = buffer;
    ref.offset = offset;
    return ref;
}

/** A reference to `offset` bytes into a block of device memory. */
static inline vtrn_memory_ref_t vtrn_device_ref(vtrn_device_memory_t memory, uint64_t offset) {
    vtrn_memory_ref_t ref;
    ref.memory = memory;
    ref.offset = offset;
    return ref;
}

/* ============================================================================================
 * Functions: version and errors
 * ============================================================================================ */

/** The library's version, packed as VTRN_MAKE_VERSION does. Never fails. A program built against
 *  this header should check VTRN_VERSION_GET_MAJOR(vtrn_version()) == VTRN_VERSION_MAJOR. */
uint32_t vtrn_version(void);

/** A fixed description of a status ("invalid handle"); "unknown status" for a value that is not
 *  a vtrn_status_t. The string is static: never free it. Never fails. */
const char *vtrn_status_string(vtrn_status_t status);

/** The message of this thread's most recent failed call, or "" if no call on this thread has
 *  failed. Successful calls leave it as it was. The string belongs to the library and stays valid
 *  until this thread's next failed call or the thread's exit. Never fails. */
const char *vtrn_last_error(void);

/** Counts the process's live handles per kind (all runtimes). [out] counts: struct_size set by
 *  the caller (VTRN_HANDLE_COUNTS_INIT). Thread-safe; the counts are a snapshot.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_ARGUMENT for a NULL counts or a struct_size that is
 *  too small. */
vtrn_status_t vtrn_get_handle_counts(vtrn_handle_counts_t *counts);

/* ============================================================================================
 * Functions: runtime
 * ============================================================================================ */

/** Creates a runtime: parses the configuration (options, else environment, else defaults),
 *  builds the virtual devices and assigns them NUMA nodes from the host's real topology.
 *  Creating a runtime claims no core: several runtimes may live in one process.
 *  [in][optional] options  NULL for all defaults.
 *  [out] out               the new runtime; destroy it with vtrn_runtime_destroy.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_ARGUMENT for a NULL out, a struct_size smaller than
 *  the first version's, or a bad topology, visible-cores, log-level, timeout or trace value (the
 *  message names the option or variable, the bad value and the accepted forms; an unknown NUMA
 *  node is named with the nodes that are online), or a lock directory that cannot be made or
 *  written (the message names the directory and the system's reason); VTRN_ERROR_OUT_OF_HOST_MEMORY. */
vtrn_status_t vtrn_runtime_create(const vtrn_runtime_options_t *options, vtrn_runtime_t *out);

/** Destroys a runtime and everything it owns (devices, and all later objects made from them);
 *  their handles become invalid. In-flight work is drained, not cancelled: calls on other threads
 *  that were already submitting (an enqueue, a submit, a vtrn_memcpy, a vtrn_kernel_execute)
 *  finish first, then the transfers submitted on its DMA queues and the executions queued on its
 *  cores complete (bounded by VTRN_EXEC_TIMEOUT_MS each; an instruction that hangs by an injected fault stops
 *  hanging and fails its execution), since they use its memory; then it frees
 *  its device memory and releases its cores, to this process's other runtimes and to other
 *  processes. NULL is a no-op.
 *  Racing it from other threads is safe, though a program should not rely on it: every call that
 *  loses the race fails with VTRN_ERROR_INVALID_HANDLE ("runtime N was destroyed", or the stale
 *  handle's reason), never crashes and never hangs. A fence or queue sequence the caller still
 *  holds answers VTRN_ERROR_INVALID_HANDLE (its execution or transfer did complete). A pointer from
 *  vtrn_host_buffer_map of a buffer the caller had not destroyed stays addressable: its pages go
 *  back to the system and the address range is kept reserved for the life of the process, reading
 *  as zeros and detached from the device, so that a thread still writing through it does not
 *  fault (vtrn_get_handle_counts reports these bytes; destroy buffers first to avoid them).
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE for a destroyed or garbage handle. */
vtrn_status_t vtrn_runtime_destroy(vtrn_runtime_t runtime);

/** Reports the runtime's configuration in force. [out] info: struct_size set by the caller.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a NULL info or
 *  a struct_size that is too small. */
vtrn_status_t vtrn_runtime_get_info(vtrn_runtime_t runtime, vtrn_runtime_info_t *info);

/* ============================================================================================
 * Functions: devices
 * ============================================================================================ */

/** The number of devices of the runtime's topology.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a NULL count. */
vtrn_status_t vtrn_device_count(vtrn_runtime_t runtime, uint32_t *count);

/** The device at `index` (0 .. count-1). The same index always gives the same handle, valid
 *  until the runtime is destroyed; there is nothing to release.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_NOT_FOUND for an index past the
 *  last device (the message says how many there are); VTRN_ERROR_INVALID_ARGUMENT for a NULL out. */
vtrn_status_t vtrn_device_get(vtrn_runtime_t runtime, uint32_t index, vtrn_device_t *out);

/** Describes a device. [in,out] info: struct_size set by the caller (VTRN_DEVICE_INFO_INIT).
 *  hbm_used_bytes is a snapshot. Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE;
 *  VTRN_ERROR_INVALID_ARGUMENT for a NULL info or a struct_size that is too small. */
vtrn_status_t vtrn_device_get_info(vtrn_device_t device, vtrn_device_info_t *info);

/** The devices this one has a NeuronLink to, as `neuron-ls` lists CONNECTED DEVICES and the
 *  driver's sysfs connected_devices: on a 16-device instance type (trn1.32xlarge, trn2.48xlarge...)
 *  its neighbours on the 4x4 torus in the driver's order north, west, south, east (device 0:
 *  12, 3, 4, 1); on a device list its neighbours on the ring of the devices of its architecture
 *  (previous, then next; one for a ring of 2, none alone; devices of different architectures are
 *  never linked). [out] devices: device indices, may be NULL to learn the count. [in,out] count:
 *  in, the capacity of `devices`; out, the number of linked devices (vtrn_device_info_t.link_count).
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a NULL count,
 *  or a capacity smaller than the number of links when devices is not NULL (count is set to the
 *  number needed; devices is untouched). */
vtrn_status_t vtrn_device_get_links(vtrn_device_t device, uint32_t *devices, uint32_t *count);

/** Describes one NeuronCore of a device: its engines, SBUF/PSUM sizes, clocks, and whether this
 *  runtime may use it (VTRN_VISIBLE_CORES). [in] core: 0 .. core_count-1 on this device.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_NOT_FOUND for a core the device
 *  does not have; VTRN_ERROR_INVALID_ARGUMENT for a NULL info or a struct_size that is too small. */
vtrn_status_t vtrn_device_get_core_info(vtrn_device_t device, uint32_t core, vtrn_core_info_t *info);

/** Who holds a NeuronCore of the device: a runtime of this process, else the process whose lock
 *  on the core's file in the lock directory is live (see "Core ownership"), as `neuron-ls -w`
 *  shows a core's owner. Any core may be asked about, visible to this runtime or not. Asking takes
 *  no lock, so it never makes a concurrent claim fail; the answer is a snapshot. When a holder
 *  has just taken the lock and not yet written its record, the call waits for it up to ~50 ms.
 *  [in] core: 0 .. core_count-1 on this device. [in,out] holder: struct_size set by the caller
 *  (VTRN_CORE_HOLDER_INIT); held is 0 when the core is free.
 *  Returns VTRN_SUCCESS (held or free); VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_NOT_FOUND for a core
 *  the device does not have; VTRN_ERROR_INVALID_ARGUMENT for a NULL holder, a struct_size that is
 *  too small, or a lock file that exists but cannot be read (the message names it and the
 *  system's reason). */
vtrn_status_t vtrn_device_get_core_holder(vtrn_device_t device, uint32_t core, vtrn_core_holder_t *holder);

/* ============================================================================================
 * Functions: host buffers
 * ============================================================================================ */

/** Allocates `bytes` of host memory placed as options say, for DMA. The pages of
 *  VTRN_NUMA_DEVICE_LOCAL, VTRN_NUMA_NODE and VTRN_NUMA_INTERLEAVE buffers are touched (zeroed)
 *  here, so they are where the policy put them before the call returns; VTRN_NUMA_ANY pages are
 *  not touched and land where they are first written. The buffer belongs to the runtime.
 *  [in][optional] options  NULL: device-local to device 0, no flags.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for 0 bytes, a
 *  bad placement, a device index or NUMA node that does not exist (the message lists the online
 *  nodes), unknown flag bits, a NULL out or a bad struct_size; VTRN_ERROR_OUT_OF_HOST_MEMORY when
 *  the node has no room or mlock fails (the message names RLIMIT_MEMLOCK and its value). */
vtrn_status_t vtrn_host_buffer_create(vtrn_runtime_t runtime, size_t bytes, const vtrn_host_buffer_options_t *options,
                                      vtrn_host_buffer_t *out);

/** Wraps `bytes` of memory the caller owns (a numpy array, a malloc'd block) so DMA can use it
 *  without a copy. The caller keeps ownership and must keep the memory alive until the buffer is
 *  destroyed and every transfer using it has completed. No placement is applied.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a NULL pointer,
 *  0 bytes, more bytes than the host has memory, a range that wraps around the address space or
 *  is not all memory this process has mapped, or a NULL out. */
vtrn_status_t vtrn_host_buffer_register(vtrn_runtime_t runtime, void *pointer, size_t bytes, vtrn_host_buffer_t *out);

/** The buffer's memory: [out] data its first byte, [out][optional] bytes its size. The pointer is
 *  valid until the buffer is destroyed (after its runtime's destruction it stays addressable but
 *  detached: see vtrn_runtime_destroy). Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE;
 *  VTRN_ERROR_INVALID_ARGUMENT for a NULL data. */
vtrn_status_t vtrn_host_buffer_map(vtrn_host_buffer_t buffer, void **data, size_t *bytes);

/** Where the buffer's pages are, asked of the kernel (move_pages): [out] node the NUMA node that
 *  holds every resident page, or -1 when they are spread over several nodes or none is resident.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a NULL node. */
vtrn_status_t vtrn_host_buffer_numa_node(vtrn_host_buffer_t buffer, int32_t *node);

/** Resident pages of the buffer per NUMA node, asked of the kernel: pages[i] is the count on node
 *  i. [in,out] count: in, the capacity of `pages`; out, the number of nodes the host can have
 *  (highest node + 1). Call with pages NULL to learn the count. Pages not yet touched count on no
 *  node. Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a NULL
 *  count, or a capacity smaller than the count when pages is not NULL (count is set). */
vtrn_status_t vtrn_host_buffer_node_pages(vtrn_host_buffer_t buffer, uint64_t *pages, uint32_t *count);

/** Describes a buffer: size, placement and flags as asked, and what the system granted.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT. */
vtrn_status_t vtrn_host_buffer_get_info(vtrn_host_buffer_t buffer, vtrn_host_buffer_info_t *info);

/** Destroys a buffer; its handle becomes invalid. Memory vtrn allocated is unmapped once no
 *  enqueued transfer uses it any more (when its queue notices their completion). NULL is a no-op.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE. */
vtrn_status_t vtrn_host_buffer_destroy(vtrn_host_buffer_t buffer);

/* ============================================================================================
 * Functions: device memory (HBM)
 * ============================================================================================ */

/** Allocates `bytes` of the device's HBM, aligned to `alignment` (a power of two, at most
 *  1 GiB; 0 means the default, 64). HBM is backed lazily by host memory on the device's NUMA
 *  node: a block costs nothing until it is written, and its contents start undefined.
 *  The allocator is best fit over the address space, coalescing freed neighbours.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for 0 bytes, a
 *  bad alignment or a NULL out; VTRN_ERROR_OUT_OF_DEVICE_MEMORY with a report: bytes requested,
 *  free in total, largest free block, and use by category; VTRN_ERROR_DEVICE_LOST. */
vtrn_status_t vtrn_device_memory_alloc(vtrn_device_t device, uint64_t bytes, uint64_t alignment,
                                       vtrn_device_memory_t *out);

/** Frees a block; its handle becomes invalid. Space still used by an enqueued transfer returns to
 *  the allocator when that transfer's queue next notices its completion (an enqueue, submit or
 *  wait on it), so a new allocation never receives bytes from a transfer in flight. NULL is a no-op.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE. */
vtrn_status_t vtrn_device_memory_free(vtrn_device_memory_t memory);

/** Describes a block. Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT. */
vtrn_status_t vtrn_device_memory_get_info(vtrn_device_memory_t memory, vtrn_device_memory_info_t *info);

/** The device's HBM usage (a snapshot). Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE;
 *  VTRN_ERROR_INVALID_ARGUMENT. */
vtrn_status_t vtrn_device_get_memory_usage(vtrn_device_t device, vtrn_memory_usage_t *usage);

/* ============================================================================================
 * Functions: DMA queues
 *
 * The udma model: a queue owns a ring of fixed-size descriptors (at most 64 KiB of data each;
 * FIRST and LAST mark the descriptors of one transfer). vtrn_dma_queue_enqueue writes descriptors
 * into the ring; vtrn_dma_queue_submit rings the doorbell, publishing them to the queue's DMA
 * engine, and returns a sequence number. Each engine serves its queues round robin, completes a
 * queue's transfers in order, and runs on its own host thread, so queues on different engines
 * copy in parallel. Engines idle asleep: an idle runtime uses no CPU.
 * ============================================================================================ */

/** Opens hardware queue (core, engine, queue) of a device. The first queue or kernel on a core
 *  claims the core for this runtime until the runtime is destroyed (see "Core ownership").
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a core,
 *  engine, queue or ring size out of range, a core VTRN_VISIBLE_CORES hides, a NULL out or a bad
 *  struct_size, or a core lock file that cannot be opened (the message names it and the system's
 *  reason); VTRN_ERROR_BUSY when the queue is open already, or the core is claimed by another
 *  runtime, of this process ("claimed by runtime 3") or of another one (the message names its
 *  pid, command line and lock file); VTRN_ERROR_DEVICE_LOST. */
vtrn_status_t vtrn_dma_queue_create(vtrn_device_t device, const vtrn_dma_queue_options_t *options, vtrn_dma_queue_t *out);

/** Writes the descriptors of `count` transfers into the ring, after checking all of them: a
 *  transfer that is out of bounds fails the call with VTRN_ERROR_OUT_OF_BOUNDS naming its index,
 *  and nothing of the batch is enqueued. Nothing moves until vtrn_dma_queue_submit.
 *  Not to be called concurrently with submit on the same queue from another thread (it is
 *  serialised, but the order of the batches is then unspecified).
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE for the queue or a transfer's memory (the message
 *  names the index); VTRN_ERROR_INVALID_ARGUMENT for NULL transfers with count > 0, 0 bytes, or
 *  memory of another device than the queue's, or host buffers or device memory of another runtime
 *  (as another process's memory is not mapped for this one's DMA);
 *  VTRN_ERROR_OUT_OF_BOUNDS; VTRN_ERROR_QUEUE_FULL when the ring has too few free descriptors (the
 *  message says how many are needed and free; nothing is enqueued); VTRN_ERROR_DEVICE_LOST. */
vtrn_status_t vtrn_dma_queue_enqueue(vtrn_dma_queue_t queue, const vtrn_dma_transfer_t *transfers, uint32_t count);

/** Rings the doorbell: everything enqueued so far goes to the engine. [out][optional] sequence:
 *  completes when all of it has (sequences start at 1 and grow by 1 per submit; a submit with
 *  nothing new enqueued returns the previous sequence).
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_DEVICE_LOST. */
vtrn_status_t vtrn_dma_queue_submit(vtrn_dma_queue_t queue, uint64_t *sequence);

/** Waits until `sequence` has completed: timeout_ns 0 polls, UINT64_MAX waits forever.
 *  A sequence that failed answers its failure every time it is waited for: VTRN_ERROR_DMA_FAULT
 *  (its queue aborted at a descriptor), VTRN_ERROR_HARDWARE (a descriptor read HBM over an
 *  uncorrectable error), VTRN_ERROR_TIMEOUT (its queue hung for VTRN_EXEC_TIMEOUT_MS, which ends
 *  even a wait with UINT64_MAX), VTRN_ERROR_RESET or VTRN_ERROR_DEVICE_LOST; the message names the
 *  device, core, DMA engine, queue and descriptor, and the fault. The queue then goes on with the
 *  sequences submitted after the failed ones.
 *  Returns VTRN_SUCCESS; VTRN_NOT_READY (polling, not yet); VTRN_ERROR_TIMEOUT;
 *  VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a sequence never submitted; the
 *  failures above. */
vtrn_status_t vtrn_dma_queue_wait(vtrn_dma_queue_t queue, uint64_t sequence, uint64_t timeout_ns);

/** [out] sequence: the last sequence completed (every earlier one has too); 0 before any.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT. */
vtrn_status_t vtrn_dma_queue_completed(vtrn_dma_queue_t queue, uint64_t *sequence);

/** Describes a queue and its counters. Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE;
 *  VTRN_ERROR_INVALID_ARGUMENT. */
vtrn_status_t vtrn_dma_queue_get_info(vtrn_dma_queue_t queue, vtrn_dma_queue_info_t *info);

/** Closes a queue: waits for its submitted transfers, drops what was enqueued but not submitted,
 *  and frees the hardware queue. NULL is a no-op. Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE. */
vtrn_status_t vtrn_dma_queue_destroy(vtrn_dma_queue_t queue);

/** Copies `bytes` from src to dst and returns when done: a synchronous convenience over the same
 *  machinery, on the device's host DMA queue (as Neuron's tensor reads and writes use the chip's
 *  host engines, it claims no core). Either side may be host or device memory of this device and
 *  runtime; the ranges must not overlap. 0 bytes checks the references and copies nothing.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT;
 *  VTRN_ERROR_OUT_OF_BOUNDS; and, as vtrn_dma_queue_wait, the failures of the host DMA queue it
 *  used (VTRN_ERROR_DMA_FAULT, VTRN_ERROR_HARDWARE, VTRN_ERROR_TIMEOUT, VTRN_ERROR_RESET,
 *  VTRN_ERROR_DEVICE_LOST). */
vtrn_status_t vtrn_memcpy(vtrn_device_t device, vtrn_memory_ref_t dst, vtrn_memory_ref_t src, uint64_t bytes);

/* ============================================================================================
 * Functions: programs
 *
 * A program is a list of instructions, each for one engine of a NeuronCore, modelled on NKI's
 * nki.isa. Builders append one instruction each and check only what needs no context (NULL
 * pointers, enum values); the whole program is validated once, by vtrn_kernel_load, against the
 * core it is loaded on. The limits (NKI's): partitions 1-128; compute engines start at partition 0,
 * 32, 64 or 96 and stay in that quadrant group (from 32 or 96: at most 32 partitions; from 64: at
 * most 64); MATMUL: K (the partitions of both inputs) <= 128, M <= 128, N <= 512, the result fp32
 * in PSUM within one 2 KiB bank; PSUM is read and written by DVE and ACT instructions and
 * written by the PE's, while POOL (GpSimd) and DMA do not reach it (as on the hardware);
 * not both inputs of TENSOR_TENSOR in PSUM; shapes of outputs and inputs agree; every access
 * stays inside SBUF, PSUM or its parameter; semaphores 0-255.
 * Every builder: returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for
 * a NULL pointer or an unknown enum value (the message names it). [in][optional] sync: NULL for
 * none. Builders must not be called on one program from several threads at once.
 * ============================================================================================ */

/** Creates an empty program owned by the runtime; destroy it with vtrn_program_destroy (or it goes
 *  with the runtime). Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT
 *  for a NULL out. */
vtrn_status_t vtrn_program_create(vtrn_runtime_t runtime, vtrn_program_t *out);

/** Destroys a program. Kernels loaded from it are not affected. NULL is a no-op.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE. */
vtrn_status_t vtrn_program_destroy(vtrn_program_t program);

/** Declares kernel parameter `name` (unique, 1-63 bytes), an HBM tensor of `bytes` bytes that each
 *  execution binds to device memory. [out][optional] index: its number, for vtrn_access_t.parameter.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a NULL, empty,
 *  too long, non-UTF-8 or repeated name, or 0 bytes. */
vtrn_status_t vtrn_program_add_parameter(vtrn_program_t program, const char *name, uint64_t bytes, uint32_t *index);

/** [out] count: the number of instructions so far. Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE;
 *  VTRN_ERROR_INVALID_ARGUMENT for a NULL count. */
vtrn_status_t vtrn_program_instruction_count(vtrn_program_t program, uint32_t *count);

/** DMA_COPY (DMA engine): dst = src, element by element in partition-major order, between HBM and
 *  SBUF in either direction, SBUF to SBUF or HBM to HBM (not PSUM: TENSOR_COPY moves data
 *  between PSUM and SBUF);
 *  element counts equal; a dtype change goes through fp32. The 128-partition limit is SBUF's:
 *  an HBM access may have up to 2^24 rows (partitions), so an HBM-to-HBM copy is not a tile. */
vtrn_status_t vtrn_program_dma_copy(vtrn_program_t program, vtrn_access_t dst, vtrn_access_t src, const vtrn_sync_t *sync);

/** DMA_COPY with options (vtrn_dma_copy_options_t): as vtrn_program_dma_copy, and with
 *  dst_rmw_op VTRN_ALU_ADD an accumulating copy, dst = dst + src through fp32 (src is read whole
 *  before dst is written; the DMA's cost counts the bytes of both); with `indirect`, a gather or
 *  scatter of HBM rows by an index tile. [in][optional] options: NULL for the defaults (a plain
 *  copy). Also VTRN_ERROR_INVALID_ARGUMENT for a struct_size smaller than the first version's, an
 *  unknown dst_rmw_op, indirect or oob_mode, an indirect copy with a NULL index, or an index
 *  given to a direct copy. */
vtrn_status_t vtrn_program_dma_copy_ex(vtrn_program_t program, vtrn_access_t dst, vtrn_access_t src,
                                       const vtrn_dma_copy_options_t *options, const vtrn_sync_t *sync);

/** MATMUL (PE): dst[M,N] = (accumulate ? dst : 0) + stationary[K,M]^T . moving[K,N], in fp32 in
 *  PSUM; K is the partition count of both inputs, M the free size of stationary, N of moving.
 *  Narrower inputs are widened to fp32 first; stationary and moving may differ in dtype, except
 *  that an fp32 input needs an fp32 partner (NKI's rule). The first matmul into a PSUM tile must
 *  not accumulate (it overwrites). */
vtrn_status_t vtrn_program_matmul(vtrn_program_t program, vtrn_access_t dst, vtrn_access_t stationary,
                                  vtrn_access_t moving, uint32_t accumulate, const vtrn_sync_t *sync);

/** TRANSPOSE (PE): dst[F,P] = src[P,F], P and F <= 128, bit exact (dtypes must match); src in
 *  SBUF, dst in PSUM. The same as vtrn_program_transpose_on with VTRN_ENGINE_PE. */
vtrn_status_t vtrn_program_transpose(vtrn_program_t program, vtrn_access_t dst, vtrn_access_t src, const vtrn_sync_t *sync);

/** TRANSPOSE on `engine`, as NKI's nc_transpose: VTRN_ENGINE_PE as vtrn_program_transpose, or
 *  VTRN_ENGINE_DVE for tiles of at most 32 x 32 (P and F <= 32), src and dst each in SBUF or
 *  PSUM; bit exact either way (dtypes must match). Other engines are refused at load. */
vtrn_status_t vtrn_program_transpose_on(vtrn_program_t program, vtrn_engine_flags_t engine, vtrn_access_t dst,
                                        vtrn_access_t src, const vtrn_sync_t *sync);

/** ACTIVATE (ACT): dst = fn(src * scale + bias). [in] scale: an immediate or a [P,1] tile;
 *  [in][optional] bias: a [P,1] tile (NULL: 0); [in][optional] accumulate_out: a [P,1] tile that
 *  receives the sum of each partition's results along the free axes (NULL: none). */
vtrn_status_t vtrn_program_activate(vtrn_program_t program, vtrn_access_t dst, vtrn_activation_t fn, vtrn_access_t src,
                                    const vtrn_scalar_t *scale, const vtrn_access_t *bias,
                                    const vtrn_access_t *accumulate_out, const vtrn_sync_t *sync);

/** TENSOR_TENSOR (DVE): dst = a op b, element by element. */
vtrn_status_t vtrn_program_tensor_tensor(vtrn_program_t program, vtrn_access_t dst, vtrn_access_t a, vtrn_access_t b,
                                         vtrn_alu_op_t op, const vtrn_sync_t *sync);

/** TENSOR_SCALAR (DVE, ACT or POOL): dst = (src op0 x0) op1 x1; with bit 0 of `reverse` set the
 *  first stage is x0 op0 src, with bit 1 the second is x1 op1 (...). op1 VTRN_ALU_BYPASS skips the
 *  second stage (x1 may then be NULL). */
vtrn_status_t vtrn_program_tensor_scalar(vtrn_program_t program, vtrn_engine_flags_t engine, vtrn_access_t dst,
                                         vtrn_access_t src, vtrn_alu_op_t op0, const vtrn_scalar_t *x0,
                                         vtrn_alu_op_t op1, const vtrn_scalar_t *x1, uint32_t reverse,
                                         const vtrn_sync_t *sync);

/** TENSOR_REDUCE (DVE): reduces each partition's elements along the free axes. dst has src's
 *  partitions and D elements per partition, where D divides src's S elements per partition: dst
 *  element d is the reduction of src's elements d*S/D to (d+1)*S/D - 1, in the order of src's
 *  access pattern (the first free dimension fastest); so dst [P,1] reduces everything, and
 *  listing the reduced axes first in src's pattern reduces just those. op: add, max, min,
 *  multiply, logical_and/or/xor (arithmetic, in fp32; sums and products accumulate in order;
 *  logical ones give 1.0 or 0.0) or bitwise_and/or/xor (bitvec: integer src and dst, exact).
 *  `negate` multiplies arithmetic results by -1; a bitvec reduction refuses it. */
vtrn_status_t vtrn_program_tensor_reduce(vtrn_program_t program, vtrn_access_t dst, vtrn_access_t src, vtrn_alu_op_t op,
                                         uint32_t negate, const vtrn_sync_t *sync);

/** TENSOR_COPY (DVE, ACT or POOL): dst = src; bit exact when the dtypes match, else via fp32. */
vtrn_status_t vtrn_program_tensor_copy(vtrn_program_t program, vtrn_engine_flags_t engine, vtrn_access_t dst,
                                       vtrn_access_t src, const vtrn_sync_t *sync);

/** MEMSET (DVE or POOL): every element of dst = value (rounded to dst's dtype). */
vtrn_status_t vtrn_program_memset(vtrn_program_t program, vtrn_engine_flags_t engine, vtrn_access_t dst, float value,
                                  const vtrn_sync_t *sync);

/** IOTA (POOL): dst[p, i...] = offset + p * channel_multiplier + sum(steps[d] * i_d), in int32, then
 *  converted to dst's dtype. [in] steps: dst.dims values. */
vtrn_status_t vtrn_program_iota(vtrn_program_t program, vtrn_access_t dst, const int32_t *steps, int32_t offset,
                                int32_t channel_multiplier, const vtrn_sync_t *sync);

/** AFFINE_SELECT (POOL): with v = offset + p * channel_multiplier + sum(steps[d] * i_d),
 *  dst = (v cmp 0) ? on_true : on_false_value; cmp is one of the comparisons (causal masks). */
vtrn_status_t vtrn_program_affine_select(vtrn_program_t program, vtrn_access_t dst, const int32_t *steps, int32_t offset,
                                         int32_t channel_multiplier, vtrn_alu_op_t cmp, vtrn_access_t on_true,
                                         float on_false_value, const vtrn_sync_t *sync);

/** SEM_SIGNAL (any engine): changes semaphore `semaphore` by `op` and `value`, in the engine's
 *  stream order. */
vtrn_status_t vtrn_program_sem_signal(vtrn_program_t program, vtrn_engine_flags_t engine, uint32_t semaphore,
                                      vtrn_semaphore_op_t op, uint32_t value);

/** SEM_WAIT (any engine): the engine's stream waits until semaphore `semaphore` >= `value`. */
vtrn_status_t vtrn_program_sem_wait(vtrn_program_t program, vtrn_engine_flags_t engine, uint32_t semaphore,
                                    uint32_t value);

/* ============================================================================================
 * Functions: kernels and executions
 *
 * Each core executes its executions one at a time, in submission order, on a host thread of its
 * own (which sleeps when idle); cores and devices run in parallel. Inside an execution the
 * engines' streams interleave deterministically: the same kernel and inputs give the same results
 * and the same virtual timeline every run. Each instruction has a cost in cycles of its engine's
 * clock (matmul max(N, 64) cycles per pass, x4 for fp32 inputs; vector ops about one cycle per
 * element; at least 64 cycles; DMA at the engine's bandwidth); the engines' timelines, with
 * semaphore waits honoured, give the estimated device time. A signal lands when its instruction
 * ends; a wait for "semaphore >= v" starts when the semaphore first reached v, however far its
 * producers have signalled since (a SET starts the count again from its own time).
 * ============================================================================================ */

/** Validates `program` for `core` of `device` and loads it (the program may then be destroyed).
 *  The first kernel or DMA queue on a core claims the core for this runtime.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_PROGRAM naming the
 *  instruction index, its opcode, the operand and the rule it breaks (the first such);
 *  VTRN_ERROR_INVALID_ARGUMENT for a bad core (hidden, out of range), a NULL out or a core lock
 *  file that cannot be opened; VTRN_ERROR_BUSY when another runtime, of this process or another,
 *  holds the core (the message names it as vtrn_dma_queue_create's does);
 *  VTRN_ERROR_DEVICE_LOST. */
vtrn_status_t vtrn_kernel_load(vtrn_device_t device, uint32_t core, vtrn_program_t program, vtrn_kernel_t *out);

/** Unloads a kernel after its queued executions finish (their fences stay valid). NULL is a no-op.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE. */
vtrn_status_t vtrn_kernel_unload(vtrn_kernel_t kernel);

/** Queues one execution on the kernel's core and returns at once with its fence. Every parameter
 *  must be bound, to device memory of the kernel's device and runtime, which stays allocated until
 *  the execution finishes. A binding smaller than its parameter is accepted: the execution fails
 *  (its fence reports VTRN_ERROR_OUT_OF_BOUNDS naming the instruction) only if an instruction
 *  reaches past it, and other executions go on; an offset past the block's end fails the call
 *  (VTRN_ERROR_OUT_OF_BOUNDS). The core's command queue
 *  holds 1024 executions; beyond that the call fails with VTRN_ERROR_QUEUE_FULL (nothing queued).
 *  An execution running longer than VTRN_EXEC_TIMEOUT_MS fails with VTRN_ERROR_TIMEOUT.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_NOT_FOUND (a binding names no
 *  parameter); VTRN_ERROR_INVALID_ARGUMENT (a parameter unbound or bound twice, memory of
 *  another device or runtime, NULL out); VTRN_ERROR_OUT_OF_BOUNDS; VTRN_ERROR_QUEUE_FULL;
 *  VTRN_ERROR_DEVICE_LOST. */
vtrn_status_t vtrn_kernel_execute(vtrn_kernel_t kernel, const vtrn_binding_t *bindings, uint32_t count,
                                  vtrn_fence_t *out);

/** Waits for an execution: timeout_ns 0 polls, UINT64_MAX waits forever. Returns the execution's
 *  own status once it has finished (VTRN_SUCCESS, or its failure: VTRN_ERROR_DEADLOCK,
 *  VTRN_ERROR_TIMEOUT (also for an instruction that hung), VTRN_ERROR_OUT_OF_BOUNDS,
 *  VTRN_ERROR_HARDWARE (an HBM read over an uncorrectable error), VTRN_ERROR_RESET,
 *  VTRN_ERROR_DEVICE_LOST, with vtrn_last_error() giving its message);
 *  VTRN_NOT_READY when polling and not done; VTRN_ERROR_TIMEOUT when the wait timed out (the
 *  execution goes on); VTRN_ERROR_INVALID_HANDLE. */
vtrn_status_t vtrn_fence_wait(vtrn_fence_t fence, uint64_t timeout_ns);

/** [out] status: the execution's status now (VTRN_NOT_READY while queued or running; then its
 *  result, as vtrn_fence_wait returns it). Returns VTRN_SUCCESS (the call itself);
 *  VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a NULL status. */
vtrn_status_t vtrn_fence_status(vtrn_fence_t fence, vtrn_status_t *status);

/** Timings and counters of an execution (final once it has finished). [out] info: struct_size set
 *  by the caller (VTRN_EXECUTION_INFO_INIT). Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE;
 *  VTRN_ERROR_INVALID_ARGUMENT for a NULL info or a struct_size that is too small. */
vtrn_status_t vtrn_fence_get_info(vtrn_fence_t fence, vtrn_execution_info_t *info);

/** Releases a fence (the execution goes on if it has not finished). NULL is a no-op.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE. */
vtrn_status_t vtrn_fence_destroy(vtrn_fence_t fence);

/* ============================================================================================
 * Functions: faults, resets and error counters
 *
 * Faults are injected into a device (vtrn_device_inject_fault, or VTRN_FAULTS at
 * vtrn_runtime_create) and surface where real ones do: the DMA sequence's wait or the execution's
 * fence fails with VTRN_ERROR_DMA_FAULT, VTRN_ERROR_HARDWARE, VTRN_ERROR_TIMEOUT or
 * VTRN_ERROR_DEVICE_LOST, and vtrn_last_error() names the device, the core, the DMA engine and
 * queue or the instruction and engine, the descriptor or the HBM bytes, and the injected fault
 * ("injected fault 2 (hbm-ue:address=0x1000:bytes=4096:sticky)"). Work on other queues, cores and
 * devices goes on, untouched. The hardware is the process's: a fault hits every runtime of the
 * process that has the device. Faults cost nothing while none is armed (one atomic load per
 * burst of DMA descriptors and per instruction).
 *
 * A lost device: every call that needs its hardware fails with VTRN_ERROR_DEVICE_LOST (memory
 * allocation, DMA queue creation, enqueue, submit, wait, vtrn_memcpy, vtrn_kernel_load and
 * _execute, vtrn_device_inject_fault); calls that describe (vtrn_device_get_info, _get_core_info,
 * _get_memory_usage, vtrn_dma_queue_get_info, _completed, vtrn_fence_status, _get_info,
 * vtrn_device_get_error_counters) or release (every _destroy, vtrn_device_memory_free,
 * vtrn_kernel_unload) still work, so diagnosis and cleanup do; vtrn_device_reset brings it back.
 * A fence whose execution finished before the loss keeps its status.
 * ============================================================================================ */

/** Arms a fault on the device (see vtrn_fault_t and vtrn_fault_kind_t); a device loss takes
 *  effect at once. Faults are numbered per device from 1, in the order injected, and messages
 *  name them by number and by their VTRN_FAULTS spelling.
 *  May be called while other threads use the device: their work meets the fault from then on.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a NULL fault,
 *  a bad struct_size, kind, flag bits or reserved field, or a core, engine, queue or HBM range the
 *  device does not have (the message says which and what exists); VTRN_ERROR_DEVICE_LOST. */
vtrn_status_t vtrn_device_inject_fault(vtrn_device_t device, const vtrn_fault_t *fault);

/** Resets a device and returns when it is usable again, without a process restart:
 *  - work in flight fails with VTRN_ERROR_RESET: the DMA sequences submitted and not completed
 *    (their waits return it, now or later) and the executions queued or running (a running one
 *    stops before its next instruction; a hung one at once);
 *  - DMA queues return clean and stay open (transfers enqueued but not yet submitted stay, for
 *    the next vtrn_dma_queue_submit: they were not in flight); cores return clean (SBUF and PSUM
 *    read as NaN again, as after power-on);
 *  - every injected fault is disarmed, sticky or not, and a lost device comes back;
 *  - device memory allocations, their contents, loaded kernels, host buffers and every handle are
 *    kept (a real reset releases what the process held, but a test of recovery wants to retry
 *    with the same buffers and check what the failed work did or did not write);
 *  - the `resets` counter grows by 1, or with VTRN_DEVICE_RESET_CLEAR_COUNTERS every counter is 0.
 *  The device is reset for every runtime of the process that has it. Meant to be called while
 *  other threads use the device (their waits return VTRN_ERROR_RESET); several threads may reset
 *  one device at once.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for unknown flag
 *  bits. */
vtrn_status_t vtrn_device_reset(vtrn_device_t device, uint32_t flags);

/** The device's error counters and state. [in,out] counters: struct_size set by the caller
 *  (VTRN_DEVICE_ERROR_COUNTERS_INIT). Works on a lost device.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a NULL counters
 *  or a struct_size that is too small. */
vtrn_status_t vtrn_device_get_error_counters(vtrn_device_t device, vtrn_device_error_counters_t *counters);

/* ============================================================================================
 * Functions: collectives
 *
 * A communicator (vtrn_comm_t) is a replica group of cores, rank i being members[i], like an
 * NCCL communicator, a libnrt replica group or NKI's ReplicaGroup. Every rank calls each
 * collective (from the host, or as an instruction of the CC engine inside its kernel); the k-th
 * collectives of the ranks meet, and sends and receives meet in order per pair of ranks. Calls
 * return at once: host-called collectives are queued on the rank's core, in order with its
 * kernel executions, and return a fence (vtrn_fence_wait, vtrn_fence_get_info). A collective
 * finishes when every rank has joined. Ranks that ask for different things (kind, count, dtype,
 * op, root) all fail with VTRN_ERROR_INVALID_ARGUMENT naming two of them; a rank that never joins
 * fails the others with VTRN_ERROR_TIMEOUT at VTRN_EXEC_TIMEOUT_MS, naming the missing ranks (a
 * rank that comes after that fails at once); a member's device lost or reset fails every rank
 * (VTRN_ERROR_DEVICE_LOST, VTRN_ERROR_RESET). A send waits for its receive, as NCCL's does
 * outside a group: two ranks that both send first wait for each other until the timeout.
 *
 * Results are deterministic, the ring's arithmetic: the data split into one chunk per rank (the
 * first count % ranks chunks one element longer), chunk c is reduced left to right in ring order
 * from rank c+1 to rank c, ((x[c+1] + x[c+2]) + ...) + x[c] (indices mod ranks), the running value
 * rounded to the dtype after every step (as a ring sending bf16 does); integer adds wrap in the
 * dtype's width; max and min with a NaN give NaN. Any VTRN_DTYPE_*; ops VTRN_ALU_ADD,
 * VTRN_ALU_MAX and VTRN_ALU_MIN. The cost model charges the ring's steps on the modelled links
 * (NeuronLink between devices, the device's DMA between two cores of one device).
 * VTRN_CC_ALGORITHM=torus (read at vtrn_runtime_create) makes all-reduces of 8, 12 or 16 ranks in
 * one process run the 2D torus instead, with its own order: rank (i, j) is row i, column j of rows
 * of 4; column chunk j is folded within each row from column j+1 round to column j, then the row
 * sums of row chunk i from row i+1 round to row i (vtrn_comm_create_mpi refuses it).
 *
 * Data move as DMA: in one process every byte of a collective is a descriptor on the CC ring of
 * the rank's core, a queue of its DMA engine 15 kept for collectives (apart from the queues of
 * vtrn_dma_queue_create); reductions are DMA with compute (the data combined into the
 * destination as they land). By default each rank's ring moves its share directly (rank c folds
 * chunk c of every input in the ring's order and writes it to every rank); with VTRN_CC_STEPS=1
 * (read at vtrn_runtime_create) the ranks run the algorithm's steps one by one, each sending to
 * the next with a barrier between steps: the same bits, 2-3 times the host's memory traffic. A
 * DMA abort on a member's CC ring fails the collective on every rank with VTRN_ERROR_DMA_FAULT
 * naming the rank, the ring, the descriptor and the fault, and the ring starts again with the
 * next collective; a DMA hang holds it until the execution timeout (VTRN_ERROR_TIMEOUT), a reset
 * (VTRN_ERROR_RESET) or a loss (VTRN_ERROR_DEVICE_LOST); an uncorrectable HBM error in any
 * member's memory fails the collective whose DMA reads it (VTRN_ERROR_HARDWARE). Across
 * processes the data between processes go through MPI; each process's own part (copies to and
 * from what MPI moves, the folds of its ranks) runs on the CC ring of its lowest rank.
 * ============================================================================================ */

/** Makes a communicator over `count` cores (rank i = members[i]) and claims their cores for this
 *  runtime, as loading a kernel does. Members are distinct cores of devices of `runtime`, all of
 *  one architecture. [out] out.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT (NULL members or
 *  out, count 0, a core out of range or listed twice, mixed architectures, a device of another
 *  runtime); VTRN_ERROR_BUSY when another runtime or process holds a core. */
vtrn_status_t vtrn_comm_create(vtrn_runtime_t runtime, const vtrn_comm_member_t *members, uint32_t count, vtrn_comm_t *out);

/** Makes a communicator across the processes of an MPI job (started by `mpirun`): every process
 *  of MPI_COMM_WORLD calls it with its own members, and ranks follow MPI rank order (process 0's
 *  members are ranks 0 .. count0-1, process 1's the next, and so on). Every process must create its
 *  MPI communicators in the same order. Collectives are then called by each process for its own
 *  ranks (a rank of another process: VTRN_ERROR_INVALID_ARGUMENT naming its process); data crosses
 *  between processes through MPI, inside a process through shared memory, with the same
 *  arithmetic as one process (results match bit for bit). Open MPI is loaded on first use
 *  (VTRN_MPI_LIBRARY, default libmpi.so.40): libvtrn does not link it. If the program called
 *  MPI_Init it must have asked for MPI_THREAD_SERIALIZED at least (MPI_THREAD_MULTIPLE if it
 *  calls MPI itself while collectives run); otherwise vtrn initialises MPI (MPI_THREAD_MULTIPLE)
 *  and finalises it at exit. The call waits for every process until VTRN_EXEC_TIMEOUT_MS.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT (as
 *  vtrn_comm_create; a process with no members); VTRN_ERROR_UNSUPPORTED (Open MPI cannot be loaded,
 *  is not Open MPI, or was initialised with too low a thread level: the message says which);
 *  VTRN_ERROR_TIMEOUT (a process never came); VTRN_ERROR_BUSY. */
vtrn_status_t vtrn_comm_create_mpi(vtrn_runtime_t runtime, const vtrn_comm_member_t *members, uint32_t count, vtrn_comm_t *out);

/** Destroys a communicator: queued collectives finish, new ones are refused; its cores stay
 *  claimed until the runtime is destroyed. NULL is a no-op. Returns VTRN_SUCCESS;
 *  VTRN_ERROR_INVALID_HANDLE. */
vtrn_status_t vtrn_comm_destroy(vtrn_comm_t comm);

/** [out] info: struct_size set by the caller (VTRN_COMM_INFO_INIT). Returns VTRN_SUCCESS;
 *  VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT for a NULL info or a small struct_size. */
vtrn_status_t vtrn_comm_get_info(vtrn_comm_t comm, vtrn_comm_info_t *info);

/** [out] rank: the rank of `core` of `device` in the communicator. Returns VTRN_SUCCESS;
 *  VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_NOT_FOUND when the core is not a member;
 *  VTRN_ERROR_INVALID_ARGUMENT for a NULL rank. */
vtrn_status_t vtrn_comm_rank(vtrn_comm_t comm, vtrn_device_t device, uint32_t core, uint32_t *rank);

/** Queues `rank`'s part of a collective on its core and returns its fence. `dst` and `src` are
 *  device memory of the rank's own device. Sizes follow vtrn_collective_t: all-gather's dst holds
 *  count * ranks elements, reduce-scatter's src count * ranks, all-to-all's both (not in place).
 *  Operands a rank does not use are ignored (zeroed refs are fine): the src of a receive and of a
 *  broadcast's non-root ranks, the dst of a send. `op` is for all-reduce and reduce-scatter;
 *  `peer` is a broadcast's root, a send's destination rank or a receive's source rank.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT (rank, peer, op,
 *  kind or dtype out of range, count 0, host memory or memory of another device, a send to
 *  itself, NULL fence); VTRN_ERROR_OUT_OF_BOUNDS (an operand past its block);
 *  VTRN_ERROR_QUEUE_FULL; VTRN_ERROR_DEVICE_LOST. The collective's own outcome is the fence's. */
vtrn_status_t vtrn_comm_collective(vtrn_comm_t comm, uint32_t rank, vtrn_collective_t kind, vtrn_memory_ref_t dst,
                                   vtrn_memory_ref_t src, uint64_t count, vtrn_dtype_t dtype, vtrn_alu_op_t op,
                                   uint32_t peer, vtrn_fence_t *fence);

/** All-reduce: every rank's `count` elements of src reduced with `op` into every rank's dst (may
 *  be src). vtrn_comm_collective with VTRN_COLLECTIVE_ALL_REDUCE.
 *  Returns as vtrn_comm_collective. */
vtrn_status_t vtrn_all_reduce(vtrn_comm_t comm, uint32_t rank, vtrn_memory_ref_t dst, vtrn_memory_ref_t src, uint64_t count,
                              vtrn_dtype_t dtype, vtrn_alu_op_t op, vtrn_fence_t *fence);

/** All-gather: each rank's `count` elements into chunk `rank` of every rank's dst (count * ranks
 *  elements). Returns as vtrn_comm_collective. */
vtrn_status_t vtrn_all_gather(vtrn_comm_t comm, uint32_t rank, vtrn_memory_ref_t dst, vtrn_memory_ref_t src, uint64_t count,
                              vtrn_dtype_t dtype, vtrn_fence_t *fence);

/** Reduce-scatter: src holds count * ranks elements; rank r's dst gets chunk r (`count` elements)
 *  of their reduction with `op`. Returns as vtrn_comm_collective. */
vtrn_status_t vtrn_reduce_scatter(vtrn_comm_t comm, uint32_t rank, vtrn_memory_ref_t dst, vtrn_memory_ref_t src,
                                  uint64_t count, vtrn_dtype_t dtype, vtrn_alu_op_t op, vtrn_fence_t *fence);

/** All-to-all: chunk j (`count` elements) of rank r's src goes to chunk r of rank j's dst; src and
 *  dst hold count * ranks elements and do not overlap. Returns as vtrn_comm_collective. */
vtrn_status_t vtrn_all_to_all(vtrn_comm_t comm, uint32_t rank, vtrn_memory_ref_t dst, vtrn_memory_ref_t src, uint64_t count,
                              vtrn_dtype_t dtype, vtrn_fence_t *fence);

/** Broadcast: the root's `count` elements of src into every rank's dst (src is read on the root
 *  only). Returns as vtrn_comm_collective. */
vtrn_status_t vtrn_broadcast(vtrn_comm_t comm, uint32_t rank, vtrn_memory_ref_t dst, vtrn_memory_ref_t src, uint64_t count,
                             vtrn_dtype_t dtype, uint32_t root, vtrn_fence_t *fence);

/** Sends `count` elements of src to rank `peer`; the fence completes when the peer has received
 *  them. Returns as vtrn_comm_collective. */
vtrn_status_t vtrn_send(vtrn_comm_t comm, uint32_t rank, vtrn_memory_ref_t src, uint64_t count, vtrn_dtype_t dtype,
                        uint32_t peer, vtrn_fence_t *fence);

/** Receives into dst the `count` elements rank `peer` sends. Returns as vtrn_comm_collective. */
vtrn_status_t vtrn_recv(vtrn_comm_t comm, uint32_t rank, vtrn_memory_ref_t dst, uint64_t count, vtrn_dtype_t dtype,
                        uint32_t peer, vtrn_fence_t *fence);

/** Collective permute (HLO's collective-permute, NKI's collective_permute, nccom-test's permute):
 *  all ranks at once, rank r sends `count` elements of src to rank targets[r] (-1: sends nothing)
 *  and receives into dst from the rank whose target it is (a rank nobody targets keeps its dst).
 *  `targets` has one entry per rank, the same on every rank; no rank is targeted twice; a rank may
 *  target itself. Pairwise swaps ({1, 0, 3, 2}) and rings ({1, 2, 3, 0}) are both permutes.
 *  Returns as vtrn_comm_collective, and VTRN_ERROR_INVALID_ARGUMENT naming a bad pair. */
vtrn_status_t vtrn_collective_permute(vtrn_comm_t comm, uint32_t rank, vtrn_memory_ref_t dst, vtrn_memory_ref_t src,
                                      uint64_t count, vtrn_dtype_t dtype, const int32_t *targets, vtrn_fence_t *fence);

/** Appends a collective to a kernel program, on the CC engine. The kernel's core must be a member
 *  of `comm` (checked by vtrn_kernel_load: VTRN_ERROR_INVALID_PROGRAM otherwise), and every
 *  member runs the matching instruction. Operands are HBM parameters or SBUF tiles, their
 *  elements taken partition by partition. Element counts follow vtrn_collective_t: dst = src
 *  (all-reduce, broadcast), dst = src * ranks (all-gather), src = dst * ranks (reduce-scatter),
 *  dst = src, divisible by ranks (all-to-all); a send has no dst and a receive no src (pass a
 *  zeroed vtrn_access_t: dims 0). `peer`: a broadcast's root, a send's or receive's peer rank.
 *  `sync` as for the other instructions: the CC engine runs beside the compute engines, and
 *  semaphores order it with them (compute and communication overlap on the timeline).
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT (an enum out of
 *  range; the rest is checked at load). */
vtrn_status_t vtrn_program_collective(vtrn_program_t program, vtrn_comm_t comm, vtrn_collective_t kind, vtrn_access_t dst,
                                      vtrn_access_t src, vtrn_alu_op_t op, uint32_t peer, const vtrn_sync_t *sync);

/** Appends a collective permute (vtrn_collective_permute) to a kernel program, on the CC engine:
 *  `targets` has one entry per rank of `comm` (copied). dst and src have the same element count.
 *  Returns VTRN_SUCCESS; VTRN_ERROR_INVALID_HANDLE; VTRN_ERROR_INVALID_ARGUMENT (NULL targets, a
 *  bad pair). */
vtrn_status_t vtrn_program_collective_permute(vtrn_program_t program, vtrn_comm_t comm, vtrn_access_t dst, vtrn_access_t src,
                                              const int32_t *targets, const vtrn_sync_t *sync);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* VTRN_H */
