package dev.crucible.formats;

import java.nio.file.Path;

/**
 * A file that cannot be read as the format it claims to be: wrong magic, bad offsets, unknown types, malformed JSON.
 * The message names the file and the problem; callers show it to users as is, without a stack trace.
 */
public class FormatException extends RuntimeException {
    public FormatException(String message) {
        super(message);
    }

    public FormatException(Path file, String problem) {
        super(file + ": " + problem);
    }

    public FormatException(Path file, String problem, Throwable cause) {
        super(file + ": " + problem, cause);
    }
}
