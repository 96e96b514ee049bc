/**
 * The conformance suite: every op of the backend SPI, at an aligned and an odd shape, on fresh random inputs,
 * compared against the reference backend (NMSE against a stated tolerance), with guard regions around outputs,
 * a determinism check and finite-difference checks of every backward op. Modelled on llama.cpp's test-backend-ops.
 */
module dev.crucible.conformance {
    requires transitive dev.crucible.backend;
    exports dev.crucible.conformance;
}
