package dev.crucible.train;

import dev.crucible.model.LlamaConfig;
import dev.crucible.train.fault.Guards;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Everything a training run needs, validated. Built from a nested map (a TOML or JSON config file) with sections
 * {@code model}, {@code train}, {@code optim}, {@code data}, {@code guard} and {@code replay}; unknown keys are errors, missing keys take the
 * defaults in {@link #DEFAULTS}. See docs/configuration.md for every key.
 */
public record TrainConfig(LlamaConfig model, OptimizerConfig optim, int batch, int seqLen, int gradAccum, int steps,
                          long seed, int evalInterval, int evalBatches, int checkpointInterval, int keepCheckpoints,
                          int logInterval, String data, double valFraction, int milestoneInterval,
                          Guards.Config guards, int replayInterval, double replayTolerance) {

    public TrainConfig {
        positive(batch, "train.batch");
        positive(seqLen, "train.seq_len");
        positive(gradAccum, "train.grad_accum");
        positive(steps, "train.steps");
        if (evalInterval < 0) throw new IllegalArgumentException("train.eval_interval must be >= 0 (0 = only at the end)");
        positive(evalBatches, "train.eval_batches");
        if (checkpointInterval < 0) throw new IllegalArgumentException("train.checkpoint_interval must be >= 0 (0 = only at the end)");
        positive(keepCheckpoints, "train.keep_checkpoints");
        positive(logInterval, "train.log_interval");
        if (seqLen > model.context()) {
            throw new IllegalArgumentException("train.seq_len " + seqLen + " exceeds model.context " + model.context());
        }
        if (milestoneInterval < 0) throw new IllegalArgumentException("train.milestone_interval must be >= 0 (0 = none)");
        if (replayInterval < 0) throw new IllegalArgumentException("replay.interval must be >= 0 (0 = off)");
        if (!(replayTolerance > 0)) throw new IllegalArgumentException("replay.tolerance must be positive");
        if (!(valFraction > 0 && valFraction < 0.5)) throw new IllegalArgumentException("data.val_fraction must be in (0, 0.5), got " + valFraction);
    }

    private static void positive(long v, String name) {
        if (v <= 0) throw new IllegalArgumentException(name + " must be positive, got " + v);
    }

    /** Tokens consumed by one optimizer step. */
    public long tokensPerStep() { return (long) batch * seqLen * gradAccum; }

    /** Every key with its default; a config file or flag may override any of them. */
    public static final Map<String, Object> DEFAULTS = defaults();

    private static Map<String, Object> defaults() {
        Map<String, Object> d = new LinkedHashMap<>();
        d.put("model.vocab", 257);
        d.put("model.dim", 128);
        d.put("model.layers", 4);
        d.put("model.heads", 4);
        d.put("model.kv_heads", 0); // 0: same as heads (plain multi-head attention)
        d.put("model.ffn", 384);
        d.put("model.context", 128);
        d.put("model.rope_theta", 10000.0);
        d.put("model.norm_eps", 1e-5);
        d.put("model.tied", false);
        d.put("train.batch", 16);
        d.put("train.seq_len", 128);
        d.put("train.grad_accum", 1);
        d.put("train.steps", 1000);
        d.put("train.seed", 1234L);
        d.put("train.eval_interval", 100);
        d.put("train.eval_batches", 8);
        d.put("train.checkpoint_interval", 100);
        d.put("train.keep_checkpoints", 3);
        d.put("train.log_interval", 10);
        d.put("train.milestone_interval", 0);
        d.put("optim.lr", 1e-3);
        d.put("optim.min_lr", 1e-4);
        d.put("optim.warmup", 50);
        d.put("optim.beta1", 0.9);
        d.put("optim.beta2", 0.95);
        d.put("optim.eps", 1e-8);
        d.put("optim.weight_decay", 0.1);
        d.put("optim.clip", 1.0);
        d.put("data.path", "");
        d.put("data.val_fraction", 0.05);
        d.put("guard.window", 128);
        d.put("guard.min_history", 32);
        d.put("guard.loss_z", 6.0);
        d.put("guard.grad_z", 0.0);
        d.put("guard.nonfinite", "skip");
        d.put("guard.loss_spike", "rollback");
        d.put("guard.grad_spike", "skip");
        d.put("replay.interval", 0);
        d.put("replay.tolerance", 1e-3);
        return java.util.Collections.unmodifiableMap(d);
    }

    /** Flattens {"model": {"dim": 64}} to {"model.dim": 64}; also accepts already-dotted keys. */
    public static Map<String, Object> flatten(Map<String, ?> nested) {
        Map<String, Object> out = new TreeMap<>();
        flatten("", nested, out);
        return out;
    }

    @SuppressWarnings("unchecked")
    private static void flatten(String prefix, Map<String, ?> m, Map<String, Object> out) {
        for (Map.Entry<String, ?> e : m.entrySet()) {
            String key = prefix.isEmpty() ? e.getKey() : prefix + "." + e.getKey();
            if (e.getValue() instanceof Map<?, ?> sub) flatten(key, (Map<String, ?>) sub, out);
            else out.put(key, e.getValue());
        }
    }

    /**
     * Builds a config from flat dotted keys over {@link #DEFAULTS}. Unknown keys and values of the wrong type are
     * reported together, with the known keys listed, so one fix makes the file right.
     */
    public static TrainConfig fromMap(Map<String, ?> flat) {
        List<String> problems = new ArrayList<>();
        Map<String, Object> v = new LinkedHashMap<>(DEFAULTS);
        for (Map.Entry<String, ?> e : flat.entrySet()) {
            if (!DEFAULTS.containsKey(e.getKey())) problems.add("unknown key '" + e.getKey() + "'");
            else v.put(e.getKey(), e.getValue());
        }
        if (!problems.isEmpty()) {
            throw new IllegalArgumentException(String.join("; ", problems) + " (known keys: " + String.join(", ", DEFAULTS.keySet()) + ")");
        }
        Reader r = new Reader(v);
        LlamaConfig model = new LlamaConfig(r.i("model.vocab"), r.i("model.dim"), r.i("model.layers"), r.i("model.heads"),
                r.i("model.kv_heads") == 0 ? r.i("model.heads") : r.i("model.kv_heads"), r.i("model.ffn"), r.i("model.context"), (float) r.d("model.rope_theta"),
                (float) r.d("model.norm_eps"), r.b("model.tied"));
        OptimizerConfig optim = new OptimizerConfig(r.d("optim.lr"), r.d("optim.min_lr"), r.i("optim.warmup"),
                r.d("optim.beta1"), r.d("optim.beta2"), r.d("optim.eps"), r.d("optim.weight_decay"), r.d("optim.clip"));
        return new TrainConfig(model, optim, r.i("train.batch"), r.i("train.seq_len"), r.i("train.grad_accum"),
                r.i("train.steps"), r.l("train.seed"), r.i("train.eval_interval"), r.i("train.eval_batches"),
                r.i("train.checkpoint_interval"), r.i("train.keep_checkpoints"), r.i("train.log_interval"),
                r.s("data.path"), r.d("data.val_fraction"), r.i("train.milestone_interval"),
                new Guards.Config(r.i("guard.window"), r.i("guard.min_history"), r.d("guard.loss_z"), r.d("guard.grad_z"),
                        Guards.Policy.parse(r.s("guard.nonfinite"), "guard.nonfinite"),
                        Guards.Policy.parse(r.s("guard.loss_spike"), "guard.loss_spike"),
                        Guards.Policy.parse(r.s("guard.grad_spike"), "guard.grad_spike")),
                r.i("replay.interval"), r.d("replay.tolerance"));
    }

    /** The config as the flat map {@link #fromMap} reads (for saving with a run and its checkpoints). */
    public Map<String, Object> toMap() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("model.vocab", model.vocab());
        m.put("model.dim", model.dim());
        m.put("model.layers", model.layers());
        m.put("model.heads", model.heads());
        m.put("model.kv_heads", model.kvHeads());
        m.put("model.ffn", model.ffn());
        m.put("model.context", model.context());
        m.put("model.rope_theta", (double) model.ropeTheta());
        m.put("model.norm_eps", (double) model.normEps());
        m.put("model.tied", model.tied());
        m.put("train.batch", batch);
        m.put("train.seq_len", seqLen);
        m.put("train.grad_accum", gradAccum);
        m.put("train.steps", steps);
        m.put("train.seed", seed);
        m.put("train.eval_interval", evalInterval);
        m.put("train.eval_batches", evalBatches);
        m.put("train.checkpoint_interval", checkpointInterval);
        m.put("train.keep_checkpoints", keepCheckpoints);
        m.put("train.log_interval", logInterval);
        m.put("optim.lr", optim.lr());
        m.put("optim.min_lr", optim.minLr());
        m.put("optim.warmup", optim.warmup());
        m.put("optim.beta1", optim.beta1());
        m.put("optim.beta2", optim.beta2());
        m.put("optim.eps", optim.eps());
        m.put("optim.weight_decay", optim.weightDecay());
        m.put("optim.clip", optim.clip());
        m.put("data.path", data);
        m.put("data.val_fraction", valFraction);
        m.put("train.milestone_interval", milestoneInterval);
        m.put("guard.window", guards.window());
        m.put("guard.min_history", guards.minHistory());
        m.put("guard.loss_z", guards.lossZ());
        m.put("guard.grad_z", guards.gradZ());
        m.put("guard.nonfinite", guards.nonFinite().name().toLowerCase(java.util.Locale.ROOT));
        m.put("guard.loss_spike", guards.lossSpike().name().toLowerCase(java.util.Locale.ROOT));
        m.put("guard.grad_spike", guards.gradSpike().name().toLowerCase(java.util.Locale.ROOT));
        m.put("replay.interval", replayInterval);
        m.put("replay.tolerance", replayTolerance);
        return m;
    }

    /** The same map nested by section, for writing as JSON or TOML. */
    public Map<String, Object> toNestedMap() {
        Map<String, Object> out = new LinkedHashMap<>();
        toMap().forEach((k, val) -> {
            int dot = k.indexOf('.');
            @SuppressWarnings("unchecked")
            Map<String, Object> sec = (Map<String, Object>) out.computeIfAbsent(k.substring(0, dot), x -> new LinkedHashMap<>());
            sec.put(k.substring(dot + 1), val);
        });
        return out;
    }

    private record Reader(Map<String, Object> v) {
        Object get(String k) { return v.get(k); }

        String s(String k) {
            Object o = get(k);
            if (o instanceof String s) return s;
            throw type(k, o, "a string");
        }

        boolean b(String k) {
            Object o = get(k);
            if (o instanceof Boolean b) return b;
            if (o instanceof String s && (s.equals("true") || s.equals("false"))) return Boolean.parseBoolean(s);
            throw type(k, o, "true or false");
        }

        long l(String k) {
            Object o = get(k);
            if (o instanceof Number n && (n instanceof Long || n instanceof Integer || n instanceof Short
                    || n instanceof java.math.BigInteger || n.doubleValue() == Math.rint(n.doubleValue()))) return n.longValue();
            if (o instanceof String s) {
                try {
                    return Long.parseLong(s.trim());
                } catch (NumberFormatException ignored) {
                    // reported below
                }
            }
            throw type(k, o, "an integer");
        }

        int i(String k) {
            long x = l(k);
            if (x < Integer.MIN_VALUE || x > Integer.MAX_VALUE) throw type(k, get(k), "an integer in int range");
            return (int) x;
        }

        double d(String k) {
            Object o = get(k);
            if (o instanceof Number n) return n.doubleValue();
            if (o instanceof String s) {
                try {
                    return Double.parseDouble(s.trim());
                } catch (NumberFormatException ignored) {
                    // reported below
                }
            }
            throw type(k, o, "a number");
        }

        static IllegalArgumentException type(String k, Object o, String want) {
            return new IllegalArgumentException(k + " must be " + want + ", got " + (o instanceof String ? "'" + o + "'" : o));
        }
    }
}
