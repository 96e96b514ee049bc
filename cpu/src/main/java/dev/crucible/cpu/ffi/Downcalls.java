package dev.crucible.cpu.ffi;

/** What every FFM caller in the CPU backend does with what {@code MethodHandle.invokeExact} throws. */
public final class Downcalls {
    private Downcalls() {}

    /** Runtime exceptions and errors as they are (errors thrown here); anything checked wrapped. */
    public static RuntimeException rethrow(Throwable t) {
        if (t instanceof RuntimeException r) return r;
        if (t instanceof Error e) throw e;
        return new IllegalStateException(t);
    }
}
