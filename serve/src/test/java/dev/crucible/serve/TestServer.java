package dev.crucible.serve;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Backends;
import dev.crucible.engine.BatchEngine;
import dev.crucible.formats.tokenizer.Tokenizer;
import dev.crucible.model.BatchDecoder;
import dev.crucible.model.Llama;
import dev.crucible.model.LlamaConfig;

import java.util.List;

/** A tiny random-weight byte-level model behind a live server on 127.0.0.1 and a free port. */
final class TestServer implements AutoCloseable {
    final Backend be;
    final Llama model;
    final BatchDecoder decoder;
    final BatchEngine engine;
    final OpenAiServer server;
    final String base;

    TestServer(ServerConfig cfg, int slots, int maxQueue) {
        this(cfg, slots, maxQueue, 256);
    }

    /** {@code context}: a long one lets a test keep a slot busy for seconds with one stream (the model is tiny). */
    TestServer(ServerConfig cfg, int slots, int maxQueue, int context) {
        be = Backends.create("cpu", 2);
        model = new Llama(new LlamaConfig(257, 64, 2, 4, 2, 128, context, 10000f, 1e-5f, true), be);
        model.initRandom(11, 0.5);
        Tokenizer tok = Tokenizer.byteLevel(List.of("<|endoftext|>"));
        decoder = new BatchDecoder(model, slots, BatchDecoder.pagesFor((long) slots * context, 16), 16, 16); // the memory of slots × context
        engine = new BatchEngine(decoder, tok, tok.specialId("<|endoftext|>").getAsInt(), new BatchEngine.Config(maxQueue));
        server = new OpenAiServer(engine, tok, cfg.withPort(0));
        base = "http://127.0.0.1:" + server.port();
    }

    static TestServer start() {
        return new TestServer(ServerConfig.defaults("tiny"), 4, 16);
    }

    @Override
    public void close() {
        server.close();
        engine.close();
        decoder.close();
        model.close();
        be.close();
    }
}
