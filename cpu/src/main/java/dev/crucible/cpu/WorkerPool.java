package dev.crucible.cpu;

import dev.crucible.cpu.kernels.Parallel;

import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.IntConsumer;

/**
 * A private pool of {@code threads - 1} daemon workers; the calling thread works too. Tasks are handed out from a
 * shared counter, so which thread runs which task varies from run to run, and that is harmless: kernels make every
 * task own its outputs (see {@link Parallel}).
 */
final class WorkerPool implements Parallel, AutoCloseable {
    private final int threads;
    private final ExecutorService helpers; // null with one thread

    WorkerPool(int threads) {
        if (threads < 1) throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        this.threads = threads;
        AtomicInteger id = new AtomicInteger();
        this.helpers = threads == 1 ? null : Executors.newFixedThreadPool(threads - 1, r -> {
            Thread t = new Thread(r, "crucible-cpu-" + id.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
    }

    int threads() { return threads; }

    @Override
    public void forEach(int tasks, IntConsumer body) {
        if (tasks <= 0) return;
        if (helpers == null || tasks == 1) {
            for (int i = 0; i < tasks; i++) body.accept(i);
            return;
        }
        AtomicInteger next = new AtomicInteger();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        Runnable drain = () -> {
            int i;
            while ((i = next.getAndIncrement()) < tasks) {
                if (failure.get() != null) return;
                try {
                    body.accept(i);
                } catch (Throwable t) {
                    failure.compareAndSet(null, t);
                    return;
                }
            }
        };
        int n = Math.min(threads - 1, tasks - 1);
        Future<?>[] futures = new Future<?>[n];
        for (int h = 0; h < n; h++) futures[h] = helpers.submit(drain);
        drain.run();
        for (Future<?> f : futures) {
            try {
                f.get();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while waiting for kernel tasks", e);
            } catch (ExecutionException e) {
                failure.compareAndSet(null, e.getCause());
            }
        }
        Throwable t = failure.get();
        if (t instanceof RuntimeException re) throw re;
        if (t instanceof Error err) throw err;
        if (t != null) throw new IllegalStateException(t);
    }

    @Override
    public void close() {
        if (helpers != null) helpers.shutdownNow();
    }
}
