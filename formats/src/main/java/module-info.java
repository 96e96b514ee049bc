/** File formats: safetensors, tokenizers (byte-level BPE, tiktoken ranks, HF tokenizer.json). */
module dev.crucible.formats {
    requires transitive dev.crucible.tensor;
    requires com.fasterxml.jackson.databind;
    exports dev.crucible.formats;
    exports dev.crucible.formats.safetensors;
    exports dev.crucible.formats.tokenizer;
    exports dev.crucible.formats.gguf;
    exports dev.crucible.formats.hf;
}
