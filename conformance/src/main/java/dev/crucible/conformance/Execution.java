package dev.crucible.conformance;

import java.util.List;

/**
 * What one run of a case on one backend produced: every output of the op read back (in {@link
 * dev.crucible.backend.Op#outputs()} order, with the names the case gave them), and the problems the harness saw
 * (writes outside an output, unwritten output elements, modified inputs). {@code supported} is false when the
 * backend declined the op through {@code supports()}; nothing was run then.
 */
public record Execution(boolean supported, String op, List<String> names, List<HostArray> outputs,
                        List<String> problems) {

    static Execution unsupported(String op) {
        return new Execution(false, op, List.of(), List.of(), List.of());
    }

    /** The output with this name. */
    public HostArray output(String name) {
        int i = names.indexOf(name);
        if (i < 0) throw new IllegalArgumentException(op + " has no output named " + name + " (has " + names + ")");
        return outputs.get(i);
    }
}
