package dev.crucible.qualify;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;

/**
 * A backend seen by a {@link Watchdog}: it remembers which op is running and since when, and counts ops, so a hang
 * can be named ("SwiGlu, op #14, has not returned after 5 s") and abandoned instead of blocking qualification.
 */
public final class WatchedBackend implements Backend {
    /**
     * The op in flight: its family, its index among the ops run since the last {@link #resetCount}, its start time
     * and the thread that called it (a hung op from an abandoned worker stays in flight; only the current worker's
     * ops count).
     */
    public record InFlight(String op, long index, long startNanos, Thread thread) {}

    private final Backend delegate;
    private volatile InFlight inFlight;
    private long count;

    public WatchedBackend(Backend delegate) {
        this.delegate = delegate;
    }

    public Backend delegate() { return delegate; }

    public InFlight inFlight() { return inFlight; }

    /** Ops run since the last reset. */
    public long count() { return count; }

    public void resetCount() { count = 0; }

    @Override
    public String name() { return delegate.name(); }

    @Override
    public Buffer allocate(DType type, long elements) { return delegate.allocate(type, elements); }

    @Override
    public void copyIn(Buffer dst, MemorySegment src) { delegate.copyIn(dst, src); }

    @Override
    public void copyOut(Buffer src, MemorySegment dst) { delegate.copyOut(src, dst); }

    @Override
    public boolean supports(Op op) { return delegate.supports(op); }

    @Override
    public void run(Op op) {
        inFlight = new InFlight(op.name(), count++, System.nanoTime(), Thread.currentThread());
        try {
            delegate.run(op);
        } finally {
            inFlight = null;
        }
    }

    @Override
    public void synchronize() { delegate.synchronize(); }

    @Override
    public int invariantMatmulRows() { return delegate.invariantMatmulRows(); }

    @Override
    public void close() { delegate.close(); }
}
