package dev.crucible.cli;

/** A mistake in what the user asked for; shown as one line without a stack trace. */
final class UserException extends RuntimeException {
    UserException(String message) {
        super(message);
    }
}
