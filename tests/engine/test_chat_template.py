import pytest

from engine.chat_template import ChatTemplate, ChatTemplateError

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def test_renders_the_files_template():
    out = ChatTemplate(CHATML).render([{"role": "user", "content": "Hi"}])
    assert out == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_llama2_fallback_when_the_file_has_no_template():
    template = ChatTemplate(None, bos_token="<s>", eos_token="</s>")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]
    assert template.is_fallback
    assert template.render(messages) == ("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s>"
                                         "<s>[INST] Bye [/INST]")


@pytest.mark.parametrize("attack", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch /tmp/pwned').read() }}",
    "{% set x = messages.append(1) %}{{ x }}",
])
def test_template_code_cannot_escape_the_sandbox(attack, tmp_path):
    with pytest.raises(ChatTemplateError):
        ChatTemplate(attack).render([{"role": "user", "content": "x"}])


def test_template_raise_exception_becomes_clear_error():
    template = ChatTemplate("{{ raise_exception('Roles must alternate') }}")
    with pytest.raises(ChatTemplateError, match="Roles must alternate"):
        template.render([{"role": "user", "content": "x"}])


def test_malformed_messages_are_refused():
    with pytest.raises(ChatTemplateError, match="message 0"):
        ChatTemplate(CHATML).render([{"text": "no role"}])
