package dev.crucible.cli;

import dev.crucible.formats.tokenizer.Tokenizer;
import dev.crucible.train.data.DataPrepare;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;

@Command(name = "data", mixinStandardHelpOptions = true, description = "Prepare training data.",
        subcommands = {DataCommand.Prepare.class})
final class DataCommand implements Runnable {
    @picocli.CommandLine.Spec
    picocli.CommandLine.Model.CommandSpec spec;

    @Override
    public void run() {
        spec.commandLine().usage(System.out);
    }

    @Command(name = "prepare", mixinStandardHelpOptions = true,
            description = {"Tokenize text files, directories (recursively) or JSONL files into token shards.",
                    "Each document (a file, or a JSONL line's field) is followed by the end-of-text token.",
                    "The output directory also receives tokenizer.json, which 'crucible train' copies into checkpoints."})
    static final class Prepare implements Callable<Integer> {
        @Parameters(arity = "1..*", paramLabel = "INPUT", description = "Text files, directories or .jsonl files.")
        List<Path> inputs;

        @Option(names = "--out", required = true, paramLabel = "DIR", description = "Output shard directory (new or empty).")
        Path out;

        @Option(names = "--tokenizer", defaultValue = "bytes", paramLabel = "SPEC",
                description = "bytes, gpt2, cl100k_base, o200k_base, or a tokenizer.json / .tiktoken file. Default: ${DEFAULT-VALUE}.")
        String tokenizer;

        @Option(names = "--tokenizer-dir", paramLabel = "DIR", description = "Where NAME.tiktoken rank files are (else $CRUCIBLE_TOKENIZERS).")
        Path tokenizerDir;

        @Option(names = "--field", defaultValue = "text", description = "JSONL field holding the text. Default: ${DEFAULT-VALUE}.")
        String field;

        @Option(names = "--shard-tokens", defaultValue = "100000000", description = "Most tokens per shard file. Default: ${DEFAULT-VALUE}.")
        int shardTokens;

        @Override
        public Integer call() throws Exception {
            Tokenizer tok = Tokenizers.resolve(tokenizer, tokenizerDir);
            int eos = Tokenizers.eosId(tok);
            if (eos < 0) throw new UserException("tokenizer " + tok.name() + " has no " + Tokenizers.EOS + " token to separate documents");
            DataPrepare.Summary s = DataPrepare.prepare(inputs, out, tok::encode, eos, tok.vocabSize(), tok.name(), field,
                    shardTokens, (file, done, docs, tokens) -> System.out.printf("  %s  (%d files, %,d documents, %,d tokens)%n", file, done, docs, tokens));
            tok.saveHuggingFace(out.resolve("tokenizer.json"));
            System.out.printf("wrote %,d tokens from %,d documents in %d files to %s (%d shards, vocabulary %d)%n",
                    s.tokens(), s.documents(), s.files(), out, s.shards().size(), tok.vocabSize());
            return 0;
        }
    }
}
