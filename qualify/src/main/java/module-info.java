/** Backend qualification: the conformance verdict, cross-backend parity, and a simulated defective accelerator. */
module dev.crucible.qualify {
    requires transitive dev.crucible.conformance;
    requires transitive dev.crucible.cpu;
    requires transitive dev.crucible.train;
    exports dev.crucible.qualify;
}
