package dev.crucible.backend;

import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;

/**
 * The seam between math and hardware. A model emits {@link Op} records; a backend runs them. Everything else in
 * Crucible (conformance, parity, replay on a second backend) is built on this small interface.
 *
 * <p>Contract: {@link #run} may be asynchronous; {@link #copyOut} and {@link #synchronize} wait for earlier work.
 * {@link #supports} is truthful: the conformance suite checks every op a backend claims.
 */
public interface Backend extends AutoCloseable {
    String name();

    Buffer allocate(DType type, long elements);

    /** Host to device: {@code src} holds exactly the bytes of {@code dst}. */
    void copyIn(Buffer dst, MemorySegment src);

    /** Device to host: {@code dst} receives exactly the bytes of {@code src}. */
    void copyOut(Buffer src, MemorySegment dst);

    boolean supports(Op op);

    void run(Op op);

    void synchronize();

    /**
     * Row invariance of {@link Op.MatMul}: a matmul of up to this many rows of {@code a} gives each row the same bits
     * it gets in a matmul of that row alone (kernels for many rows may sum in another order than those for a few).
     * Callers that need a row's result not to depend on what else shares the call (a decode step batching many
     * sequences) split larger matmuls into pieces of at most this many rows. The default claims any size: a backend
     * whose kernels change order with the row count must say where.
     */
    default int invariantMatmulRows() { return Integer.MAX_VALUE; }

    @Override
    void close();
}
