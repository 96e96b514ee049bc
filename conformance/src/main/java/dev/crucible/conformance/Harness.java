package dev.crucible.conformance;

import dev.crucible.backend.Backend;
import dev.crucible.backend.Buffer;
import dev.crucible.backend.Op;
import dev.crucible.tensor.DType;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Puts one case on one backend: allocates its buffers there, copies the host inputs in, runs the op and reads every
 * output back. It knows nothing about any backend beyond the SPI: data moves only through {@link Backend#copyIn}
 * and {@link Backend#copyOut}, with host memory from a confined arena owned by the harness.
 *
 * <p>Buffers come in three kinds, named so outputs can be reported by name:
 * <ul>
 *   <li>{@link #in}: an input of exactly its size; after the run it must be unchanged (unless it is also an output);
 *   <li>{@link #inOut}: an output that starts from an input's values (accumulated gradients, in-place ops, AdamW
 *       state);
 *   <li>{@link #out}: an output that must be written completely; it starts filled with the sentinel, so an element
 *       the op forgot to write is caught.
 * </ul>
 * Both output kinds are the middle slice of a larger buffer with {@link #GUARD} sentinel elements before and after;
 * after the run the guards must hold the sentinel still, else the op wrote outside its output.
 */
public final class Harness implements AutoCloseable {
    /** Guard elements on each side of an output: more than the widest vector or warp a kernel might overrun by. */
    public static final int GUARD = 64;
    /**
     * The sentinel: a signalling NaN with a payload no arithmetic produces (arithmetic only makes quiet NaNs), so a
     * guard or an unwritten element that still holds these bits was certainly not written by the op.
     */
    public static final int SENTINEL = 0x7FA5_C3E1;

    /** The sentinel of an F16 output: a signalling half NaN (quiet bit clear) with a payload. */
    public static final short HALF_SENTINEL = 0x7D5C;

    private static final ValueLayout.OfInt BITS = ValueLayout.JAVA_INT_UNALIGNED;
    private static final ValueLayout.OfShort HALF_BITS = ValueLayout.JAVA_SHORT_UNALIGNED;

    private enum Kind { IN, IN_OUT, OUT }

    private record Slot(String name, Kind kind, Buffer root, Buffer view, DType type, int n, HostArray initial) {
        int offset() { return kind == Kind.IN ? 0 : GUARD; }

        long rootElements() { return kind == Kind.IN ? n : n + 2L * GUARD; }
    }

    private final Backend backend;
    private final Map<String, HostArray> inputs;
    private final Arena arena = Arena.ofConfined();
    private final Map<String, Slot> byName = new LinkedHashMap<>();
    private final Map<Buffer, Slot> byBuffer = new IdentityHashMap<>();

    public Harness(Backend backend, Map<String, HostArray> inputs) {
        this.backend = backend;
        this.inputs = inputs;
    }

    /** Builds the op with a fresh harness, runs it if the backend supports it, and reads back its outputs. */
    public static Execution execute(Backend backend, Map<String, HostArray> inputs, OpCase.OpFactory factory) {
        try (Harness h = new Harness(backend, inputs)) {
            Op op = factory.build(h);
            if (!backend.supports(op)) return Execution.unsupported(op.name());
            backend.run(op);
            backend.synchronize();
            return h.collect(op);
        }
    }

    /** The host values of a named input (to read shapes or derive other inputs). */
    public HostArray input(String name) {
        HostArray a = inputs.get(name);
        if (a == null) throw new IllegalArgumentException("no input named " + name + " (have " + inputs.keySet() + ")");
        return a;
    }

    /** An input buffer holding the named input; asking twice gives the same buffer. */
    public Buffer in(String name) {
        Slot s = byName.get(name);
        if (s != null) return s.view;
        HostArray a = input(name);
        Buffer root = backend.allocate(a.type(), a.length());
        Slot slot = new Slot(name, Kind.IN, root, root, a.type(), a.length(), a);
        register(slot);
        upload(slot);
        return root;
    }

    /** A guarded output that starts from the named input's values; asking twice gives the same buffer. */
    public Buffer inOut(String name) {
        Slot s = byName.get(name);
        if (s != null) {
            if (s.kind != Kind.IN_OUT) throw new IllegalStateException(name + " was already made as " + s.kind);
            return s.view;
        }
        HostArray a = input(name);
        return guarded(name, Kind.IN_OUT, a.type(), a.length(), a);
    }

    /** A guarded output of {@code n} elements, every element (and both guards) starting as the sentinel. */
    public Buffer out(String name, DType type, long n) {
        if (byName.containsKey(name)) throw new IllegalStateException("buffer " + name + " made twice");
        return guarded(name, Kind.OUT, type, Math.toIntExact(n), null);
    }

    private Buffer guarded(String name, Kind kind, DType type, int n, HostArray initial) {
        checkType(type);
        Buffer root = backend.allocate(type, n + 2L * GUARD);
        Slot slot = new Slot(name, kind, root, root.slice(GUARD, n), type, n, initial);
        register(slot);
        upload(slot);
        return slot.view;
    }

    private void register(Slot slot) {
        byName.put(slot.name, slot);
        byBuffer.put(slot.view, slot);
    }

    private void upload(Slot s) {
        MemorySegment host = arena.allocate(s.type.bytes(s.rootElements()), 64);
        if (s.type == DType.F16) {
            for (long i = 0; i < host.byteSize() / 2; i++) host.setAtIndex(HALF_BITS, i, HALF_SENTINEL);
        } else {
            for (long i = 0; i < host.byteSize() / 4; i++) host.setAtIndex(BITS, i, SENTINEL);
        }
        if (s.initial != null) s.initial.write(host, s.offset());
        backend.copyIn(s.root, host);
    }

    private MemorySegment download(Slot s) {
        MemorySegment host = arena.allocate(s.type.bytes(s.rootElements()), 64);
        backend.copyOut(s.root, host);
        return host;
    }

    /** Reads back the op's outputs in {@link Op#outputs()} order and checks guards, unwritten elements and inputs. */
    Execution collect(Op op) {
        List<String> names = new ArrayList<>();
        List<HostArray> values = new ArrayList<>();
        List<String> problems = new ArrayList<>();
        Set<Slot> written = Collections.newSetFromMap(new IdentityHashMap<>());
        for (Buffer b : op.outputs()) {
            Slot s = byBuffer.get(b);
            if (s == null) throw new IllegalStateException(op.name() + ": an output was not made by the harness");
            if (s.kind == Kind.IN) throw new IllegalStateException(op.name() + ": output " + s.name + " has no guards");
            written.add(s);
            MemorySegment host = download(s);
            checkGuards(s, host, problems);
            if (s.kind == Kind.OUT) checkWritten(s, host, problems);
            names.add(s.name);
            values.add(HostArray.read(s.type, host, GUARD, s.n));
        }
        for (Slot s : byName.values()) {
            if (written.contains(s)) continue;
            MemorySegment host = download(s);
            if (s.kind != Kind.IN) checkGuards(s, host, problems);
            HostArray now = HostArray.read(s.type, host, s.offset(), s.n);
            if (s.initial != null && !now.sameBits(s.initial)) problems.add("modified its input '" + s.name + "'");
        }
        return new Execution(true, op.name(), List.copyOf(names), List.copyOf(values), List.copyOf(problems));
    }

    private static void checkGuards(Slot s, MemorySegment host, List<String> problems) {
        for (int i = 0; i < GUARD; i++) {
            if (!sentinel(s, host, i)) {
                problems.add("wrote outside its output '" + s.name + "' (element " + (i - GUARD) + ", before the start)");
                break;
            }
        }
        for (int i = 0; i < GUARD; i++) {
            if (!sentinel(s, host, (long) GUARD + s.n + i)) {
                problems.add("wrote outside its output '" + s.name + "' (element " + (s.n + i) + " of " + s.n + ")");
                break;
            }
        }
    }

    private static void checkWritten(Slot s, MemorySegment host, List<String> problems) {
        int count = 0, first = -1;
        for (int i = 0; i < s.n; i++) {
            if (sentinel(s, host, (long) GUARD + i)) {
                if (first < 0) first = i;
                count++;
            }
        }
        if (count > 0) problems.add("left " + count + " element(s) of '" + s.name + "' unwritten (first " + first + ")");
    }

    /** Whether element i of a downloaded root still holds the sentinel. */
    private static boolean sentinel(Slot s, MemorySegment host, long i) {
        return s.type == DType.F16 ? host.getAtIndex(HALF_BITS, i) == HALF_SENTINEL : host.getAtIndex(BITS, i) == SENTINEL;
    }

    private static void checkType(DType type) {
        if (type != DType.F32 && type != DType.I32 && type != DType.F16) {
            throw new IllegalArgumentException("harness holds F32/I32/F16, not " + type);
        }
    }

    @Override
    public void close() {
        try {
            for (Slot s : byName.values()) s.root.close();
        } finally {
            arena.close();
        }
    }
}
