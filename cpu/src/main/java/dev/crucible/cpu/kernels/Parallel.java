package dev.crucible.cpu.kernels;

import java.util.function.IntConsumer;

/**
 * Runs {@code tasks} independent tasks, numbered 0 … tasks-1, in any order and on any thread, and returns when all
 * are done. Kernels split their work into tasks of a fixed size chosen from the shape alone, never from the thread
 * count, and each task owns its outputs: that is what makes results bit-identical for any number of threads.
 * A task body must not call {@code forEach} again.
 */
@FunctionalInterface
public interface Parallel {
    void forEach(int tasks, IntConsumer body);

    /** Everything on the calling thread, in order. */
    Parallel SERIAL = (tasks, body) -> {
        for (int i = 0; i < tasks; i++) body.accept(i);
    };

    /** Tasks needed to cover {@code n} items in chunks of {@code chunk}. */
    static int chunks(long n, long chunk) {
        return (int) ((n + chunk - 1) / chunk);
    }
}
