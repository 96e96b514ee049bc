package dev.crucible.cli;

import dev.crucible.tensor.DType;
import picocli.CommandLine.Option;

/** --weights: the type a model's matrices are kept in for inference. */
final class WeightOptions {
    @Option(names = "--weights", paramLabel = "TYPE", defaultValue = "stored",
            description = "Type to keep weight matrices in: stored (as in the file: a Q4_0 GGUF stays Q4_0, a checkpoint f32), "
                    + "or f32, f16, bf16, q8_0, q4_0 (converted on load). Matmuls use them as stored. Default: ${DEFAULT-VALUE}.")
    String weights;

    /** Null for "stored". */
    DType type() { return ModelFiles.weightType(weights); }
}
