package dev.crucible.formats.tokenizer;

import dev.crucible.formats.FormatException;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.text.Normalizer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.OptionalInt;
import java.util.Set;
import java.util.function.IntConsumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * A byte-level BPE tokenizer: text is cut into pre-tokens by a regex, each pre-token's UTF-8 bytes are merged into
 * tokens, and special tokens (whole strings such as {@code <|endoftext|>}) have ids of their own outside the merges.
 *
 * <p>Sources: tiktoken rank files (encoding matches tiktoken exactly), Hugging Face {@code tokenizer.json} with a
 * byte-level BPE model (encoding follows the tokenizers library), training on a corpus, or no merges at all.
 * Ids may have gaps (cl100k_base has unused ids below its last special token); {@link #vocabSize()} counts them,
 * because it is the size an embedding table needs.
 *
 * <p>Immutable and safe to share between threads; the only mutable state is a bounded cache of encoded pre-tokens.
 */
public final class Tokenizer {
    /** GPT-2's pre-tokenizer. */
    public static final String GPT2_PATTERN = Patterns.GPT2;
    /** cl100k_base's pre-tokenizer (GPT-3.5/4): case-insensitive contractions, numbers in runs of at most 3. */
    public static final String CL100K_PATTERN = Patterns.CL100K;
    /** o200k_base's pre-tokenizer (GPT-4o): also splits words at case changes. */
    public static final String O200K_PATTERN = Patterns.O200K;
    /** The pre-tokenizer used when training without a pattern. */
    public static final String DEFAULT_PATTERN = CL100K_PATTERN;

    /** What an id stands for, as a GGUF exporter needs to know it. */
    public enum TokenKind {
        /** A byte string produced by encoding text. */
        NORMAL,
        /** A special token, produced only by {@link #encodeWithSpecials}. */
        SPECIAL,
        /** An id inside {@link #vocabSize()} that no token has. */
        UNUSED
    }

    /** Pre-tokens longer than this (in chars) are not cached: they are rare and would crowd out the common ones. */
    private static final int CACHE_MAX_PIECE = 64;
    private static final int CACHE_SLOTS = 1 << 16;

    private final String name;
    private final String pattern;
    private final Pattern regex;
    private final BpeModel model;
    /** Merge rules in priority order as {left, right, result}; null when the model uses tiktoken ranks. */
    private final List<int[]> merges;
    private final Map<String, Integer> specials;
    private final String[] specialById;
    private final Pattern specialSplitter;
    private final Normalizer.Form normalizer;
    private final String chatTemplate;
    private final CachedPiece[] cache;
    private volatile List<int[]> derivedMerges;

    /**
     * @param javaPattern  pre-tokenizer, already in Java syntax
     * @param tokenBytes   bytes of each id; null for special and unused ids; distinct; its length is the vocab size
     * @param merges       {left, right, result} in priority order, or null to use tiktoken ranks (id = rank)
     * @param specials     text to id, in display order; ids must be null slots of tokenBytes
     */
    Tokenizer(String name, String javaPattern, byte[][] tokenBytes, List<int[]> merges, boolean wholePieceFirst,
              Map<String, Integer> specials, Normalizer.Form normalizer, String chatTemplate) {
        this.name = name;
        this.pattern = javaPattern;
        this.regex = Pattern.compile(javaPattern, Pattern.UNICODE_CHARACTER_CLASS);
        PairMap pairs = null;
        if (merges != null) {
            pairs = new PairMap(merges.size());
            // A pair listed twice keeps its last position, as the tokenizers library does.
            for (int i = 0; i < merges.size(); i++) {
                int[] m = merges.get(i);
                pairs.put(m[0], m[1], PairMap.value(i, m[2]));
            }
            this.merges = List.copyOf(merges);
        } else {
            this.merges = null;
        }
        this.model = new BpeModel(tokenBytes, pairs, wholePieceFirst);
        this.specials = Collections.unmodifiableMap(new LinkedHashMap<>(specials));
        this.specialById = new String[tokenBytes.length];
        for (Map.Entry<String, Integer> e : specials.entrySet()) specialById[e.getValue()] = e.getKey();
        this.specialSplitter = splitter(specials.keySet());
        this.normalizer = normalizer;
        this.chatTemplate = chatTemplate;
        this.cache = new CachedPiece[CACHE_SLOTS];
    }

    private Tokenizer(Tokenizer base, String chatTemplate) {
        this.name = base.name;
        this.pattern = base.pattern;
        this.regex = base.regex;
        this.model = base.model;
        this.merges = base.merges;
        this.specials = base.specials;
        this.specialById = base.specialById;
        this.specialSplitter = base.specialSplitter;
        this.normalizer = base.normalizer;
        this.chatTemplate = chatTemplate;
        this.cache = base.cache;
        this.derivedMerges = base.derivedMerges;
    }

    /** Longest special first, so that one special that is a prefix of another cannot hide it. */
    private static Pattern splitter(Set<String> specials) {
        if (specials.isEmpty()) return null;
        List<String> sorted = new ArrayList<>(specials);
        sorted.sort(Comparator.comparingInt(String::length).reversed().thenComparing(Comparator.naturalOrder()));
        StringBuilder sb = new StringBuilder();
        for (String s : sorted) {
            if (!sb.isEmpty()) sb.append('|');
            sb.append(Pattern.quote(s));
        }
        return Pattern.compile(sb.toString());
    }

    // ---------------------------------------------------------------- construction

    /** No merges: ids 0..255 are the bytes themselves, then the special tokens in order from 256. */
    public static Tokenizer byteLevel(List<String> specialTokens) {
        checkSpecials(specialTokens);
        byte[][] bytes = new byte[256 + specialTokens.size()][];
        for (int b = 0; b < 256; b++) bytes[b] = new byte[] {(byte) b};
        Map<String, Integer> specials = new LinkedHashMap<>();
        for (String s : specialTokens) specials.put(s, 256 + specials.size());
        return new Tokenizer("bytes", DEFAULT_PATTERN, bytes, List.of(), false, specials, null, null);
    }

    /** {@link #train(List, int, List, String, IntConsumer)} with the default pattern and no progress report. */
    public static Tokenizer train(List<String> texts, int vocabSize, List<String> specialTokens) {
        return train(texts, vocabSize, specialTokens, null, null);
    }

    /**
     * Learns byte-level BPE merges from a corpus. Ids: 0..255 the bytes, then one per learned token, then the
     * special tokens in order. Special-token strings inside the texts are cut out before counting, so they never
     * take part in merges. The result is a pure function of the arguments (ties go to the lowest pair of ids).
     *
     * @param vocabSize     bytes + learned tokens + specials; training stops early if the corpus runs out of pairs,
     *                      in which case {@link #vocabSize()} is smaller
     * @param pattern       pre-tokenizer regex in Java syntax; null for {@link #DEFAULT_PATTERN}
     * @param progress      called after each learned merge with the number learned so far; may be null
     * @throws IllegalArgumentException if vocabSize cannot hold the bytes and specials, or the pattern is invalid
     */
    public static Tokenizer train(List<String> texts, int vocabSize, List<String> specialTokens, String pattern,
                                  IntConsumer progress) {
        checkSpecials(specialTokens);
        String pat = pattern == null ? DEFAULT_PATTERN : pattern;
        int merges = vocabSize - 256 - specialTokens.size();
        if (merges < 0) {
            throw new IllegalArgumentException("vocab size " + vocabSize + " is smaller than the 256 bytes plus "
                    + specialTokens.size() + " special tokens");
        }
        Pattern regex;
        try {
            regex = Pattern.compile(pat, Pattern.UNICODE_CHARACTER_CLASS);
        } catch (PatternSyntaxException e) {
            throw new IllegalArgumentException("invalid pre-tokenizer pattern: " + e.getMessage(), e);
        }
        Pattern specialCut = splitter(new HashSet<>(specialTokens));
        Map<String, long[]> counts = new HashMap<>();
        for (String text : texts) {
            for (String segment : specialCut == null ? new String[] {text} : specialCut.split(text, -1)) {
                forEachPiece(regex, segment,
                        (s, from, to) -> counts.computeIfAbsent(s.substring(from, to), k -> new long[1])[0]++);
            }
        }
        BpeTrainer.Result learned = BpeTrainer.train(counts, merges, progress == null ? i -> { } : progress);
        byte[][] bytes = Arrays.copyOf(learned.tokenBytes(), learned.tokenBytes().length + specialTokens.size());
        Map<String, Integer> specials = new LinkedHashMap<>();
        for (String s : specialTokens) specials.put(s, learned.tokenBytes().length + specials.size());
        return new Tokenizer("trained", pat, bytes, learned.merges(), false, specials, null, null);
    }

    /**
     * Reads a tiktoken rank file (lines {@code base64(token) rank}). The pattern and special tokens come from
     * {@code NAME.json} beside it ({@code {"pat_str", "special_tokens"}}), or for gpt2, r50k_base, p50k_base,
     * cl100k_base and o200k_base from built-in knowledge.
     *
     * @throws FormatException if the file is missing or malformed, or nothing says what its pattern is
     */
    public static Tokenizer loadTiktoken(Path rankFile) {
        requireFile(rankFile);
        return TiktokenFile.read(rankFile, readAll(rankFile));
    }

    /**
     * One of the OpenAI encodings by name ("gpt2", "cl100k_base", "o200k_base"), read from {@code dir/NAME.tiktoken}.
     *
     * @throws FormatException if the file is missing or malformed
     */
    public static Tokenizer named(String name, Path dir) {
        Objects.requireNonNull(name, "name");
        if (name.isEmpty() || name.contains("/") || name.contains("\\") || name.startsWith(".")) {
            throw new IllegalArgumentException("not a tokenizer name: '" + name + "'");
        }
        Path file = dir.resolve(name + ".tiktoken");
        if (!Files.isRegularFile(file)) {
            throw new FormatException(file, "no such tokenizer file; named tokenizers are read from NAME.tiktoken in "
                    + dir + " (known names: gpt2, cl100k_base, o200k_base)");
        }
        return loadTiktoken(file);
    }

    /**
     * Reads a tokenizer, telling the kind from the content: a Hugging Face {@code tokenizer.json} (a JSON object with
     * a BPE "model") or a tiktoken rank file. A directory is read through the {@code tokenizer.json} inside it. For a
     * tokenizer.json, a {@code tokenizer_config.json} beside it supplies the chat template, if it has one.
     *
     * @throws FormatException if the file is missing, of another kind, or malformed; the message says what was
     *                         expected
     */
    public static Tokenizer load(Path file) {
        if (Files.isDirectory(file)) {
            Path json = file.resolve("tokenizer.json");
            if (!Files.isRegularFile(json)) {
                throw new FormatException(file, "is a directory without a tokenizer.json; expected a tokenizer.json "
                        + "or a .tiktoken rank file");
            }
            file = json;
        }
        requireFile(file);
        byte[] content = readAll(file);
        int i = 0;
        while (i < content.length && (content[i] == ' ' || content[i] == '\n' || content[i] == '\r'
                || content[i] == '\t')) i++;
        if (i == content.length) {
            throw new FormatException(file, "is empty; expected a Hugging Face tokenizer.json or a .tiktoken rank file");
        }
        if (content[i] == '{') return HuggingFaceJson.read(file, content);
        return TiktokenFile.read(file, content);
    }

    /** The same tokenizer carrying a chat template (Jinja), saved beside tokenizer.json; null removes it. */
    public Tokenizer withChatTemplate(String template) {
        return new Tokenizer(this, template);
    }

    /**
     * Writes a Hugging Face {@code tokenizer.json}: BPE model with GPT-2-style vocab strings and "a b" merges, special
     * tokens as added tokens, pre-tokenizer Split(pattern, Isolated) then ByteLevel, ByteLevel decoder. A tokenizer
     * read from tiktoken ranks is written with every merge the ranks imply and {@code ignore_merges}, which is how
     * the tokenizers library reproduces tiktoken. If there is a chat template, it is stored as "chat_template" in a
     * {@code tokenizer_config.json} beside the file (created, or updated keeping its other keys).
     *
     * @throws FormatException if the file cannot be written
     */
    public void saveHuggingFace(Path tokenizerJson) {
        HuggingFaceJson.write(this, tokenizerJson);
    }

    // ---------------------------------------------------------------- encoding

    /** The ids of a text; special-token strings in it are encoded as ordinary text. */
    public int[] encode(String text) {
        IntList out = new IntList(text.length() / 3 + 4);
        encodeOrdinary(text, out);
        return out.toArray();
    }

    /** The ids of a text in which every exact occurrence of a special token's string becomes that token's id. */
    public int[] encodeWithSpecials(String text) {
        if (specialSplitter == null) return encode(text);
        IntList out = new IntList(text.length() / 3 + 4);
        Matcher m = specialSplitter.matcher(text);
        int last = 0;
        while (m.find()) {
            if (m.start() > last) encodeOrdinary(text.substring(last, m.start()), out);
            out.add(specials.get(m.group()));
            last = m.end();
        }
        if (last < text.length()) encodeOrdinary(last == 0 ? text : text.substring(last), out);
        return out.toArray();
    }

    private void encodeOrdinary(String text, IntList out) {
        String t = normalizer == null ? text : Normalizer.normalize(text, normalizer);
        forEachPiece(regex, t, (s, from, to) -> out.addAll(encodePiece(s, from, to)));
    }

    /** Receives a pre-token as a range of a text, so that cache hits need no substring. */
    @FunctionalInterface
    interface PieceSink {
        void accept(String text, int start, int end);
    }

    /**
     * Calls back with the pre-tokens of a text: the regex matches, and also any text between matches, so that no
     * text is lost whatever the pattern (the tokenizers library's "Isolated" split; the built-in patterns match
     * everything, so for them this is exactly tiktoken's split).
     */
    private static void forEachPiece(Pattern regex, String text, PieceSink sink) {
        Matcher m = regex.matcher(text);
        int last = 0;
        while (m.find()) {
            if (m.start() == m.end()) continue;
            if (m.start() > last) sink.accept(text, last, m.start());
            sink.accept(text, m.start(), m.end());
            last = m.end();
        }
        if (last < text.length()) sink.accept(text, last, text.length());
    }

    /**
     * A direct-mapped cache: a slot holds the last piece that hashed to it. Entries are immutable and published by
     * a single reference write, so threads may share the array without locks (at worst they recompute a piece).
     */
    private int[] encodePiece(String text, int start, int end) {
        int len = end - start;
        if (len > CACHE_MAX_PIECE) return model.encode(text.substring(start, end).getBytes(StandardCharsets.UTF_8));
        int h = len;
        for (int i = start; i < end; i++) h = 31 * h + text.charAt(i);
        h ^= h >>> 15;
        h *= 0x2C1B3C6D;
        h ^= h >>> 12;
        int slot = h & (cache.length - 1);
        CachedPiece hit = cache[slot];
        if (hit != null && hit.piece.length() == len && hit.piece.regionMatches(0, text, start, len)) return hit.ids;
        String piece = text.substring(start, end);
        // Unpaired surrogates become '?', as String.getBytes does; well-formed text round-trips exactly.
        int[] ids = model.encode(piece.getBytes(StandardCharsets.UTF_8));
        cache[slot] = new CachedPiece(piece, ids);
        return ids;
    }

    private record CachedPiece(String piece, int[] ids) {
    }

    // ---------------------------------------------------------------- decoding

    /**
     * The text of a sequence of ids: their bytes concatenated and read as UTF-8 (bytes that are not valid UTF-8,
     * as at a cut inside a character, become U+FFFD).
     *
     * @throws IllegalArgumentException if an id is outside the vocabulary or unused
     */
    public String decode(int[] ids) {
        return new String(decodeBytes(ids), StandardCharsets.UTF_8);
    }

    /** The bytes of a sequence of ids; a special token contributes its string's UTF-8 bytes. */
    public byte[] decodeBytes(int[] ids) {
        int total = 0;
        for (int id : ids) total += bytesOf(id).length;
        byte[] out = new byte[total];
        int at = 0;
        for (int id : ids) {
            byte[] b = bytesOf(id);
            System.arraycopy(b, 0, out, at, b.length);
            at += b.length;
        }
        return out;
    }

    private byte[] bytesOf(int id) {
        checkId(id);
        byte[] b = model.tokenBytes[id];
        if (b != null) return b;
        String special = specialById[id];
        if (special != null) return special.getBytes(StandardCharsets.UTF_8);
        throw new IllegalArgumentException("token id " + id + " is unused in tokenizer '" + name + "'");
    }

    private void checkId(int id) {
        if (id < 0 || id >= model.tokenBytes.length) {
            throw new IllegalArgumentException("token id " + id + " is outside the vocabulary of tokenizer '" + name
                    + "' (ids 0.." + (model.tokenBytes.length - 1) + ")");
        }
    }

    // ---------------------------------------------------------------- inspection

    /** The number of ids, including unused ones: one more than the largest id. */
    public int vocabSize() {
        return model.tokenBytes.length;
    }

    /** A short name: the encoding name, the directory of a tokenizer.json, "trained" or "bytes". */
    public String name() {
        return name;
    }

    /** The special tokens' strings, by increasing id. */
    public List<String> specialTokens() {
        List<String> out = new ArrayList<>(specials.keySet());
        out.sort(Comparator.comparingInt(specials::get));
        return out;
    }

    public OptionalInt specialId(String token) {
        Integer id = specials.get(token);
        return id == null ? OptionalInt.empty() : OptionalInt.of(id);
    }

    /** @throws IllegalArgumentException if the id is outside the vocabulary */
    public TokenKind tokenKind(int id) {
        checkId(id);
        if (model.tokenBytes[id] != null) return TokenKind.NORMAL;
        return specialById[id] != null ? TokenKind.SPECIAL : TokenKind.UNUSED;
    }

    /**
     * A token for people to read: its text if its bytes are whole UTF-8, otherwise with the stray bytes written as
     * {@code \xNN}; a special token's string; {@code <unused:ID>} for an unused id.
     *
     * @throws IllegalArgumentException if the id is outside the vocabulary
     */
    public String tokenText(int id) {
        checkId(id);
        byte[] b = model.tokenBytes[id];
        if (b == null) return specialById[id] != null ? specialById[id] : "<unused:" + id + ">";
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(b)).toString();
        } catch (CharacterCodingException e) {
            StringBuilder sb = new StringBuilder();
            for (byte x : b) {
                int v = x & 0xFF;
                if (v >= 0x20 && v < 0x7F) sb.append((char) v);
                else sb.append(String.format("\\x%02X", v));
            }
            return sb.toString();
        }
    }

    /**
     * The token as GPT-2-style unicode (the form of tokenizer.json vocabularies and GGUF token lists); a special
     * token's string as is; {@code [PADid]} for an unused id, as llama.cpp's converters write them.
     *
     * @throws IllegalArgumentException if the id is outside the vocabulary
     */
    public String tokenAsGpt2Unicode(int id) {
        checkId(id);
        byte[] b = model.tokenBytes[id];
        if (b != null) return ByteLevel.encode(b);
        return specialById[id] != null ? specialById[id] : "[PAD" + id + "]";
    }

    /**
     * The merge rules in priority order as GPT-2-unicode {@code "left right"} strings. For a tokenizer read from
     * tiktoken ranks these are all the splits of each token into two tokens, ordered by the token's rank: with
     * "whole pre-token first" they reproduce the ranks exactly.
     */
    public List<String> mergesAsStrings() {
        List<int[]> list = mergeRules();
        List<String> out = new ArrayList<>(list.size());
        for (int[] m : list) out.add(tokenAsGpt2Unicode(m[0]) + " " + tokenAsGpt2Unicode(m[1]));
        return out;
    }

    /** The pre-tokenizer regex, in Java syntax. */
    public String pattern() {
        return pattern;
    }

    /** The chat template (Jinja source), or null. */
    public String chatTemplate() {
        return chatTemplate;
    }

    /** Unicode normalization applied before pre-tokenizing (from a tokenizer.json's normalizer), or null. */
    Normalizer.Form normalizer() {
        return normalizer;
    }

    /** Whether a pre-token that is itself a token is taken whole (tiktoken; tokenizers' ignore_merges). */
    boolean wholePieceFirst() {
        return model.wholePieceFirst;
    }

    byte[] tokenBytes(int id) {
        return model.tokenBytes[id];
    }

    BpeModel model() {
        return model;
    }

    /** The id whose bytes these are, or -1. */
    int idOfBytes(byte[] bytes) {
        return model.table.get(bytes);
    }

    Map<String, Integer> specialMap() {
        return specials;
    }

    /** {left, right, result} in priority order; derived from the ranks for a tiktoken tokenizer. */
    List<int[]> mergeRules() {
        if (merges != null) return merges;
        List<int[]> d = derivedMerges;
        if (d == null) {
            d = deriveMerges();
            derivedMerges = d;
        }
        return d;
    }

    private List<int[]> deriveMerges() {
        byte[][] tb = model.tokenBytes;
        List<int[]> out = new ArrayList<>(tb.length * 4);
        List<int[]> local = new ArrayList<>();
        for (int id = 0; id < tb.length; id++) {
            byte[] b = tb[id];
            if (b == null || b.length < 2) continue;
            local.clear();
            for (int cut = 1; cut < b.length; cut++) {
                int left = model.table.get(b, 0, cut);
                if (left < 0) continue;
                int right = model.table.get(b, cut, b.length);
                if (right >= 0) local.add(new int[] {left, right, id});
            }
            local.sort(Comparator.<int[]>comparingInt(m -> m[0]).thenComparingInt(m -> m[1]));
            out.addAll(local);
        }
        return Collections.unmodifiableList(out);
    }

    @Override
    public String toString() {
        return "Tokenizer[" + name + ", " + vocabSize() + " ids, " + specials.size() + " special]";
    }

    // ---------------------------------------------------------------- helpers

    private static void checkSpecials(List<String> specialTokens) {
        if (new HashSet<>(specialTokens).size() != specialTokens.size()) {
            throw new IllegalArgumentException("special tokens must be distinct: " + specialTokens);
        }
        for (String s : specialTokens) {
            if (s == null || s.isEmpty()) throw new IllegalArgumentException("a special token is empty or null");
        }
    }

    static void requireFile(Path file) {
        if (!Files.exists(file)) throw new FormatException(file, "no such file");
        if (!Files.isRegularFile(file)) throw new FormatException(file, "is not a regular file");
    }

    static byte[] readAll(Path file) {
        try {
            return Files.readAllBytes(file);
        } catch (IOException e) {
            throw new FormatException(file, "cannot be read: " + e.getMessage(), e);
        }
    }

    /** Growable int array. */
    private static final class IntList {
        private int[] a;
        private int size;

        IntList(int capacity) {
            a = new int[Math.max(4, capacity)];
        }

        void add(int v) {
            if (size == a.length) a = Arrays.copyOf(a, size * 2);
            a[size++] = v;
        }

        void addAll(int[] v) {
            if (size + v.length > a.length) a = Arrays.copyOf(a, Math.max(a.length * 2, size + v.length));
            System.arraycopy(v, 0, a, size, v.length);
            size += v.length;
        }

        int[] toArray() {
            return Arrays.copyOf(a, size);
        }
    }
}
