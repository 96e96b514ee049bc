/** The {@code crucible} command: the only place that reads flags and environment and picks a backend. */
module dev.crucible.cli {
    requires dev.crucible.train;
    requires dev.crucible.engine;
    requires dev.crucible.serve;
    requires dev.crucible.qualify;
    requires dev.crucible.cpu;
    requires java.management;
    requires jdk.incubator.vector;   // bench generate measures the read bandwidth with vectors
    requires info.picocli;
    requires com.fasterxml.jackson.databind;
    requires com.fasterxml.jackson.dataformat.toml;
    requires org.knowm.xchart;
    requires java.desktop;
    opens dev.crucible.cli to info.picocli;
}
