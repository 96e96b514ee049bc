/** Inference: sampling and generation with a KV cache, over the same model definition used for training. */
module dev.crucible.engine {
    requires transitive dev.crucible.model;
    requires transitive dev.crucible.formats;
    requires jinjava; // chat templates (automatic module)
    exports dev.crucible.engine;
}
