package dev.crucible.train.task;

import dev.crucible.tensor.Rng;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

import static org.junit.jupiter.api.Assertions.*;

class ArithmeticTaskTest {
    private final ArithmeticTask task = new ArithmeticTask();

    @Test
    void documentedExamples() {
        assertEquals("347+285=", task.make(347, '+', 285).prompt());
        assertEquals("7+5+0=12,4+8+1=13,3+2+1=06,A=632\n", task.make(347, '+', 285).solution());
        assertEquals("7+5+0=12,4+8+1=13,0+2+1=03,A=332\n", task.make(47, '+', 285).solution());
        assertEquals("7-5-0=02,4-8-0=16,3-2-1=00,A=62\n", task.make(347, '-', 285).solution());
        assertEquals("N,7-5-0=02,4-8-0=16,3-2-1=00,A=-62\n", task.make(285, '-', 347).solution());
        assertEquals("9+1+0=10,A=10\n", task.make(9, '+', 1).solution());
        assertEquals("5-5-0=00,A=0\n", task.make(5, '-', 5).solution());
        assertEquals("0+0+0=00,A=0\n", task.make(0, '+', 0).solution());
        Problem p = task.make(347, '+', 285);
        assertEquals(632, p.answer());
        assertEquals("347+285=7+5+0=12,4+8+1=13,3+2+1=06,A=632\n", task.text(p));
        assertEquals(task.text(p), p.text());
    }

    @Test
    void exhaustiveUpToTwoDigits() {
        for (char op : new char[]{'+', '-'})
            for (long a = 0; a < 100; a++)
                for (long b = 0; b < 100; b++) verify(task.make(a, op, b));
    }

    @Test
    void randomThreeAndSixDigits() {
        Rng rng = Rng.keyed(7, 1);
        for (int i = 0; i < 20_000; i++) verify(task.make(rng.nextLong(1000), i % 2 == 0 ? '+' : '-', rng.nextLong(1000)));
        ArithmeticTask big = new ArithmeticTask(6, "+-");
        for (int i = 0; i < 5_000; i++) verify(big.sample(rng));
        verify(big.make(999_999, '+', 999_999));
        verify(big.make(0, '-', 999_999));
    }

    /** Re-derives every step of the written solution independently of the generator. */
    private void verify(Problem p) {
        String where = p.prompt() + p.solution();
        long expect = p.op() == '+' ? p.a() + p.b() : p.a() - p.b();
        assertEquals(expect, p.answer(), where);
        assertEquals("" + p.a() + p.op() + p.b() + "=", p.prompt(), where);
        assertTrue(p.solution().endsWith("\n"), where);
        for (char c : task.text(p).toCharArray()) assertTrue(ArithmeticTask.ALPHABET.indexOf(c) >= 0, where);

        String s = p.solution().substring(0, p.solution().length() - 1);
        boolean negative = s.startsWith("N,");
        assertEquals(p.op() == '-' && p.a() < p.b(), negative, where);
        if (negative) s = s.substring(2);
        long x = negative ? p.b() : p.a(), y = negative ? p.a() : p.b();
        String[] parts = s.split(",");
        int n = Math.max(Long.toString(x).length(), Long.toString(y).length());
        assertEquals(n + 1, parts.length, where);
        int carry = 0;
        StringBuilder digits = new StringBuilder();
        for (int i = 0; i < n; i++, x /= 10, y /= 10) {
            String st = parts[i];
            assertEquals(8, st.length(), where + " step " + st);
            char op = st.charAt(1);
            assertEquals(p.op(), op, where);
            assertEquals(op, st.charAt(3), where);
            assertEquals('=', st.charAt(5), where);
            int dx = st.charAt(0) - '0', dy = st.charAt(2) - '0', c = st.charAt(4) - '0';
            int out = st.charAt(6) - '0', d = st.charAt(7) - '0';
            assertEquals(x % 10, dx, where);
            assertEquals(y % 10, dy, where);
            assertEquals(carry, c, where);
            if (op == '+') assertEquals(dx + dy + c, 10 * out + d, where);
            else assertEquals(dx - dy - c, d - 10 * out, where);
            assertTrue(out == 0 || out == 1, where);
            assertTrue(d >= 0 && d <= 9, where);
            carry = out;
            digits.insert(0, d);
        }
        if (p.op() == '+') {
            if (carry == 1) digits.insert(0, '1');
        } else {
            assertEquals(0, carry, where); // x >= y never borrows out of the top digit
        }
        String mag = digits.toString().replaceFirst("^0+(?=.)", "");
        assertEquals("A=" + (negative ? "-" : "") + mag, parts[n], where);
        assertEquals(Optional.of(p.answer()), ArithmeticTask.parseAnswer(p.solution()), where);
        assertTrue(task.check(p, p.solution()), where);
        assertEquals(1.0, task.reward(p, p.solution()));
    }

    @Test
    void parseAndCheckAreRobust() {
        Problem p = task.make(347, '+', 285);
        for (String bad : new String[]{null, "", "garbage", "A=", "A=-", "A=x632", "A=632x", "A=0632", "A=-0",
                "A=+632", "A= 632", "7+5+0=12,", "A=1234567890123456789", "A=\u0663\n", "a=632"})
            assertEquals(Optional.empty(), ArithmeticTask.parseAnswer(bad), String.valueOf(bad));
        assertEquals(Optional.of(632L), ArithmeticTask.parseAnswer("A=632"));
        assertEquals(Optional.of(632L), ArithmeticTask.parseAnswer("A=632 \r\n"));
        assertEquals(Optional.of(632L), ArithmeticTask.parseAnswer("A=632\nA=1\n347+285=garbage"));
        assertEquals(Optional.of(632L), ArithmeticTask.parseAnswer("noise,,=A\nxx A=632\n"));
        assertEquals(Optional.of(-62L), ArithmeticTask.parseAnswer("N,7-5-0=02,A=-62\n"));
        assertEquals(Optional.of(0L), ArithmeticTask.parseAnswer("A=0\n"));
        assertEquals(Optional.of(999_999_999_999_999_999L), ArithmeticTask.parseAnswer("A=999999999999999999"));
        assertTrue(task.check(p, "7+5+0=12,4+8+1=13,3+2+1=06,A=632\n5+5+0=10,A=99\n"));
        assertTrue(task.check(p, "A=632"));
        assertFalse(task.check(p, "A=633\n"));
        assertFalse(task.check(p, "A=-632\n"));
        assertFalse(task.check(p, "A=6320\n"));
        assertFalse(task.check(p, "\u0000\uFFFF A=63"));
        assertEquals(0.0, task.reward(p, "A=633"));
        assertEquals(1.0, task.reward(p, "A=632\n"));
    }

    @Test
    void heldOutSplitIsStableAndDisjoint() {
        int held = 0, total = 0;
        for (char op : new char[]{'+', '-'})
            for (long a = 0; a < 1000; a++)
                for (long b = 0; b < 1000; b++, total++) if (task.isHeldOut(a, op, b)) held++;
        double frac = held / (double) total;
        assertTrue(frac > 0.045 && frac < 0.055, "held-out fraction " + frac);
        assertEquals(task.isHeldOut(task.make(12, '+', 34)), new ArithmeticTask(5, "+").isHeldOut(12, '+', 34));

        Rng rng = Rng.keyed(1, 2);
        int[] digitCounts = new int[4];
        for (int i = 0; i < 20_000; i++) {
            Problem p = task.sample(rng);
            assertFalse(task.isHeldOut(p), p.prompt());
            digitCounts[Long.toString(p.a()).length()]++;
        }
        for (int d = 1; d <= 3; d++)
            assertTrue(digitCounts[d] > 6000 && digitCounts[d] < 7300, "digit count " + d + ": " + digitCounts[d]);
        for (int i = 0; i < 2_000; i++) {
            Problem p = task.sampleHeldOut(rng);
            assertTrue(task.isHeldOut(p), p.prompt());
            verify(p);
        }
    }

    @Test
    void deterministicForSeed(@TempDir Path dir) throws Exception {
        Rng r1 = Rng.keyed(42, 9), r2 = Rng.keyed(42, 9);
        for (int i = 0; i < 1000; i++) assertEquals(task.sample(r1), task.sample(r2));
        String c = ArithmeticTask.corpus(task, 5, 500);
        assertEquals(c, ArithmeticTask.corpus(task, 5, 500));
        assertNotEquals(c, ArithmeticTask.corpus(task, 6, 500));
        String[] lines = c.split("\n");
        assertEquals(500, lines.length);
        assertTrue(c.endsWith("\n"));
        for (String line : lines) {
            int eq = line.indexOf('=');
            String prompt = line.substring(0, eq + 1);
            char op = prompt.indexOf('+') >= 0 ? '+' : '-';
            long a = Long.parseLong(prompt.substring(0, prompt.indexOf(op)));
            long b = Long.parseLong(prompt.substring(prompt.indexOf(op) + 1, eq));
            Problem p = task.make(a, op, b);
            assertEquals(task.text(p), line + "\n");
            assertFalse(task.isHeldOut(p));
        }
        Path f = dir.resolve("corpus.txt");
        task.writeCorpus(f, 5, 500);
        assertEquals(c, Files.readString(f));
        assertEquals(ArithmeticTask.corpus(task, 5, 100), c.substring(0, ArithmeticTask.corpus(task, 5, 100).length()));
    }

    @Test
    void rejectsBadConfiguration() {
        assertThrows(IllegalArgumentException.class, () -> new ArithmeticTask(0, "+"));
        assertThrows(IllegalArgumentException.class, () -> new ArithmeticTask(19, "+"));
        assertThrows(IllegalArgumentException.class, () -> new ArithmeticTask(3, ""));
        assertThrows(IllegalArgumentException.class, () -> new ArithmeticTask(3, "*"));
        assertThrows(IllegalArgumentException.class, () -> task.make(-1, '+', 2));
        assertThrows(IllegalArgumentException.class, () -> task.make(1, '*', 2));
        ArithmeticTask plus = new ArithmeticTask(2, "+");
        Rng rng = Rng.keyed(3);
        for (int i = 0; i < 100; i++) assertEquals('+', plus.sample(rng).op());
    }
}
