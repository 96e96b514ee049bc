package dev.crucible.backend;

/** Found through {@link java.util.ServiceLoader}: one per backend implementation. */
public interface BackendProvider {
    /** Short name used on the command line, e.g. "ref", "cpu". */
    String name();

    /** Whether this backend can run here (e.g. a device is present). */
    default boolean available() { return true; }

    Backend create(int threads);
}
