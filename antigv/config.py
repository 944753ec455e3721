"""Configuration: one typed, frozen structure read from ``config.toml``.

Every key has a default except ``security.admin_api_key``. Unknown keys, wrong
types and bad values raise :class:`ConfigError` with one line naming the key.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from antigv.backends.google.models import THINKING_FAMILIES
from antigv.store.crypto import TokenCipherError, parse_key

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


# Marks a key that holds a filesystem path: relative ones resolve against the config
# file's directory, so a command run from elsewhere finds the same files (issue 11 #4).
_PATH = {"path": True}


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
    # Seconds a request body may take to arrive; a slower one is a 408 (issue 11 item 24).
    body_timeout: float = field(default=30.0, metadata=_check(_positive, "must be > 0"))
    # The address users reach the gateway at, when a proxy puts it behind a path prefix
    # (https://example.com/antigv): the web console builds its links from it. Empty: the
    # request's own address.
    public_url: str = field(
        default="",
        metadata=_check(
            lambda u: u == "" or (u.startswith(("http://", "https://")) and not u.endswith("/")),
            "must be empty or an http(s) URL without a trailing slash",
        ),
    )
    # Seconds of silence after which a /v1/messages stream gets a ping event, as Anthropic
    # sends them while the model thinks (0 = none).
    stream_ping_interval: float = field(default=10.0, metadata=_check(_non_negative, "must be >= 0"))


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str = ""
    pool_min: int = field(default=1, metadata=_check(_non_negative, "must be >= 0"))
    pool_max: int = field(default=20, metadata=_check(_positive, "must be > 0"))
    # Where the embedded cluster lives when ``dsn`` is empty.
    embedded_dir: str = field(default="var/pg", metadata=_PATH)
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
    # Without a key, `serve` refuses to start unless this says clear-text tokens are meant.
    allow_plaintext_tokens: bool = False

    @property
    def max_request_bytes(self) -> int:
        return parse_size(self.max_request_size)


_VERSION_RE = re.compile(r"^\d{1,6}(?:\.\d{1,6}){1,3}$")
_PLATFORM_RE = re.compile(r"^[A-Za-z0-9_]+/[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class UpstreamConfig:
    # PROTOCOL §13.2: the daily host first, production second.
    base_urls: list[str] = field(
        default_factory=lambda: [
            "https://daily-cloudcode-pa.googleapis.com",
            "https://cloudcode-pa.googleapis.com",
        ],
        metadata=_check(_are_urls, "must be a non-empty list of http(s) URLs"),
    )
    # PROTOCOL §13.1. Empty: antigravity/hub/{max(floor, manifest version)} {platform};
    # anything else is sent as is and the manifest is not read.
    user_agent: str = ""
    client_version_floor: str = field(
        default="2.9.1", metadata=_check(_VERSION_RE.match, "must be a version such as 2.9.1")
    )
    platform: str = field(
        default="darwin/arm64", metadata=_check(_PLATFORM_RE.match, "must look like darwin/arm64")
    )
    # The Antigravity hub's auto-updater manifest (a YAML with a version: key); "" = never read it.
    version_manifest_url: str = field(
        default="https://antigravity-hub-auto-updater-974169037036.us-central1.run.app/manifest/latest-arm64-mac.yml",
        metadata=_check(lambda u: u == "" or _is_url(u), "must be empty or an http(s) URL"),
    )
    connect_timeout: float = field(default=10.0, metadata=_check(_positive, "must be > 0"))
    first_byte_timeout: float = field(default=120.0, metadata=_check(_positive, "must be > 0"))
    # Seconds without a data frame (SSE comments do not count) before a stream is given up.
    idle_timeout: float = field(default=60.0, metadata=_check(_positive, "must be > 0"))
    # Seconds one upstream stream may last at most, however steadily it sends.
    max_stream_seconds: float = field(default=1800.0, metadata=_check(_positive, "must be > 0"))
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
    # PROTOCOL §13.6: one upstream bucket per provider family; each image model has
    # its own quota, so it matches no group and is a group of its own.
    return {
        "gemini": ["gemini-*", "!*-image"],
        "claude_gpt": ["claude-*", "gpt-oss-*"],
    }


def _default_quota_buckets() -> dict[str, str]:
    # PROTOCOL §13.6: the family buckets of retrieveUserQuotaSummary (bucketId without
    # its window: "gemini-weekly" -> "gemini", "3p-5h" -> "3p") and the group each limits.
    return {"gemini": "gemini", "3p": "claude_gpt"}


_PATTERN_CHARS = frozenset("*?[")


def _is_pattern(entry: str) -> bool:
    return not _PATTERN_CHARS.isdisjoint(entry)


def _valid_groups(groups: dict[str, list[str]]) -> bool:
    """Every group has at least one model or pattern it includes; a model *name* is in one
    group only (patterns may overlap: the first group in the table wins)."""
    named: set[str] = set()
    for group, entries in groups.items():
        if not group or not any(e and not e.startswith("!") for e in entries):
            return False
        for entry in entries:
            if entry in ("", "!"):
                return False
            if _is_pattern(entry) or entry.startswith("!"):
                continue
            if entry in named:
                return False
            named.add(entry)
    return True


def _valid_buckets(buckets: dict[str, str]) -> bool:
    return all(bucket and group for bucket, group in buckets.items())


@dataclass(frozen=True)
class _GroupMatcher:
    name: str
    includes: tuple[re.Pattern[str], ...]
    excludes: tuple[re.Pattern[str], ...]

    def matches(self, model: str) -> bool:
        return any(p.match(model) for p in self.includes) and not any(p.match(model) for p in self.excludes)


@dataclass(frozen=True)
class QuotasConfig:
    # Group -> model names or shell-style patterns ("gemini-*"); "!pattern" leaves models out.
    # A model named exactly belongs to that group; otherwise the first group (in table order)
    # whose patterns take it; a model no group takes is a group of its own.
    groups: dict[str, list[str]] = field(
        default_factory=_default_quota_groups,
        metadata=_check(
            _valid_groups,
            "must map each group to model names or patterns ('gemini-*', '!*-image' to leave out),"
            " at least one included, and name a model in one group only",
        ),
    )
    # Summary bucket family -> the quota group its windows limit (PROTOCOL §13.6).
    buckets: dict[str, str] = field(
        default_factory=_default_quota_buckets,
        metadata=_check(_valid_buckets, "must map bucket names to quota group names"),
    )
    # Seconds after which a stored quota read counts as stale.
    stale_after: float = field(default=30.0, metadata=_check(_positive, "must be > 0"))

    @functools.cached_property
    def _named(self) -> dict[str, str]:
        return {
            entry: group
            for group, entries in self.groups.items()
            for entry in entries
            if not _is_pattern(entry) and not entry.startswith("!")
        }

    @functools.cached_property
    def _matchers(self) -> tuple[_GroupMatcher, ...]:
        def compiled(entries: list[str]) -> tuple[re.Pattern[str], ...]:
            return tuple(re.compile(fnmatch.translate(e)) for e in entries)

        return tuple(
            _GroupMatcher(
                group,
                compiled([e for e in entries if not e.startswith("!")]),
                compiled([e[1:] for e in entries if e.startswith("!")]),
            )
            for group, entries in self.groups.items()
        )

    def group_of(self, model: str) -> str:
        """The quota group of a model; a model in no group is its own group."""
        named = self._named.get(model)
        if named is not None:
            return named
        for matcher in self._matchers:
            if matcher.matches(model):
                return matcher.name
        return model

    def named_models(self, group: str) -> list[str]:
        """The models a group names exactly (a group not configured names itself)."""
        if group not in self.groups:
            return [group]
        return [model for model, named_in in self._named.items() if named_in == group]

    def group_of_bucket(self, bucket: str) -> str | None:
        """The quota group a summary bucket family limits; None for a bucket no group maps."""
        return self.buckets.get(bucket)


def _default_model_aliases() -> dict[str, str]:
    # PROTOCOL §13.4: retired ids peers serve as their successors (AGM model_mapping.rs);
    # deprecatedModelIds learnt from the upstream add to these at run time.
    return {
        "gemini-3-pro-high": "gemini-pro-agent",
        "gemini-3.1-pro-high": "gemini-pro-agent",
        "gemini-3-pro-low": "gemini-3.1-pro-low",
        "claude-opus-4-5*": "claude-opus-4-6-thinking",
        "claude-sonnet-4-5*": "claude-sonnet-4-6",
        "gemini-3.5-flash-*": "gemini-3.7-flash-high",
        # Claude clients' names (issue 13): Claude Code's default is a newer model than the
        # upstream serves (claude-opus-5-5 in 2.1.332); a family's ids the upstream does not
        # offer go to its model, and Haiku, which it does not serve, to a fast one.
        "claude-opus-*": "claude-opus-4-6-thinking",
        "claude-sonnet-*": "claude-sonnet-4-6",
        "claude-haiku-*": "gemini-3-flash",
    }


def _valid_aliases(aliases: dict[str, str]) -> bool:
    """Keys are ids or prefixes ending in ``*``; targets are plain ids."""
    return all(
        old.rstrip("*") and "*" not in old.rstrip("*") and new and "*" not in new and old != new
        for old, new in aliases.items()
    )


_THINKING_FIELDS = {"depth": ("level", "budget"), "default": (True, False)}


def _valid_thinking(table: dict[str, dict[str, str | bool]]) -> bool:
    return all(
        family in THINKING_FAMILIES
        and all(
            key in _THINKING_FIELDS
            and type(value) is type(_THINKING_FIELDS[key][0])
            and value in _THINKING_FIELDS[key]
            for key, value in fields.items()
        )
        for family, fields in table.items()
    )


@dataclass(frozen=True)
class ModelsConfig:
    # Requested id -> the id served instead; a key ending in "*" matches by prefix
    # (PROTOCOL §13.4). Setting it replaces the defaults.
    aliases: dict[str, str] = field(
        default_factory=_default_model_aliases,
        metadata=_check(_valid_aliases, "must map ids (or prefixes ending in '*') to other plain ids"),
    )
    # Per thinking family (gemini, gemini-2, claude, gpt-oss, other): {depth = "level" | "budget",
    # default = true | false} over the built-in table (PROTOCOL §13.5).
    thinking: dict[str, dict[str, str | bool]] = field(
        default_factory=dict,
        metadata=_check(
            _valid_thinking,
            "must map gemini|gemini-2|claude|gpt-oss|other to {depth = 'level'|'budget', default = true|false}",
        ),
    )


def _ascending_positive(values: list[float]) -> bool:
    return all(v > 0 for v in values) and values == sorted(values)


@dataclass(frozen=True)
class FailoverConfig:
    """What one failed attempt costs the account and the request (gateway/failover.py)."""

    # A rate limit asking for at most this many seconds is waited out on the same account.
    short_rate_limit: float = field(default=5.0, metadata=_check(_non_negative, "must be >= 0"))
    # The wait assumed when a rate limit names none.
    rate_limit_wait: float = field(default=2.0, metadata=_check(_positive, "must be > 0"))
    # Seconds a model is parked on an account after each kind of failure that names no end.
    quota_cooldown: float = field(default=3600.0, metadata=_check(_positive, "must be > 0"))
    permission_cooldown: float = field(default=600.0, metadata=_check(_positive, "must be > 0"))
    unauthenticated_cooldown: float = field(default=300.0, metadata=_check(_positive, "must be > 0"))
    # VALIDATION_REQUIRED parks the whole account this long (PROTOCOL §13.9; AGM: 10 minutes).
    validation_cooldown: float = field(default=600.0, metadata=_check(_positive, "must be > 0"))
    # Waits, in order, before trying again when the upstream has no capacity (server-wide).
    capacity_backoff: list[float] = field(
        default_factory=lambda: [1.0, 2.0, 4.0, 8.0],
        metadata=_check(_ascending_positive, "must be ascending numbers > 0"),
    )
    # An account's project is asked for again at most this often (seconds, per instance).
    project_recheck: float = field(default=600.0, metadata=_check(_non_negative, "must be >= 0"))


@dataclass(frozen=True)
class GeminiApiConfig:
    """Gemini API keys as accounts (issue 15, backends/gemini_api/); timeouts are [upstream]'s."""

    base_url: str = field(
        default="https://generativelanguage.googleapis.com",
        metadata=_check(
            lambda u: u.startswith(("http://", "https://")) and not u.endswith("/"),
            "must be an http(s) URL without a trailing slash",
        ),
    )
    # Tokens a shared key account adds to its users' pools per day: a key reports no
    # remaining fraction, so pool charges are its tokens against this allowance.
    pool_daily_tokens: int = field(default=1_000_000, metadata=_check(_positive, "must be > 0"))
    # Where key accounts stand against OAuth accounts of the same rank (dedicated or shared).
    prefer: str = field(
        default="mixed",
        metadata=_check(lambda v: v in ("first", "last", "mixed"), "must be first|last|mixed"),
    )


@dataclass(frozen=True)
class KeysConfig:
    """Per-key limits across instances (issue 14, gateway/admission.py)."""

    # Seconds between an instance's exchanges of key traffic with the others through the
    # database: the tolerance of a limit shared by several instances.
    reconcile_interval: float = field(default=1.0, metadata=_check(_positive, "must be > 0"))


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
    models: ModelsConfig = field(default_factory=ModelsConfig)
    failover: FailoverConfig = field(default_factory=FailoverConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    gemini_api: GeminiApiConfig = field(default_factory=GeminiApiConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Where the file was read from; relative paths (embedded_dir) resolve against
    # its directory (against the working directory when there is no file).
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


def _build_section(name: str, cls: type, raw: Any, base_dir: Path | None = None) -> Any:
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
    if base_dir is not None:
        # Defaults too; an absolute value stays as it is.
        paths = {k: str(base_dir / getattr(section, k)) for k, f in fields.items() if f.metadata.get("path")}
        section = dataclasses.replace(section, **paths)
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
    base_dir = Path(source).resolve().parent if source else None
    sections = {
        name: _build_section(name, cls, raw.get(name, {}), base_dir) for name, cls in section_types.items()
    }
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
