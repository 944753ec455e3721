"""The account as the API shows it (SPEC §9): never a token."""

from __future__ import annotations

from typing import Any

ACCOUNT_FIELDS = (
    "account_id",
    "user_id",
    "email",
    "name",
    "is_shared",
    "status",
    "disabled_reason",
    "project_id",
    "tier",
    "access_token_expires_at",
    "last_used_at",
    "created_at",
    "updated_at",
    # Where the owner re-verifies an account Google asked to validate (PROTOCOL §13.9); else None.
    "validation_url",
)


def cooldowns_view(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The active cooldowns, from the parallel arrays the account queries return."""
    models = row.get("cooldown_models") or []
    untils = row.get("cooldown_untils") or []
    reasons = row.get("cooldown_reasons") or []
    return [
        {"model_name": model, "until": until, "reason": reason}
        for model, until, reason in zip(models, untils, reasons, strict=True)
    ]


def account_view(row: dict[str, Any]) -> dict[str, Any]:
    """One row of the account queries (``get_account`` and friends) as JSON-ready data.

    Built field by field from an allow-list, so a token column selected by
    mistake can never leak.
    """
    view = {name: row[name] for name in ACCOUNT_FIELDS}
    view["cooldowns"] = cooldowns_view(row)
    return view
