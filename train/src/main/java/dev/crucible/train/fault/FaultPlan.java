package dev.crucible.train.fault;

import dev.crucible.tensor.Rng;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * Faults to inject into a training run, for tests and the chaos benchmark. Given as a comma-separated spec (flag
 * {@code --faults} or environment {@code CRUCIBLE_FAULTS}); steps count from 1 like the progress display:
 * <pre>
 *   kill@S          the worker dies (exit 137, no cleanup) before step S
 *   kill@S.M        … before micro-batch M (from 1) of step S, in the middle of gradient accumulation
 *   kill-random=P   before each step, die with probability P (drawn from Rng(seed, step), so a plan is reproducible)
 *   hang@S          the worker stops making progress at step S (the supervisor's watchdog must notice)
 *   nan@S, inf@S    a NaN / +Inf is written into the gradients after the backward pass of step S
 *   spike@S         step S trains on a corrupted batch (random targets): a genuine loss and gradient spike
 *   ckpt-kill@S     the worker dies in the middle of writing the checkpoint of step S
 *   corrupt-ckpt@S  after the checkpoint of step S is written, a byte of its model.safetensors flips; the worker dies
 *   truncate-ckpt@S … its optimizer.safetensors is cut in half; the worker dies
 *   delete-ckpt@S   … its state.json is deleted; the worker dies
 *   disk-full@S     writing the checkpoint of step S fails with "No space left on device" (training continues)
 *   readonly@S      writing the checkpoint of step S fails with "Read-only file system" (training continues)
 * </pre>
 * Each fault fires once per run, across restarts: before firing it is recorded in {@code RUN/faults-fired}, so a
 * restarted worker does not hit the same injected kill forever. Bit flips in op outputs are a backend-level fault
 * ({@code --backend defective:bitflip=…}), not part of this plan.
 */
public final class FaultPlan {
    public enum Kind {
        KILL, KILL_RANDOM, HANG, NAN, INF, SPIKE, CKPT_KILL, CORRUPT_CKPT, TRUNCATE_CKPT, DELETE_CKPT, DISK_FULL, READONLY;

        String specName() { return name().toLowerCase(Locale.ROOT).replace('_', '-'); }
    }

    /** One fault: kind, step (from 1), micro-batch (from 1, 0 = any) or probability for kill-random. */
    public record Fault(Kind kind, int step, int micro, double probability) {
        public String id() {
            return kind == Kind.KILL_RANDOM ? kind.specName() : kind.specName() + "@" + step + (micro > 0 ? "." + micro : "");
        }
    }

    public static final FaultPlan NONE = new FaultPlan(List.of(), 0, null);

    private final List<Fault> faults;
    private final long seed;
    private final Path firedFile;
    private final Set<String> fired = new HashSet<>();

    private FaultPlan(List<Fault> faults, long seed, Path firedFile) {
        this.faults = faults;
        this.seed = seed;
        this.firedFile = firedFile;
        if (firedFile != null && Files.exists(firedFile)) {
            try {
                fired.addAll(Files.readAllLines(firedFile));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    /** Parses a spec; an unknown or malformed entry is an IllegalArgumentException naming it. */
    public static FaultPlan parse(String spec, long seed, Path runDir) {
        if (spec == null || spec.isBlank()) return NONE;
        List<Fault> list = new ArrayList<>();
        for (String raw : spec.split(",")) {
            String e = raw.trim();
            if (e.isEmpty()) continue;
            try {
                if (e.startsWith("kill-random=")) {
                    double p = Double.parseDouble(e.substring("kill-random=".length()));
                    if (!(p > 0 && p < 1)) throw new IllegalArgumentException();
                    list.add(new Fault(Kind.KILL_RANDOM, 0, 0, p));
                    continue;
                }
                int at = e.indexOf('@');
                if (at < 0) throw new IllegalArgumentException();
                Kind kind = Kind.valueOf(e.substring(0, at).toUpperCase(Locale.ROOT).replace('-', '_'));
                if (kind == Kind.KILL_RANDOM) throw new IllegalArgumentException();
                String where = e.substring(at + 1);
                int dot = where.indexOf('.');
                int step = Integer.parseInt(dot < 0 ? where : where.substring(0, dot));
                int micro = dot < 0 ? 0 : Integer.parseInt(where.substring(dot + 1));
                if (step < 1 || micro < 0 || (micro > 0 && kind != Kind.KILL)) throw new IllegalArgumentException();
                list.add(new Fault(kind, step, micro, 0));
            } catch (IllegalArgumentException ex) {
                throw new IllegalArgumentException("bad fault '" + e + "': expected KIND@STEP (kinds: kill, hang, nan, inf, spike, "
                        + "ckpt-kill, corrupt-ckpt, truncate-ckpt, delete-ckpt, disk-full, readonly), kill@STEP.MICRO or kill-random=P");
            }
        }
        return new FaultPlan(List.copyOf(list), seed, runDir == null ? null : runDir.resolve("faults-fired"));
    }

    public List<Fault> faults() { return faults; }

    public boolean isEmpty() { return faults.isEmpty(); }

    /** The fault of this kind due at (step, micro), if it has not fired yet; marks it fired (durably) before returning. */
    public synchronized Fault due(Kind kind, int step, int micro) {
        for (Fault f : faults) {
            boolean match = switch (f.kind()) {
                case KILL_RANDOM -> kind == Kind.KILL && micro == 0
                        && Rng.keyed(seed, Rng.key("fault.kill-random"), step).nextDouble() < f.probability();
                default -> f.kind() == kind && f.step() == step && f.micro() == micro;
            };
            if (!match) continue;
            String id = f.kind() == Kind.KILL_RANDOM ? f.id() + "@" + step : f.id();
            if (fired.contains(id)) continue;
            fired.add(id);
            if (firedFile != null) {
                try {
                    Files.write(firedFile, (id + "\n").getBytes(StandardCharsets.UTF_8), StandardOpenOption.CREATE,
                            StandardOpenOption.APPEND, StandardOpenOption.SYNC);
                } catch (IOException e) {
                    throw new UncheckedIOException(e);
                }
            }
            return f;
        }
        return null;
    }

    /**
     * How an injected kill or hang is carried out. In a worker process: {@link #PROCESS} (the JVM halts with exit
     * code 137, no shutdown hooks, no final checkpoint; or it sleeps forever). In-process tests use {@link #THROW},
     * which raises {@link Crash} so a test can "restart" by running a new trainer on the same run directory.
     */
    public interface Actions {
        void die();

        void hang();

        Actions PROCESS = new Actions() {
            public void die() { Runtime.getRuntime().halt(137); }

            public void hang() {
                while (true) {
                    try {
                        Thread.sleep(Long.MAX_VALUE);
                    } catch (InterruptedException ignored) {
                        // a hang does not end when asked to
                    }
                }
            }
        };

        Actions THROW = new Actions() {
            public void die() { throw new Crash("injected kill"); }

            public void hang() { throw new Crash("injected hang"); }
        };
    }

    /** A simulated crash (in-process tests only). */
    public static final class Crash extends RuntimeException {
        public Crash(String message) {
            super(message);
        }
    }
}
