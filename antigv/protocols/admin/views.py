"""The account as the API shows it (SPEC §9): never a token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from antigv.store.accounts import Account


def account_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the account queries (``get_account`` and friends) as JSON-ready data.

    Built through :class:`Account`, whose fields are the allow-list, so a token column
    selected by mistake can never leak.
    """
    return asdict(Account.from_row(row))
