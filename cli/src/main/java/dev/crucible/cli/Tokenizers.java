package dev.crucible.cli;

import dev.crucible.formats.tokenizer.Tokenizer;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;

/** Resolves a --tokenizer argument: a built-in name, a tiktoken encoding name, or a file. */
final class Tokenizers {
    static final String EOS = "<|endoftext|>";
    static final Set<String> TIKTOKEN = Set.of("gpt2", "cl100k_base", "o200k_base");
    static final String ENV = "CRUCIBLE_TOKENIZERS";

    private Tokenizers() {}

    /**
     * "bytes": byte-level, no merges, with an end-of-text token (what the quickstart uses); "gpt2", "cl100k_base",
     * "o200k_base": tiktoken rank files looked up in {@code dir}, else in $CRUCIBLE_TOKENIZERS; anything else is a
     * path to a tokenizer.json or a .tiktoken file.
     */
    static Tokenizer resolve(String spec, Path dir) {
        if (spec.equals("bytes")) return Tokenizer.byteLevel(List.of(EOS));
        if (TIKTOKEN.contains(spec)) {
            Path d = dir;
            if (d == null && System.getenv(ENV) != null) d = Path.of(System.getenv(ENV));
            if (d == null) {
                throw new UserException("the '" + spec + "' tokenizer needs its rank file: pass --tokenizer-dir DIR or set "
                        + ENV + " to a directory holding " + spec + ".tiktoken");
            }
            return Tokenizer.named(spec, d);
        }
        Path p = Path.of(spec);
        if (!Files.exists(p)) {
            throw new UserException("tokenizer '" + spec + "' is neither a known name (bytes, gpt2, cl100k_base, o200k_base) nor an existing file");
        }
        return Tokenizer.load(p);
    }

    static int eosId(Tokenizer t) {
        return t.specialId(EOS).orElse(-1);
    }
}
