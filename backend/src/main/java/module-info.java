/** The backend SPI (ops as records) and the scalar reference backend. */
module dev.crucible.backend {
    requires transitive dev.crucible.tensor;
    exports dev.crucible.backend;
    exports dev.crucible.backend.ref;
    uses dev.crucible.backend.BackendProvider;
    provides dev.crucible.backend.BackendProvider with dev.crucible.backend.ref.RefBackend.Provider;
}
