"""The ``antigv`` command line, run in-process.

``main`` calls ``asyncio.run`` itself, so these tests are plain functions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psycopg2
import pytest

import antigv.cli.main
from antigv.cli.main import main
from antigv.config import LoggingConfig, load_config
from antigv.ops.embedded_pg import Cluster
from antigv.store import users
from antigv.store.db import load_migrations
from tests.conftest import ADMIN_KEY

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config.toml.example"


@pytest.fixture(autouse=True)
def quiet_environment(monkeypatch: pytest.MonkeyPatch) -> list[LoggingConfig]:
    """No overrides from the caller's environment, and no global logging set-up.

    ``configure_logging`` points structlog at the sys.stdout of the moment (here
    capsys's, closed after the test) and caches loggers, which would break the
    logging of every later test in the session.
    """
    for var in (
        "ANTIGV_CONFIG",
        "ANTIGV_DATABASE_DSN",
        "ANTIGV_ADMIN_API_KEY",
        "ANTIGV_TOKEN_ENCRYPTION_KEY",
    ):
        monkeypatch.delenv(var, raising=False)
    calls: list[LoggingConfig] = []
    monkeypatch.setattr(antigv.cli.main, "configure_logging", lambda config, _stream: calls.append(config))
    return calls


def write_config(directory: Path, dsn: str, extra: str = "") -> Path:
    path = directory / "antigv.toml"
    path.write_text(
        f"[database]\ndsn = {json.dumps(dsn)}\n\n"
        f"[security]\nadmin_api_key = {json.dumps(ADMIN_KEY)}\n\n"
        '[logging]\nlevel = "warning"\nformat = "json"\n' + extra,
        encoding="utf-8",
    )
    return path


@pytest.fixture
def cfg(tmp_path: Path, db_dsn: str) -> Path:
    return write_config(tmp_path, db_dsn)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> Any:
    code, out, err = run(capsys, "--config", str(config), *argv)
    assert code == 0, err
    return json.loads(out)


def summary(out: str) -> str:
    """The result line of ``migrate`` (log events may share stdout with it)."""
    lines = [line for line in out.splitlines() if line.startswith("migrations applied")]
    assert len(lines) == 1, out
    return lines[0]


def db_row(dsn: str, statement: str, params: dict[str, Any]) -> tuple | None:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchone()
    finally:
        conn.close()


def stored_digest(dsn: str, user_id: int) -> bytes | None:
    row = db_row(dsn, "SELECT key_hash FROM api_keys WHERE user_id = %(id)s AND is_primary", {"id": user_id})
    return None if row is None else bytes(row[0])


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


# --- init-config ------------------------------------------------------------------------------


def test_init_config_writes_fresh_secrets(tmp_path, capsys):
    first, second = tmp_path / "one.toml", tmp_path / "two.toml"
    code, out, _ = run(capsys, "init-config", str(first))
    assert code == 0
    assert str(first) in out
    assert run(capsys, "init-config", str(second))[0] == 0

    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    one, two = load_config(first), load_config(second)
    assert one.security.admin_api_key.startswith("sk-admin-")
    assert len(one.security.admin_api_key) >= 32
    assert len(base64.b64decode(one.security.token_encryption_key, validate=True)) == 32
    # Fresh each time.
    assert one.security.admin_api_key != two.security.admin_api_key
    assert one.security.token_encryption_key != two.security.token_encryption_key
    # Everything else is the example, line for line.
    written = first.read_text().splitlines()
    example = EXAMPLE.read_text().splitlines()
    assert len(written) == len(example)
    changed = [(w, e) for w, e in zip(written, example, strict=True) if w != e]
    assert sorted(e.split("=")[0].strip() for _, e in changed) == ["admin_api_key", "token_encryption_key"]


def test_init_config_refuses_to_overwrite(tmp_path, capsys):
    target = tmp_path / "config.toml"
    target.write_text("# mine, keep it\n")
    code, out, err = run(capsys, "init-config", str(target))
    assert code == 1
    assert target.read_text() == "# mine, keep it\n"
    assert "not overwriting" in err
    assert str(target) in err
    assert out == ""


def test_init_config_uses_the_config_option_and_env(tmp_path, capsys, monkeypatch):
    by_option = tmp_path / "by-option.toml"
    assert run(capsys, "--config", str(by_option), "init-config")[0] == 0
    assert by_option.exists()
    by_env = tmp_path / "by-env.toml"
    monkeypatch.setenv("ANTIGV_CONFIG", str(by_env))
    assert run(capsys, "init-config")[0] == 0
    assert by_env.exists()


# --- config errors ------------------------------------------------------------------------------


def test_config_error_exits_2_with_one_line(tmp_path, capsys, db_dsn):
    path = write_config(tmp_path, db_dsn, "\n[server]\nport = 0\n")
    code, out, err = run(capsys, "--config", str(path), "user", "list")
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "server.port" in lines[0]


def test_missing_config_exits_2(tmp_path, capsys):
    code, _, err = run(capsys, "--config", str(tmp_path / "absent.toml"), "migrate")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "not found" in err


def test_invalid_toml_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text("[security\n")
    code, _, err = run(capsys, "--config", str(path), "migrate")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "TOML" in err


def test_config_comes_from_the_env(tmp_path, capsys, monkeypatch, db_dsn):
    monkeypatch.setenv("ANTIGV_CONFIG", str(write_config(tmp_path, db_dsn)))
    code, out, _ = run(capsys, "db", "url")
    assert code == 0
    assert out.strip() == db_dsn


def test_logging_is_configured_from_the_file(cfg, capsys, quiet_environment):
    assert run(capsys, "--config", str(cfg), "db", "url")[0] == 0
    assert quiet_environment == [LoggingConfig(level="warning", format="json")]


# --- migrate ------------------------------------------------------------------------------------


def test_migrate_is_idempotent(tmp_path, capsys, fresh_database):
    path = write_config(tmp_path, fresh_database)
    names = [m.name for m in load_migrations()]
    code, out, err = run(capsys, "--config", str(path), "migrate")
    assert code == 0, err
    assert summary(out) == f"migrations applied: {len(names)} ({', '.join(names)})"
    code, out, err = run(capsys, "--config", str(path), "migrate")
    assert code == 0, err
    assert summary(out) == "migrations applied: 0"
    count = db_row(fresh_database, "SELECT count(*) FROM schema_migrations", {})
    assert count == (len(names),)


def test_migrate_on_the_migrated_database(cfg, capsys):
    code, out, err = run(capsys, "--config", str(cfg), "migrate")
    assert code == 0, err
    assert summary(out) == "migrations applied: 0"


# --- db -----------------------------------------------------------------------------------------


def test_db_url_prints_the_configured_dsn(cfg, capsys, db_dsn):
    code, out, err = run(capsys, "--config", str(cfg), "db", "url")
    assert code == 0
    assert out.strip() == db_dsn
    assert err == ""


def test_db_url_of_the_embedded_cluster(tmp_path, capsys):
    path = tmp_path / "embedded.toml"
    path.write_text(
        f"[database]\nembedded_dir = {json.dumps(str(tmp_path / 'pg'))}\n"
        f"[security]\nadmin_api_key = {json.dumps(ADMIN_KEY)}\n"
    )
    code, out, _ = run(capsys, "--config", str(path), "db", "url")
    assert code == 0
    assert out.strip() == Cluster(tmp_path / "pg").dsn()
    assert "pg" in out


def test_db_commands_other_than_url_refuse_when_a_dsn_is_set(cfg, capsys):
    for action in ("start", "stop", "status"):
        code, out, err = run(capsys, "--config", str(cfg), "db", action)
        assert code == 1, action
        assert "database.dsn is set" in err
        assert out == ""


# --- user ---------------------------------------------------------------------------------------


def test_user_create(cfg, capsys, db_dsn):
    user = run_json(capsys, cfg, "user", "create", "--name", "dave", "--prefer-shared")
    assert user["name"] == "dave"
    assert user["prefer_shared"] == 1
    assert user["status"] == 1
    assert user["api_key"].startswith("sk-")
    assert len(user["api_key"]) == 51
    assert user["created_at"].endswith("Z")
    assert stored_digest(db_dsn, user["user_id"]) == digest(user["api_key"])

    plain = run_json(capsys, cfg, "user", "create")
    assert plain["name"] == ""
    assert plain["prefer_shared"] == 0
    assert plain["api_key"] != user["api_key"]


def test_user_list(cfg, capsys):
    created = [run_json(capsys, cfg, "user", "create", "--name", f"u{i}") for i in range(3)]
    listing = run_json(capsys, cfg, "user", "list")
    assert listing["total"] == 3
    assert [u["user_id"] for u in listing["users"]] == [u["user_id"] for u in created]
    assert all("api_key" not in u for u in listing["users"])
    for user in created:
        assert user["api_key"] not in json.dumps(listing)
    page = run_json(capsys, cfg, "user", "list", "--limit", "1", "--offset", "1")
    assert [u["name"] for u in page["users"]] == ["u1"]
    assert (page["limit"], page["offset"], page["total"]) == (1, 1, 3)


def test_user_regenerate_key(cfg, capsys, db_dsn):
    user = run_json(capsys, cfg, "user", "create", "--name", "erin")
    again = run_json(capsys, cfg, "user", "regenerate-key", str(user["user_id"]))
    assert again["user_id"] == user["user_id"]
    assert again["api_key"] != user["api_key"]
    assert again["api_key"].startswith(again["key_prefix"])
    assert stored_digest(db_dsn, user["user_id"]) == digest(again["api_key"])


def test_user_disable_and_enable(cfg, capsys, db_dsn):
    user = run_json(capsys, cfg, "user", "create")
    uid = str(user["user_id"])
    status = "SELECT status FROM users WHERE user_id = %(id)s"
    assert run_json(capsys, cfg, "user", "disable", uid)["status"] == 0
    assert db_row(db_dsn, status, {"id": user["user_id"]}) == (0,)
    assert run_json(capsys, cfg, "user", "enable", uid)["status"] == 1
    assert db_row(db_dsn, status, {"id": user["user_id"]}) == (1,)


def test_user_delete(cfg, capsys, db_dsn):
    user = run_json(capsys, cfg, "user", "create")
    keep = run_json(capsys, cfg, "user", "create")
    assert run_json(capsys, cfg, "user", "delete", str(user["user_id"])) == {"deleted": user["user_id"]}
    assert stored_digest(db_dsn, user["user_id"]) is None
    assert stored_digest(db_dsn, keep["user_id"]) == digest(keep["api_key"])


@pytest.mark.parametrize("action", ["regenerate-key", "disable", "enable", "delete"])
def test_user_not_found_exits_1(cfg, capsys, action):
    code, out, err = run(capsys, "--config", str(cfg), "user", action, "424242")
    assert code == 1
    assert out == ""
    assert err.strip() == "antigv: user not found"


def test_user_id_must_be_a_number(cfg, capsys):
    with pytest.raises(SystemExit) as info:
        main(["--config", str(cfg), "user", "delete", "abc"])
    assert info.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_unreachable_database_exits_1_with_one_line(tmp_path, capsys, db_dsn):
    path = write_config(tmp_path, db_dsn.replace("dbname=", "dbname=no_such_database_"))
    code, out, err = run(capsys, "--config", str(path), "user", "list")
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("antigv: ")


# --- serve --workers: the supervisor --------------------------------------------


def test_a_stop_signal_that_comes_while_a_worker_is_spawned_reaches_that_worker():
    workers: list[subprocess.Popen] = []

    def spawn() -> subprocess.Popen:
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        workers.append(worker)
        if len(workers) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # handled before spawn() returns the worker
        return worker

    before = signal.getsignal(signal.SIGTERM)
    # Should the signal be lost, end the test in seconds rather than minutes.
    watchdog = threading.Timer(20, lambda: [w.kill() for w in workers])
    watchdog.start()
    try:
        assert antigv.cli.main._supervise(spawn, 3) == 0
    finally:
        watchdog.cancel()
    assert [w.returncode for w in workers] == [-signal.SIGTERM, -signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) == before


# --- issue 11: operators and newcomers ---------------------------------------------------------


def embedded_config(directory: Path, extra: str = "") -> Path:
    """A config of the embedded cluster, with a relative ``embedded_dir``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(
        f'[database]\nembedded_dir = "pg"\n[security]\nadmin_api_key = {json.dumps(ADMIN_KEY)}\n{extra}'
    )
    return path


def test_a_relative_embedded_dir_is_found_from_any_directory(tmp_path, capsys, monkeypatch):
    path = embedded_config(tmp_path / "etc")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, _ = run(capsys, "--config", str(path), "db", "url")
    assert code == 0
    assert out.strip() == Cluster(tmp_path / "etc" / "pg").dsn()


@pytest.mark.parametrize(
    "argv",
    [("user", "list"), ("user", "create"), ("refresh-tokens",), ("recover-quotas",), ("db", "backup", "x")],
)
def test_commands_do_not_start_a_stopped_embedded_database(tmp_path, capsys, monkeypatch, argv):
    started: list[Cluster] = []
    monkeypatch.setattr(Cluster, "start", lambda self, **_: started.append(self))
    path = embedded_config(tmp_path, "allow_plaintext_tokens = true\n")
    code, out, err = run(capsys, "--config", str(path), *argv)
    assert started == []
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "is not running" in err
    assert f"antigv --config {path} db start" in err
    assert not (tmp_path / "pg").exists()


def test_migrate_and_db_start_do_start_it(tmp_path, capsys, monkeypatch):
    started: list[Cluster] = []
    monkeypatch.setattr(Cluster, "start", lambda self, **_: started.append(self))
    monkeypatch.setattr(antigv.cli.main, "migrate", lambda dsn: asyncio.sleep(0, []))
    path = embedded_config(tmp_path)
    assert run(capsys, "--config", str(path), "db", "start")[0] == 0
    assert run(capsys, "--config", str(path), "migrate")[0] == 0
    assert started == [Cluster(tmp_path / "pg")] * 2


def test_serve_refuses_to_store_tokens_in_clear_unless_told(cfg, capsys, monkeypatch):
    monkeypatch.setattr(antigv.cli.main, "migrate", lambda dsn: pytest.fail("must refuse before migrating"))
    code, out, err = run(capsys, "--config", str(cfg), "serve")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "security.token_encryption_key" in err
    assert "security.allow_plaintext_tokens = true" in err
    assert "init-config --add-token-key" in err


def test_add_token_key_fills_an_empty_key_and_keeps_the_rest(tmp_path, capsys):
    path = tmp_path / "old.toml"
    text = EXAMPLE.read_text().replace('admin_api_key = ""', f'admin_api_key = "{ADMIN_KEY}"')
    path.write_text(text)
    path.chmod(0o640)
    code, out, err = run(capsys, "init-config", "--add-token-key", str(path))
    assert code == 0, err
    assert str(path) in out
    config = load_config(path)
    assert len(base64.b64decode(config.security.token_encryption_key, validate=True)) == 32
    changed = [
        (new, old)
        for new, old in zip(path.read_text().splitlines(), text.splitlines(), strict=True)
        if new != old
    ]
    assert [old.split("=")[0].strip() for _, old in changed] == ["token_encryption_key"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # Once there, it stays.
    before = path.read_text()
    assert run(capsys, "init-config", "--add-token-key", str(path))[0] == 0
    assert path.read_text() == before


def test_add_token_key_respects_an_explicit_choice_of_clear_text(tmp_path, capsys):
    path = tmp_path / "plain.toml"
    path.write_text(f'[security]\nadmin_api_key = "{ADMIN_KEY}"\nallow_plaintext_tokens = true\n')
    before = path.read_text()
    assert run(capsys, "init-config", "--add-token-key", str(path))[0] == 0
    assert path.read_text() == before
    # Without a [security] key line at all, one is added.
    bare = tmp_path / "bare.toml"
    bare.write_text('[server]\nport = 8050\n[security]\nadmin_api_key = "' + ADMIN_KEY + '"\n')
    assert run(capsys, "init-config", "--add-token-key", str(bare))[0] == 0
    assert load_config(bare).security.token_encryption_key
    assert load_config(bare).server.port == 8050


def test_init_config_into_a_missing_directory_is_one_line(tmp_path, capsys):
    target = tmp_path / "no" / "such" / "config.toml"
    code, out, err = run(capsys, "init-config", str(target))
    assert code == 1
    assert out == ""
    assert err.strip().splitlines() == [
        f"antigv: cannot write {target}: the directory {target.parent} does not exist"
    ]


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (("user", "list", "--offset", "-1"), "--offset: must be between 0 and"),
        (("user", "list", "--limit", "0"), "--limit: must be between 1 and 1000"),
        (("user", "list", "--limit", "1001"), "--limit: must be between 1 and 1000"),
        (("user", "create", "--name", "x" * 201), "--name: name must be at most 200 characters"),
        (("user", "create", "--name", "a\x00b"), "--name: name must not contain NUL characters"),
    ],
)
def test_cli_limits_are_the_apis(cfg, capsys, argv, complaint):
    with pytest.raises(SystemExit) as info:
        main(["--config", str(cfg), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert complaint in err
    assert "Traceback" not in err


def test_cli_limits_at_the_edge_are_taken(cfg, capsys):
    assert run_json(capsys, cfg, "user", "create", "--name", "y" * users.NAME_MAX_LEN)["name"] == "y" * 200
    assert run_json(capsys, cfg, "user", "list", "--limit", str(users.LIST_LIMIT_MAX))["total"] == 1


def _sub_commands(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, str, Any]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append((f"{prefix}{name}", helps.get(name), sub))
                found += _sub_commands(sub, f"{prefix}{name} ")
    return found


def test_every_sub_command_has_a_one_line_description():
    commands = _sub_commands(antigv.cli.main.build_parser())
    assert {"user list", "user create", "user delete", "db", "serve", "init-config"} <= {
        c[0] for c in commands
    }
    for name, text, sub in commands:
        assert text and "\n" not in text, name
        assert sub.description == text, name


def test_user_list_is_a_table_on_a_terminal_and_json_with_the_option(cfg, capsys, monkeypatch):
    run_json(capsys, cfg, "user", "create", "--name", "tab\x1b[31mle")
    run_json(capsys, cfg, "user", "create", "--prefer-shared")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, out, _ = run(capsys, "--config", str(cfg), "user", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "PREFERS", "KEY", "CREATED"]
    assert "tab?[31mle" in lines[1] and "\x1b" not in out  # no terminal escapes from a name
    assert lines[1].split()[2:4] == ["enabled", "dedicated"]
    assert lines[2].split()[1:4] == ["-", "enabled", "shared"]
    assert lines[-1] == "(1-2 of 2 users)"
    assert json.loads(run(capsys, "--config", str(cfg), "user", "list", "--json")[1])["total"] == 2


def test_db_backup_is_private(cfg, capsys, tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "antigv.dump"
        code, out, err = run(capsys, "--config", str(cfg), "db", "backup", str(target))
        assert code == 0, err
        assert out.strip() == f"db backup: {target}"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert target.read_bytes().startswith(b"PGDMP")
        # An earlier, wider file is replaced by a private one.
        target.chmod(0o644)
        assert run(capsys, "--config", str(cfg), "db", "backup", str(target))[0] == 0
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []
    finally:
        os.umask(old)


# --- as a separate process ------------------------------------------------------------------


def antigv_process(config: Path, *argv: str, **kwargs: Any) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTIGV_")}
    return subprocess.Popen(
        [sys.executable, "-m", "antigv", "--config", str(config), *argv],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def test_a_closed_pipe_is_not_a_traceback(cfg, capsys):
    for i in range(3):
        run_json(capsys, cfg, "user", "create", "--name", f"p{i}")
    process = antigv_process(cfg, "user", "list", stdout=subprocess.PIPE)
    process.stdout.close()  # as `| head` does once it has read enough
    _, err = process.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert err == b""


def serve_config(tmp_path: Path, dsn: str, port: int) -> Path:
    return write_config(
        tmp_path,
        dsn,
        f'[server]\nhost = "127.0.0.1"\nport = {port}\n[tasks]\nenabled = false\n'
        '[upstream]\nversion_manifest_url = ""\n',
    )


def _plaintext_allowed(path: Path) -> Path:
    path.write_text(path.read_text().replace("[security]\n", "[security]\nallow_plaintext_tokens = true\n"))
    return path


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path, db_dsn):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = _plaintext_allowed(serve_config(tmp_path, db_dsn, port))
        process = antigv_process(config, "serve", stdout=subprocess.DEVNULL)
        _, err = process.communicate(timeout=60)
    text = err.decode()
    assert process.returncode == 1, text
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert lines == [f"antigv: cannot listen on 127.0.0.1:{port}: address already in use"]


def test_serve_logs_listening_and_stopped(tmp_path, db_dsn):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = _plaintext_allowed(serve_config(tmp_path, db_dsn, port))
    config.write_text(config.read_text().replace('level = "warning"', 'level = "info"'))
    process = antigv_process(config, "serve", stdout=subprocess.PIPE)
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()

    def next_event(name: str) -> dict[str, Any]:
        while True:
            event = json.loads(lines.get(timeout=30))
            if event["event"] == name:
                return event

    try:
        listening = next_event("listening")
        assert listening["address"] == f"127.0.0.1:{port}"
        assert listening["workers"] == 1
        assert listening["client_version"] and listening["user_agent"]
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # it does listen by now
        process.send_signal(signal.SIGTERM)
        stopped = next_event("stopped")
        assert stopped["address"] == f"127.0.0.1:{port}"
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
