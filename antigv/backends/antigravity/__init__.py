"""Google accounts through Cloud Code's ``v1internal`` API (PROTOCOL §13)."""

# The accounts.kind this backend serves.
KIND = "antigravity"
