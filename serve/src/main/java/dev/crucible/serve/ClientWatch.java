package dev.crucible.serve;

import io.helidon.common.buffers.BufferData;
import io.helidon.common.buffers.DataReader;
import io.helidon.common.buffers.DataWriter;
import io.helidon.common.concurrency.limits.Limit;
import io.helidon.common.socket.HelidonSocket;
import io.helidon.common.socket.PeerInfo;
import io.helidon.common.task.InterruptableTask;
import io.helidon.webserver.ConnectionContext;
import io.helidon.webserver.ListenerContext;
import io.helidon.webserver.ProxyProtocolData;
import io.helidon.webserver.Router;
import io.helidon.webserver.ServerConnectionException;
import io.helidon.webserver.http1.Http1Config;
import io.helidon.webserver.http1.Http1ConnectionSelector;
import io.helidon.webserver.spi.ServerConnection;
import io.helidon.webserver.spi.ServerConnectionSelector;

import java.time.Duration;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.function.Supplier;

/**
 * Tells a request handler that its client closed the connection (FIN or RST) while the handler is busy and not
 * reading: a non-streamed completion waits silently for its whole answer, and without this a client that hangs up
 * keeps its sequence decoding and its KV pages reserved until max_tokens.
 *
 * <p>Why it is built this way: Helidon 4.5 gives a handler no way to learn that its connection closed. The handler
 * never sees the {@link ConnectionContext}; the socket only blocks on read; {@link DataReader#available()} counts bytes
 * already buffered and does no I/O; and {@link HelidonSocket#idle()} / {@link HelidonSocket#isConnected()} (the web
 * client's pool check) cannot serve a server socket: its read timeout is 0, so the idle monitor gives up after one
 * 101 ms poll, reports a live connection closed, leaves the socket's timeout at 101 ms and fails the next read. The
 * only sure sign of a closed connection is a read that returns end of stream (or fails), and a read on a second thread
 * must neither race the HTTP/1 parser nor lose the bytes of a pipelined request.
 *
 * <p>So the HTTP/1 connection is wrapped at the one place Helidon offers, its {@link ServerConnectionSelector}: the
 * parser's {@link DataReader} pulls its bytes through this object instead of straight from the socket. A handler
 * calls {@link #onHangUp} to start a read ahead on a virtual thread; at most one read is ever in flight, and the parser
 * takes its result (bytes, end of stream or failure) before it reads again, so a pipelined request is parsed as usual
 * and keep-alive is untouched. End of stream or a failed read means the client is gone. The watch of a connection is
 * bound, as a {@link ScopedValue}, on the connection's thread, which is also the thread that runs its handlers.
 */
final class ClientWatch implements Supplier<byte[]> {
    private static final ScopedValue<ClientWatch> CURRENT = ScopedValue.newInstance();

    /** The connection's own reader: it holds the bytes read to pick the protocol, and maps socket errors as Helidon does. */
    private final DataReader socket;
    /** Serialises reads of {@link #socket} (not thread-safe) between the parser's thread and a read ahead. */
    private final Object readLock = new Object();
    /** The read ahead in flight, or done and not yet handed to the parser; null when neither. Guarded by this. */
    private CompletableFuture<byte[]> ahead;

    private ClientWatch(DataReader socket) { this.socket = socket; }

    /**
     * An HTTP/1 connection selector whose connections carry a watch. It is built with Helidon's default HTTP/1 options
     * (the server sets none); Helidon's own HTTP/1 selector, added after it, is never reached.
     */
    static ServerConnectionSelector http1() {
        return new Selector(Http1ConnectionSelector.builder().config(Http1Config.create()).build());
    }

    /** The watch of the connection this request arrived on; null when it came through some other protocol. */
    static ClientWatch current() { return CURRENT.isBound() ? CURRENT.get() : null; }

    /**
     * Runs {@code action} once, on another thread, if the client closes the connection (or it fails) before the client
     * sends anything more. Bytes that do arrive first (a pipelined request) end the watch and are kept for the parser.
     * The action may also run after the request ended, when the idle connection closes; it must tolerate that.
     */
    void onHangUp(Runnable action) {
        CompletableFuture<byte[]> read;
        synchronized (this) {
            if (ahead == null) ahead = CompletableFuture.supplyAsync(this::read, r -> Thread.ofVirtual().name("crucible-client-watch").start(r));
            read = ahead;
        }
        read.whenComplete((bytes, failure) -> {
            if (bytes == null) action.run();             // end of stream, or the read failed (reset, closed)
        });
    }

    /** The parser's source of bytes: the read ahead's result if there is one, else a read now; null at end of stream. */
    @Override
    public byte[] get() {
        CompletableFuture<byte[]> read;
        synchronized (this) {
            read = ahead;
            ahead = null;
        }
        if (read == null) return read();
        try {
            return read.get();
        } catch (InterruptedException e) {
            // What an interrupted socket read does (Helidon interrupts a connection to close it): the connection ends.
            Thread.currentThread().interrupt();
            throw new ServerConnectionException("interrupted while waiting for data", e);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof RuntimeException r) throw r;
            if (e.getCause() instanceof Error err) throw err;
            throw new ServerConnectionException("failed to get data from socket", e.getCause());
        }
    }

    /** The bytes already buffered, else one read from the socket; null at end of stream. */
    private byte[] read() {
        synchronized (readLock) {
            if (socket.available() == 0) {
                try {
                    socket.pullData();
                } catch (DataReader.InsufficientDataAvailableException endOfStream) {
                    return null;
                }
            }
            return socket.readBytes(socket.available());
        }
    }

    /** Helidon's HTTP/1 selector, whose connections read through a watch. */
    private record Selector(ServerConnectionSelector http1) implements ServerConnectionSelector {
        @Override
        public int bytesToIdentifyConnection() { return http1.bytesToIdentifyConnection(); }

        @Override
        public Support supports(BufferData request) { return http1.supports(request); }

        @Override
        public Set<String> supportedApplicationProtocols() { return http1.supportedApplicationProtocols(); }

        @Override
        public ServerConnection connection(ConnectionContext ctx) {
            ClientWatch watch = new ClientWatch(ctx.dataReader());
            return new Watched(http1.connection(new WatchedContext(ctx, DataReader.create(watch))), watch);
        }
    }

    /** A connection that runs with its watch bound; Helidon's interrupt and idle handling pass straight through. */
    private record Watched(ServerConnection connection, ClientWatch watch) implements ServerConnection, InterruptableTask<Void> {
        @Override
        public void handle(Limit limit) throws InterruptedException {
            ScopedValue.where(CURRENT, watch).call(() -> {
                connection.handle(limit);
                return null;
            });
        }

        @Override
        public Duration idleTime() { return connection.idleTime(); }

        @Override
        public void close(boolean interrupt) { connection.close(interrupt); }

        @Override
        public boolean canInterrupt() { return connection instanceof InterruptableTask<?> t && t.canInterrupt(); }
    }

    /** The connection's context with the watched reader in place of the socket's. */
    private record WatchedContext(ConnectionContext ctx, DataReader reader) implements ConnectionContext {
        @Override
        public DataReader dataReader() { return reader; }

        @Override
        public ListenerContext listenerContext() { return ctx.listenerContext(); }

        @Override
        public ExecutorService executor() { return ctx.executor(); }

        @Override
        public DataWriter dataWriter() { return ctx.dataWriter(); }

        @Override
        public Router router() { return ctx.router(); }

        @Override
        public Optional<ProxyProtocolData> proxyProtocolData() { return ctx.proxyProtocolData(); }

        @Override
        public HelidonSocket serverSocket() { return ctx.serverSocket(); }

        @Override
        public PeerInfo remotePeer() { return ctx.remotePeer(); }

        @Override
        public PeerInfo localPeer() { return ctx.localPeer(); }

        @Override
        public boolean isSecure() { return ctx.isSecure(); }

        @Override
        public String socketId() { return ctx.socketId(); }

        @Override
        public String childSocketId() { return ctx.childSocketId(); }
    }
}
