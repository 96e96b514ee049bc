package dev.crucible.serve;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The short smoke version of the soak test (`crucible bench load` runs the long one): 8 clients for 5 seconds
 * mixing streams, n = 2 completions, chat, abandoned streams, hung-up non-streamed requests and malformed requests
 * against a live server with 4 decode slots and a queue of 16, so 429s occur too. No 5xx, nothing lost or
 * duplicated, server healthy after.
 */
class MixedLoadTest {
    @Test
    void mixedTrafficLeavesTheServerHealthy() throws Exception {
        try (TestServer ts = TestServer.start()) {
            MixedLoad.Result r = MixedLoad.run(ts.base, null, 8, 5, 42);
            System.out.println("mixed load: " + r);
            assertTrue(r.ok(), r.toString());
            assertTrue(r.requests() > 20, "too few requests: " + r.requests());
            assertTrue(r.byKind().keySet().containsAll(java.util.Set.of("stream", "abandon", "hang_up", "malformed", "complete_n2", "chat")), r.byKind().toString());
        }
    }
}
