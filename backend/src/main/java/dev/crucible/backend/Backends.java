package dev.crucible.backend;

import java.util.ArrayList;
import java.util.List;
import java.util.ServiceLoader;

/** Finds backends by name through {@link ServiceLoader}; the only discovery mechanism Crucible uses. */
public final class Backends {
    private Backends() {}

    public static List<BackendProvider> providers() {
        List<BackendProvider> out = new ArrayList<>();
        ServiceLoader.load(BackendProvider.class).forEach(out::add);
        return out;
    }

    public static List<String> names() {
        return providers().stream().map(BackendProvider::name).toList();
    }

    /**
     * Creates the named backend; an unknown or unavailable name gets a message listing the ones there are. A name
     * may carry options after a colon ("defective:matmul-mantissa=10"), handed to {@link BackendProvider#create(int,
     * String)}.
     */
    public static Backend create(String name, int threads) {
        int colon = name.indexOf(':');
        String base = colon < 0 ? name : name.substring(0, colon), options = colon < 0 ? "" : name.substring(colon + 1);
        for (BackendProvider p : providers()) {
            if (p.name().equals(base)) {
                if (!p.available()) throw new IllegalArgumentException("backend '" + base + "' is not available on this machine");
                return p.create(threads, options);
            }
        }
        throw new IllegalArgumentException("unknown backend '" + name + "'; available: " + String.join(", ", names()));
    }
}
