"""Configuration: one typed, frozen structure read from ``config.toml``.

Every key has a default except ``security.admin_api_key``. Unknown keys, wrong
types and bad values raise :class:`ConfigError` with one line naming the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from .crypto import TokenCipherError, parse_key

ENV_CONFIG_PATH = "ANTIGV_CONFIG"
ENV_OVERRIDES = {
    "ANTIGV_DATABASE_DSN": ("database", "dsn"),
    "ANTIGV_ADMIN_API_KEY": ("security", "admin_api_key"),
    "ANTIGV_TOKEN_ENCRYPTION_KEY": ("security", "token_encryption_key"),
}


class ConfigError(Exception):
    """A config problem, already phrased as one line naming the key."""


def _check(predicate: Callable[[Any], bool], why: str) -> dict[str, Any]:
    return {"check": (predicate, why)}


def _positive(value: Any) -> bool:
    return value > 0


def _non_negative(value: Any) -> bool:
    return value >= 0


_SIZE_RE = re.compile(r"^\s*(\d+)\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def parse_size(text: str) -> int:
    """``"50mb"`` -> bytes. Raises ValueError on anything else."""
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(text)
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _SIZE_UNITS[unit]


def _is_size(text: str) -> bool:
    try:
        return parse_size(text) > 0
    except ValueError:
        return False


def _is_token_key(text: str) -> bool:
    try:
        parse_key(text)
    except TokenCipherError:
        return False
    return True


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://")) and len(text) > len("https://")


def _are_urls(values: list[str]) -> bool:
    return bool(values) and all(_is_url(v) for v in values)


def _are_networks(values: list[str]) -> bool:
    try:
        for value in values:
            ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = field(default=8045, metadata=_check(lambda p: 0 < p < 65536, "must be 1..65535"))
    # Seconds in-flight requests get to finish after SIGTERM.
    shutdown_timeout: float = field(default=30.0, metadata=_check(_non_negative, "must be >= 0"))


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str = ""
    pool_min: int = field(default=1, metadata=_check(_non_negative, "must be >= 0"))
    pool_max: int = field(default=20, metadata=_check(_positive, "must be > 0"))
    # Where the embedded cluster lives when ``dsn`` is empty.
    embedded_dir: str = "var/pg"
    # Seconds the request path reuses an account list it read (0 = read every time).
    account_cache_ttl: float = field(default=1.0, metadata=_check(lambda t: 0 <= t <= 60, "must be 0..60"))


@dataclass(frozen=True)
class SecurityConfig:
    admin_api_key: str = field(
        default="", metadata=_check(lambda k: len(k) >= 16, "is required (at least 16 characters)")
    )
    max_request_size: str = field(default="50mb", metadata=_check(_is_size, "must look like 50mb"))
    token_encryption_key: str = field(
        default="", metadata=_check(_is_token_key, "must be empty or base64 of 32 bytes")
    )

    @property
    def max_request_bytes(self) -> int:
        return parse_size(self.max_request_size)


@dataclass(frozen=True)
class UpstreamConfig:
    base_urls: list[str] = field(
        default_factory=lambda: [
            "https://daily-cloudcode-pa.sandbox.googleapis.com",
            "https://cloudcode-pa.googleapis.com",
        ],
        metadata=_check(_are_urls, "must be a non-empty list of http(s) URLs"),
    )
    user_agent: str = "antigravity/1.11.3 windows/amd64"
    connect_timeout: float = field(default=10.0, metadata=_check(_positive, "must be > 0"))
    first_byte_timeout: float = field(default=120.0, metadata=_check(_positive, "must be > 0"))
    idle_timeout: float = field(default=60.0, metadata=_check(_positive, "must be > 0"))
    # Attempts across accounts and hosts before the client gets an error.
    max_attempts: int = field(default=4, metadata=_check(_positive, "must be > 0"))
    # Seconds /v1/models answers from cache.
    models_cache_ttl: float = field(default=60.0, metadata=_check(_non_negative, "must be >= 0"))


@dataclass(frozen=True)
class OAuthConfig:
    client_id: str = "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com"
    client_secret: str = "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"
    callback_url: str = field(
        default="http://localhost:42532/oauth-callback", metadata=_check(_is_url, "must be a URL")
    )
    authorize_url: str = field(
        default="https://accounts.google.com/o/oauth2/v2/auth", metadata=_check(_is_url, "must be a URL")
    )
    token_url: str = field(
        default="https://oauth2.googleapis.com/token", metadata=_check(_is_url, "must be a URL")
    )
    userinfo_url: str = field(
        default="https://www.googleapis.com/oauth2/v2/userinfo", metadata=_check(_is_url, "must be a URL")
    )
    # Seconds an authorize state stays valid (SPEC §4: 5 minutes, 10 at most).
    state_ttl: int = field(default=300, metadata=_check(lambda s: 0 < s <= 600, "must be 1..600"))


@dataclass(frozen=True)
class DefaultsConfig:
    temperature: float = field(default=1.0, metadata=_check(lambda t: 0 <= t <= 2, "must be 0..2"))
    top_p: float = field(default=0.85, metadata=_check(lambda t: 0 < t <= 1, "must be in (0, 1]"))
    top_k: int = field(default=50, metadata=_check(_positive, "must be > 0"))
    max_tokens: int = field(default=8096, metadata=_check(_positive, "must be > 0"))
    system_instruction: str = ""


def _default_quota_groups() -> dict[str, list[str]]:
    # Models that draw on one upstream bucket (PROTOCOL §6).
    return {
        "gemini-3-pro": ["gemini-3-pro-high", "gemini-3-pro-low"],
        "claude": [
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-thinking",
            "claude-opus-4-5-thinking",
            "gpt-oss-120b-medium",
        ],
        "gemini-2.5-pro": ["gemini-2.5-pro", "gemini-2.5-pro-thinking"],
    }


def _valid_groups(groups: dict[str, list[str]]) -> bool:
    seen: set[str] = set()
    for models in groups.values():
        for model in models:
            if model in seen:
                return False
            seen.add(model)
    return True


@dataclass(frozen=True)
class QuotasConfig:
    groups: dict[str, list[str]] = field(
        default_factory=_default_quota_groups,
        metadata=_check(_valid_groups, "must not list a model in two groups"),
    )
    # Seconds after which a stored quota read counts as stale.
    stale_after: float = field(default=30.0, metadata=_check(_positive, "must be > 0"))

    def group_of(self, model: str) -> str:
        """The quota group of a model; a model in no group is its own group."""
        for group, models in self.groups.items():
            if model in models:
                return group
        return model


@dataclass(frozen=True)
class TasksConfig:
    enabled: bool = True
    # Seconds between rounds of the background loop.
    interval: float = field(default=15.0, metadata=_check(_positive, "must be > 0"))
    # Refresh access tokens this many seconds before they expire.
    refresh_ahead: float = field(default=600.0, metadata=_check(_non_negative, "must be >= 0"))
    # Usage rows older than this many days are deleted; 0 keeps them all.
    usage_retention_days: float = field(default=0.0, metadata=_check(_non_negative, "must be >= 0"))


@dataclass(frozen=True)
class MetricsConfig:
    # Addresses or networks that may read /metrics without the admin key.
    allowed_addresses: list[str] = field(
        default_factory=list, metadata=_check(_are_networks, "must be IP addresses or networks")
    )


@dataclass(frozen=True)
class LoggingConfig:
    level: str = field(
        default="info",
        metadata=_check(
            lambda v: v in ("debug", "info", "warning", "error"), "must be debug|info|warning|error"
        ),
    )
    # auto: JSON lines unless stdout is a terminal.
    format: str = field(
        default="auto",
        metadata=_check(lambda v: v in ("auto", "json", "console"), "must be auto|json|console"),
    )


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    oauth: OAuthConfig = field(default_factory=OAuthConfig)
    defaults: DefaultsConfig = field(default_factory=DefaultsConfig)
    quotas: QuotasConfig = field(default_factory=QuotasConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Where the file was read from; relative paths (embedded_dir) resolve against
    # the working directory, not this.
    source: str = field(default="", compare=False)


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is list:
        (item,) = get_args(annotation)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        key_t, value_t = get_args(annotation)
        return isinstance(value, dict) and all(
            _type_ok(k, key_t) and _type_ok(v, value_t) for k, v in value.items()
        )
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is list:
        return f"a list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        annotation, str(annotation)
    )


def _build_section(name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config: [{name}] must be a table")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"config: unknown key {name}.{unknown[0]}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        annotation = hints[key]
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not _type_ok(value, annotation):
            raise ConfigError(f"config: {name}.{key} must be {_type_name(annotation)}")
        values[key] = value
    section = cls(**values)
    for key, f in fields.items():
        check = f.metadata.get("check")
        if check and not check[0](getattr(section, key)):
            raise ConfigError(f"config: {name}.{key} {check[1]}")
    return section


def build_config(raw: dict[str, Any], *, source: str = "", env: dict[str, str] | None = None) -> Config:
    """Validate a parsed TOML document (plus env overrides) into a Config."""
    env = os.environ if env is None else env
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            raw.setdefault(section, {})
            if isinstance(raw[section], dict):
                raw[section][key] = env[var]
    section_types = {
        f.name: get_type_hints(Config)[f.name] for f in dataclasses.fields(Config) if f.name != "source"
    }
    unknown = sorted(set(raw) - set(section_types))
    if unknown:
        raise ConfigError(f"config: unknown section [{unknown[0]}]")
    sections = {name: _build_section(name, cls, raw.get(name, {})) for name, cls in section_types.items()}
    return Config(**sections, source=source)


def config_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get(ENV_CONFIG_PATH) or "config.toml")


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate ``config.toml``. Raises ConfigError with one line."""
    file = config_path(str(path) if path else None)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config: {file} not found (create one with: antigv init-config {file})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {file} is not valid TOML: {exc}") from None
    return build_config(raw, source=str(file))
