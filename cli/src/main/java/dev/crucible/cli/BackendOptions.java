package dev.crucible.cli;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Backends;
import picocli.CommandLine.Option;

/** --backend and --threads, shared by every command that computes. */
final class BackendOptions {
    @Option(names = "--backend", paramLabel = "NAME", defaultValue = "cpu",
            description = "Compute backend: cpu (fast kernels) or ref (scalar reference, slow). Default: ${DEFAULT-VALUE}.")
    String backend;

    @Option(names = "--threads", paramLabel = "N", description = "Worker threads (default: all cores). Results are identical for any count.")
    Integer threads;

    Backend create() {
        int n = threads == null ? Runtime.getRuntime().availableProcessors() : threads;
        if (n <= 0) throw new UserException("--threads must be positive, got " + n);
        return Backends.create(backend, n);
    }
}
