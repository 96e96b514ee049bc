package dev.crucible.formats.tokenizer;

import org.junit.jupiter.api.Assumptions;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/** The rank files and test vectors in ../shared, which a user's clone does not have; tests skip without them. */
final class SharedFiles {
    private static final Map<String, Tokenizer> LOADED = new ConcurrentHashMap<>();

    private SharedFiles() {
    }

    static Path shared() {
        return Path.of(System.getProperty("crucible.shared", "../../shared"));
    }

    static Path tokenizers() {
        Path dir = shared().resolve("data/tokenizers");
        Assumptions.assumeTrue(Files.isDirectory(dir),
                "skipped: " + dir + " is absent (set -Dcrucible.shared to the shared directory)");
        return dir;
    }

    static Path shakespeare() {
        Path file = shared().resolve("data/tinyshakespeare.txt");
        Assumptions.assumeTrue(Files.isRegularFile(file), "skipped: " + file + " is absent");
        return file;
    }

    /** Loaded once per test run: the rank files take a moment to read. */
    static Tokenizer tiktoken(String name) {
        Path dir = tokenizers();
        return LOADED.computeIfAbsent(name, n -> Tokenizer.named(n, dir));
    }
}
