/**
 * Backend qualification: the conformance verdict with per-op timeouts and a short training run against the
 * reference, cross-backend parity of a training step op by op, and a simulated defective accelerator.
 */
module dev.crucible.qualify {
    requires transitive dev.crucible.conformance;
    requires transitive dev.crucible.cpu;
    requires transitive dev.crucible.train;
    requires com.fasterxml.jackson.databind;
    exports dev.crucible.qualify;
    provides dev.crucible.backend.BackendProvider with dev.crucible.qualify.DefectiveBackend.Provider;
}
