package dev.crucible.serve;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.crucible.engine.ChatTemplate;
import dev.crucible.formats.tokenizer.Tokenizer;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Chat requests go through the model's Jinja template; a template that refuses the messages is the client's 400. */
class ChatParamsTest {
    static final ServerConfig CFG = new ServerConfig("127.0.0.1", 0, "t", List.of(), 1 << 20, 4096, 256, 4, 8, 1);
    static final String STRICT = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
            + "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

    @Test
    void templatesRenderAndRefuseAsClientErrors() throws Exception {
        Tokenizer tok = Tokenizer.byteLevel(List.of("<|im_start|>", "<|im_end|>")).withChatTemplate(STRICT);
        ChatTemplate t = ChatTemplate.of(tok);
        ObjectMapper json = new ObjectMapper();
        Params ok = Params.parse(json.readTree("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"), true, tok, t, CFG, 512);
        assertEquals(tok.decode(tok.encodeWithSpecials("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")),
                tok.decode(ok.prompts().getFirst()));
        assertTrue(ok.stops().contains("<|im_end|>"), ok.stops().toString());
        ApiError e = assertThrows(ApiError.class, () -> Params.parse(json.readTree(
                "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"hi\"}]}"), true, tok, t, CFG, 512));
        assertEquals(400, e.status);
        assertTrue(e.getMessage().contains("System role not supported"), e.getMessage());
    }
}
