package dev.crucible.cli;

import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;

import java.nio.file.Path;
import java.util.concurrent.Callable;

@Command(name = "plot", mixinStandardHelpOptions = true,
        description = "Draw a run's loss, throughput and accuracy curves (from RUN/metrics.jsonl) to PNG files in RUN.")
final class PlotCommand implements Callable<Integer> {
    @Parameters(paramLabel = "RUN", description = "Run directory (holds metrics.jsonl).")
    Path run;

    @Override
    public Integer call() throws Exception {
        for (Path p : Plots.draw(run)) System.out.println("wrote " + p);
        return 0;
    }
}
