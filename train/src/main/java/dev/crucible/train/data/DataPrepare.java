package dev.crucible.train.data;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.formats.FormatException;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CoderResult;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.function.Function;

/**
 * Turns text corpora into a token shard directory ({@link ShardFormat}).
 *
 * <p>Inputs, in the order given:
 * <ul>
 *   <li>a text file: one document (strict UTF-8; a leading byte order mark is dropped);</li>
 *   <li>a {@code .jsonl} file: one document per non-blank line, each a JSON object whose string field
 *       {@code jsonlField} is the text;</li>
 *   <li>a directory: walked recursively in sorted name order, skipping hidden files and directories (names starting
 *       with '.') and files that look binary (a NUL byte in the first 8 KiB); the rest is read as above.</li>
 * </ul>
 * Each non-empty document is encoded and followed by eosId. Errors are {@link FormatException}s naming the file
 * (and line for JSONL): missing or unreadable path, bytes that are not UTF-8, a malformed JSONL line or one without
 * the field, and a corpus with no text at all. Documents are processed one at a time; a text file is read whole.
 */
public final class DataPrepare {
    private static final int SNIFF_BYTES = 8192;

    private DataPrepare() {
    }

    /** Called after each input file with the running totals; may be used to print progress. */
    @FunctionalInterface
    public interface Progress {
        void fileDone(Path file, int filesDone, long documents, long tokens);
    }

    /** What {@link #prepare} wrote. */
    public record Summary(Path outDir, int files, long documents, long tokens, List<Path> shards) {
    }

    /**
     * @param inputs files and directories, read in order
     * @param outDir the shard directory: absent, empty or a previous shard directory (replaced)
     * @param encoder text to token ids, each in [0, vocabSize)
     * @param eosId appended after each document
     * @param tokenizerDesc recorded in meta.json
     * @param jsonlField the JSONL text field; null means "text"
     * @param shardTokens the most tokens per shard file
     * @param progress may be null
     */
    public static Summary prepare(List<Path> inputs, Path outDir, Function<String, int[]> encoder, int eosId,
                                  int vocabSize, String tokenizerDesc, String jsonlField, int shardTokens,
                                  Progress progress) {
        if (inputs.isEmpty()) throw new IllegalArgumentException("no input files given");
        String field = jsonlField == null || jsonlField.isEmpty() ? "text" : jsonlField;
        List<Path> files = new ArrayList<>();
        Path outAbs = outDir.toAbsolutePath().normalize();
        for (Path in : inputs) collect(in, true, outAbs, files);

        ObjectMapper json = new ObjectMapper().enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
        int[] eos = {eosId};
        long documents = 0, textTokens = 0;
        try (ShardWriter writer = new ShardWriter(outDir, vocabSize, eosId, tokenizerDesc, shardTokens)) {
            int done = 0;
            for (Path f : files) {
                writer.addSource(f.toString());
                String text = readUtf8(f);
                List<String> docs = isJsonl(f) ? jsonlDocuments(f, text, field, json) : List.of(text);
                for (String doc : docs) {
                    if (doc.isEmpty()) continue;
                    int[] tokens = encoder.apply(doc);
                    if (tokens.length == 0) continue;
                    writer.write(tokens);
                    writer.write(eos);
                    documents++;
                    textTokens += tokens.length;
                }
                done++;
                if (progress != null) progress.fileDone(f, done, documents, writer.tokens());
            }
            if (textTokens == 0)
                throw new FormatException("empty corpus: " + files.size() + " input file(s) found in " + inputs
                        + " but they contain no text");
            List<Path> shards = writer.finish();
            return new Summary(outDir, files.size(), documents, writer.tokens(), shards);
        }
    }

    /** Adds the input files under p (p itself when it is a file) in sorted order. */
    private static void collect(Path p, boolean explicit, Path outAbs, List<Path> files) {
        if (!Files.exists(p)) throw new FormatException(p, "no such file or directory");
        if (Files.isDirectory(p)) {
            if (p.toAbsolutePath().normalize().equals(outAbs)) return;
            List<Path> children = new ArrayList<>();
            try (DirectoryStream<Path> ds = Files.newDirectoryStream(p)) {
                for (Path c : ds) if (!c.getFileName().toString().startsWith(".")) children.add(c);
            } catch (IOException e) {
                throw new FormatException(p, "cannot read directory: " + describe(e), e);
            }
            children.sort(Comparator.comparing(c -> c.getFileName().toString()));
            for (Path c : children) collect(c, false, outAbs, files);
        } else if (Files.isRegularFile(p)) {
            if (explicit || looksText(p)) files.add(p);
        } else if (explicit) {
            throw new FormatException(p, "not a regular file or directory");
        }
    }

    private static boolean isJsonl(Path f) {
        return f.getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".jsonl");
    }

    /** No NUL byte in the first 8 KiB. */
    private static boolean looksText(Path f) {
        try (var in = Files.newInputStream(f)) {
            byte[] head = in.readNBytes(SNIFF_BYTES);
            for (byte b : head) if (b == 0) return false;
            return true;
        } catch (IOException e) {
            throw new FormatException(f, "cannot read: " + describe(e), e);
        }
    }

    /** The file as strict UTF-8 text; invalid bytes are a FormatException giving line and byte offset. */
    static String readUtf8(Path f) {
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(f);
        } catch (IOException e) {
            throw new FormatException(f, "cannot read: " + describe(e), e);
        } catch (OutOfMemoryError e) {
            throw new FormatException(f, "file too large to read as one document; split it into smaller files");
        }
        CharsetDecoder dec = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer in = ByteBuffer.wrap(bytes);
        CharBuffer out = CharBuffer.allocate(bytes.length);
        CoderResult r = dec.decode(in, out, true);
        if (!r.isError()) r = dec.flush(out);
        if (r.isError()) {
            int at = in.position();
            int line = 1;
            for (int i = 0; i < at; i++) if (bytes[i] == '\n') line++;
            throw new FormatException(f, "not valid UTF-8 text: bad byte 0x"
                    + String.format("%02x", bytes[at] & 0xFF) + " at line " + line + ", byte offset " + at);
        }
        out.flip();
        if (out.hasRemaining() && out.charAt(0) == '\uFEFF') out.get();
        return out.toString();
    }

    private static List<String> jsonlDocuments(Path f, String text, String field, ObjectMapper json) {
        List<String> docs = new ArrayList<>();
        int lineNo = 0;
        for (String line : text.split("\n", -1)) {
            lineNo++;
            if (line.isBlank()) continue;
            JsonNode node;
            try {
                node = json.readTree(line);
            } catch (JsonProcessingException e) {
                throw new FormatException(f, "line " + lineNo + ": malformed JSON: " + e.getOriginalMessage());
            }
            if (node == null || !node.isObject())
                throw new FormatException(f, "line " + lineNo + ": expected a JSON object");
            JsonNode v = node.get(field);
            if (v == null || !v.isTextual())
                throw new FormatException(f, "line " + lineNo + ": no string field \"" + field + "\"");
            docs.add(v.asText());
        }
        return docs;
    }

    private static String describe(IOException e) {
        if (e instanceof AccessDeniedException) return "permission denied";
        return e.getMessage() == null ? e.toString() : e.getMessage();
    }
}
