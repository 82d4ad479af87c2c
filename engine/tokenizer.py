"""Tokenizer built from a GGUF file's own vocabulary metadata (no tokenizer.json, no hub).

Both vocab kinds llama.cpp knows for LLaMA-family files: SentencePiece-style `llama`
(LLaMA-2, TinyLlama, Mistral) and GPT-2-style byte-level BPE `gpt2` (SmolLM, LLaMA-3).
Hugging Face `tokenizers` does the work; transformers' GGUF converter builds it.
"""
from __future__ import annotations

import logging
import re

from tokenizers import Tokenizer as BackendTokenizer
from tokenizers import pre_tokenizers

from .gguf_file import GGUFFile, ModelFileError

log = logging.getLogger(__name__)

CONTROL, USER_DEFINED, BYTE = 3, 4, 6  # llama.cpp token types
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")

# Pre-tokenizer splits (llama.cpp's `tokenizer.ggml.pre`) that the converter leaves at GPT-2's default.
_SMOLLM_PRE = pre_tokenizers.Sequence([
    pre_tokenizers.Digits(individual_digits=True),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
])
_EXTRA_PRE_TOKENIZERS = {"smollm": _SMOLLM_PRE}


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-printable-character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class Tokenizer:
    """encode/decode with ids equal to llama.cpp's (special tokens in text are recognised)."""

    def __init__(self, backend: BackendTokenizer, tokens: list[str], token_types: list[int], kind: str,
                 bos_id: int | None, eos_id: int | None, add_bos: bool, add_space_prefix: bool = True):
        self.backend, self.kind = backend, kind
        self.tokens, self.token_types = tokens, token_types
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        self.add_space_prefix = add_space_prefix
        self._pieces = self._token_pieces()
        self._special_ids = {t: i for i, (t, ty) in enumerate(zip(tokens, token_types)) if ty in (CONTROL, USER_DEFINED) and t}
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
            ids = self.backend.encode(text, add_special_tokens=False).ids
        add_bos = self.add_bos if add_bos is None else add_bos
        if add_bos and self.bos_id is not None and ids[:1] != [self.bos_id]:
            ids = [self.bos_id, *ids]
        return ids

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
                ids += self.backend.encode(prefix + fragment, add_special_tokens=False).ids
                after_special = False
        return ids

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

    def _token_pieces(self) -> list[bytes]:
        if self.kind == "gpt2":
            table = _byte_decoder()
            return [t.encode() if ty in (CONTROL, USER_DEFINED) or not set(t) <= table.keys()
                    else bytes(table[c] for c in t) for t, ty in zip(self.tokens, self.token_types)]
        pieces = []
        for t, ty in zip(self.tokens, self.token_types):
            byte = _BYTE_TOKEN.match(t) if ty == BYTE else None
            pieces.append(bytes([int(byte.group(1), 16)]) if byte else t.replace("\u2581", " ").encode())
        return pieces

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> Tokenizer:
        kind = gguf.get("tokenizer.ggml.model")
        if kind not in ("llama", "gpt2"):
            raise ModelFileError(f"{gguf.path}: tokenizer kind '{kind}' is not supported "
                                 "(only 'llama' SentencePiece and 'gpt2' BPE)")
        tokens = gguf.require("tokenizer.ggml.tokens")
        token_types = gguf.get("tokenizer.ggml.token_type") or [1] * len(tokens)
        backend = _build_backend(gguf, kind, tokens, token_types)
        return cls(
            backend, tokens, token_types, kind,
            bos_id=gguf.get("tokenizer.ggml.bos_token_id"),
            eos_id=gguf.get("tokenizer.ggml.eos_token_id"),
            add_bos=bool(gguf.get("tokenizer.ggml.add_bos_token", kind == "llama")),
            add_space_prefix=bool(gguf.get("tokenizer.ggml.add_space_prefix", True)),
        )


def _build_backend(gguf: GGUFFile, kind: str, tokens: list[str], token_types: list[int]) -> BackendTokenizer:
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    spec = {"tokenizer_type": kind, "tokens": tokens, "token_type": token_types,
            "pre_tokenizer_type": gguf.get("tokenizer.ggml.pre")}
    for key in ("scores", "merges"):
        if gguf.get(f"tokenizer.ggml.{key}") is not None:
            spec[key] = gguf.get(f"tokenizer.ggml.{key}")
    try:
        backend, _ = convert_gguf_tokenizer(gguf.get("general.architecture", "llama"), spec)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{gguf.path}: cannot build the tokenizer from its metadata ({exc})") from exc
    extra = _EXTRA_PRE_TOKENIZERS.get(spec["pre_tokenizer_type"])
    if kind == "gpt2" and extra is not None:
        backend.pre_tokenizer = extra
    if kind == "llama":  # Tokenizer._encode_sentencepiece adds the prefix space itself
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=False)
    return backend
