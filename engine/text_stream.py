"""Turn generated token bytes into text safely: whole UTF-8 characters only, stop strings cut out.

A stop string may span several tokens, so text that could be the start of one is held back
until the next token shows whether it is.
"""
from __future__ import annotations

import codecs


class TextStream:
    """Feed token bytes; get back the text that is final. `stopped` turns true at a stop string."""

    def __init__(self, stop: list[str] | tuple[str, ...] = ()):
        self.stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""  # everything decoded so far, stop string removed once found
        self._emitted = 0
        self.stopped = False

    @property
    def text(self) -> str:
        return self._text

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the newly final text (maybe empty)."""
        if self.stopped:
            return ""
        self._text += self._decoder.decode(piece)
        if self._cut_at_stop():
            return self._flush(len(self._text))
        return self._flush(len(self._text) - self._held_back())

    def finish(self) -> str:
        """End of generation: release everything held back (an incomplete character becomes U+FFFD)."""
        if not self.stopped:
            self._text += self._decoder.decode(b"", final=True)
            if self._cut_at_stop():
                return self._flush(len(self._text))
        return self._flush(len(self._text))

    def _cut_at_stop(self) -> bool:
        search_from = max(0, self._emitted - max((len(s) for s in self.stop), default=0))
        hits = [i for i in (self._text.find(s, search_from) for s in self.stop) if i >= 0]
        if not hits:
            return False
        self._text, self.stopped = self._text[:min(hits)], True
        return True

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of some stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self._text)), longest, -1):
                if self._text.endswith(s[:n]):
                    longest = n
                    break
        return longest

    def _flush(self, upto: int) -> str:
        upto = max(upto, self._emitted)
        out, self._emitted = self._text[self._emitted:upto], upto
        return out
