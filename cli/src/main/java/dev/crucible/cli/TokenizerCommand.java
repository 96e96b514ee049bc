package dev.crucible.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.formats.tokenizer.Tokenizer;
import picocli.CommandLine.ArgGroup;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.io.IOException;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;

@Command(name = "tokenizer", mixinStandardHelpOptions = true,
        description = "Train byte-level BPE tokenizers, and encode or decode text with any tokenizer.",
        subcommands = {TokenizerCommand.Train.class, TokenizerCommand.Encode.class, TokenizerCommand.Decode.class})
final class TokenizerCommand implements Runnable {
    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(System.out);
    }

    static final class Source {
        @Option(names = "--tokenizer", required = true, paramLabel = "SPEC",
                description = "bytes, gpt2, cl100k_base, o200k_base, or a tokenizer.json / .tiktoken file.")
        String tokenizer;

        @Option(names = "--tokenizer-dir", paramLabel = "DIR", description = "Where NAME.tiktoken rank files are (else $CRUCIBLE_TOKENIZERS).")
        Path tokenizerDir;

        Tokenizer open() { return Tokenizers.resolve(tokenizer, tokenizerDir); }
    }

    static final class Input {
        @Option(names = "--text", paramLabel = "S", description = "The input itself.")
        String text;

        @Option(names = "--file", paramLabel = "F", description = "Read the input from a file.")
        Path file;

        String read() throws IOException {
            if (text != null) return text;
            if (!Files.isRegularFile(file)) throw new UserException("no such file: " + file);
            try {
                return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                        .decode(java.nio.ByteBuffer.wrap(Files.readAllBytes(file))).toString();
            } catch (CharacterCodingException e) {
                throw new UserException(file + " is not UTF-8 text");
            }
        }
    }

    @Command(name = "train", mixinStandardHelpOptions = true,
            description = "Train a byte-level BPE tokenizer on text files and write it as a Hugging Face tokenizer.json.")
    static final class Train implements Callable<Integer> {
        @Parameters(arity = "1..*", paramLabel = "FILE", description = "UTF-8 text files (directories are walked).")
        List<Path> files;

        @Option(names = "--vocab-size", defaultValue = "4096", description = "Target vocabulary size (>= 257). Default: ${DEFAULT-VALUE}.")
        int vocabSize;

        @Option(names = "--special", paramLabel = "TOKEN", description = "Special tokens (default: <|endoftext|>).")
        List<String> specials;

        @Option(names = "--out", required = true, paramLabel = "FILE", description = "Output tokenizer.json.")
        Path out;

        @Override
        public Integer call() throws Exception {
            List<String> sp = specials == null ? List.of(Tokenizers.EOS) : specials;
            if (vocabSize < 256 + sp.size()) throw new UserException("--vocab-size must be at least " + (256 + sp.size()));
            List<String> texts = new ArrayList<>();
            long bytes = 0;
            for (Path f : files) {
                if (!Files.exists(f)) throw new UserException("no such file or directory: " + f);
                try (var s = Files.walk(f)) {
                    for (Path p : s.filter(Files::isRegularFile).sorted().toList()) {
                        Input in = new Input();
                        in.file = p;
                        texts.add(in.read());
                        bytes += Files.size(p);
                    }
                }
            }
            if (bytes == 0) throw new UserException("the training text is empty");
            long t0 = System.nanoTime();
            Tokenizer tok = Tokenizer.train(texts, vocabSize, sp, Tokenizer.DEFAULT_PATTERN, n -> {
                if (n % 500 == 0) System.out.printf("  %d merges%n", n);
            });
            tok.saveHuggingFace(out);
            System.out.printf("trained %d tokens on %,d bytes in %.1f s; wrote %s%n", tok.vocabSize(), bytes, (System.nanoTime() - t0) / 1e9, out);
            return 0;
        }
    }

    @Command(name = "encode", mixinStandardHelpOptions = true, description = "Print the token ids of a text as a JSON array.")
    static final class Encode implements Callable<Integer> {
        @ArgGroup(exclusive = false, multiplicity = "1")
        Source source;

        @ArgGroup(exclusive = true, multiplicity = "1")
        Input input;

        @Option(names = "--specials", description = "Recognise special-token text such as <|endoftext|> (off: encode it as plain text).")
        boolean specials;

        @Override
        public Integer call() throws Exception {
            Tokenizer tok = source.open();
            String text = input.read();
            int[] ids = specials ? tok.encodeWithSpecials(text) : tok.encode(text);
            System.out.println(new ObjectMapper().writeValueAsString(ids));
            return 0;
        }
    }

    @Command(name = "decode", mixinStandardHelpOptions = true, description = "Print the text of a JSON array of token ids.")
    static final class Decode implements Callable<Integer> {
        @ArgGroup(exclusive = false, multiplicity = "1")
        Source source;

        @ArgGroup(exclusive = true, multiplicity = "1")
        Input input;

        @Override
        public Integer call() throws Exception {
            Tokenizer tok = source.open();
            int[] ids;
            try {
                ids = new ObjectMapper().readValue(input.read(), int[].class);
            } catch (com.fasterxml.jackson.core.JacksonException e) {
                throw new UserException("the input is not a JSON array of token ids");
            }
            System.out.print(tok.decode(ids));
            System.out.println();
            return 0;
        }
    }
}
