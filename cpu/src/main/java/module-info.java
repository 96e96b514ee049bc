/**
 * The CPU backend: every {@link dev.crucible.backend.Op} as a multithreaded Vector API kernel, with optional native
 * kernels (C through FFM, {@code dev.crucible.cpu.ffi}) for inference-shaped ops. Results are bit-identical for any
 * thread count (fixed-size work chunks, fixed-order reductions).
 */
module dev.crucible.cpu {
    requires transitive dev.crucible.backend;
    requires jdk.incubator.vector;
    exports dev.crucible.cpu;
    exports dev.crucible.cpu.kernels;
    exports dev.crucible.cpu.blas;
    exports dev.crucible.cpu.ffi;
    provides dev.crucible.backend.BackendProvider with dev.crucible.cpu.CpuBackend.Provider;
}
