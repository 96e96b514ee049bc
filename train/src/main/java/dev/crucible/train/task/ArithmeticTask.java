package dev.crucible.train.task;

import dev.crucible.tensor.Rng;

import java.io.BufferedWriter;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

/**
 * A synthetic arithmetic task (addition and subtraction of non-negative integers) written as character-level text a
 * tiny transformer can learn: the built-in training data, and the reward for RL post-training.
 *
 * <h2>Text format</h2>
 * The prompt is {@code a op b "="}. The solution works through the digits least significant first, one step per
 * digit position over {@code max(len(a), len(b))} positions (a missing digit is 0), steps separated by {@code ','}.
 * Each step writes its inputs and a two-character result: the carry/borrow out, then the result digit. The solution
 * ends with {@code "A=" answer "\n"}; the answer is written without leading zeros.
 * <ul>
 *   <li>Addition, step {@code x+y+c=Cd} with {@code x + y + c = 10·C + d} (c the carry in):
 *       {@code 347+285=} → {@code 7+5+0=12,4+8+1=13,3+2+1=06,A=632\n}; {@code 47+285=} →
 *       {@code 7+5+0=12,4+8+1=13,0+2+1=03,A=332\n}. A final carry becomes the answer's leading 1.</li>
 *   <li>Subtraction with {@code a >= b}, step {@code x-y-w=Bd} with {@code x - y - w = d - 10·B} (w the borrow in):
 *       {@code 347-285=} → {@code 7-5-0=02,4-8-0=16,3-2-1=00,A=62\n}.</li>
 *   <li>Subtraction with {@code a < b}: the marker {@code "N,"}, then the steps of {@code b - a}, and a negative answer:
 *       {@code 285-347=} → {@code N,7-5-0=02,4-8-0=16,3-2-1=00,A=-62\n}.</li>
 * </ul>
 * Every character is in {@link #ALPHABET}.
 *
 * <h2>Held-out split</h2>
 * About 5% of all problems, chosen by a stable hash of {@code (a, op, b)}, are held out: {@link #sample} never returns
 * them and {@link #sampleHeldOut} returns only them, so evaluation measures generalisation, not memorisation.
 *
 * <p>Instances are immutable and thread-safe; randomness comes only from the {@link Rng} passed in.
 */
public final class ArithmeticTask {
    /** Every character the prompts and solutions use. */
    public static final String ALPHABET = "0123456789+-=,AN\n";
    /** The held-out share is 1 / HELD_OUT_MODULUS of all problems. */
    private static final int HELD_OUT_MODULUS = 20;
    private static final long HELD_OUT_SALT = Rng.key("crucible.arithmetic.heldout");
    private static final long CORPUS_KEY = Rng.key("crucible.arithmetic.corpus");
    private static final int MAX_ATTEMPTS = 1_000_000;

    private final int maxDigits;
    private final String ops;

    /** maxDigits 3, ops "+-". */
    public ArithmeticTask() {
        this(3, "+-");
    }

    /**
     * @param maxDigits operands have 1..maxDigits digits (1..18)
     * @param ops the operators to draw from, a non-empty subset of "+-"
     */
    public ArithmeticTask(int maxDigits, String ops) {
        if (maxDigits < 1 || maxDigits > 18) throw new IllegalArgumentException("maxDigits must be 1..18, got " + maxDigits);
        if (ops == null || ops.isEmpty() || !ops.chars().allMatch(c -> c == '+' || c == '-'))
            throw new IllegalArgumentException("ops must be a non-empty combination of '+' and '-', got \"" + ops + "\"");
        this.maxDigits = maxDigits;
        this.ops = ops;
    }

    public int maxDigits() {
        return maxDigits;
    }

    public String ops() {
        return ops;
    }

    /** The problem {@code a op b} with its worked solution; any non-negative operands (held out or not). */
    public Problem make(long a, char op, long b) {
        if (a < 0 || b < 0) throw new IllegalArgumentException("operands must be non-negative: " + a + op + b);
        if (a > 999_999_999_999_999_999L || b > 999_999_999_999_999_999L)
            throw new IllegalArgumentException("operands must have at most 18 digits: " + a + op + b);
        String prompt = "" + a + op + b + "=";
        StringBuilder s = new StringBuilder();
        long answer;
        if (op == '+') {
            answer = a + b;
            steps(s, a, b, '+');
        } else if (op == '-') {
            answer = a - b;
            if (a >= b) {
                steps(s, a, b, '-');
            } else {
                s.append("N,");
                steps(s, b, a, '-');
            }
        } else {
            throw new IllegalArgumentException("unsupported operator '" + op + "'");
        }
        s.append("A=").append(answer).append('\n');
        return new Problem(a, op, b, prompt, s.toString(), answer);
    }

    /** Appends the digit steps of x op y (for '-', x >= y), each followed by ','. */
    private static void steps(StringBuilder s, long x, long y, char op) {
        int n = Math.max(digits(x), digits(y));
        int carry = 0;
        for (int i = 0; i < n; i++, x /= 10, y /= 10) {
            int dx = (int) (x % 10), dy = (int) (y % 10);
            s.append(dx).append(op).append(dy).append(op).append(carry).append('=');
            if (op == '+') {
                int sum = dx + dy + carry;
                carry = sum / 10;
                s.append(carry).append(sum % 10);
            } else {
                int diff = dx - dy - carry;
                carry = diff < 0 ? 1 : 0;
                s.append(carry).append(diff + 10 * carry);
            }
            s.append(',');
        }
    }

    private static int digits(long v) {
        int n = 1;
        while (v >= 10) {
            v /= 10;
            n++;
        }
        return n;
    }

    /** True for about 5% of all problems, by a stable hash of (a, op, b) (the same in every run and version). */
    public boolean isHeldOut(Problem p) {
        return isHeldOut(p.a(), p.op(), p.b());
    }

    public boolean isHeldOut(long a, char op, long b) {
        return Rng.keyed(HELD_OUT_SALT, a, op, b).nextLong(HELD_OUT_MODULUS) == 0;
    }

    /**
     * A training problem: operator uniform over {@link #ops()}, each operand's digit count uniform in 1..maxDigits,
     * then the operand uniform among numbers with that many digits (0..9 for one digit). Held-out problems are
     * redrawn. Consumes a deterministic number of draws from rng for a given rng state.
     */
    public Problem sample(Rng rng) {
        return draw(rng, false);
    }

    /** A held-out problem, drawn like {@link #sample} but keeping only held-out ones. */
    public Problem sampleHeldOut(Rng rng) {
        return draw(rng, true);
    }

    private Problem draw(Rng rng, boolean heldOut) {
        for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
            char op = ops.charAt(rng.nextInt(ops.length()));
            long a = operand(rng), b = operand(rng);
            if (isHeldOut(a, op, b) == heldOut) return make(a, op, b);
        }
        throw new IllegalStateException("no " + (heldOut ? "held-out" : "training") + " problem found for maxDigits "
                + maxDigits + ", ops \"" + ops + "\"");
    }

    private long operand(Rng rng) {
        int d = 1 + rng.nextInt(maxDigits);
        if (d == 1) return rng.nextInt(10);
        long lo = 1;
        for (int i = 1; i < d; i++) lo *= 10;
        return lo + rng.nextLong(9 * lo);
    }

    /** The full training text of p: prompt + solution, ending with "\n". */
    public String text(Problem p) {
        return p.prompt() + p.solution();
    }

    /**
     * The answer a completion states: the integer after the first {@code "A="}, in canonical form (optional '-',
     * no leading zeros), followed by the end of the line or of the text (trailing spaces allowed). Anything after that
     * line is ignored. Empty when there is no such answer (garbage, malformed number, overflow).
     */
    public static Optional<Long> parseAnswer(String completion) {
        if (completion == null) return Optional.empty();
        int at = completion.indexOf("A=");
        if (at < 0) return Optional.empty();
        int i = at + 2, n = completion.length();
        boolean negative = i < n && completion.charAt(i) == '-';
        if (negative) i++;
        int start = i;
        while (i < n && i - start <= 18 && completion.charAt(i) >= '0' && completion.charAt(i) <= '9') i++;
        int len = i - start;
        if (len == 0 || len > 18) return Optional.empty();
        if (completion.charAt(start) == '0' && (len > 1 || negative)) return Optional.empty();
        for (int j = i; j < n && completion.charAt(j) != '\n'; j++) {
            char c = completion.charAt(j);
            if (c != ' ' && c != '\t' && c != '\r') return Optional.empty();
        }
        long v = Long.parseLong(completion, start, i, 10);
        return Optional.of(negative ? -v : v);
    }

    /** True when the completion's stated answer (see {@link #parseAnswer}) equals the problem's exact answer. */
    public boolean check(Problem p, String completion) {
        return parseAnswer(completion).map(v -> v == p.answer()).orElse(false);
    }

    /** 1.0 when {@link #check} passes, else 0.0 (the RL reward). */
    public double reward(Problem p, String completion) {
        return check(p, completion) ? 1.0 : 0.0;
    }

    /**
     * Training text of {@code problems} training problems (held-out ones excluded), one per line. Problem i is drawn
     * from {@code Rng.keyed(seed, key("crucible.arithmetic.corpus"), i)}, so the corpus depends only on (task, seed).
     */
    public static String corpus(ArithmeticTask task, long seed, int problems) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < problems; i++) sb.append(task.text(task.corpusProblem(seed, i)));
        return sb.toString();
    }

    /** Writes {@link #corpus(ArithmeticTask, long, int)} to a UTF-8 file, streaming. */
    public void writeCorpus(Path file, long seed, int problems) {
        try (BufferedWriter w = Files.newBufferedWriter(file, StandardCharsets.UTF_8)) {
            for (int i = 0; i < problems; i++) w.write(text(corpusProblem(seed, i)));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + file + ": " + e.getMessage(), e);
        }
    }

    /** Training problem number i of the corpus for this seed. */
    public Problem corpusProblem(long seed, long i) {
        return sample(Rng.keyed(seed, CORPUS_KEY, i));
    }
}
