package dev.crucible.qualify;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.Callable;

/**
 * Runs work that drives backends on a separate daemon thread and watches the op each {@link WatchedBackend} has in
 * flight: an op that runs longer than the timeout is a hang. The worker is then interrupted and abandoned (a hung
 * device may never answer), and {@link HangException} names the op. Only a single op's time counts, so slow work
 * around the ops (a reference backend, host-side checks) never trips it.
 */
public final class Watchdog {
    private Watchdog() {
    }

    /** A backend op that did not return within the timeout. */
    public static final class HangException extends RuntimeException {
        private final String backend, op;
        private final long index;
        private final Duration timeout;

        HangException(String backend, WatchedBackend.InFlight f, Duration timeout) {
            super(f.op() + " on " + backend + " did not return within " + seconds(timeout));
            this.backend = backend;
            this.op = f.op();
            this.index = f.index();
            this.timeout = timeout;
        }

        public String backend() { return backend; }

        public String op() { return op; }

        public long index() { return index; }

        public Duration timeout() { return timeout; }
    }

    static String seconds(Duration d) {
        return d.toMillis() % 1000 == 0 ? d.toSeconds() + " s" : d.toMillis() / 1000.0 + " s";
    }

    /** Runs {@code task}; its exceptions propagate unchanged, a hang becomes a {@link HangException}. */
    public static <T> T call(List<WatchedBackend> watched, Duration timeout, Callable<T> task) {
        Object[] result = new Object[1];
        Throwable[] failure = new Throwable[1];
        Thread worker = Thread.ofPlatform().daemon().name("qualify-worker").unstarted(() -> {
            try {
                result[0] = task.call();
            } catch (Throwable t) {
                failure[0] = t;
            }
        });
        worker.start();
        long timeoutNanos = timeout.toNanos();
        try {
            while (true) {
                worker.join(Duration.ofMillis(20));
                if (!worker.isAlive()) break;
                for (WatchedBackend w : watched) {
                    WatchedBackend.InFlight f = w.inFlight();
                    if (f != null && f.thread() == worker && System.nanoTime() - f.startNanos() > timeoutNanos) {
                        worker.interrupt();
                        throw new HangException(w.name(), f, timeout);
                    }
                }
            }
        } catch (InterruptedException e) {
            worker.interrupt();
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while waiting for the backend", e);
        }
        if (failure[0] instanceof RuntimeException re) throw re;
        if (failure[0] instanceof Error err) throw err;
        if (failure[0] != null) throw new IllegalStateException(failure[0]);
        @SuppressWarnings("unchecked")
        T t = (T) result[0];
        return t;
    }
}
