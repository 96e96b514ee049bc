package dev.crucible.formats.tokenizer;

import java.util.Map;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * Pre-tokenizer regexes: the built-in ones for the OpenAI encodings, and the translation of a pattern written for
 * another engine (tiktoken's Rust fancy-regex, or Oniguruma in Hugging Face tokenizers) into a Java pattern that
 * splits text the same way.
 */
final class Patterns {
    /** Which engine a pattern was written for; they disagree only on what {@code $} means. */
    enum Dialect {
        /** tiktoken (Rust): {@code $} is the end of the text. */
        RUST,
        /** Hugging Face tokenizers (Oniguruma, Ruby syntax): {@code $} is the end of a line. */
        ONIGURUMA
    }

    static final String GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

    static final String CL100K = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
            + "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

    static final String O200K = String.join("|",
            "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
                    + "(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
                    + "(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            "\\p{N}{1,3}",
            " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*",
            "\\s*[\\r\\n]+",
            "\\s+(?!\\S)",
            "\\s+");

    /** What tiktoken itself ships for the encodings whose rank files carry no metadata: pattern and specials. */
    record Known(String pattern, Map<String, Integer> specials) {
    }

    static final Map<String, Known> KNOWN = Map.of(
            "gpt2", new Known(GPT2, Map.of("<|endoftext|>", 50256)),
            "r50k_base", new Known(GPT2, Map.of("<|endoftext|>", 50256)),
            "p50k_base", new Known(GPT2, Map.of("<|endoftext|>", 50256)),
            "cl100k_base", new Known(CL100K, Map.of(
                    "<|endoftext|>", 100257, "<|fim_prefix|>", 100258, "<|fim_middle|>", 100259,
                    "<|fim_suffix|>", 100260, "<|endofprompt|>", 100276)),
            "o200k_base", new Known(O200K, Map.of("<|endoftext|>", 199999, "<|endofprompt|>", 200018)));

    private Patterns() {
    }

    /**
     * Compiles a pre-tokenizer pattern. Java's {@code \s}, {@code \d} and {@code \w} are ASCII-only unless
     * UNICODE_CHARACTER_CLASS is set, while both source engines mean the Unicode properties; the flag also makes
     * {@code (?i:...)} fold case the Unicode way, as they do. The remaining syntax ({@code \p{..}}, lookahead,
     * possessive quantifiers, inline groups) is shared.
     *
     * @throws PatternSyntaxException if the pattern is not valid Java syntax even after translation
     */
    static Pattern compile(String pattern, Dialect dialect) {
        return Pattern.compile(translate(pattern, dialect), Pattern.UNICODE_CHARACTER_CLASS);
    }

    /** Rewrites unescaped {@code $} outside character classes; Java's own {@code $} also matches before a final newline. */
    static String translate(String pattern, Dialect dialect) {
        String dollar = dialect == Dialect.RUST ? "\\z" : "(?=\\n|\\z)";
        StringBuilder out = new StringBuilder(pattern.length() + 8);
        int classDepth = 0;
        for (int i = 0; i < pattern.length(); i++) {
            char c = pattern.charAt(i);
            if (c == '\\' && i + 1 < pattern.length()) {
                out.append(c).append(pattern.charAt(++i));
            } else if (c == '[') {
                classDepth++;
                out.append(c);
                // A ']' right after '[' or '[^' is a literal, not the end of the class.
                if (i + 1 < pattern.length() && pattern.charAt(i + 1) == '^') out.append(pattern.charAt(++i));
                if (i + 1 < pattern.length() && pattern.charAt(i + 1) == ']') out.append(pattern.charAt(++i));
            } else if (c == ']' && classDepth > 0) {
                classDepth--;
                out.append(c);
            } else if (c == '$' && classDepth == 0) {
                out.append(dollar);
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }
}
