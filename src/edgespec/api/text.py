"""From committed token ids to text deltas, with stop strings. Text that might be the start of a
stop string is held back until the next tokens show it is not; a multi-byte character split across
tokens waits for its last byte."""

from __future__ import annotations

from edgespec.engine.tokenizer import TokenizerInfo

_INCOMPLETE = "\ufffd"  # what the decoder shows for a character whose bytes have not all arrived


class TextStream:
    def __init__(self, tokenizer: TokenizerInfo, stops: list[str]) -> None:
        self._tokenizer = tokenizer
        self._stops = stops
        self._ids: list[int] = []
        self._text = ""  # the decoded text of every complete character so far
        self._window = 0  # decoding starts here: one step behind, for context
        self._decoded = 0  # ids before this index are in _text
        self._emitted = 0  # characters of the text already handed out
        self.stopped = False
        self.tokens_used = 0  # tokens the output consists of (fewer than pushed once a stop string hit)

    def push(self, tokens: list[int]) -> str:
        """Add tokens; returns the text that is now certain. Sets `stopped` on a stop string."""
        self._ids += tokens
        self.tokens_used = len(self._ids)
        self._decode_new(final=False)
        cut = self._find_stop(self._text)
        if cut is not None:
            self.stopped = True
            self.tokens_used = self._tokens_reaching(len(self._ids) - len(tokens), cut)
            return self._emit(self._text[:cut])
        return self._emit(self._text[: len(self._text) - self._held_back(self._text)])

    def finish(self) -> str:
        """The held-back text, once no more tokens will come."""
        if self.stopped:
            return ""
        self._decode_new(final=True)
        return self._emit(self._text)

    def _decode_new(self, final: bool) -> None:
        """Extend the text by the new ids, decoding only a short window: a token's text can depend on
        the one before it (a leading space, bytes of one character), never on anything earlier."""
        before = self._tokenizer.decode(self._ids[self._window : self._decoded])
        after = self._tokenizer.decode(self._ids[self._window :])
        if len(after) > len(before) and (final or not after.endswith(_INCOMPLETE)):
            self._text += after[len(before) :]
            self._window, self._decoded = self._decoded, len(self._ids)

    def _emit(self, text: str) -> str:
        delta = text[self._emitted :]
        self._emitted = max(self._emitted, len(text))
        return delta

    def _find_stop(self, text: str) -> int | None:
        """Where the earliest stop string starts, searching only text not yet cleared."""
        hits = [text.find(stop, max(0, self._emitted - len(stop) + 1)) for stop in self._stops]
        found = [hit for hit in hits if hit >= 0]
        return min(found) if found else None

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of `text` that could still grow into a stop string."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text) - self._emitted), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _tokens_reaching(self, known_before: int, cut: int) -> int:
        """The fewest tokens whose text reaches through the stop string that starts at `cut`."""
        for count in range(max(known_before, 1), len(self._ids) + 1):
            text = self._tokenizer.decode(self._ids[:count])
            if self._find_stop(text) == cut:
                return count
        return len(self._ids)
