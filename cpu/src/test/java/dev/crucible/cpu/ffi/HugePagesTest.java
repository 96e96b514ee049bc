package dev.crucible.cpu.ffi;

import dev.crucible.backend.Buffer;
import dev.crucible.backend.HostBuffer;
import dev.crucible.cpu.CpuBackend;
import dev.crucible.tensor.DType;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/** Large buffers on transparent huge pages: zeroed, aligned, advised (the VMA's {@code hg} flag), freed with the arena. */
class HugePagesTest {

    private static void assumeOn() {
        assumeTrue(HugePages.enabled(), HugePages.status());
    }

    /** The VmFlags of the mapping that holds {@code address}, from /proc/self/smaps. */
    private static List<String> vmFlags(long address) throws IOException {
        boolean inside = false;
        for (String line : Files.readAllLines(Path.of("/proc/self/smaps"))) {
            int dash = line.indexOf('-'), space = line.indexOf(' ');
            if (dash > 0 && space > dash && line.substring(0, dash).matches("[0-9a-f]+")) {
                long lo = Long.parseUnsignedLong(line.substring(0, dash), 16), hi = Long.parseUnsignedLong(line.substring(dash + 1, space), 16);
                inside = address >= lo && address < hi;
            } else if (inside && line.startsWith("VmFlags:")) {
                return List.of(line.substring("VmFlags:".length()).trim().split("\\s+"));
            }
        }
        throw new AssertionError("no mapping holds 0x" + Long.toHexString(address));
    }

    @Test
    void largeBuffersAreZeroedAlignedAdvisedAndFreedWithTheirArena() throws IOException {
        assumeOn();
        long bytes = 3 * HugePages.HUGE + 12_345;
        MemorySegment seg;
        try (Arena arena = Arena.ofConfined()) {
            seg = HugePages.allocate(bytes, arena);
            assertEquals(bytes, seg.byteSize());
            assertEquals(0, seg.address() % HugePages.HUGE, "2 MiB aligned");
            for (long i = 0; i < bytes; i += 4093) assertEquals(0, seg.get(ValueLayout.JAVA_BYTE, i), "zero-filled at " + i);
            assertEquals(0, seg.get(ValueLayout.JAVA_BYTE, bytes - 1));
            seg.fill((byte) 7);
            assertEquals(7, seg.get(ValueLayout.JAVA_BYTE, bytes - 1));
            assertTrue(vmFlags(seg.address()).contains("hg"), "madvise(MADV_HUGEPAGE) on the mapping: " + vmFlags(seg.address()));
        }
        assertFalse(seg.scope().isAlive(), "freed with the arena");
        MemorySegment gone = seg;
        assertThrows(IllegalStateException.class, () -> gone.get(ValueLayout.JAVA_BYTE, 0));
    }

    @Test
    void smallBuffersComeFromTheArena() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment seg = HugePages.allocate(1000, arena);
            assertEquals(1000, seg.byteSize());
            assertEquals(0, seg.address() % 64);
            for (long i = 0; i < 1000; i++) assertEquals(0, seg.get(ValueLayout.JAVA_BYTE, i));
        }
    }

    @Test
    void theCpuBackendPutsLargeBuffersOnHugePagesAndFreesThemOnClose() throws IOException {
        assumeOn();
        try (CpuBackend be = new CpuBackend(2)) {
            Buffer big = be.allocate(DType.F16, 3L << 20);             // 6 MiB
            MemorySegment seg = HostBuffer.seg(big);
            assertEquals(6L << 20, seg.byteSize());
            assertTrue(vmFlags(seg.address()).contains("hg"), "advised: " + vmFlags(seg.address()));
            float[] x = new float[3 << 20];
            for (int i = 0; i < x.length; i++) x[i] = i % 1000;
            be.copyIn(big, MemorySegment.ofArray(dev.crucible.tensor.Blocks.encode(DType.F16, x, 0, x.length)));
            Buffer slice = big.slice(5, 3);
            assertEquals(DType.F16, slice.type());
            big.close();
            assertFalse(seg.scope().isAlive(), "freed when the buffer closes");

            Buffer small = be.allocate(DType.F32, 1000);                // 4 KB: the ordinary allocation
            assertEquals(4000, HostBuffer.seg(small).byteSize());
            small.close();
        }
    }

    @Test
    void settings() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> HugePages.decide("sometimes", "madvise"));
        assertTrue(e.getMessage().contains("CRUCIBLE_HUGE_PAGES") && e.getMessage().contains("auto or off"), e.getMessage());
        HugePages.State off = HugePages.decide("off", "madvise");
        assertFalse(off.on());
        assertTrue(off.status().contains("CRUCIBLE_HUGE_PAGES=off"), off.status());
        HugePages.State never = HugePages.decide(null, "never");
        assertFalse(never.on());
        assertTrue(never.status().contains("off in this kernel"), never.status());
        // Off: even a large buffer is the arena's, and still zeroed.
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment seg = HugePages.allocate(off, 3 * HugePages.HUGE, arena);
            assertEquals(3 * HugePages.HUGE, seg.byteSize());
            assertEquals(0, seg.get(ValueLayout.JAVA_LONG, 3 * HugePages.HUGE - 8));
        }
        if (System.getProperty("os.name", "").toLowerCase(java.util.Locale.ROOT).contains("linux")) {
            assertTrue(HugePages.decide("auto", "madvise").on(), "auto on Linux with THP madvise");
        }
    }
}
