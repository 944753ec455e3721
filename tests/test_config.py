"""config.toml: defaults, the example file, one-line errors naming the key, env overrides."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from antigv.config import (
    Config,
    ConfigError,
    SecurityConfig,
    build_config,
    load_config,
    parse_size,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.toml.example"
KEY = "k" * 16


def minimal(**sections: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {"security": {"admin_api_key": KEY}}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw


def config_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        build_config(raw, env={})
    message = str(info.value)
    assert message, "a ConfigError must say what is wrong"
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# --- defaults -----------------------------------------------------------------


def test_defaults():
    config = build_config(minimal(), env={})
    assert config == Config(security=SecurityConfig(admin_api_key=KEY))
    # Values the spec (§8) and the foundation issue name.
    assert config.server.port == 8045
    assert config.server.host == "0.0.0.0"
    assert config.database.dsn == ""
    assert config.database.embedded_dir == "var/pg"
    assert config.security.max_request_size == "50mb"
    assert config.security.max_request_bytes == 50 * 1024 * 1024
    assert config.security.token_encryption_key == ""
    assert config.upstream.connect_timeout == 10
    assert config.upstream.first_byte_timeout == 120
    assert config.upstream.idle_timeout == 60
    assert all(url.startswith("https://") for url in config.upstream.base_urls)
    assert config.oauth.state_ttl == 300
    assert config.quotas.group_of("gemini-3.1-pro-low") == "gemini"
    assert config.quotas.group_of("claude-sonnet-4-6") == "claude_gpt"
    assert config.quotas.group_of("some-new-model") == "some-new-model"
    assert config.source == ""


def test_integers_are_accepted_for_float_keys_and_become_floats():
    config = build_config(minimal(upstream={"connect_timeout": 3}), env={})
    assert config.upstream.connect_timeout == 3.0
    assert isinstance(config.upstream.connect_timeout, float)


def test_default_lists_are_not_shared_between_configs():
    first = build_config(minimal(), env={})
    second = build_config(minimal(), env={})
    assert first.upstream.base_urls is not second.upstream.base_urls
    assert first.quotas.groups is not second.quotas.groups


# --- the example file ---------------------------------------------------------


def example_raw() -> dict[str, Any]:
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    raw["security"]["admin_api_key"] = KEY
    return raw


def test_example_loads_and_matches_defaults():
    example = build_config(example_raw(), env={})
    defaults = build_config(minimal(), env={})
    for section in dataclasses.fields(Config):
        if section.name in ("metrics", "source"):
            continue
        assert getattr(example, section.name) == getattr(defaults, section.name), section.name
    # The one deliberate difference: the example lets localhost read /metrics.
    assert defaults.metrics.allowed_addresses == []
    assert example.metrics.allowed_addresses == ["127.0.0.1/32", "::1/128"]


def test_example_documents_every_key():
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    sections = [f for f in dataclasses.fields(Config) if f.name != "source"]
    assert set(raw) == {f.name for f in sections}
    for section in sections:
        keys = {f.name for f in dataclasses.fields(getattr(Config(), section.name))}
        assert set(raw[section.name]) == keys, section.name


def test_example_without_admin_key_is_refused():
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert "security.admin_api_key" in config_error(raw)


# --- errors: one line naming the key ------------------------------------------


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (minimal(server={"prot": 8045}), "server.prot"),
        (minimal(sever={"port": 8045}), "sever"),
        (minimal(server={"port": "8045"}), "server.port"),
        (minimal(server={"port": True}), "server.port"),
        (minimal(server={"port": 8045.5}), "server.port"),
        (minimal(server={"port": 0}), "server.port"),
        (minimal(server={"port": 65536}), "server.port"),
        (minimal(server={"shutdown_timeout": -1}), "server.shutdown_timeout"),
        (minimal(database={"pool_max": 0}), "database.pool_max"),
        (minimal(database={"dsn": 5}), "database.dsn"),
        (minimal(security={"max_request_size": "50 parsecs"}), "security.max_request_size"),
        (minimal(security={"max_request_size": "0"}), "security.max_request_size"),
        (minimal(security={"max_request_size": 1024}), "security.max_request_size"),
        ({}, "security.admin_api_key"),
        (minimal(security={"admin_api_key": ""}), "security.admin_api_key"),
        (minimal(security={"admin_api_key": "short"}), "security.admin_api_key"),
        (minimal(upstream={"base_urls": ["not a url"]}), "upstream.base_urls"),
        (minimal(upstream={"base_urls": ["ftp://example.com"]}), "upstream.base_urls"),
        (minimal(upstream={"base_urls": []}), "upstream.base_urls"),
        (minimal(upstream={"base_urls": "https://example.com"}), "upstream.base_urls"),
        (minimal(upstream={"base_urls": [1]}), "upstream.base_urls"),
        (minimal(upstream={"idle_timeout": 0}), "upstream.idle_timeout"),
        (minimal(oauth={"callback_url": "localhost:42532"}), "oauth.callback_url"),
        (minimal(oauth={"state_ttl": 601}), "oauth.state_ttl"),
        (minimal(defaults={"temperature": 2.5}), "defaults.temperature"),
        (minimal(quotas={"groups": {"g": ["m1", "m1"]}}), "quotas.groups"),
        (minimal(quotas={"groups": {"a": ["m1"], "b": ["m2", "m1"]}}), "quotas.groups"),
        (minimal(quotas={"groups": {"a": "m1"}}), "quotas.groups"),
        (minimal(quotas={"groups": {"a": ["!*-image"]}}), "quotas.groups"),
        (minimal(quotas={"groups": {"a": []}}), "quotas.groups"),
        (minimal(quotas={"buckets": {"3p": ""}}), "quotas.buckets"),
        (minimal(tasks={"enabled": "yes"}), "tasks.enabled"),
        (minimal(metrics={"allowed_addresses": ["not-an-ip"]}), "metrics.allowed_addresses"),
        (minimal(logging={"level": "verbose"}), "logging.level"),
        (minimal(logging={"format": "xml"}), "logging.format"),
    ],
)
def test_errors_are_one_line_naming_the_key(raw, names):
    assert names in config_error(raw)


def test_unknown_section_is_named_as_a_section():
    message = config_error(minimal(sever={"port": 1}))
    assert "unknown section" in message
    assert "[sever]" in message


def test_unknown_key_is_named_with_its_section():
    message = config_error(minimal(server={"prot": 1}))
    assert "unknown key" in message
    assert "server.prot" in message


def test_section_that_is_not_a_table():
    message = config_error({**minimal(), "server": 5})
    assert "[server]" in message


def test_wrong_type_says_what_is_expected():
    assert "integer" in config_error(minimal(server={"port": "8045"}))
    assert "string" in config_error(minimal(database={"dsn": 5}))


# --- environment overrides -----------------------------------------------------


def test_env_overrides_dsn_and_admin_key():
    raw = minimal(database={"dsn": "postgresql:///from-file"})
    config = build_config(
        raw,
        env={"ANTIGV_DATABASE_DSN": "postgresql:///from-env", "ANTIGV_ADMIN_API_KEY": "e" * 20},
    )
    assert config.database.dsn == "postgresql:///from-env"
    assert config.security.admin_api_key == "e" * 20
    # The caller's document is not modified.
    assert raw["database"]["dsn"] == "postgresql:///from-file"
    assert raw["security"]["admin_api_key"] == KEY


def test_env_supplies_a_missing_admin_key_and_section():
    config = build_config({}, env={"ANTIGV_ADMIN_API_KEY": "e" * 20, "ANTIGV_DATABASE_DSN": "dbname=x"})
    assert config.security.admin_api_key == "e" * 20
    assert config.database.dsn == "dbname=x"


def test_empty_env_values_do_not_override():
    config = build_config(minimal(), env={"ANTIGV_ADMIN_API_KEY": "", "ANTIGV_DATABASE_DSN": ""})
    assert config.security.admin_api_key == KEY
    assert config.database.dsn == ""


def test_env_override_is_validated_like_the_file():
    with pytest.raises(ConfigError, match=r"security\.admin_api_key"):
        build_config(minimal(), env={"ANTIGV_ADMIN_API_KEY": "short"})


def test_process_environment_is_used_when_env_is_not_given(monkeypatch):
    monkeypatch.setenv("ANTIGV_DATABASE_DSN", "dbname=from_process_env")
    assert build_config(minimal()).database.dsn == "dbname=from_process_env"
    assert build_config(minimal(), env={}).database.dsn == ""


# --- load_config ---------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path):
    path = tmp_path / "antigv.toml"
    path.write_text(f'[security]\nadmin_api_key = "{KEY}"\n[server]\nport = 9000\n', encoding="utf-8")
    config = load_config(path)
    assert config.server.port == 9000
    assert config.source == str(path)


def test_load_config_uses_the_env_path(tmp_path, monkeypatch):
    path = tmp_path / "from-env.toml"
    path.write_text(f'[security]\nadmin_api_key = "{KEY}"\n[server]\nport = 9001\n', encoding="utf-8")
    monkeypatch.setenv("ANTIGV_CONFIG", str(path))
    monkeypatch.delenv("ANTIGV_ADMIN_API_KEY", raising=False)
    assert load_config().server.port == 9001


def test_load_config_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "not found" in message
    assert "init-config" in message
    assert "\n" not in message


def test_load_config_invalid_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[security]\nadmin_api_key = "unterminated\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "TOML" in message
    assert "\n" not in message


def test_load_config_reports_bad_values_by_key(tmp_path):
    path = tmp_path / "bad-value.toml"
    path.write_text(f'[security]\nadmin_api_key = "{KEY}"\nmax_request_size = "50 parsecs"\n')
    with pytest.raises(ConfigError, match=r"security\.max_request_size"):
        load_config(path)


# --- frozen ----------------------------------------------------------------------


def test_config_is_frozen():
    config = build_config(minimal(), env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server = None  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.security.admin_api_key = "x" * 20  # type: ignore[misc]


# --- parse_size --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50mb", 50 * 1024**2),
        ("1kb", 1024),
        ("1KB", 1024),
        ("2GB", 2 * 1024**3),
        ("7b", 7),
        ("10", 10),
        (" 3 mb ", 3 * 1024**2),
        ("0", 0),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "mb", "50 parsecs", "1.5mb", "-1kb", "1tb", "1 k b", "kb1"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_max_request_bytes_follows_max_request_size():
    config = build_config(minimal(security={"max_request_size": "1kb"}), env={})
    assert config.security.max_request_bytes == 1024


# --- issue 11 ------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_files_directory(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    etc.mkdir()
    monkeypatch.chdir(tmp_path)
    relative = etc / "relative.toml"
    relative.write_text(f'[database]\nembedded_dir = "data/pg"\n[security]\nadmin_api_key = "{KEY}"\n')
    assert load_config(relative).database.embedded_dir == str(etc / "data" / "pg")
    # The default is relative too.
    default = etc / "default.toml"
    default.write_text(f'[security]\nadmin_api_key = "{KEY}"\n')
    assert load_config(default).database.embedded_dir == str(etc / "var" / "pg")
    # A config named by a relative path: still its own directory, not the working one.
    assert load_config(Path("etc/default.toml")).database.embedded_dir == str(etc / "var" / "pg")
    absolute = etc / "absolute.toml"
    absolute.write_text(f'[database]\nembedded_dir = "/srv/pg"\n[security]\nadmin_api_key = "{KEY}"\n')
    assert load_config(absolute).database.embedded_dir == "/srv/pg"


def test_plaintext_tokens_need_saying_so():
    assert build_config(minimal(), env={}).security.allow_plaintext_tokens is False
    allowed = build_config(minimal(security={"allow_plaintext_tokens": True}), env={})
    assert allowed.security.allow_plaintext_tokens is True
    assert "security.allow_plaintext_tokens must be true or false" in config_error(
        minimal(security={"allow_plaintext_tokens": "yes"})
    )
