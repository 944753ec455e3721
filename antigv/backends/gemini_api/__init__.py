"""Gemini API keys through Google's public API (issue 15)."""

# The accounts.kind this backend serves.
KIND = "gemini_api"
