package dev.crucible.formats.gguf;

import java.util.List;

/**
 * One GGUF metadata value with its wire type. Integers of every width are held as {@code Long} (u64 as its bit
 * pattern), FLOAT32 as {@code Float}, FLOAT64 as {@code Double}, BOOL as {@code Boolean}, STRING as {@code String},
 * ARRAY as an unmodifiable {@code List} of such values, all of {@code elementType}.
 */
public record GgufValue(Type type, Type elementType, Object value) {

    /** GGUF value type ids. */
    public enum Type {
        UINT8(0, 1), INT8(1, 1), UINT16(2, 2), INT16(3, 2), UINT32(4, 4), INT32(5, 4), FLOAT32(6, 4), BOOL(7, 1),
        STRING(8, -1), ARRAY(9, -1), UINT64(10, 8), INT64(11, 8), FLOAT64(12, 8);

        public final int id;
        /** Bytes of a scalar of this type, -1 for variable-length types. */
        public final int size;

        Type(int id, int size) {
            this.id = id;
            this.size = size;
        }

        public static Type ofId(long id) {
            for (Type t : values()) if (t.id == id) return t;
            return null;
        }

        public boolean isInteger() {
            return this != FLOAT32 && this != FLOAT64 && this != BOOL && this != STRING && this != ARRAY;
        }
    }

    public static GgufValue u32(long v) { return new GgufValue(Type.UINT32, null, v); }

    public static GgufValue i32(long v) { return new GgufValue(Type.INT32, null, v); }

    public static GgufValue f32(float v) { return new GgufValue(Type.FLOAT32, null, v); }

    public static GgufValue bool(boolean v) { return new GgufValue(Type.BOOL, null, v); }

    public static GgufValue string(String v) { return new GgufValue(Type.STRING, null, v); }

    public static GgufValue strings(List<String> v) { return new GgufValue(Type.ARRAY, Type.STRING, List.copyOf(v)); }

    public static GgufValue i32s(int[] v) {
        Long[] boxed = new Long[v.length];
        for (int i = 0; i < v.length; i++) boxed[i] = (long) v[i];
        return new GgufValue(Type.ARRAY, Type.INT32, List.of(boxed));
    }

    /** The value as a long if it is an integer of any width, else null. */
    public Long asLong() {
        return type.isInteger() ? (Long) value : null;
    }

    /** A short form for people: scalars as is, strings quoted and cut, arrays as their type and length. */
    @Override
    public String toString() {
        return switch (type) {
            case STRING -> {
                String s = ((String) value).replace("\n", "\\n");
                yield "\"" + (s.length() > 60 ? s.substring(0, 57) + "..." : s) + "\"";
            }
            case ARRAY -> "[" + elementType.name().toLowerCase() + " × " + ((List<?>) value).size() + "]";
            case UINT64 -> Long.toUnsignedString((Long) value);
            default -> String.valueOf(value);
        };
    }
}
