package dev.crucible.backend;

import dev.crucible.tensor.DType;

import java.lang.foreign.MemorySegment;

/** Shared plumbing for backends whose memory is host memory: allocation and copies are plain memory copies. */
public abstract class HostBackend implements Backend {
    @Override
    public Buffer allocate(DType type, long elements) {
        return HostBuffer.allocate(type, elements);
    }

    @Override
    public void copyIn(Buffer dst, MemorySegment src) {
        MemorySegment d = HostBuffer.seg(dst);
        if (src.byteSize() != d.byteSize()) {
            throw new IllegalArgumentException("copyIn: " + src.byteSize() + " bytes into a buffer of " + d.byteSize());
        }
        d.copyFrom(src);
    }

    @Override
    public void copyOut(Buffer src, MemorySegment dst) {
        MemorySegment s = HostBuffer.seg(src);
        if (dst.byteSize() != s.byteSize()) {
            throw new IllegalArgumentException("copyOut: buffer of " + s.byteSize() + " bytes into " + dst.byteSize());
        }
        dst.copyFrom(s);
    }

    @Override
    public void synchronize() {
    }

    @Override
    public void close() {
    }
}
