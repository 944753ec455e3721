"""Reply text that is not the model's: notices the Antigravity server sends as an answer.

Relaying them would hand clients a fake answer, so the first text of a reply is
checked (PROTOCOL §1.3, §13.4).
"""

from __future__ import annotations

import re

from antigv.core.errors import ModelRetired, UpstreamError

# PROTOCOL §13.4 (sub2api#6452): a retired id may answer with this as reply text.
RETIREMENT_NOTICE = re.compile(
    r"is no longer available\.\s*Please switch to\s*(?P<replacement>[^\n]*?)[.!]?\s*$"
)

# PROTOCOL §1.3: once the server deems the User-Agent version too old it may answer with
# one of these as ordinary reply text.
_CLIENT_OUTDATED_NOTICES = (
    "This version of Antigravity is no longer supported",
    "Your current version of Antigravity is out of date",
)


def retirement_replacement(text: str) -> str | None:
    """The replacement a retirement notice names ("" when it names none); None if ``text`` is no notice."""
    match = RETIREMENT_NOTICE.search(text)
    return None if match is None else match.group("replacement").strip()


def reject_notices(text: str) -> None:
    """Raise the client's error when the reply's first text is a notice, not an answer."""
    replacement = retirement_replacement(text)
    if replacement is not None:  # PROTOCOL §13.4: the model is retired, not answering
        raise ModelRetired(None, replacement or None)
    if any(notice in text for notice in _CLIENT_OUTDATED_NOTICES):
        raise UpstreamError(
            "The upstream no longer accepts this gateway's client version; the configured "
            "User-Agent version must be raised",
            code="upstream_client_outdated",
        )
