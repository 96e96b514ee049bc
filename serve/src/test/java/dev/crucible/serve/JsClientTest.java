package dev.crucible.serve;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Real clients against a live server: the official {@code openai} npm package, and the chat page in headless
 * Chromium driven by {@code playwright-core}. Skipped, with the reason, where node, the npm packages
 * ({@code npm ci --prefix serve/src/test/js}) or Chromium ({@code apt-get install chromium}) are missing.
 */
class JsClientTest {
    static final Path JS = Path.of("src/test/js").toAbsolutePath();
    static TestServer ts;

    @BeforeAll
    static void start() { ts = new TestServer(ServerConfig.defaults("tiny").withApiKeys(List.of("test-key")), 4, 16); }

    @AfterAll
    static void stop() { ts.close(); }

    static String which(String exe) {
        for (String dir : System.getenv().getOrDefault("PATH", "").split(":")) {
            Path p = Path.of(dir, exe);
            if (Files.isExecutable(p)) return p.toString();
        }
        return null;
    }

    static void assumeNode(String pkg) {
        assumeTrue(which("node") != null, "node is not installed (Debian: apt-get install nodejs npm)");
        assumeTrue(Files.isDirectory(JS.resolve("node_modules").resolve(pkg)),
                "npm package " + pkg + " is not installed: run 'npm ci --prefix serve/src/test/js'");
    }

    static void node(List<String> args) throws IOException, InterruptedException {
        List<String> cmd = new ArrayList<>(List.of("node"));
        cmd.addAll(args);
        Process p = new ProcessBuilder(cmd).directory(JS.toFile()).redirectErrorStream(true).start();
        byte[][] out = new byte[1][];
        Thread reader = Thread.ofVirtual().start(() -> {
            try {
                out[0] = p.getInputStream().readAllBytes();
            } catch (IOException e) {
                out[0] = e.toString().getBytes(StandardCharsets.UTF_8);
            }
        });
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly();
            reader.join(2000);
            fail("node " + args + " timed out:\n" + (out[0] == null ? "" : new String(out[0], StandardCharsets.UTF_8)));
        }
        reader.join(5000);
        String text = out[0] == null ? "" : new String(out[0], StandardCharsets.UTF_8);
        assertEquals(0, p.exitValue(), "node " + args.getFirst() + " failed:\n" + text);
    }

    @Test
    void officialOpenAiClient() throws Exception {
        assumeNode("openai");
        node(List.of("openai-client.mjs", ts.base, "test-key"));
    }

    @Test
    void chatPageInHeadlessChromium() throws Exception {
        assumeNode("playwright-core");
        String chromium = which("chromium") != null ? which("chromium") : which("chromium-browser");
        assumeTrue(chromium != null, "chromium is not installed (Debian: apt-get install chromium)");
        node(List.of("chat-page.mjs", ts.base, chromium, "test-key"));
    }
}
