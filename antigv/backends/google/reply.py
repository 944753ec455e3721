"""An open Google ``generateContent`` stream, decoded into core events: the
:class:`~antigv.backends.base.BackendReply` of every Google-family backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence

from antigv.backends.base import ToolCallSignature
from antigv.backends.google.frames import FrameDecoder
from antigv.backends.google.stream import UpstreamStream
from antigv.core.events import Event, Usage


class GoogleReply:
    def __init__(self, stream: UpstreamStream, decoder: FrameDecoder) -> None:
        self._stream = stream
        self._decoder = decoder

    async def batches(self) -> AsyncIterator[Sequence[Event]]:
        decoder = self._decoder
        async for batch in self._stream.batches():
            yield [event for frame in batch for event in decoder.feed(frame)]

    def closing(self) -> Sequence[Event]:
        return self._decoder.finish()

    @property
    def usage(self) -> Usage:
        return self._decoder.usage

    @property
    def signatures(self) -> Mapping[str, ToolCallSignature]:
        return {
            call_id: ToolCallSignature(signature, thinking)
            for call_id, (signature, thinking) in self._decoder.tool_signatures.items()
        }

    def close(self) -> None:
        self._stream.close()
