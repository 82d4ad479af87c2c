import time

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


HOSTILE_TEMPLATES = {
    "nested range loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "exponential macro recursion": ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
                                    "{{ f(60) }}"),
    "nested loops over a string": "{% set s = 'ab' * 5000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "a billion characters": "{{ 'x' * 10**9 }}",
    "a billion as a literal": "{{ 'x' * 1000000000 }}",
    "a huge width": "{{ 'x' | center(1000000000) }}",
    "a huge format width": "{{ '%0999999999d' % 1 }}",
    "a huge str.format width": "{{ '{:>999999999}'.format(1) }}",
    "doubling in a loop": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "an amplifying replace": "{% set s = 'a' * 100000 %}{{ s.replace('a', s) }}",
    "an amplifying join": "{% set s = 'a' * 1000000 %}{{ s.join(range(1000) | map('string')) }}",
    "a huge power": "{{ 7 ** 100000000 }}",
    "TypeError": "{{ messages[0]['content'] + 1 }}",
    "OverflowError": "{{ 1.5 * 10 ** 400 }}",
    "ZeroDivisionError": "{{ 1 / 0 }}",
    "RecursionError": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "a tojson indent string": "{{ messages | tojson(indent='x' * 100) }}",
}


@pytest.mark.parametrize("name", HOSTILE_TEMPLATES)
def test_a_hostile_template_is_one_clear_error_quickly(name):
    start = time.perf_counter()
    with pytest.raises(ChatTemplateError) as caught:
        ChatTemplate(HOSTILE_TEMPLATES[name], timeout_s=0.5).render([{"role": "user", "content": "x"}])
    assert time.perf_counter() - start < 3 and len(str(caught.value)) < 400 and "\n" not in str(caught.value)


@pytest.mark.parametrize("source", ["{{" + "(" * 5000 + "1" + ")" * 5000 + "}}", "{% for %}", "x" * (2 << 20)])
def test_a_template_that_cannot_compile(source):
    with pytest.raises(ChatTemplateError):
        ChatTemplate(source)


def test_the_bounds_leave_real_templates_and_long_prompts_alone():
    long_text = "word " * 400_000  # 2 million characters, about 400k tokens
    messages = [{"role": "user", "content": long_text}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": long_text.replace("word", "note")}]
    template = ChatTemplate(CHATML + "{{ messages | tojson(indent=2) | length > 0 }}{{ 'a-b' | replace('-', '+') }}")
    out = template.render(messages)
    assert out.count("<|im_start|>") == 4 and out.endswith("Truea+b") and len(out) > 4_000_000


def test_the_deadline_is_only_on_the_rendering_thread():
    import threading

    results = []
    spin = ChatTemplate(HOSTILE_TEMPLATES["nested range loops"], timeout_s=0.3)
    worker = threading.Thread(target=lambda: results.append(sum(i for i in range(3_000_000))))
    worker.start()
    with pytest.raises(ChatTemplateError, match="longer than 0.3 s"):
        spin.render([{"role": "user", "content": "x"}])
    worker.join()
    assert results == [sum(range(3_000_000))]
