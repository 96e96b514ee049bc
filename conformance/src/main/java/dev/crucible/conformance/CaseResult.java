package dev.crucible.conformance;

import dev.crucible.tensor.DType;

/**
 * The outcome of one case on one backend.
 *
 * @param backend   the backend under test
 * @param op        op family
 * @param shape     shape label
 * @param dtype     element type exercised
 * @param check     what was compared
 * @param error     for {@link Check#REFERENCE} the worst NMSE over the outputs (+Inf for a non-finite output); for
 *                  {@link Check#GRADIENT} the worst relative error against finite differences; NaN when not run
 * @param tolerance the largest error that passes
 * @param status    pass, fail, or unsupported (the backend's {@code supports()} declined the op: not a failure)
 * @param reason    why it failed (every problem found, joined by "; "), or why it was not run; empty on a pass
 */
public record CaseResult(String backend, String op, String shape, DType dtype, Check check, double error,
                         double tolerance, Status status, String reason) {

    public enum Check {
        /** Outputs against the reference backend's, on the same inputs; guards; determinism. */
        REFERENCE,
        /** A backward op's gradient against central finite differences of the reference forward. */
        GRADIENT,
        /** Two backends (or one at two thread counts) that must agree bit for bit. */
        BITWISE
    }

    public enum Status { PASS, FAIL, UNSUPPORTED }

    public boolean passed() { return status == Status.PASS; }

    public boolean failed() { return status == Status.FAIL; }

    @Override
    public String toString() {
        String kind = switch (check) {
            case REFERENCE -> "nmse";
            case GRADIENT -> "fd rel";
            case BITWISE -> "diffs";
        };
        String s = String.format("%-4s %-18s %-3s %-44s %s %.3g (tol %.0g)", status == Status.UNSUPPORTED ? "n/a"
                : status.name(), op, dtype, shape, kind, error, tolerance);
        return reason.isEmpty() ? s : s + ": " + reason;
    }
}
