/** Model definitions as op sequences: the dense Llama decoder (forward, backward, cached inference). */
module dev.crucible.model {
    requires transitive dev.crucible.backend;
    exports dev.crucible.model;
}
