/** The OpenAI-compatible HTTP server over the batching engine (Helidon SE on virtual threads). */
module dev.crucible.serve {
    requires transitive dev.crucible.engine;
    requires io.helidon.webserver;
    requires io.helidon.http;
    requires io.helidon.common.socket;
    requires io.helidon.common.task;   // ClientWatch passes Helidon's interrupt check through
    requires com.fasterxml.jackson.databind;
    requires java.net.http;      // the load generator of crucible bench serve
    exports dev.crucible.serve;
}
