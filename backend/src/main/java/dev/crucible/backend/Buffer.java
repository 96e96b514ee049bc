package dev.crucible.backend;

import dev.crucible.tensor.DType;

/**
 * Memory owned by a backend: {@code elements} values of one {@link DType}. A slice is a view into its parent and
 * never owns memory; closing the root frees it (closing a slice does nothing).
 */
public interface Buffer extends AutoCloseable {
    DType type();

    long elements();

    /** A view of {@code count} elements starting at element {@code offset}. */
    Buffer slice(long offset, long count);

    @Override
    void close();
}
