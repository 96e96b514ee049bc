package dev.crucible.qualify;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * The defects of a {@link DefectiveBackend}, parsed from a spec string: comma-separated items, each a defect name
 * with an optional value. docs/qualify.md describes each one and what catches it.
 *
 * <pre>
 *   matmul-mantissa=N      MatMul rounds its inputs a and b to N explicit mantissa bits (1..22), like a silent
 *                          TF32 (10 bits) or HF32 mode; accumulation stays f32
 *   reduce-order           SumSquares sums in a random chunking and order, and the weight-gradient MatMul
 *                          (aᵀ·b +=) splits its K sum at a random point: last-bit differences from run to run
 *   bitflip=OP@RATE        each element of OP's outputs has one exponent bit flipped with probability RATE
 *   nan-on=OP[@BITS]       OP writes a NaN into its first output when an input value's low BITS mantissa bits
 *                          (default 16) match a fixed pattern: a rare input pattern, about one value in 2^BITS
 *   missing=OP             supports() is false for OP (repeat the item for several ops)
 *   hang=OP                OP never returns (sleeps forever, ignoring interrupts)
 *   seed=N                 seed of the defects' random draws (default 0)
 * </pre>
 */
public record Defects(int matmulMantissa, boolean reduceOrder, String bitflipOp, double bitflipRate, String nanOp,
                      int nanBits, Set<String> missing, Set<String> hang, long seed, String spec) {

    public static final int NO_ROUNDING = 23;

    public Defects {
        missing = Set.copyOf(missing);
        hang = Set.copyOf(hang);
    }

    public static final Defects NONE = new Defects(NO_ROUNDING, false, null, 0, null, 0, Set.of(), Set.of(), 0, "");

    public boolean none() {
        return matmulMantissa == NO_ROUNDING && !reduceOrder && bitflipOp == null && nanOp == null && missing.isEmpty()
                && hang.isEmpty();
    }

    /** The defect names in this spec, for messages ("matmul-mantissa=10", "hang=SwiGlu", …). */
    public List<String> names() {
        List<String> n = new ArrayList<>();
        if (matmulMantissa != NO_ROUNDING) n.add("matmul-mantissa=" + matmulMantissa);
        if (reduceOrder) n.add("reduce-order");
        if (bitflipOp != null) n.add("bitflip=" + bitflipOp + "@" + bitflipRate);
        if (nanOp != null) n.add("nan-on=" + nanOp + "@" + nanBits);
        missing.stream().sorted().forEach(o -> n.add("missing=" + o));
        hang.stream().sorted().forEach(o -> n.add("hang=" + o));
        return n;
    }

    /** Parses a spec; an empty or blank spec has no defects. Errors name the item and list the defects. */
    public static Defects parse(String spec) {
        String s = spec == null ? "" : spec.trim();
        int mantissa = NO_ROUNDING, nanBits = 16;
        boolean reduce = false;
        String flipOp = null, nanOp = null;
        double rate = 0;
        long seed = 0;
        Set<String> missing = new LinkedHashSet<>(), hang = new LinkedHashSet<>();
        for (String raw : s.isEmpty() ? new String[0] : s.split(",")) {
            String item = raw.trim();
            if (item.isEmpty()) continue;
            int eq = item.indexOf('=');
            String key = (eq < 0 ? item : item.substring(0, eq)).trim().toLowerCase(Locale.ROOT);
            String value = eq < 0 ? "" : item.substring(eq + 1).trim();
            try {
                switch (key) {
                    case "matmul-mantissa" -> {
                        mantissa = Integer.parseInt(need(key, value));
                        if (mantissa < 1 || mantissa > 22) throw bad(item, "mantissa bits must be in 1..22");
                    }
                    case "reduce-order" -> reduce = true;
                    case "bitflip" -> {
                        String[] p = need(key, value).split("@");
                        if (p.length != 2) throw bad(item, "write bitflip=OP@RATE, e.g. bitflip=MatMul@1e-4");
                        flipOp = OpIO.family(p[0]);
                        rate = Double.parseDouble(p[1]);
                        if (!(rate > 0 && rate <= 1)) throw bad(item, "rate must be in (0, 1]");
                    }
                    case "nan-on" -> {
                        String[] p = need(key, value).split("@");
                        nanOp = OpIO.family(p[0]);
                        if (p.length > 1) nanBits = Integer.parseInt(p[1]);
                        if (p.length > 2 || nanBits < 1 || nanBits > 23) throw bad(item, "write nan-on=OP[@BITS], BITS in 1..23");
                    }
                    case "missing" -> missing.add(OpIO.family(need(key, value)));
                    case "hang" -> hang.add(OpIO.family(need(key, value)));
                    case "seed" -> seed = Long.parseLong(need(key, value));
                    default -> throw bad(item, "unknown defect");
                }
            } catch (NumberFormatException e) {
                throw bad(item, "not a number: " + e.getMessage());
            }
        }
        return new Defects(mantissa, reduce, flipOp, rate, nanOp, nanBits, missing, hang, seed, s);
    }

    private static String need(String key, String value) {
        if (value.isEmpty()) throw new IllegalArgumentException("defect '" + key + "' needs a value (" + key + "=…)");
        return value;
    }

    private static IllegalArgumentException bad(String item, String why) {
        return new IllegalArgumentException("bad defect '" + item + "': " + why + " (defects: matmul-mantissa=N, "
                + "reduce-order, bitflip=OP@RATE, nan-on=OP[@BITS], missing=OP, hang=OP, seed=N)");
    }
}
