package dev.crucible.cli;

import dev.crucible.train.Trainer;

import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Map;

/**
 * Live training display: on a terminal one line rewritten in place (step, loss, tokens/s, ETA); otherwise a line
 * per log interval, so logs and CI output stay readable.
 */
final class Progress implements Trainer.Listener {
    private final PrintStream out;
    private final boolean tty;
    private final int every;
    private int steps;
    private boolean lineOpen;

    Progress(PrintStream out, int every) {
        this.out = out;
        this.tty = System.console() != null && System.console().isTerminal() && System.getenv("CI") == null;
        this.every = Math.max(1, every);
    }

    @Override
    public void started(int firstStep, int steps, long params, String resumedFrom) {
        this.steps = steps;
        out.printf("model: %,d parameters; training steps %d..%d%s%n", params, firstStep + 1, steps,
                resumedFrom == null ? "" : " (resumed from " + resumedFrom + ")");
    }

    @Override
    public void step(Trainer.StepStats s) {
        String line = String.format("step %5d/%d  loss %.4f  lr %.2e  grad %.3f  %,.0f tok/s  elapsed %s  eta %s%s",
                s.step(), s.steps(), s.loss(), s.lr(), s.gradNorm(), s.tokensPerSec(), time(s.elapsedSec()),
                time(s.etaSec()), s.skipped() ? "  (skipped)" : "");
        if (tty) {
            out.print("\r" + bar(s.step(), s.steps()) + " " + line + "\u001b[K");
            lineOpen = true;
        } else if (s.step() % every == 0 || s.step() == steps || s.step() == 1) {
            out.println(line);
        }
        out.flush();
    }

    @Override
    public void evaluated(int step, Map<String, Double> metrics) {
        endLine();
        StringBuilder b = new StringBuilder("eval  step " + step + ":");
        metrics.forEach((k, v) -> b.append(String.format("  %s %s", k, k.contains("accuracy") ? String.format("%.1f%%", 100 * v) : String.format("%.4f", v))));
        out.println(b);
    }

    @Override
    public void checkpointed(int step, Path dir) {
        if (!tty) out.println("checkpoint  " + dir);
    }

    @Override
    public void warning(String message) {
        endLine();
        out.println("warning: " + message);
    }

    private void endLine() {
        if (lineOpen) {
            out.println();
            lineOpen = false;
        }
    }

    private static String bar(int done, int total) {
        int width = 20, filled = (int) ((long) done * width / Math.max(1, total));
        return "[" + "#".repeat(filled) + ".".repeat(width - filled) + "]";
    }

    static String time(double seconds) {
        if (!Double.isFinite(seconds)) return "?";
        long s = Math.round(seconds);
        return s >= 3600 ? String.format("%dh%02dm", s / 3600, s % 3600 / 60) : String.format("%dm%02ds", s / 60, s % 60);
    }
}
