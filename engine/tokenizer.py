"""Tokenizer built from a GGUF file's own vocabulary metadata (no tokenizer.json, no hub).

Both vocab kinds llama.cpp knows for LLaMA-family files: SentencePiece-style `llama`
(LLaMA-2, TinyLlama, Mistral) and GPT-2-style byte-level BPE `gpt2` (SmolLM, LLaMA-3).
Hugging Face `tokenizers` does the work, configured here as llama.cpp tokenizes (llama-vocab.cpp).
"""
from __future__ import annotations

import codecs
import logging
import re
from itertools import accumulate

from tokenizers import AddedToken, models, pre_tokenizers
from tokenizers import Tokenizer as BackendTokenizer

from .gguf_file import GGUFFile, ModelFileError
from .pre_tokenizer import PreTokenizer, pre_tokenizer

log = logging.getLogger(__name__)

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6  # llama.cpp token types
SPECIAL_TYPES = (UNKNOWN, CONTROL, USER_DEFINED)  # matched whole in text, as llama.cpp does with special=True
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table: byte-level vocabularies spell byte b as chars[b]."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b], extra = chr(256 + extra), extra + 1
    return [chars[b] for b in range(256)]


BYTE_CHARS = _byte_chars()
BYTE_ALPHABET = frozenset(BYTE_CHARS)
_OUTSIDE_ALPHABET = re.compile("[^" + re.escape("".join(BYTE_CHARS)) + "]")
_UNSPELL = codecs.charmap_build("".join(BYTE_CHARS))  # a codec: spelled characters -> their bytes, in C


class Tokenizer:
    """encode/decode with ids equal to llama.cpp's (special tokens in text are recognised)."""

    def __init__(self, backend: BackendTokenizer, tokens: list[str], token_types: list[int], kind: str,
                 bos_id: int | None, eos_id: int | None, add_bos: bool, add_space_prefix: bool = True):
        self.backend, self.kind = backend, kind
        self.tokens, self.token_types = tokens, token_types
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        self.add_space_prefix = add_space_prefix
        self._pieces = _byte_level_pieces(tokens, token_types) if kind == "gpt2" else _sentencepiece_pieces(tokens, token_types)
        self._special_ids = {tokens[i]: i for i in _typed(token_types, SPECIAL_TYPES) if tokens[i]}
        specials = sorted(self._special_ids, key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(map(re.escape, specials)) + ")") if specials else None

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids for `text`; BOS is prepended per the file's `add_bos_token` unless told.

        Unlike llama.cpp, a text that already starts with BOS does not get a second one.
        """
        if self.kind == "llama":
            ids = self._encode_sentencepiece(text)
        else:
            ids = self._ids(text)
        add_bos = self.add_bos if add_bos is None else add_bos
        if add_bos and self.bos_id is not None and ids[:1] != [self.bos_id]:
            ids = [self.bos_id, *ids]
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        """Ids of text that continues other text: no BOS, no SentencePiece prefix space, specials as text."""
        return self._ids(text)

    def _encode_sentencepiece(self, text: str) -> list[int]:
        # As llama.cpp: special tokens are cut out first, and every text fragment that starts
        # the input or follows a special token gets the SentencePiece prefix space.
        ids, after_special = [], True
        for fragment in self._special_split.split(text) if self._special_split else [text]:
            if fragment in self._special_ids:
                ids.append(self._special_ids[fragment])
                after_special = True
            elif fragment:
                prefix = " " if self.add_space_prefix and after_special else ""
                ids += self._ids(prefix + fragment)
                after_special = False
        return ids

    def _ids(self, text: str) -> list[int]:
        # encode_batch, not encode: it lets go of the GIL while it works (~1 s per MB of text), so a
        # server thread tokenizing a long prompt does not stall the event loop or the compute thread
        return self.backend.encode_batch([text], add_special_tokens=False)[0].ids

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for; concatenating them gives the exact generated text."""
        return self._pieces[token_id]

    def decode(self, ids: list[int]) -> str:
        """Text for a complete sequence of ids (broken UTF-8 becomes U+FFFD)."""
        if self.kind == "llama" and ids[:1] == [self.bos_id]:
            ids = ids[1:]  # the implicit BOS that encode() adds is not part of the text
        text = b"".join(self._pieces[i] for i in ids).decode("utf-8", errors="replace")
        if self.kind == "llama" and self.add_space_prefix and text.startswith(" "):
            text = text[1:]  # SentencePiece's prefix space belongs to the encoding, not the text
        return text

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> Tokenizer:
        kind = gguf.get("tokenizer.ggml.model")
        if kind not in ("llama", "gpt2"):
            raise ModelFileError(f"{gguf.path}: tokenizer kind '{kind}' is not supported "
                                 "(only 'llama' SentencePiece and 'gpt2' BPE)")
        tokens = _metadata_list(gguf, "tokenizer.ggml.tokens", str, required=True)
        token_types = _metadata_list(gguf, "tokenizer.ggml.token_type", int) or [NORMAL] * len(tokens)
        if len(token_types) != len(tokens):
            raise ModelFileError(f"{gguf.path}: tokenizer.ggml.token_type has {len(token_types)} entries "
                                 f"for {len(tokens)} tokens; the file is corrupt")
        if kind == "gpt2":
            pre = pre_tokenizer(gguf.get("tokenizer.ggml.pre"), gguf.path)
            backend, bos_default = _byte_level_backend(gguf, tokens, token_types, pre), pre.add_bos
        else:
            backend, bos_default = _sentencepiece_backend(gguf, tokens), True
        return cls(
            backend, tokens, token_types, kind,
            bos_id=gguf.get("tokenizer.ggml.bos_token_id"),
            eos_id=gguf.get("tokenizer.ggml.eos_token_id"),
            add_bos=bool(gguf.get("tokenizer.ggml.add_bos_token", bos_default)),
            add_space_prefix=bool(gguf.get("tokenizer.ggml.add_space_prefix", True)),
        )


def _metadata_list(gguf: GGUFFile, key: str, item: type | tuple[type, ...], required: bool = False) -> list | None:
    """A metadata array whose items are `item`s (a GGUF array has one item type: the first tells)."""
    value = gguf.require(key) if required else gguf.get(key)
    if value is not None and not (isinstance(value, list) and all(isinstance(v, item) for v in value[:1])):
        raise ModelFileError(f"{gguf.path}: metadata '{key}' is not an array of the kind a tokenizer needs; "
                             "the file is corrupt")
    return value


def _typed(token_types: list[int], wanted: tuple[int, ...]) -> list[int]:
    """Indices of the tokens of the `wanted` types (few: most tokens are NORMAL)."""
    return [i for i, ty in enumerate(token_types) if ty != NORMAL and ty in wanted]


def _byte_level_backend(gguf: GGUFFile, tokens: list[str], token_types: list[int], pre: PreTokenizer) -> BackendTokenizer:
    """Byte-level BPE from the file's vocab and merges, split as llama.cpp's `tokenizer.ggml.pre` says."""
    merges = _metadata_list(gguf, "tokenizer.ggml.merges", str)
    if merges is None:
        raise ModelFileError(f"{gguf.path}: a 'gpt2' vocabulary needs tokenizer.ggml.merges, which the file lacks")
    vocab = _byte_level_vocab(tokens)
    model = _bpe(gguf, vocab, _merge_pairs(merges), ignore_merges=pre.ignore_merges,
                 continuing_subword_prefix="", end_of_word_suffix="")
    backend = BackendTokenizer(model)
    backend.pre_tokenizer = pre.build()
    # Special tokens stay whole in text. In a byte-level vocab every real token is written in the
    # byte alphabet, so one marked special that uses any other character is mislabeled; skip it.
    special = [i for i in _typed(token_types, (UNKNOWN, CONTROL)) if BYTE_ALPHABET.issuperset(tokens[i])]
    backend.add_special_tokens([AddedToken(tokens[i], normalized=False, special=True) for i in special])
    user = [i for i in _typed(token_types, (USER_DEFINED,)) if tokens[i] in vocab]
    backend.add_tokens([AddedToken(tokens[i], normalized=False, special=False) for i in user])
    return backend


def _byte_level_vocab(tokens: list[str]) -> dict[str, int]:
    """token -> id, respelling the rare token not written in the byte alphabet (as transformers does)."""
    keys = list(tokens)
    for i in _outside_alphabet(tokens):
        keys[i] = "".join(BYTE_CHARS[b] for b in tokens[i].encode("utf-8"))
    return dict(zip(keys, range(len(keys))))


def _outside_alphabet(tokens: list[str]) -> list[int]:
    """Indices of tokens with a character outside the byte alphabet, from one regex pass over all tokens."""
    joined = "".join(tokens)
    if not _OUTSIDE_ALPHABET.search(joined):
        return []
    ends = list(accumulate(map(len, tokens)))
    hits, i = [], 0
    for match in _OUTSIDE_ALPHABET.finditer(joined):
        while ends[i] <= match.start():
            i += 1
        if not hits or hits[-1] != i:
            hits.append(i)
    return hits


def _sentencepiece_backend(gguf: GGUFFile, tokens: list[str]) -> BackendTokenizer:
    """SentencePiece as BPE with byte fallback; merges from the file or recovered from the scores."""
    vocab = dict(zip(tokens, range(len(tokens))))
    merges = _metadata_list(gguf, "tokenizer.ggml.merges", str)
    scores = _metadata_list(gguf, "tokenizer.ggml.scores", (int, float)) or [0.0] * len(tokens)  # llama.cpp: 0 if missing
    pairs = _merge_pairs(merges) if merges is not None else _merges_from_scores(vocab, tokens, scores)
    backend = BackendTokenizer(_bpe(gguf, vocab, pairs, fuse_unk=True, byte_fallback=True))
    # Tokenizer._encode_sentencepiece adds the prefix space itself and cuts out special tokens
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=False)
    return backend


def _bpe(gguf: GGUFFile, vocab: dict[str, int], merges: list[tuple[str, str]], **options) -> models.BPE:
    try:
        return models.BPE(vocab, merges, **options)
    except Exception as exc:  # noqa: BLE001 -- tokenizers raises a bare Exception for a bad merge
        raise ModelFileError(f"{gguf.path}: cannot build the tokenizer from its metadata ({exc})") from exc


def _merge_pairs(merges: list[str]) -> list[tuple[str, str]]:
    """"a b" -> ("a", "b"), split at the first space after the first character, as llama.cpp does."""
    return [(m[:i], m[i + 1:]) for m in merges if (i := m.find(" ", 1)) > 0]


def _merges_from_scores(vocab: dict[str, int], tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """Every split of a token into two tokens, highest score first (transformers' `generate_merges`)."""
    merges = []
    for token, score in dict(zip(tokens, scores)).items():
        local = [(token[:i], token[i:], score) for i in range(1, len(token)) if token[:i] in vocab and token[i:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges += local
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)  # stable: ties keep vocab order
    return [(a, b) for a, b, _ in merges]


def _byte_level_pieces(tokens: list[str], token_types: list[int]) -> list[bytes]:
    """The bytes each token stands for: byte-level spelling undone; special and mislabeled tokens as UTF-8."""
    literal = _typed(token_types, (CONTROL, USER_DEFINED)) + _outside_alphabet(tokens)
    spelled = list(tokens)
    for i in literal:
        spelled[i] = ""
    # All tokens decoded at once: each spelled character is one byte, so character offsets are byte offsets.
    raw = codecs.charmap_encode("".join(spelled), "strict", _UNSPELL)[0]
    ends = list(accumulate(map(len, spelled)))
    pieces = [raw[a:b] for a, b in zip([0, *ends], ends)]
    for i in literal:
        pieces[i] = tokens[i].encode()
    return pieces


def _sentencepiece_pieces(tokens: list[str], token_types: list[int]) -> list[bytes]:
    pieces = [t.replace("\u2581", " ").encode() for t in tokens]
    for i in _typed(token_types, (BYTE,)):
        byte = _BYTE_TOKEN.match(tokens[i])
        if byte:
            pieces[i] = bytes([int(byte.group(1), 16)])
    return pieces
