"""Token ids equal llama.cpp's on a mixed corpus, for both vocab kinds, special tokens included."""
import pytest

from engine.gguf_file import GGUFFile
from engine.tokenizer import Tokenizer

MIXED_CORPUS = [
    "Hello world",
    "The capital of France is Paris.",
    "def f(x):\n    return x**2  # square\n",
    "for i in range(10):\n\tprint(i)\n",
    "12345 + 678.9 = ? and 3/4 of $1,234.56",
    "-42 degrees, 1e-5 eps, 0x1F",
    "Ünïcödé naïve café, 日本語のテキスト, ключ, مرحبا",
    "emoji 🤖🎉👍🏽 test",
    "   leading spaces\t\ttabs\n\n\nnewlines   trailing   ",
    "I'm sure they're here; we'll see, won't we?",
    "x" * 40,
    "",
    " ",
    "\n",
]


def llama_cpp_vocab(path):
    from llama_cpp import Llama

    return Llama(str(path), vocab_only=True, verbose=False)


def assert_same_ids(ours: Tokenizer, ref, texts, add_bos):
    for text in texts:
        # llama.cpp would add a second BOS to a text that starts with one; we do not (documented)
        already = ours.bos_id is not None and text.startswith(ours.tokens[ours.bos_id])
        expected = ref.tokenize(text.encode(), add_bos=add_bos and not already, special=True)
        assert ours.encode(text, add_bos=add_bos) == expected, repr(text)


@pytest.mark.slow
def test_gpt2_bpe_vocab_matches_llama_cpp(default_gguf):
    ours = Tokenizer.from_gguf(GGUFFile(default_gguf))
    assert ours.kind == "gpt2"
    specials = ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "a<|endoftext|>b"]
    assert_same_ids(ours, llama_cpp_vocab(default_gguf), MIXED_CORPUS + specials, add_bos=False)


def test_sentencepiece_vocab_matches_llama_cpp(llama2_gguf):
    ours = Tokenizer.from_gguf(GGUFFile(llama2_gguf))
    assert ours.kind == "llama" and ours.add_bos
    specials = ["<s>[INST] hi [/INST]", "end</s>", "a </s><s> b", "</s>   spaced"]
    ref = llama_cpp_vocab(llama2_gguf)
    assert_same_ids(ours, ref, MIXED_CORPUS + specials, add_bos=True)
    assert_same_ids(ours, ref, MIXED_CORPUS, add_bos=False)


@pytest.mark.parametrize("fixture", ["llama2_gguf", pytest.param("default_gguf", marks=pytest.mark.slow)])
def test_decode_round_trips_and_token_bytes_concatenate(request, fixture):
    tokenizer = Tokenizer.from_gguf(GGUFFile(request.getfixturevalue(fixture)))
    for text in MIXED_CORPUS:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        raw = b"".join(tokenizer.token_bytes(i) for i in ids if i != tokenizer.bos_id)
        prefix = " " if tokenizer.kind == "llama" and text else ""
        assert raw.decode() == prefix + text
