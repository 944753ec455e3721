"""``antigv key create|list|revoke|delete``: a user's API keys from the command line (issue 14)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from antigv.app import create_app
from antigv.cli.main import main
from tests.conftest import bearer, make_config
from tests.test_cli import db_row, digest, quiet_environment, run, run_json, write_config

pytestmark = pytest.mark.usefixtures(quiet_environment.__name__)


@pytest.fixture
def cfg(tmp_path: Path, db_dsn: str) -> Path:
    return write_config(tmp_path, db_dsn)


def new_user(capsys: pytest.CaptureFixture[str], cfg: Path, name: str = "kim") -> int:
    return run_json(capsys, cfg, "user", "create", "--name", name)["user_id"]


def keys(capsys: pytest.CaptureFixture[str], cfg: Path, *argv: str) -> list[dict[str, Any]]:
    return run_json(capsys, cfg, "key", "list", "--json", *argv)


def call_api(dsn: str, key: str, path: str = "/api/keys") -> tuple[int, dict[str, Any]]:
    """One request to a gateway of its own (a fresh key cache), as ``key``."""

    async def go() -> tuple[int, dict[str, Any]]:
        async with TestClient(TestServer(create_app(make_config(dsn)))) as client:
            response = await client.get(path, headers=bearer(key))
            return response.status, await response.json()

    return asyncio.run(go())


def one_line_error(capsys: pytest.CaptureFixture[str], cfg: Path, *argv: str) -> tuple[int, str]:
    code, out, err = run(capsys, "--config", str(cfg), *argv)
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return code, lines[0]


LIMITS = (
    "--rpm", "60",
    "--tpm", "100000",
    "--max-concurrency", "3",
    "--allowed-models", "gemini-2.5-pro, claude-*",
    "--monthly-token-budget", "5000000",
    "--expires-at", "2099-01-31T12:00:00+02:00",
)  # fmt: skip


def test_create_shows_the_secret_once_and_it_authenticates(cfg, capsys, db_dsn):
    user_id = new_user(capsys, cfg)
    code, out, err = run(
        capsys, "--config", str(cfg), "key", "create", "--user", str(user_id), "--name", "ci"
    )
    assert code == 0, err
    shown = dict(line.split(None, 1) for line in out.splitlines() if line.startswith(("key_", "api_key")))
    secret = shown["api_key"]
    assert secret.startswith("sk-") and out.count(secret) == 1
    assert shown["key_prefix"].rstrip("…") == secret[: len(shown["key_prefix"].rstrip("…"))]
    query = "SELECT key_hash, user_id, name FROM api_keys WHERE key_id = %(id)s"
    stored = db_row(db_dsn, query, {"id": int(shown["key_id"])})
    assert stored is not None and (bytes(stored[0]), *stored[1:]) == (digest(secret), user_id, "ci")

    status, body = call_api(db_dsn, secret)
    assert status == 200, body
    assert {k["name"] for k in body["data"]} == {"default", "ci"}
    assert {k["user_id"] for k in body["data"]} == {user_id}


def test_create_json_is_the_whole_key_and_list_never_shows_a_secret(cfg, capsys, monkeypatch):
    user_id = new_user(capsys, cfg)
    created = run_json(capsys, cfg, "key", "create", "--user", str(user_id), "--name", "bot", "--json")
    assert created["api_key"].startswith(created["key_prefix"])
    assert (created["user_id"], created["name"], created["status"], created["is_primary"]) == (
        user_id,
        "bot",
        1,
        False,
    )
    assert created["rpm"] is None and created["limits_locked"] == 0

    listing = keys(capsys, cfg, "--user", str(user_id))
    assert [k["name"] for k in listing] == ["default", "bot"]
    assert all("api_key" not in k and "key_hash" not in k for k in listing)
    for tty in (False, True):
        monkeypatch.setattr("sys.stdout.isatty", lambda tty=tty: tty)
        code, out, _ = run(capsys, "--config", str(cfg), "key", "list")
        assert code == 0
        assert created["api_key"] not in out
        assert created["key_prefix"] in out


def test_limits_are_stored_as_given(cfg, capsys, db_dsn):
    user_id = new_user(capsys, cfg)
    created = run_json(
        capsys,
        cfg,
        "key",
        "create",
        "--user",
        str(user_id),
        "--name",
        "capped",
        *LIMITS,
        "--locked",
        "--json",
    )
    [listed] = [k for k in keys(capsys, cfg, "--user", str(user_id)) if k["key_id"] == created["key_id"]]
    expected = {
        "rpm": 60,
        "tpm": 100000,
        "max_concurrency": 3,
        "allowed_models": ["gemini-2.5-pro", "claude-*"],
        "monthly_token_budget": 5000000,
        "expires_at": "2099-01-31T10:00:00Z",
        "limits_locked": 1,
    }
    assert {field: listed[field] for field in expected} == expected
    assert {field: created[field] for field in expected} == expected

    # The gateway applies them: the key resolves with these limits.
    status, body = call_api(db_dsn, created["api_key"], f"/api/keys/{created['key_id']}")
    assert status == 200, body
    assert body["data"]["rpm"] == 60


def test_list_is_a_table_of_every_users_keys_without_user(cfg, capsys):
    first, second = new_user(capsys, cfg, "one"), new_user(capsys, cfg, "two")
    run_json(
        capsys, cfg, "key", "create", "--user", str(second), "--name", "evil\x1b[2J", "--rpm", "7", "--json"
    )
    code, out, _ = run(capsys, "--config", str(cfg), "key", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "USER", "NAME", "KEY", "STATUS", "LIMITS", "EXPIRES", "LAST", "USED"]
    assert [line.split()[1] for line in lines[1:-1]] == [str(first), str(second), str(second)]
    assert lines[-1] == "(3 keys)"
    assert "\x1b" not in out and "evil?[2J" in lines[3]
    assert "rpm=7" in lines[3] and "active" in lines[3]
    assert "none" in lines[1]  # a default key has no limits
    assert len(keys(capsys, cfg)) == 3
    assert [k["user_id"] for k in keys(capsys, cfg, "--user", str(first))] == [first]


def test_revoke_sets_status_0_and_the_key_is_refused(cfg, capsys, db_dsn):
    user_id = new_user(capsys, cfg)
    created = run_json(capsys, cfg, "key", "create", "--user", str(user_id), "--name", "gone", "--json")
    code, out, err = run(capsys, "--config", str(cfg), "key", "revoke", str(created["key_id"]))
    assert code == 0, err
    assert f"revoked key {created['key_id']}" in out and "within 5 seconds" in out
    status_of = "SELECT status FROM api_keys WHERE key_id = %(id)s"
    assert db_row(db_dsn, status_of, {"id": created["key_id"]}) == (0,)
    statuses = {k["name"]: k["status"] for k in keys(capsys, cfg, "--user", str(user_id))}
    assert statuses == {"default": 1, "gone": 0}
    assert "revoked" in run(capsys, "--config", str(cfg), "key", "list")[1]

    status, body = call_api(db_dsn, created["api_key"])
    assert status == 401, body
    assert "revoked" in json.dumps(body)


def test_delete_removes_only_that_key(cfg, capsys, db_dsn):
    user_id = new_user(capsys, cfg)
    created = run_json(capsys, cfg, "key", "create", "--user", str(user_id), "--name", "tmp", "--json")
    deleted = run_json(capsys, cfg, "key", "delete", str(created["key_id"]), "--json")
    assert deleted == {"deleted": created["key_id"]}
    assert [k["name"] for k in keys(capsys, cfg, "--user", str(user_id))] == ["default"]
    assert call_api(db_dsn, created["api_key"])[0] == 401


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("key", "create", "--user", "424242", "--name", "x"), "antigv: user not found"),
        (("key", "list", "--user", "424242"), "antigv: user not found"),
        (("key", "revoke", "424242"), "antigv: key not found"),
        (("key", "delete", "424242"), "antigv: key not found"),
    ],
)
def test_unknown_user_or_key_exits_1_with_one_line(cfg, capsys, argv, message):
    assert one_line_error(capsys, cfg, *argv) == (1, message)


@pytest.mark.parametrize(
    ("option", "value", "complaint"),
    [
        ("--rpm", "0", "--rpm: rpm must be a positive integer"),
        ("--rpm", "fast", "--rpm: rpm must be a positive integer"),
        ("--rpm", str(2**31), "--rpm: rpm must be a positive integer (at most 2147483647)"),
        ("--tpm", "-5", "--tpm: tpm must be a positive integer"),
        ("--max-concurrency", "1.5", "--max-concurrency: max_concurrency must be"),
        ("--monthly-token-budget", "0", "--monthly-token-budget: monthly_token_budget must be"),
        ("--allowed-models", "a*b", "--allowed-models: allowed_models must be"),
        ("--allowed-models", "gpt,,x", "--allowed-models: allowed_models must be"),
        ("--expires-at", "soon", "--expires-at: expires_at must be an ISO 8601"),
        ("--expires-at", "2001-01-01", "--expires-at: expires_at is in the past"),
        ("--name", "   ", "--name: name is required"),
        ("--name", "x" * 201, "--name: name must be at most 200 characters"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option(cfg, capsys, option, value, complaint):
    user_id = new_user(capsys, cfg)
    argv = ["key", "create", "--user", str(user_id), "--name", "k", option, value]
    code, line = one_line_error(capsys, cfg, *argv)
    assert code == 2
    assert line.startswith("antigv: key create: ") and complaint in line
    assert [k["name"] for k in keys(capsys, cfg, "--user", str(user_id))] == ["default"]


def test_create_needs_a_user_and_a_name(cfg, capsys):
    for argv in (("key", "create", "--name", "x"), ("key", "create", "--user", "1")):
        with pytest.raises(SystemExit) as info:
            main(["--config", str(cfg), *argv])
        assert info.value.code == 2
        assert "required" in capsys.readouterr().err
