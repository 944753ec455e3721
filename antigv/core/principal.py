"""Who is calling: resolved by a surface's authentication, read by the gateway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What one API key may do (issue 14); None is no limit."""

    rpm: int | None = None
    # Prompt + completion tokens per minute, as the upstream reports them.
    tpm: int | None = None
    max_concurrency: int | None = None
    # Exact model ids, or prefixes written with a trailing "*"; None allows every model.
    allowed_models: tuple[str, ...] | None = None
    # Tokens per calendar month (UTC).
    monthly_token_budget: int | None = None

    @property
    def counted(self) -> bool:
        """Whether the key's traffic must be counted (a rate, a cap or a budget is set)."""
        return any(
            limit is not None
            for limit in (self.rpm, self.tpm, self.max_concurrency, self.monthly_token_budget)
        )

    def allows(self, *models: str) -> bool:
        """Whether any of ``models`` (the id asked for, the id it is served as) is allowed."""
        if self.allowed_models is None:
            return True
        return any(
            model == allowed or (allowed.endswith("*") and model.startswith(allowed[:-1]))
            for model in models
            for allowed in self.allowed_models
        )


NO_LIMITS = KeyLimits()


@dataclass(frozen=True, slots=True)
class Principal:
    """The admin (user_id None) or one user, through one of its keys."""

    user_id: int | None
    is_admin: bool
    name: str = ""
    prefer_shared: int = 0
    # The key the request came with; None for the admin key.
    key_id: int | None = None
    limits: KeyLimits = NO_LIMITS
    expires_at: datetime | None = None
