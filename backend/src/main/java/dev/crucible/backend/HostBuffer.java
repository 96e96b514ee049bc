package dev.crucible.backend;

import dev.crucible.tensor.DType;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * A buffer in host memory, shared by the backends that compute on the CPU. The root owns a shared arena (kernels
 * touch it from several threads); slices are views. Accessors read and write little-endian F32/I32 elements.
 */
public final class HostBuffer implements Buffer {
    public static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    public static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;

    private final DType type;
    private final long elements;
    private final MemorySegment segment;
    private final Arena arena; // null for slices
    private final HostBuffer root; // the buffer this is a slice of (itself for roots)
    private final long rootOffset; // elements into the root

    private HostBuffer(DType type, long elements, MemorySegment segment, Arena arena) {
        this(type, elements, segment, arena, null, 0);
    }

    private HostBuffer(DType type, long elements, MemorySegment segment, Arena arena, HostBuffer root, long rootOffset) {
        this.type = type;
        this.elements = elements;
        this.segment = segment;
        this.arena = arena;
        this.root = root == null ? this : root;
        this.rootOffset = rootOffset;
    }

    /** Zero-filled, 64-byte aligned (a cache line, and a full AVX-512 vector). */
    public static HostBuffer allocate(DType type, long elements) {
        Arena arena = Arena.ofShared();
        MemorySegment seg = arena.allocate(Math.max(1, type.bytes(elements)), 64);
        return new HostBuffer(type, elements, seg, arena);
    }

    /**
     * A root buffer over {@code segment}, which {@code arena} owns and frees when the buffer closes (a backend that
     * places its memory itself, e.g. on huge pages). The segment must be zero-filled and 64-byte aligned, as
     * {@link #allocate}'s are.
     */
    public static HostBuffer owning(DType type, long elements, MemorySegment segment, Arena arena) {
        if (segment.byteSize() < type.bytes(elements)) {
            throw new IllegalArgumentException(segment.byteSize() + " bytes hold fewer than " + elements + " " + type + " elements");
        }
        return new HostBuffer(type, elements, segment.asSlice(0, type.bytes(elements)), arena);
    }

    /** Wraps memory owned elsewhere (e.g. a mapped weight file); closing does not free it. */
    public static HostBuffer wrap(DType type, MemorySegment segment) {
        long elements = segment.byteSize() / type.blockBytes() * type.blockSize();
        return new HostBuffer(type, elements, segment, null);
    }

    /** The host buffer behind a buffer handed to a CPU backend (a foreign buffer is a caller error). */
    public static HostBuffer of(Buffer b) {
        if (b instanceof HostBuffer h) return h;
        throw new IllegalArgumentException("not a host buffer: " + b.getClass().getName());
    }

    public static MemorySegment seg(Buffer b) {
        return of(b).segment;
    }

    @Override
    public DType type() { return type; }

    @Override
    public long elements() { return elements; }

    public MemorySegment segment() { return segment; }

    /** The buffer this one is a slice of (through any number of slices), or this buffer itself. */
    public HostBuffer root() { return root; }

    /** Where this buffer starts in {@link #root()}, in elements. */
    public long rootOffset() { return rootOffset; }

    @Override
    public HostBuffer slice(long offset, long count) {
        if (offset < 0 || count < 0 || offset + count > elements) {
            throw new IndexOutOfBoundsException("slice [" + offset + ", " + (offset + count) + ") of " + elements);
        }
        return new HostBuffer(type, count, segment.asSlice(type.bytes(offset), type.bytes(count)), null, root, rootOffset + offset);
    }

    public float getFloat(long i) { return segment.getAtIndex(F32, i); }

    public void setFloat(long i, float v) { segment.setAtIndex(F32, i, v); }

    public int getInt(long i) { return segment.getAtIndex(I32, i); }

    public void setInt(long i, int v) { segment.setAtIndex(I32, i, v); }

    @Override
    public void close() {
        if (arena != null) arena.close();
    }
}
