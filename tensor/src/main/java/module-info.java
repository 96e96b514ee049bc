/** Element types and shapes: the vocabulary every other module shares. */
module dev.crucible.tensor {
    exports dev.crucible.tensor;
}
