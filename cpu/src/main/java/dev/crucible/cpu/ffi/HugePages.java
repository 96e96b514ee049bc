package dev.crucible.cpu.ffi;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;

import static dev.crucible.cpu.ffi.Downcalls.rethrow;
import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * Large buffers on transparent huge pages (Linux): memory mapped by {@code mmap}, 2 MiB aligned, and advised with
 * {@code madvise(MADV_HUGEPAGE)} before it is first touched, so the kernel backs it with 2 MiB pages.
 *
 * <p>Why: decode streams every weight once per token, and with 4 KiB pages one core walks page tables every 64
 * cache lines. Measured here (bench/NOTES.md, eighth session): one thread summing 256 MiB read 17-20 GB/s on 4 KiB
 * pages and 27-30 GB/s on huge pages; two threads 21-33 against 29-33. Most distributions set THP to
 * {@code madvise}, where memory gets huge pages only when asked like this; {@code malloc} (what {@link Arena}
 * uses) never asks.
 *
 * <p>Only the placement changes, never what is computed. Memory is zero-filled (fresh anonymous pages) and freed
 * with its arena. Where the calls are missing (another OS) or fail, or with {@code CRUCIBLE_HUGE_PAGES=off}
 * ({@code -Dcrucible.hugePages=off}), buffers come from the arena as before.
 */
public final class HugePages {
    /** The setting: the system property {@code crucible.hugePages}, else the environment variable {@code CRUCIBLE_HUGE_PAGES}. */
    public static final String PROPERTY = "crucible.hugePages", ENV = "CRUCIBLE_HUGE_PAGES";

    /** The huge page size on x86-64 (and the alignment THP needs). */
    public static final long HUGE = 2L << 20;

    private static final int PROT_READ = 1, PROT_WRITE = 2, MAP_PRIVATE = 2, MAP_ANONYMOUS = 0x20, MADV_HUGEPAGE = 14;

    /** What {@link #state} decided: the calls, or null with why not. */
    record State(MethodHandle mmap, MethodHandle munmap, MethodHandle madvise, String status) {
        boolean on() { return mmap != null; }
    }

    private static State state;

    /** Decided once per process; a bad setting is refused on every call. */
    private static synchronized State state() {
        if (state == null) state = decide(System.getProperty(PROPERTY, System.getenv(ENV)), thpMode());
        return state;
    }

    static State decide(String setting, String mode) {
        if (setting != null && !setting.isBlank() && !setting.equalsIgnoreCase("auto") && !setting.equalsIgnoreCase("on")) {
            if (setting.equalsIgnoreCase("off") || setting.equals("0") || setting.equalsIgnoreCase("false")) {
                return new State(null, null, null, "huge pages: not used (" + ENV + "=" + setting + ")");
            }
            throw new IllegalArgumentException(ENV + " (or -D" + PROPERTY + ") must be auto or off, got '" + setting + "'");
        }
        if (!System.getProperty("os.name", "").toLowerCase(Locale.ROOT).contains("linux")) {
            return new State(null, null, null, "huge pages: not used (not Linux)");
        }
        if ("never".equals(mode)) {
            return new State(null, null, null, "huge pages: not used (transparent huge pages are off in this kernel)");
        }
        try {
            Linker linker = Linker.nativeLinker();
            SymbolLookup libc = linker.defaultLookup();
            return new State(
                    linker.downcallHandle(libc.findOrThrow("mmap"),
                            FunctionDescriptor.of(ADDRESS, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_LONG)),
                    linker.downcallHandle(libc.findOrThrow("munmap"), FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG)),
                    linker.downcallHandle(libc.findOrThrow("madvise"), FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT)),
                    "huge pages: buffers of 2 MiB and more advised for transparent huge pages (THP mode "
                            + (mode == null ? "unknown" : mode) + ")");
        } catch (RuntimeException | LinkageError e) {
            return new State(null, null, null, "huge pages: not used (mmap/madvise not found: " + e.getMessage() + ")");
        }
    }

    private HugePages() {
    }

    /** Whether large buffers are placed on huge pages. */
    public static boolean enabled() { return state().on(); }

    /** One line for users: whether huge pages are used, and if not, why. */
    public static String status() { return state().status(); }

    /** The kernel's THP mode (always, madvise or never), or null where it cannot be read. */
    static String thpMode() {
        try {
            String s = Files.readString(Path.of("/sys/kernel/mm/transparent_hugepage/enabled"));
            int a = s.indexOf('['), b = s.indexOf(']');
            return a >= 0 && b > a ? s.substring(a + 1, b) : null;
        } catch (java.io.IOException | RuntimeException e) {
            return null;
        }
    }

    /**
     * {@code bytes} of zero-filled memory, 64-byte aligned, freed when {@code arena} closes (or, for an automatic
     * arena, when the segment is unreachable). From {@code bytes >= }{@link #HUGE} on, and where enabled, a private
     * mapping 2 MiB aligned whose whole huge pages are advised as such (the tail stays on small pages, so nothing is
     * resident beyond the buffer); otherwise the arena's own allocation.
     */
    public static MemorySegment allocate(long bytes, Arena arena) {
        return allocate(state(), bytes, arena);
    }

    static MemorySegment allocate(State st, long bytes, Arena arena) {
        if (!st.on() || bytes < HUGE) return arena.allocate(Math.max(1, bytes), 64);
        long len = (bytes + 4095) & -4096L;                          // whole (small) pages
        long mapped = len + HUGE;                                   // slack to align the start to 2 MiB
        MemorySegment p;
        try {
            p = (MemorySegment) st.mmap().invokeExact(MemorySegment.NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0L);
        } catch (Throwable e) {
            throw rethrow(e);
        }
        if (p.address() == -1L || p.address() == 0L) return arena.allocate(bytes, 64);  // MAP_FAILED: let the arena try
        long base = p.address(), start = (base + HUGE - 1) & -HUGE;
        MemorySegment whole = p.reinterpret(mapped, arena, s -> unmap(st.munmap(), s.address(), mapped));
        MemorySegment seg = whole.asSlice(start - base, len);
        try {
            // A failure (a kernel without THP) leaves ordinary pages: nothing to undo.
            int ignored = (int) st.madvise().invokeExact(seg, bytes & -HUGE, MADV_HUGEPAGE);
        } catch (Throwable e) {
            throw rethrow(e);
        }
        return seg.asSlice(0, bytes);
    }

    private static void unmap(MethodHandle munmap, long address, long bytes) {
        try {
            int ignored = (int) munmap.invokeExact(MemorySegment.ofAddress(address), bytes);
        } catch (Throwable e) {
            throw rethrow(e);
        }
    }
}
