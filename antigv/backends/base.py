"""The seam between the gateway and an upstream kind: what the gateway asks of a backend.

A backend encodes the core's request for its upstream, opens a reply on one account
and decodes it into core events, classifies its failures into core failure kinds
(raised as :class:`~antigv.core.failures.UpstreamFailure`) and may repair an account
the upstream refused. Everything else (choosing accounts, failover, signatures, usage)
is the gateway's. A new upstream kind is a new package implementing these protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from antigv.core.conversation import ChatRequest
from antigv.core.events import Event, Usage
from antigv.core.models import ModelInfo

# A candidate account as the routing query returns it (credentials included).
Account = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCallSignature:
    """A thought signature remembered server-side for one tool call."""

    signature: str
    # The exact thinking text that preceded the call (Claude); None for Gemini.
    thinking: str | None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request encoded for one backend, before an account is chosen."""

    # The upstream model id.
    model: str
    # Hex digest of the conversation's opening: keeps a conversation on one account.
    session_key: str
    # The backend's own encoding, opaque to the gateway.
    payload: Any


class BackendReply(Protocol):
    """One open upstream reply, decoded."""

    def batches(self) -> AsyncIterator[Sequence[Event]]:
        """The events of each upstream read (maybe none), in order."""
        ...

    def closing(self) -> Sequence[Event]:
        """Once the batches end: the reply's ``Usage`` and ``Finish``."""
        ...

    @property
    def usage(self) -> Usage: ...

    @property
    def signatures(self) -> Mapping[str, ToolCallSignature]:
        """Tool call id -> the signature a later turn must replay, captured so far."""
        ...

    def close(self) -> None:
        """Abort the upstream request if it is still running; idempotent."""
        ...


class Backend(Protocol):
    def signature_family(self, model: str) -> str:
        """Signatures only open for the family of models that made them."""
        ...

    def wanted_signatures(self, request: ChatRequest) -> list[str]:
        """Ids of history tool calls whose signatures must come from the server-side store."""
        ...

    def prepare(
        self, request: ChatRequest, signatures: Mapping[str, ToolCallSignature], model: ModelInfo | None
    ) -> Prepared: ...

    async def open(self, account: Account, prepared: Prepared) -> BackendReply:
        """Send the request on ``account``; raises UpstreamFailure when the upstream refuses."""
        ...

    async def count_tokens(self, account: Account, prepared: Prepared) -> int:
        """The upstream's count of the prepared request's input tokens on ``account``;
        raises UpstreamFailure or CredentialsFailed when it cannot say."""
        ...

    def quota_charge(self, usage: Usage) -> float | None:
        """What a reply of ``usage`` costs the account's quota, when the backend knows at once;
        None when a later quota read settles it."""
        ...

    async def repair(self, account: Account, within: float) -> bool:
        """Try to mend an account whose project or permission was refused; True when it
        changed (the account row is updated in place) and is worth another try."""
        ...
