package dev.crucible.conformance;

import java.time.Duration;
import java.util.List;

/**
 * Every case's result for one backend under test, in the suite's order.
 *
 * @param backend   name of the backend under test
 * @param reference name of the reference backend
 * @param seed      the seed all inputs were drawn from (rerun with it to reproduce a failure)
 * @param results   one per case and per gradient check
 * @param elapsed   wall time of the run
 */
public record Report(String backend, String reference, long seed, List<CaseResult> results, Duration elapsed) {

    public Report {
        results = List.copyOf(results);
    }

    public List<CaseResult> failures() {
        return results.stream().filter(CaseResult::failed).toList();
    }

    public List<CaseResult> unsupported() {
        return results.stream().filter(r -> r.status() == CaseResult.Status.UNSUPPORTED).toList();
    }

    /** True when nothing failed (unsupported cases are not failures). */
    public boolean passed() {
        return failures().isEmpty();
    }

    /** One line: counts per status. */
    public String summary() {
        long pass = results.stream().filter(CaseResult::passed).count();
        return String.format("%s vs %s (seed %d): %d passed, %d failed, %d unsupported of %d in %.1f s",
                backend, reference, seed, pass, failures().size(), unsupported().size(), results.size(),
                elapsed.toMillis() / 1000.0);
    }

    /** The summary followed by one line per case. */
    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder(summary()).append('\n');
        for (CaseResult r : results) sb.append("  ").append(r).append('\n');
        return sb.toString();
    }
}
