"""Token ids equal llama.cpp's on a mixed corpus, for both vocab kinds, special tokens included."""
import logging

import pytest

from engine.gguf_file import GGUFFile, ModelFileError
from engine.tokenizer import Tokenizer

from .tiny_gguf import write_bpe_vocab

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


def test_unknown_tokens_in_text_are_cut_out_as_llama_cpp_does(llama2_gguf):
    ours = Tokenizer.from_gguf(GGUFFile(llama2_gguf))
    texts = ["hi <unk> there", "<unk>", "a<unk>b", "<unk> <s>x</s>"]
    assert_same_ids(ours, llama_cpp_vocab(llama2_gguf), texts, add_bos=True)


# Text that the pre-tokenizer variants split differently: digit runs, contractions in any case,
# scripts, code, whitespace runs, CR/LF, punctuation and symbols, special tokens.
PRE_CORPUS = MIXED_CORPUS + [
    "12345 and 3.14159", "1,234,567.89 or 0.5% of 10000000", "x=1;y=22;z=333;w=4444", "a zqxj b zqxjq",
    "don't, I'll, you'RE, SHE'S, we've, they'd, I'M", "ΑΒΓ αβγ Ωmega Kelvin K, 中文字符 한국어 …“quoted”—dash",
    "def f(x):\n    return x**2  # square\n\n\n", "\tindented\n\t\tmore\r\nwindows\r\n", "a  b   c    d",
    "trailing   ", "\n\n\n", " \n \n", "$100 + <tag> ^ ~ | `code` @user #hash", "१२३ ١٢٣ ½ ²", "x\u00a0y\u2003z",
    "<|im_start|>user\nHi 123<|im_end|>\n<|im_start|>assistant\n", "a<|endoftext|>b",
]
PRE_VARIANTS = ["default", "gpt-2", "smollm", "starcoder", "llama-bpe", "dbrx", "qwen2", "deepseek-r1-qwen",
                "deepseek-llm", "deepseek-coder", "falcon", None]


@pytest.fixture(scope="session")
def smollm_bpe():
    """The default model's vocabulary: tokens, token types, merges."""
    from engine.loader import default_model_path

    source = GGUFFile(default_model_path())
    return [source.require(f"tokenizer.ggml.{k}") for k in ("tokens", "token_type", "merges")]


def prefix_vocab(tokens, token_types, merges, n):
    """The first n tokens and the merges among them, plus tokens that make the splits observable:
    multi-digit numbers (SmolLM has single digits only) and a word no merge reaches (ignore_merges)."""
    kept = set(tokens[:n])
    merges = [m for m in merges if (i := m.find(" ", 1)) > 0 and {m[:i], m[i + 1:], m[:i] + m[i + 1:]} <= kept]
    pairs = [f"{a}{b}" for a in "0123456789" for b in "0123456789"]
    triples = [f"{p}{c}" for p in pairs for c in "0123456789"]
    extra = pairs + triples + ["Ġzqxj"]  # Ġ spells a space
    merges = merges + [f"{t[0]} {t[1]}" for t in pairs] + [f"{t[:2]} {t[2]}" for t in triples]
    return tokens[:n] + extra, token_types[:n] + [1] * len(extra), merges


def assert_pre_matches_llama_cpp(path):
    ours = Tokenizer.from_gguf(GGUFFile(path))
    ref = llama_cpp_vocab(path)
    assert (ref.tokenize(b"x", add_bos=True, special=True)[:1] == [ours.bos_id]) == ours.add_bos
    assert_same_ids(ours, ref, PRE_CORPUS, add_bos=ours.add_bos)


@pytest.mark.parametrize("pre", PRE_VARIANTS)
def test_pre_tokenizer_variants_match_llama_cpp(tmp_path, smollm_bpe, pre):
    path = write_bpe_vocab(tmp_path / f"pre-{pre}.gguf", *prefix_vocab(*smollm_bpe, 12_000), pre=pre)
    assert_pre_matches_llama_cpp(path)


@pytest.mark.slow
@pytest.mark.parametrize("pre", ["default", "smollm", "llama-bpe", "qwen2", "deepseek-llm"])
def test_pre_tokenizer_variants_match_llama_cpp_on_the_full_vocab(tmp_path, smollm_bpe, pre):
    assert_pre_matches_llama_cpp(write_bpe_vocab(tmp_path / f"pre-{pre}.gguf", *smollm_bpe, pre=pre))


def test_unknown_pre_tokenizer_warns_and_splits_as_the_default(tmp_path, smollm_bpe, caplog):
    """llama.cpp refuses such a file; we load it with llama.cpp's default split and say so."""
    vocab = prefix_vocab(*smollm_bpe, 12_000)
    unknown = write_bpe_vocab(tmp_path / "unknown.gguf", *vocab, pre="no-such-pre")
    with caplog.at_level(logging.WARNING, logger="engine.pre_tokenizer"):
        ours = Tokenizer.from_gguf(GGUFFile(unknown))
    assert "no-such-pre" in caplog.text
    default = llama_cpp_vocab(write_bpe_vocab(tmp_path / "default.gguf", *vocab, pre="default"))
    assert_same_ids(ours, default, PRE_CORPUS, add_bos=False)


def test_add_bos_token_in_the_file_overrides_the_pre_tokenizer_default(tmp_path, smollm_bpe):
    vocab = prefix_vocab(*smollm_bpe, 2_000)
    path = write_bpe_vocab(tmp_path / "llama3-no-bos.gguf", *vocab, pre="llama-bpe", add_bos=False)
    assert not Tokenizer.from_gguf(GGUFFile(path)).add_bos
    assert_pre_matches_llama_cpp(path)


@pytest.mark.parametrize("fault, message", [
    ("merge of unknown tokens", "cannot build the tokenizer"),
    ("token types of another length", "token_type has 3 entries"),
    ("no merges", "needs tokenizer.ggml.merges"),
])
def test_inconsistent_vocabulary_metadata_is_one_clear_error(tmp_path, fault, message):
    from engine.tokenizer import BYTE_CHARS

    tokens, merges = ["<s>", "</s>", *BYTE_CHARS, "ab"], ["a b"]
    types = [3, 3] + [1] * (len(tokens) - 2)
    if fault == "merge of unknown tokens":
        merges = ["a zz"]
    path = write_bpe_vocab(tmp_path / "bad.gguf", tokens, types[:3] if "types" in fault else types, merges, pre="gpt-2")
    gguf = GGUFFile(path)
    if fault == "no merges":
        del gguf.metadata["tokenizer.ggml.merges"]
    with pytest.raises(ModelFileError, match=message):
        Tokenizer.from_gguf(gguf)
