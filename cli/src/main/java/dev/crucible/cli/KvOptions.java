package dev.crucible.cli;

import dev.crucible.tensor.DType;
import picocli.CommandLine.Option;

import java.util.Locale;

/** --kv-type: the type the KV cache (a generate session's, or the serving path's paged one) keeps keys and values in. */
final class KvOptions {
    @Option(names = "--kv-type", paramLabel = "f32|f16", defaultValue = "f32",
            description = "KV-cache type: f32 (exact; the training forward's attention), or f16 (half the memory: "
                    + "twice the tokens in the same bytes; llama.cpp's default; on the CPU its attention is faster than f32's with the "
                    + "native kernels, slower without them). "
                    + "Default: ${DEFAULT-VALUE}.")
    String kvType;

    /** F32 or F16; anything else is a user error. */
    DType type() {
        return switch (kvType.strip().toLowerCase(Locale.ROOT)) {
            case "f32" -> DType.F32;
            case "f16" -> DType.F16;
            default -> throw new UserException("--kv-type must be f32 or f16, got '" + kvType + "'");
        };
    }
}
