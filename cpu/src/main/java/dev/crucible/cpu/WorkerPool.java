package dev.crucible.cpu;

import dev.crucible.cpu.kernels.Parallel;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;
import java.util.function.IntConsumer;

/**
 * A private pool of {@code threads - 1} daemon workers; the calling thread works too. Tasks are handed out from a
 * shared counter, so which thread runs which task varies from run to run, and that is harmless: kernels make every
 * task own its outputs (see {@link Parallel}).
 *
 * <p>A training step is a few hundred short kernels, so the hand-off must cost microseconds, not a scheduler time
 * slice. Workers spin briefly for the next job and then park; the caller waits for the tasks to be <em>done</em>,
 * not for every worker to show up: a worker that wakes late finds nothing left and goes back to sleep, so a busy
 * machine (a worker not scheduled in time) costs at most the work the caller does alone.
 */
public final class WorkerPool implements Parallel, AutoCloseable {
    /** Spin iterations (each a {@link Thread#onSpinWait}) before a waiting thread parks: tens of microseconds. */
    private static final int SPINS = 1 << 11;

    /** One forEach call. */
    private static final class Job {
        final int tasks;
        final IntConsumer body;
        final AtomicInteger next = new AtomicInteger();
        final AtomicInteger remaining;
        final AtomicReference<Throwable> failure = new AtomicReference<>();
        final Thread caller;

        Job(int tasks, IntConsumer body, Thread caller) {
            this.tasks = tasks;
            this.body = body;
            this.remaining = new AtomicInteger(tasks);
            this.caller = caller;
        }

        /** Claims and runs tasks until none is left; after a failure the rest are claimed and skipped. */
        void drain() {
            int i, done = 0;
            while ((i = next.getAndIncrement()) < tasks) {
                if (failure.get() == null) {
                    try {
                        body.accept(i);
                    } catch (Throwable t) {
                        failure.compareAndSet(null, t);
                    }
                }
                done++;
            }
            if (done > 0 && remaining.addAndGet(-done) == 0 && Thread.currentThread() != caller) LockSupport.unpark(caller);
        }
    }

    private final int threads;
    private final Thread[] workers;
    /** Incremented per job; workers compare it with the last one they saw. */
    private volatile long generation;
    private volatile Job current;
    private volatile boolean closed;

    public WorkerPool(int threads) {
        if (threads < 1) throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        this.threads = threads;
        this.workers = new Thread[threads - 1];
        for (int w = 0; w < workers.length; w++) {
            workers[w] = Thread.ofPlatform().daemon().name("crucible-cpu-" + (w + 1)).unstarted(this::work);
            workers[w].start();
        }
    }

    public int threads() { return threads; }

    private void work() {
        long seen = 0;
        while (!closed) {
            long g = generation;
            if (g == seen) {
                int spins = 0;
                while ((g = generation) == seen && !closed) {
                    if (++spins < SPINS) Thread.onSpinWait();
                    else LockSupport.park(this);
                }
                if (closed) return;
            }
            seen = g;
            Job job = current;
            if (job != null) job.drain();
        }
    }

    @Override
    public void forEach(int tasks, IntConsumer body) {
        if (tasks <= 0) return;
        if (workers.length == 0 || tasks == 1) {
            for (int i = 0; i < tasks; i++) body.accept(i);
            return;
        }
        Job job = new Job(tasks, body, Thread.currentThread());
        current = job;
        generation++; // single writer: only the backend's calling thread submits jobs
        for (Thread w : workers) LockSupport.unpark(w);
        job.drain();
        int spins = 0;
        while (job.remaining.get() > 0) {
            if (++spins < SPINS) Thread.onSpinWait();
            else LockSupport.park(this);
        }
        current = null;
        Throwable t = job.failure.get();
        if (t instanceof RuntimeException re) throw re;
        if (t instanceof Error err) throw err;
        if (t != null) throw new IllegalStateException(t);
    }

    @Override
    public void close() {
        closed = true;
        for (Thread w : workers) LockSupport.unpark(w);
    }
}
