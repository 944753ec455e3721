"""Incremental Server-Sent Events parser (the subset the upstream uses, spec-correct).

Feed it the raw bytes of a response as they arrive; it returns the ``data`` payload of
every event completed so far. Reads may split an event, a line, a ``\\r\\n`` pair or a
multi-byte UTF-8 character anywhere (PROTOCOL §4.1).
"""

from __future__ import annotations

import codecs


class SSEParser:
    """Turns a byte stream into event data strings; ``event:``, ``id:``, ``retry:`` are ignored."""

    __slots__ = ("_data_lines", "_decoder", "_partial_line", "_pending_cr")

    def __init__(self) -> None:
        # utf-8-sig drops the byte-order mark the SSE spec allows at the start of a stream.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._partial_line: list[str] = []
        self._data_lines: list[str] = []
        self._pending_cr = False

    @property
    def in_data(self) -> bool:
        """Whether the event being read has data (a ``data`` line read or being read):
        progress, unlike a comment line (a keep-alive; issue 11 item 23)."""
        return bool(self._data_lines) or (
            bool(self._partial_line) and self._partial_line[0].startswith("data:")
        )

    def feed(self, chunk: bytes) -> list[str]:
        """Data of every event completed by ``chunk``, in order."""
        return self._consume(self._decoder.decode(chunk))

    def close(self) -> list[str]:
        """Flush at end of stream.

        Unlike a browser, a final event without its blank line is delivered: the upstream
        may end the body right after the last ``data:`` line, and dropping the frame that
        carries ``finishReason`` and usage would lose them.
        """
        events = self._consume(self._decoder.decode(b"", final=True))
        if self._partial_line:
            self._dispatch_line("".join(self._partial_line), events)
            self._partial_line = []
        self._dispatch_line("", events)
        return events

    def _consume(self, text: str) -> list[str]:
        if self._pending_cr and text:
            self._pending_cr = False
            if text[0] == "\n":
                text = text[1:]  # the "\n" of a "\r\n" pair split between two reads
        if not text:
            return []
        self._pending_cr = text.endswith("\r")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if "\n" not in text:
            self._partial_line.append(text)
            return []
        lines = text.split("\n")
        if self._partial_line:
            self._partial_line.append(lines[0])
            lines[0] = "".join(self._partial_line)
        last = lines.pop()
        self._partial_line = [last] if last else []
        events: list[str] = []
        for line in lines:
            self._dispatch_line(line, events)
        return events

    def _dispatch_line(self, line: str, events: list[str]) -> None:
        if not line:
            if self._data_lines:
                events.append("\n".join(self._data_lines))
                self._data_lines = []
        elif line.startswith("data:"):
            value = line[5:]
            self._data_lines.append(value[1:] if value.startswith(" ") else value)
        elif line == "data":
            self._data_lines.append("")
