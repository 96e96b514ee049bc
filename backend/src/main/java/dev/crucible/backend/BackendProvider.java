package dev.crucible.backend;

/** Found through {@link java.util.ServiceLoader}: one per backend implementation. */
public interface BackendProvider {
    /** Short name used on the command line, e.g. "ref", "cpu". */
    String name();

    /** Whether this backend can run here (e.g. a device is present). */
    default boolean available() { return true; }

    Backend create(int threads);

    /**
     * Creates the backend with options: the text after the first ':' of a name given to {@link Backends#create}
     * (e.g. "defective:matmul-mantissa=10"). Backends that take no options accept only an empty string.
     */
    default Backend create(int threads, String options) {
        if (!options.isEmpty()) throw new IllegalArgumentException("backend '" + name() + "' takes no options, got '" + options + "'");
        return create(threads);
    }
}
