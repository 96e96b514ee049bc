package dev.crucible.engine;

import dev.crucible.formats.tokenizer.Tokenizer;
import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Chat templates as models ship them (written here in the style of the ChatML, Llama 3 and Mistral templates found
 * in tokenizer_config.json files), rendered through Jinja: loops, conditionals, whitespace control, slicing,
 * {@code raise_exception} and {@code bos_token}.
 */
class ChatTemplateTest {
    static final List<ChatTemplate.Message> CHAT = List.of(
            new ChatTemplate.Message("system", "Be brief."),
            new ChatTemplate.Message("user", "Hi"),
            new ChatTemplate.Message("assistant", "Hello."),
            new ChatTemplate.Message("user", "2+2?"));

    static final String CHATML = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    static final String LLAMA3 = "{% set loop_messages = messages %}{% for message in loop_messages %}"
            + "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
            + "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

    static final String MISTRAL = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
            + "{% else %}{% set system = '' %}{% set loop_messages = messages %}{% endif %}"
            + "{% for message in loop_messages %}"
            + "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
            + "{% if message['role'] == 'user' %}{% if loop.first and system %}{{ '[INST] ' + system + '\\n\\n' + message['content'] + ' [/INST]' }}"
            + "{% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
            + "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}";

    static Tokenizer tok(String template, String... specials) {
        return Tokenizer.byteLevel(List.of(specials)).withChatTemplate(template);
    }

    @Test
    void chatml() {
        ChatTemplate t = ChatTemplate.of(tok(CHATML, "<|im_start|>", "<|im_end|>"));
        assertEquals(ChatTemplate.Family.CHATML, t.family());
        assertEquals(List.of("<|im_end|>"), t.stops());
        assertEquals("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
                + "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", t.render(CHAT, tok(CHATML)));
    }

    @Test
    void llama3WithBosAndTrim() {
        Tokenizer tk = tok(LLAMA3, "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>");
        ChatTemplate t = ChatTemplate.of(tk);
        assertEquals(List.of("<|eot_id|>"), t.stops());
        String out = t.render(List.of(new ChatTemplate.Message("user", "  Hi  ")), tk);
        assertEquals("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", out);
    }

    @Test
    void mistralFoldsTheSystemPromptAndRejectsNonAlternatingRoles() {
        Tokenizer tk = tok(MISTRAL, "<s>", "</s>");
        ChatTemplate t = ChatTemplate.of(tk);
        assertEquals("<s>[INST] Be brief.\n\nHi [/INST] Hello.</s>[INST] 2+2? [/INST]", t.render(CHAT, tk));
        ChatTemplate.RenderException e = assertThrows(ChatTemplate.RenderException.class, () -> t.render(List.of(
                new ChatTemplate.Message("user", "a"), new ChatTemplate.Message("user", "b")), tk));
        assertTrue(e.getMessage().contains("Conversation roles must alternate"), e.getMessage());
    }

    @Test
    void brokenTemplatesAndNoTemplate() {
        Tokenizer broken = tok("{% for m in messages %}{{ m['content'] }");
        assertThrows(ChatTemplate.RenderException.class, () -> ChatTemplate.of(broken).render(CHAT, broken));
        Tokenizer plain = Tokenizer.byteLevel(List.of("<|endoftext|>"));
        ChatTemplate p = ChatTemplate.of(plain);
        assertEquals(ChatTemplate.Family.PLAIN, p.family());
        assertEquals("<|endoftext|>Be brief.\nHi\nHello.\n2+2?", p.render(CHAT, plain));
    }
}
