package dev.crucible.cli;

import dev.crucible.formats.FormatException;
import picocli.CommandLine;
import picocli.CommandLine.Command;

import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.NoSuchFileException;

/**
 * {@code crucible}: train, evaluate and run language models. Every subcommand lives in this package; this class
 * wires them and turns user errors (bad paths, bad configs, corrupt files) into one line on stderr and exit code 2,
 * keeping stack traces for genuine bugs.
 */
@Command(name = "crucible", mixinStandardHelpOptions = true, versionProvider = Main.Version.class,
        description = {"Train language models reliably and run them on any hardware.", ""},
        subcommands = {QuickstartCommand.class, TrainCommand.class, RunsCommand.class, ChaosCommand.class, GenerateCommand.class, ServeCommand.class, ExportCommand.class, InspectCommand.class, TokenizerCommand.class,
                DataCommand.class, PlotCommand.class, BenchCommand.class, QualifyCommand.class, ParityCommand.class, CommandLine.HelpCommand.class},
        footer = {"", "Run 'crucible COMMAND --help' for a command's options. Documentation: docs/ in the repository."})
public final class Main implements Runnable {
    /** Exit code for a mistake in the input (flags, paths, files, configs). */
    public static final int USER_ERROR = 2;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(spec.commandLine().getOut());
    }

    public static void main(String[] args) {
        System.exit(execute(args));
    }

    public static int execute(String... args) {
        return commandLine().execute(args);
    }

    public static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new Main());
        cl.setCaseInsensitiveEnumValuesAllowed(true);
        cl.setExecutionExceptionHandler(Main::handle);
        cl.setParameterExceptionHandler((ex, a) -> {
            PrintWriter err = ex.getCommandLine().getErr();
            err.println("error: " + ex.getMessage());
            err.println("Run '" + ex.getCommandLine().getCommandSpec().qualifiedName() + " --help' for usage.");
            err.flush();
            return USER_ERROR;
        });
        return cl;
    }

    private static int handle(Exception ex, CommandLine cl, CommandLine.ParseResult parsed) {
        PrintWriter err = cl.getErr();
        String message = userMessage(ex);
        if (message != null) {
            err.println("error: " + message);
            err.flush();
            return USER_ERROR;
        }
        err.println("internal error (please report): " + ex);
        ex.printStackTrace(err);
        err.flush();
        return 1;
    }

    /** The one-line message for errors caused by the input, or null for bugs. */
    static String userMessage(Throwable ex) {
        if (ex instanceof UncheckedIOException u) ex = u.getCause();
        return switch (ex) {
            case UserException u -> u.getMessage();
            case FormatException f -> f.getMessage();
            case IllegalArgumentException i -> i.getMessage();
            case NoSuchFileException n -> "no such file or directory: " + n.getFile();
            case AccessDeniedException a -> "permission denied: " + a.getFile();
            case FileAlreadyExistsException f -> "already exists: " + f.getFile();
            case IOException io -> "I/O error: " + io.getMessage();
            default -> null;
        };
    }

    static final class Version implements CommandLine.IVersionProvider {
        @Override
        public String[] getVersion() {
            String v = Main.class.getPackage().getImplementationVersion();
            return new String[]{"crucible " + (v == null ? "0.1.0-dev" : v) + " (Java " + Runtime.version() + ")"};
        }
    }
}
