package dev.crucible.backend;

/** Thrown by {@link Backend#run} for an op (or dtype combination) the backend does not implement. */
public class UnsupportedOpException extends RuntimeException {
    public UnsupportedOpException(String backend, Op op) {
        super(backend + " does not support " + op.getClass().getSimpleName());
    }
}
