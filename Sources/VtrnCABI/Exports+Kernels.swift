// Exports of include/vtrn.h: programs, kernels, executions. Translation only.
import CVtrn
import Vtrn
import VtrnDevice

// MARK: - Translating operands

private func accessPattern(_ access: vtrn_access_t, _ name: String) throws(VtrnError) -> AccessPattern {
    guard let space = MemorySpace(rawValue: Int(access.space.rawValue)) else {
        throw .invalidArgument("\(name).space is \(access.space.rawValue); accepted: VTRN_MEMORY_SBUF, VTRN_MEMORY_PSUM, VTRN_MEMORY_HBM")
    }
    guard let dtype = DataType(rawValue: Int(access.dtype.rawValue)) else {
        throw .invalidArgument("\(name).dtype is \(access.dtype.rawValue); accepted: VTRN_DTYPE_FP32 (1) to VTRN_DTYPE_UINT8 (8)")
    }
    guard (1...4).contains(access.dims) else { throw .invalidArgument("\(name).dims is \(access.dims); accepted: 1 to 4") }
    let dims = Int(access.dims)
    let sizes = withUnsafeBytes(of: access.size) { Array($0.bindMemory(to: UInt32.self).prefix(dims)).map(Int.init) }
    let strides = withUnsafeBytes(of: access.stride) { Array($0.bindMemory(to: Int64.self).prefix(dims)).map(Int.init) }
    guard access.offset <= UInt64(Int32.max) else { throw .invalidArgument("\(name).offset \(access.offset) is too large") }
    return AccessPattern(space: space, dtype: dtype, startPartition: Int(access.start_partition), partitions: Int(access.partitions),
                         offset: Int(access.offset), parameter: Int(access.parameter), sizes: sizes, strides: strides,
                         partitionStride: Int(access.partition_stride))
}

private func scalarOperand(_ scalar: UnsafePointer<vtrn_scalar_t>?, _ name: String) throws(VtrnError) -> ScalarOperand? {
    guard let scalar else { return nil }
    switch scalar.pointee.is_tile {
    case UInt32(VTRN_SCALAR_IMMEDIATE.rawValue): return .immediate(scalar.pointee.value)
    case UInt32(VTRN_SCALAR_TILE.rawValue): return .tile(try accessPattern(scalar.pointee.tile, "\(name).tile"))
    case UInt32(VTRN_SCALAR_INT32.rawValue):
        // The int32's bits, read as bits: a float load could quiet a NaN pattern.
        let offset = MemoryLayout<vtrn_scalar_t>.offset(of: \vtrn_scalar_t.value)!
        return .integer(UnsafeRawPointer(scalar).load(fromByteOffset: offset, as: Int32.self))
    default:
        throw .invalidArgument("\(name).is_tile is \(scalar.pointee.is_tile); accepted: VTRN_SCALAR_IMMEDIATE (0), "
                               + "VTRN_SCALAR_TILE (1), VTRN_SCALAR_INT32 (2)")
    }
}

private func synchronization(_ sync: UnsafePointer<vtrn_sync_t>?) throws(VtrnError) -> Synchronization {
    guard let sync = sync?.pointee else { return .none }
    guard let op = SemaphoreOp(rawValue: Int(sync.signal_op.rawValue)) else {
        throw .invalidArgument("sync.signal_op is \(sync.signal_op.rawValue); accepted: VTRN_SEMAPHORE_ADD, VTRN_SEMAPHORE_SET")
    }
    return Synchronization(waitSemaphore: sync.wait_semaphore >= 0 ? Int(sync.wait_semaphore) : nil, waitValue: sync.wait_value,
                           signalSemaphore: sync.signal_semaphore >= 0 ? Int(sync.signal_semaphore) : nil, signalOp: op,
                           signalValue: sync.signal_value)
}

private func aluOp(_ op: vtrn_alu_op_t, _ name: String) throws(VtrnError) -> AluOp {
    guard let value = AluOp(rawValue: Int(op.rawValue)) else {
        let last = AluOp.allCases.last!
        throw .invalidArgument("\(name) is \(op.rawValue); accepted: VTRN_ALU_ADD (1) to VTRN_ALU_\(last.description.uppercased()) "
                               + "(\(last.rawValue))")
    }
    return value
}

private func engine(_ flags: vtrn_engine_flags_t) throws(VtrnError) -> Engine {
    guard let engine = Engine(flag: flags.rawValue) else {
        throw .invalidArgument("engine is 0x\(String(flags.rawValue, radix: 16)); accepted: one of VTRN_ENGINE_PE, "
                               + "VTRN_ENGINE_ACT, VTRN_ENGINE_DVE, VTRN_ENGINE_POOL, VTRN_ENGINE_DMA, VTRN_ENGINE_CC")
    }
    return engine
}

private func steps(_ pointer: UnsafePointer<Int32>?, _ access: AccessPattern) throws(VtrnError) -> [Int32] {
    guard let pointer else { throw .invalidArgument("steps is NULL") }
    return Array(UnsafeBufferPointer(start: pointer, count: access.sizes.count))
}

/// Looks the program up and appends what `build` makes of the arguments.
private func append(_ program: vtrn_program_t?, _ build: () throws(VtrnError) -> Instruction) throws(VtrnError) {
    let program = try Handles.programs.lookup(handleBits(program)).object
    try program.append(try build())
}

// MARK: - Programs

@c @implementation
public func vtrn_program_create(_ runtime: vtrn_runtime_t?, _ out: UnsafeMutablePointer<vtrn_program_t?>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.runtimes.lookup(handleBits(runtime))
        let out = try UnsafeMutablePointer.required(out, "out")
        out.pointee = handle(try Handles.register(entry.runtime.makeProgram(), in: Handles.programs, runtimeToken: entry.token))
    }
}

@c @implementation
public func vtrn_program_destroy(_ program: vtrn_program_t?) -> vtrn_status_t {
    exported {
        guard program != nil else { return }
        try Handles.programs.remove(handleBits(program), because: "it was destroyed")
    }
}

@c @implementation
public func vtrn_program_add_parameter(_ program: vtrn_program_t?, _ name: UnsafePointer<CChar>?, _ bytes: UInt64,
                                       _ index: UnsafeMutablePointer<UInt32>?) -> vtrn_status_t {
    exported {
        let program = try Handles.programs.lookup(handleBits(program)).object
        guard let name = try string(name, "name") else { throw VtrnError.invalidArgument("name is NULL") }
        let added = try program.addParameter(name, bytes: bytes)
        index?.pointee = UInt32(added)
    }
}

@c @implementation
public func vtrn_program_instruction_count(_ program: vtrn_program_t?, _ count: UnsafeMutablePointer<UInt32>?) -> vtrn_status_t {
    exported {
        let program = try Handles.programs.lookup(handleBits(program)).object
        let count = try UnsafeMutablePointer.required(count, "count")
        count.pointee = UInt32(program.instructionCount)
    }
}

@c @implementation
public func vtrn_program_dma_copy(_ program: vtrn_program_t?, _ dst: vtrn_access_t, _ src: vtrn_access_t,
                                  _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            Instruction(engine: .dma, operation: .dmaCopy(destination: try accessPattern(dst, "dst"), source: try accessPattern(src, "src")),
                        sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_dma_copy_ex(_ program: vtrn_program_t?, _ dst: vtrn_access_t, _ src: vtrn_access_t,
                                     _ options: UnsafePointer<vtrn_dma_copy_options_t>?,
                                     _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            let defaults = vtrn_dma_copy_options_t(struct_size: MemoryLayout<vtrn_dma_copy_options_t>.size, dst_rmw_op: VTRN_ALU_BYPASS,
                                                   indirect: VTRN_DMA_INDIRECT_NONE, index: nil, oob_mode: VTRN_DMA_OOB_ERROR)
            let options = try vtrn_dma_copy_options_t.read(options, name: "options", defaults: defaults) ?? defaults
            guard let outOfBounds = DmaIndirection.OutOfBounds(rawValue: Int(options.oob_mode.rawValue)) else {
                throw .invalidArgument("options.oob_mode is \(options.oob_mode.rawValue); accepted: VTRN_DMA_OOB_ERROR, VTRN_DMA_OOB_SKIP")
            }
            var indirection: DmaIndirection?
            switch options.indirect {
            case VTRN_DMA_INDIRECT_NONE:
                guard options.index == nil else {
                    throw .invalidArgument("options.index is set but options.indirect is VTRN_DMA_INDIRECT_NONE")
                }
            case VTRN_DMA_INDIRECT_SRC, VTRN_DMA_INDIRECT_DST:
                guard let index = options.index else {
                    throw .invalidArgument("options.index is NULL; an indirect copy needs its index tile")
                }
                indirection = DmaIndirection(operand: options.indirect == VTRN_DMA_INDIRECT_SRC ? .source : .destination,
                                             index: try accessPattern(index.pointee, "options.index"), outOfBounds: outOfBounds)
            default:
                throw .invalidArgument("options.indirect is \(options.indirect.rawValue); accepted: VTRN_DMA_INDIRECT_NONE, "
                                       + "VTRN_DMA_INDIRECT_SRC, VTRN_DMA_INDIRECT_DST")
            }
            return Instruction(engine: .dma, operation: .dmaCopy(destination: try accessPattern(dst, "dst"), source: try accessPattern(src, "src"),
                                                                 readModifyWrite: try aluOp(options.dst_rmw_op, "options.dst_rmw_op"),
                                                                 indirection: indirection),
                               sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_matmul(_ program: vtrn_program_t?, _ dst: vtrn_access_t, _ stationary: vtrn_access_t,
                                _ moving: vtrn_access_t, _ accumulate: UInt32, _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            Instruction(engine: .pe, operation: .matmul(destination: try accessPattern(dst, "dst"),
                                                        stationary: try accessPattern(stationary, "stationary"),
                                                        moving: try accessPattern(moving, "moving"), accumulate: accumulate != 0),
                        sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_transpose(_ program: vtrn_program_t?, _ dst: vtrn_access_t, _ src: vtrn_access_t,
                                   _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            Instruction(engine: .pe, operation: .transpose(destination: try accessPattern(dst, "dst"), source: try accessPattern(src, "src")),
                        sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_transpose_on(_ program: vtrn_program_t?, _ engine_: vtrn_engine_flags_t, _ dst: vtrn_access_t,
                                      _ src: vtrn_access_t, _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            Instruction(engine: try engine(engine_),
                        operation: .transpose(destination: try accessPattern(dst, "dst"), source: try accessPattern(src, "src")),
                        sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_activate(_ program: vtrn_program_t?, _ dst: vtrn_access_t, _ fn: vtrn_activation_t, _ src: vtrn_access_t,
                                  _ scale: UnsafePointer<vtrn_scalar_t>?, _ bias: UnsafePointer<vtrn_access_t>?,
                                  _ accumulate_out: UnsafePointer<vtrn_access_t>?, _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            guard let function = ActivationFunction(rawValue: Int(fn.rawValue)) else {
                let last = ActivationFunction.allCases.last!
                throw .invalidArgument("fn is \(fn.rawValue); accepted: VTRN_ACT_COPY (1) to VTRN_ACT_\(last.description.uppercased()) "
                                       + "(\(last.rawValue))")
            }
            guard let scale = try scalarOperand(scale, "scale") else { throw .invalidArgument("scale is NULL") }
            return Instruction(engine: .act, operation: .activate(
                destination: try accessPattern(dst, "dst"), function: function, source: try accessPattern(src, "src"), scale: scale,
                bias: try bias.map { (pointer) throws(VtrnError) in try accessPattern(pointer.pointee, "bias") },
                accumulateOut: try accumulate_out.map { (pointer) throws(VtrnError) in try accessPattern(pointer.pointee, "accumulate_out") }),
                sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_tensor_tensor(_ program: vtrn_program_t?, _ dst: vtrn_access_t, _ a: vtrn_access_t, _ b: vtrn_access_t,
                                       _ op: vtrn_alu_op_t, _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            Instruction(engine: .dve, operation: .tensorTensor(destination: try accessPattern(dst, "dst"), a: try accessPattern(a, "a"),
                                                               b: try accessPattern(b, "b"), op: try aluOp(op, "op")),
                        sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_tensor_scalar(_ program: vtrn_program_t?, _ engine_: vtrn_engine_flags_t, _ dst: vtrn_access_t,
                                       _ src: vtrn_access_t, _ op0: vtrn_alu_op_t, _ x0: UnsafePointer<vtrn_scalar_t>?,
                                       _ op1: vtrn_alu_op_t, _ x1: UnsafePointer<vtrn_scalar_t>?, _ reverse: UInt32,
                                       _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            guard let first = try scalarOperand(x0, "x0") else { throw .invalidArgument("x0 is NULL") }
            return Instruction(engine: try engine(engine_), operation: .tensorScalar(
                destination: try accessPattern(dst, "dst"), source: try accessPattern(src, "src"), op0: try aluOp(op0, "op0"), x0: first,
                op1: try aluOp(op1, "op1"), x1: try scalarOperand(x1, "x1"), reverse: reverse), sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_tensor_reduce(_ program: vtrn_program_t?, _ dst: vtrn_access_t, _ src: vtrn_access_t, _ op: vtrn_alu_op_t,
                                       _ negate: UInt32, _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            Instruction(engine: .dve, operation: .tensorReduce(destination: try accessPattern(dst, "dst"), source: try accessPattern(src, "src"),
                                                               op: try aluOp(op, "op"), negate: negate != 0),
                        sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_tensor_copy(_ program: vtrn_program_t?, _ engine_: vtrn_engine_flags_t, _ dst: vtrn_access_t,
                                     _ src: vtrn_access_t, _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            Instruction(engine: try engine(engine_), operation: .tensorCopy(destination: try accessPattern(dst, "dst"),
                                                                            source: try accessPattern(src, "src")),
                        sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_memset(_ program: vtrn_program_t?, _ engine_: vtrn_engine_flags_t, _ dst: vtrn_access_t, _ value: Float,
                                _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            Instruction(engine: try engine(engine_), operation: .memset(destination: try accessPattern(dst, "dst"), value: value),
                        sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_iota(_ program: vtrn_program_t?, _ dst: vtrn_access_t, _ steps_: UnsafePointer<Int32>?, _ offset: Int32,
                              _ channel_multiplier: Int32, _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            let destination = try accessPattern(dst, "dst")
            return Instruction(engine: .pool, operation: .iota(destination: destination, steps: try steps(steps_, destination),
                                                               offset: offset, channelMultiplier: channel_multiplier),
                               sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_affine_select(_ program: vtrn_program_t?, _ dst: vtrn_access_t, _ steps_: UnsafePointer<Int32>?,
                                       _ offset: Int32, _ channel_multiplier: Int32, _ cmp: vtrn_alu_op_t, _ on_true: vtrn_access_t,
                                       _ on_false_value: Float, _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            let destination = try accessPattern(dst, "dst")
            return Instruction(engine: .pool, operation: .affineSelect(
                destination: destination, steps: try steps(steps_, destination), offset: offset, channelMultiplier: channel_multiplier,
                compare: try aluOp(cmp, "cmp"), onTrue: try accessPattern(on_true, "on_true"), onFalse: on_false_value),
                sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_sem_signal(_ program: vtrn_program_t?, _ engine_: vtrn_engine_flags_t, _ semaphore: UInt32,
                                    _ op: vtrn_semaphore_op_t, _ value: UInt32) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            guard let semaphoreOp = SemaphoreOp(rawValue: Int(op.rawValue)) else {
                throw .invalidArgument("op is \(op.rawValue); accepted: VTRN_SEMAPHORE_ADD, VTRN_SEMAPHORE_SET")
            }
            return Instruction(engine: try engine(engine_), operation: .semaphoreSignal(semaphore: Int(semaphore), op: semaphoreOp, value: value))
        }
    }
}

@c @implementation
public func vtrn_program_sem_wait(_ program: vtrn_program_t?, _ engine_: vtrn_engine_flags_t, _ semaphore: UInt32,
                                  _ value: UInt32) -> vtrn_status_t {
    exported {
        try append(program) { () throws(VtrnError) in
            Instruction(engine: try engine(engine_), operation: .semaphoreWait(semaphore: Int(semaphore), value: value))
        }
    }
}

// MARK: - Kernels and fences

@c @implementation
public func vtrn_kernel_load(_ device: vtrn_device_t?, _ core: UInt32, _ program: vtrn_program_t?,
                             _ out: UnsafeMutablePointer<vtrn_kernel_t?>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.devices.lookup(handleBits(device))
        let program = try Handles.programs.lookup(handleBits(program)).object
        let out = try UnsafeMutablePointer.required(out, "out")
        let kernel = try entry.object.load(program, core: Int(core))
        out.pointee = handle(try Handles.register(kernel, in: Handles.kernels, runtimeToken: entry.runtimeToken))
    }
}

@c @implementation
public func vtrn_kernel_unload(_ kernel: vtrn_kernel_t?) -> vtrn_status_t {
    exported {
        guard kernel != nil else { return }
        try Handles.kernels.remove(handleBits(kernel), because: "it was unloaded").object.unload()
    }
}

@c @implementation
public func vtrn_kernel_execute(_ kernel: vtrn_kernel_t?, _ bindings: UnsafePointer<vtrn_binding_t>?, _ count: UInt32,
                                _ out: UnsafeMutablePointer<vtrn_fence_t?>?) -> vtrn_status_t {
    exported {
        let entry = try Handles.kernels.lookup(handleBits(kernel))
        let out = try UnsafeMutablePointer.required(out, "out")
        if count > 0 && bindings == nil { throw VtrnError.invalidArgument("bindings is NULL and count is \(count)") }
        var swiftBindings: [Kernel.Binding] = []
        for index in 0..<Int(count) {
            let binding = bindings![index]
            guard let name = try string(binding.name, "bindings[\(index)].name") else {
                throw VtrnError.invalidArgument("bindings[\(index)].name is NULL")
            }
            let memory: DeviceMemory
            do throws(VtrnError) {
                memory = try Handles.deviceMemory.lookup(UInt64(UInt(bitPattern: binding.memory))).object
            } catch {
                throw VtrnError(error.status, "bindings[\(index)].memory: \(error.message)")
            }
            swiftBindings.append(Kernel.Binding(name: name, memory: memory, offset: binding.offset))
        }
        let fence = try entry.object.execute(swiftBindings)
        out.pointee = handle(try Handles.register(fence, in: Handles.fences, runtimeToken: entry.runtimeToken))
    }
}

@c @implementation
public func vtrn_fence_wait(_ fence: vtrn_fence_t?, _ timeout_ns: UInt64) -> vtrn_status_t {
    exported {
        try Handles.fences.lookup(handleBits(fence)).object.wait(timeoutNanoseconds: timeout_ns)
    }
}

@c @implementation
public func vtrn_fence_status(_ fence: vtrn_fence_t?, _ status: UnsafeMutablePointer<vtrn_status_t>?) -> vtrn_status_t {
    exported {
        let fence = try Handles.fences.lookup(handleBits(fence)).object
        let status = try UnsafeMutablePointer.required(status, "status")
        status.pointee = vtrn_status_t(rawValue: UInt32(fence.status.rawValue))
    }
}

@c @implementation
public func vtrn_fence_get_info(_ fence: vtrn_fence_t?, _ info: UnsafeMutablePointer<vtrn_execution_info_t>?) -> vtrn_status_t {
    exported {
        let fence = try Handles.fences.lookup(handleBits(fence)).object
        let info = try vtrn_execution_info_t.checkOutput(info, name: "info")
        let current = fence.info
        var result = vtrn_execution_info_t()
        result.status = vtrn_status_t(rawValue: UInt32(current.status.rawValue))
        result.wall_ns = current.wallNanoseconds
        result.queued_ns = current.queuedNanoseconds
        result.device_ns = current.deviceNanoseconds
        result.device_cycles = current.deviceCycles
        // The five engines of the first version's arrays; the CC engine has fields of its own.
        withUnsafeMutableBytes(of: &result.instructions) { bytes in
            for (index, count) in current.instructions.prefix(5).enumerated() {
                bytes.storeBytes(of: UInt64(count), toByteOffset: index * 8, as: UInt64.self)
            }
        }
        withUnsafeMutableBytes(of: &result.engine_busy_ns) { bytes in
            for (index, busy) in current.busyNanoseconds.prefix(5).enumerated() { bytes.storeBytes(of: busy, toByteOffset: index * 8, as: UInt64.self) }
        }
        result.cc_instructions = UInt64(current.instructions[Engine.cc.rawValue])
        result.cc_busy_ns = current.busyNanoseconds[Engine.cc.rawValue]
        result.write(to: info)
    }
}

@c @implementation
public func vtrn_fence_destroy(_ fence: vtrn_fence_t?) -> vtrn_status_t {
    exported {
        guard fence != nil else { return }
        try Handles.fences.remove(handleBits(fence), because: "it was destroyed")
    }
}

// MARK: - Collectives in kernels

@c @implementation
public func vtrn_program_collective(_ program: vtrn_program_t?, _ comm: vtrn_comm_t?, _ kind: vtrn_collective_t,
                                    _ dst: vtrn_access_t, _ src: vtrn_access_t, _ op: vtrn_alu_op_t, _ peer: UInt32,
                                    _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        let communicator = try Handles.comms.lookup(handleBits(comm)).object
        try communicator.checkUsable()
        try append(program) { () throws(VtrnError) in
            let kind = try collectiveKind(kind)
            if kind == .permute {
                throw VtrnError.invalidArgument("COLLECTIVE_PERMUTE takes its pairs: use vtrn_program_collective_permute")
            }
            // A send has no destination and a receive no source: a zeroed access (dims 0) says so.
            let destination = dst.dims == 0 && !kind.writesDestination ? nil : try accessPattern(dst, "dst")
            let source = src.dims == 0 && !kind.readsSource ? nil : try accessPattern(src, "src")
            let reduction = kind.reduces ? try aluOp(op, "op") : AluOp.bypass
            return Instruction(engine: .cc, operation: .collective(CollectiveInstruction(
                group: communicator.group, kind: kind, op: reduction, peer: Int(peer), destination: destination, source: source)),
                sync: try synchronization(sync))
        }
    }
}

@c @implementation
public func vtrn_program_collective_permute(_ program: vtrn_program_t?, _ comm: vtrn_comm_t?, _ dst: vtrn_access_t,
                                            _ src: vtrn_access_t, _ targets: UnsafePointer<Int32>?,
                                            _ sync: UnsafePointer<vtrn_sync_t>?) -> vtrn_status_t {
    exported {
        let communicator = try Handles.comms.lookup(handleBits(comm)).object
        try communicator.checkUsable()
        let pairs = try permuteTargets(targets, communicator)
        try Validator.checkPermutePairs(pairs, size: communicator.size, groupName: "communicator \(communicator.serial)") { problem in
            VtrnError.invalidArgument("targets: \(problem)")
        }
        try append(program) { () throws(VtrnError) in
            Instruction(engine: .cc, operation: .collective(CollectiveInstruction(
                group: communicator.group, kind: .permute, targets: pairs, destination: try accessPattern(dst, "dst"),
                source: try accessPattern(src, "src"))), sync: try synchronization(sync))
        }
    }
}
