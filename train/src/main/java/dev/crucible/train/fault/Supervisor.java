package dev.crucible.train.fault;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Runs the training worker as a child process and keeps it going: a crash or non-zero exit is followed by a
 * restart (the worker resumes from its newest good checkpoint), and so is a hang, detected by a watchdog on the
 * worker's heartbeat file. Restarts are bounded and spaced by an exponential backoff. Exit code 2 from the worker
 * means the input is wrong (bad config, missing data): restarting cannot help, so it is passed straight through.
 * Every decision is logged to the run's events.jsonl.
 */
public final class Supervisor {
    /** How hard to try. */
    public record Policy(int maxRestarts, double heartbeatTimeoutSec, double backoffSec, double maxBackoffSec) {
        public Policy {
            if (maxRestarts < 0) throw new IllegalArgumentException("--max-restarts must be >= 0");
            if (!(heartbeatTimeoutSec > 0)) throw new IllegalArgumentException("--heartbeat-timeout must be positive");
            if (backoffSec < 0 || maxBackoffSec < backoffSec) throw new IllegalArgumentException("bad restart backoff");
        }
    }

    public static final int USER_ERROR = 2;

    private final List<String> command;
    private final Path runDir;
    private final Policy policy;
    private final Events events;
    private volatile boolean stopping;
    private volatile Process child;

    public Supervisor(List<String> command, Path runDir, Policy policy) {
        this.command = List.copyOf(command);
        this.runDir = runDir;
        this.policy = policy;
        this.events = new Events(runDir, "supervisor");
    }

    /** Forwards a stop to the worker (SIGTERM: it writes a final checkpoint) and stops restarting. */
    public void stop() {
        stopping = true;
        Process p = child;
        if (p != null) p.destroy();
    }

    /** Waits for the current worker to exit after {@link #stop}. */
    public void awaitChild(long millis) throws InterruptedException {
        Process p = child;
        if (p != null) p.waitFor(millis, java.util.concurrent.TimeUnit.MILLISECONDS);
    }

    /** Supervises until the worker finishes, fails with a user error, or the restart budget is spent. */
    public int run() throws IOException, InterruptedException {
        Files.createDirectories(runDir);
        events.log("supervisor_start", null, String.join(" ", command.subList(Math.max(0, command.size() - 12), command.size())), null,
                "max_restarts", policy.maxRestarts(), "heartbeat_timeout_s", policy.heartbeatTimeoutSec());
        int restarts = 0;
        while (true) {
            long started = System.currentTimeMillis();
            child = new ProcessBuilder(command).inheritIO().start();
            events.log("worker_start", null, "pid " + child.pid(), null, "attempt", restarts + 1);
            int code;
            boolean hung = false;
            while (true) {
                if (child.waitFor(250, java.util.concurrent.TimeUnit.MILLISECONDS)) {
                    code = child.exitValue();
                    break;
                }
                long last = Math.max(started, heartbeatMillis());
                if (!stopping && System.currentTimeMillis() - last > policy.heartbeatTimeoutSec() * 1000) {
                    hung = true;
                    events.log("hang", lastStep(), String.format("no heartbeat for %.0f s", (System.currentTimeMillis() - last) / 1000.0),
                            "kill worker");
                    child.destroyForcibly();
                    child.waitFor();
                    code = child.exitValue();
                    break;
                }
            }
            if (code == 0 && !hung) {
                events.log("supervisor_exit", lastStep(), "worker finished", null, "restarts", restarts);
                return 0;
            }
            if (stopping) {
                events.log("supervisor_exit", lastStep(), "stopped on request", null, "restarts", restarts);
                return code == 0 ? 0 : 130;
            }
            if (code == USER_ERROR && !hung) {
                events.log("supervisor_exit", null, "worker reported a user error", "not restarting", "restarts", restarts);
                return USER_ERROR;
            }
            events.log("worker_exit", lastStep(), hung ? "hung" : "exit code " + code, null, "code", code);
            if (restarts >= policy.maxRestarts()) {
                events.log("supervisor_exit", lastStep(), "restart budget of " + policy.maxRestarts() + " exhausted", "giving up",
                        "restarts", restarts);
                System.err.println("crucible: the worker failed " + (restarts + 1) + " times; giving up (see " + events.file() + ")");
                return 1;
            }
            restarts++;
            double backoff = Math.min(policy.maxBackoffSec(), policy.backoffSec() * Math.pow(2, restarts - 1));
            System.err.printf("crucible: worker %s; restart %d/%d in %.1f s%n", hung ? "hung" : "exited with " + code,
                    restarts, policy.maxRestarts(), backoff);
            events.log("restart", lastStep(), hung ? "after hang" : "after exit code " + code, null,
                    "restart", restarts, "backoff_s", backoff);
            Thread.sleep((long) (backoff * 1000));
            if (stopping) return 130;
        }
    }

    private long heartbeatMillis() {
        try {
            return Files.getLastModifiedTime(runDir.resolve("heartbeat")).toMillis();
        } catch (IOException e) {
            return 0;
        }
    }

    private Integer lastStep() {
        try {
            String s = Files.readString(runDir.resolve("heartbeat")).trim();
            return Integer.parseInt(s.substring(0, s.indexOf(' ')));
        } catch (IOException | RuntimeException e) {
            return null;
        }
    }
}
