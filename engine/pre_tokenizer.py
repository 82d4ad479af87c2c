"""How llama.cpp splits text before byte-level BPE, chosen by the GGUF key `tokenizer.ggml.pre`.

The regexes are llama.cpp's (src/llama-vocab.cpp, `llm_tokenizer_bpe`): applied in order, each one
splitting the pieces the one before left. Hugging Face `tokenizers` runs them as `Split` steps.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from tokenizers import Regex, pre_tokenizers

log = logging.getLogger(__name__)

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3_SPLIT = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_SPLIT = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_DEEPSEEK_LETTERS = (  # llama.cpp's cased-letter ranges; escaped characters are ones editors NFC-normalize
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ"
    "-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+"
)


@dataclass(frozen=True)
class PreTokenizer:
    """One llama.cpp pre-tokenizer type: its splits and the flags llama.cpp sets with it."""

    splits: tuple[str, ...]
    ignore_merges: bool = False  # a word that is itself in the vocabulary is one token (LLaMA-3)
    add_bos: bool = False  # llama.cpp's default when the file has no `tokenizer.ggml.add_bos_token`

    def build(self) -> pre_tokenizers.PreTokenizer:
        splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in self.splits]
        return pre_tokenizers.Sequence([*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


DEFAULT = PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", GPT2_SPLIT, r"\p{N}+", "[0-9][0-9][0-9]"))
GPT2 = PreTokenizer((GPT2_SPLIT,))
SMOLLM = PreTokenizer((r"\p{N}", GPT2_SPLIT))  # digits one by one, then GPT-2's split
LLAMA3 = PreTokenizer((LLAMA3_SPLIT,), ignore_merges=True, add_bos=True)
QWEN2 = PreTokenizer((QWEN2_SPLIT,))
FALCON = PreTokenizer((r"[\p{P}\$\+<=>\^~\|`]+", GPT2_SPLIT, "[0-9][0-9][0-9]"))
DEEPSEEK_LLM = PreTokenizer(("[\r\n]", _DEEPSEEK_LETTERS, r"\s?[!-/:-~！-／：-～‘-‟　-。]+", r"\s+$",
                             "[一-龥ࠀ-一가-퟿]+", r"\p{N}+"))
DEEPSEEK_CODER = PreTokenizer(("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", r"\p{N}"))

# `tokenizer.ggml.pre` value -> pre-tokenizer, grouped as llama.cpp's llama_vocab::impl::load groups them
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": DEFAULT,
    **dict.fromkeys(["gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
                     "mellum", "modern-bert", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4"], GPT2),
    **dict.fromkeys(["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"], SMOLLM),
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano"], LLAMA3),
    **dict.fromkeys(["dbrx", "smaug-bpe"], PreTokenizer((LLAMA3_SPLIT,))),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"], QWEN2),
    "falcon": FALCON,
    "deepseek-llm": DEEPSEEK_LLM,
    "deepseek-coder": DEEPSEEK_CODER,
}


def pre_tokenizer(name: str | None, path: object = "") -> PreTokenizer:
    """The pre-tokenizer for a `tokenizer.ggml.pre` value; llama.cpp's default (with a warning) otherwise."""
    if name in PRE_TOKENIZERS:
        return PRE_TOKENIZERS[name]
    if name:
        log.warning("%s: pre-tokenizer '%s' is unknown to the engine; splitting text with llama.cpp's default "
                    "instead, so token ids may differ from llama.cpp's", path, name)
    else:
        log.warning("%s: the file names no pre-tokenizer; using llama.cpp's default", path)
    return DEFAULT
