"""The ``antigv`` command line."""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import errno
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg2
import structlog
from aiohttp import web

from antigv.accounting.pools import cli_recover_quotas
from antigv.app import create_app, refuse_plaintext_tokens
from antigv.appkeys import CLIENT_IDENTITY, TASKS
from antigv.config import Config, ConfigError, config_path, load_config
from antigv.core.errors import GatewayError, InvalidRequest
from antigv.ops import serving
from antigv.ops.embedded_pg import EmbeddedError, default_cluster, find_bindir
from antigv.ops.logs import configure_logging
from antigv.ops.metrics import MULTIPROC_ENV
from antigv.protocols.admin.keys import check_expiry_ahead, parse_key_fields
from antigv.protocols.auth import CACHE_TTL
from antigv.protocols.web import optional_str
from antigv.store import users
from antigv.store.api_keys import LIMIT_FIELDS, ApiKey, ApiKeyRepository
from antigv.store.db import Database, Queries, QueryError, close_pool, create_pool, migrate, sql_dir

log = structlog.get_logger("antigv.server")
# A process that writes to a pipe its reader closed ends as if killed by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


class UsageError(Exception):
    """A bad option value found after parsing: one line, exit 2 (as argparse's own)."""


def _example_config() -> Path:
    for candidate in (sql_dir().parent / "config.toml.example", Path("config.toml.example")):
        if candidate.exists():
            return candidate
    raise ConfigError("config.toml.example not found")


def _fresh_token_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def render_config(example: str) -> str:
    """The example with fresh secrets filled in."""
    admin_key = "sk-admin-" + secrets.token_urlsafe(32)
    text = re.sub(r"(?m)^admin_api_key\s*=.*$", f'admin_api_key = "{admin_key}"', example)
    return re.sub(r"(?m)^token_encryption_key\s*=.*$", f'token_encryption_key = "{_fresh_token_key()}"', text)


def _cannot_write(target: Path, exc: OSError) -> int:
    if exc.errno == errno.ENOENT:
        why = f"the directory {target.parent} does not exist"
    else:
        why = exc.strerror or str(exc)
    print(f"antigv: cannot write {target}: {why}", file=sys.stderr)
    return 1


def cmd_init_config(args: argparse.Namespace) -> int:
    target = Path(args.path or args.config or os.environ.get("ANTIGV_CONFIG") or "config.toml")
    if args.add_token_key:
        return _add_token_key(target)
    text = render_config(_example_config().read_text(encoding="utf-8"))
    try:
        # Created exclusively and private from the first byte: it holds secrets.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"antigv: {target} exists; not overwriting it", file=sys.stderr)
        return 1
    except OSError as exc:
        return _cannot_write(target, exc)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    print(f"wrote {target} with a fresh admin key and token encryption key")
    return 0


def _add_token_key(target: Path) -> int:
    """Give an existing config a token encryption key if it has none (``make run`` on an
    older config.toml). Tokens stored in clear stay readable and are sealed on their next write."""
    try:
        text = target.read_text(encoding="utf-8")
        security = tomllib.loads(text).get("security", {})
    except FileNotFoundError:
        print(f"antigv: {target} not found (create one with: antigv init-config {target})", file=sys.stderr)
        return 2
    except tomllib.TOMLDecodeError as exc:
        print(f"antigv: config: {target} is not valid TOML: {exc}", file=sys.stderr)
        return 2
    if security.get("token_encryption_key"):
        return 0
    if security.get("allow_plaintext_tokens") is True:
        print(f"{target}: security.allow_plaintext_tokens is set; not adding a token encryption key")
        return 0
    key = _fresh_token_key()
    line = f'token_encryption_key = "{key}"'
    if re.search(r"(?m)^token_encryption_key\s*=.*$", text):
        updated = re.sub(r"(?m)^token_encryption_key\s*=.*$", line, text, count=1)
    elif re.search(r"(?m)^\[security\]\s*$", text):
        updated = re.sub(r"(?m)^\[security\]\s*$", "[security]\n" + line, text, count=1)
    else:
        updated = text.rstrip("\n") + f"\n\n[security]\n{line}\n"
    if tomllib.loads(updated).get("security", {}).get("token_encryption_key") != key:
        print(f"antigv: could not add a key to {target}; set security.token_encryption_key by hand")
        return 1
    # Written beside it and renamed over it: the file is never half-written, and keeps its
    # mode and owners (a service's config is root's, readable by the service's group).
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        before = target.stat()
        os.fchmod(fd, before.st_mode & 0o777)
        if (before.st_uid, before.st_gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, before.st_uid, before.st_gid)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(updated)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    print(f"added a fresh token encryption key to {target}")
    return 0


def database_dsn(config: Config, *, start: bool = False) -> str:
    """The DSN to use; with none configured, the embedded cluster's.

    Only ``serve``, ``migrate`` and ``db start`` start a stopped cluster (``start``):
    other commands must not bring back a database the operator stopped.
    """
    if config.database.dsn:
        return config.database.dsn
    cluster = default_cluster(config.database.embedded_dir)
    if start:
        cluster.start()
    elif not cluster.running():
        command = f"antigv --config {config.source} db start" if config.source else "antigv db start"
        raise EmbeddedError(
            f"the embedded PostgreSQL in {cluster.root} is not running; start it with: {command}"
        )
    return cluster.dsn()


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    applied = asyncio.run(migrate(database_dsn(config, start=True)))
    print(
        f"migrations applied: {len(applied)}"
        + (f" ({', '.join(m.name for m in applied)})" if applied else "")
    )
    return 0


def _pg_tool(name: str) -> str:
    return shutil.which(name) or str(find_bindir() / name)


def _backup(dsn: str, file: str) -> int:
    """pg_dump into a private file (mode 0600: it holds every key digest and token).

    The dump goes to a temporary file beside the target, renamed over it once complete,
    so a failed backup leaves an earlier one intact.
    """
    target = Path(file)
    try:
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    except OSError as exc:
        return _cannot_write(target, exc)
    try:
        with os.fdopen(fd, "wb") as out:
            result = subprocess.run([_pg_tool("pg_dump"), "--format=custom", dsn], stdout=out)
        if result.returncode == 0:
            os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return result.returncode


def cmd_db(config: Config, args: argparse.Namespace) -> int:
    cluster = default_cluster(config.database.embedded_dir)
    if args.action in ("backup", "restore"):
        if not args.file:
            print(f"antigv: db {args.action} needs a FILE", file=sys.stderr)
            return 2
        dsn = database_dsn(config)
        if args.action == "backup":
            code = _backup(dsn, args.file)
        else:
            command = [
                _pg_tool("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                f"--dbname={dsn}",
                args.file,
            ]
            code = subprocess.run(command).returncode
        if code == 0:
            print(f"db {args.action}: {args.file}")
        return code
    if config.database.dsn and args.action != "url":
        print("antigv: database.dsn is set, so the embedded cluster is not used", file=sys.stderr)
        return 1
    if args.action == "url":
        print(config.database.dsn or cluster.dsn())
    elif args.action == "start":
        cluster.start()
        print(f"embedded PostgreSQL running in {cluster.root}")
    elif args.action == "stop":
        cluster.stop()
        print("embedded PostgreSQL stopped")
    else:
        running = cluster.running()
        print("running" if running else "stopped")
        return 0 if running else 3
    return 0


async def _with_db(config: Config, action: Callable[[Database], Awaitable[Any]]) -> Any:
    pool = await create_pool(database_dsn(config), minsize=1, maxsize=2)
    try:
        return await action(Database(pool, Queries.load()))
    finally:
        await close_pool(pool)


def _print_json(data: Any) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z).decode())


def _cell(value: Any, width: int = 40) -> str:
    """One table cell: control characters shown as '?' (a name must not drive the terminal)."""
    if isinstance(value, datetime):
        value = value.strftime("%Y-%m-%d %H:%M")
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Cells in aligned columns, the header first."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def user_table(listing: users.UserPage) -> str:
    """``user list`` for a person at a terminal."""
    header = ("ID", "NAME", "STATUS", "PREFERS", "KEY", "CREATED")
    rows = [
        (
            _cell(u.user_id),
            _cell(u.name or "-"),
            "enabled" if u.status == 1 else "disabled",
            "shared" if u.prefer_shared else "dedicated",
            _cell(u.key_prefix) + "…",
            _cell(u.created_at),
        )
        for u in listing.users
    ]
    lines = _table(header, rows)
    first = listing.offset + 1
    shown = f"{first}-{listing.offset + len(rows)}" if rows else "none"
    lines.append(f"({shown} of {listing.total} users)")
    return "\n".join(lines)


def cmd_user(config: Config, args: argparse.Namespace) -> int:
    actions: dict[str, Callable[[users.UserRepository], Awaitable[Any]]] = {
        "create": lambda repo: repo.create(args.name, int(args.prefer_shared)),
        "list": lambda repo: repo.page(args.limit, args.offset),
        "regenerate-key": lambda repo: repo.regenerate_key(args.user_id),
        "disable": lambda repo: repo.set_status(args.user_id, 0),
        "enable": lambda repo: repo.set_status(args.user_id, 1),
        "delete": lambda repo: repo.delete(args.user_id),
    }
    action = actions[args.action]
    result = asyncio.run(_with_db(config, lambda db: action(users.UserRepository(db))))
    if args.action == "list" and not args.json and sys.stdout.isatty():
        # JSON stays the default for scripts: only a terminal gets the table.
        print(user_table(result))
        return 0
    _print_json(result if result is not None else {"deleted": args.user_id})
    return 0


def _int_or_text(text: str) -> int | str:
    """A number option; anything else goes on as given, for parse_key_fields to refuse by name."""
    try:
        return int(text)
    except ValueError:
        return text


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


# ``key create``'s limit options: the field each sets -> (option, metavar, type, help).
KEY_LIMIT_OPTIONS: dict[str, tuple[str, str, Callable[[str], Any], str]] = {
    "expires_at": (
        "--expires-at",
        "ISO",
        str,
        "when the key stops working (ISO 8601; UTC without an offset)",
    ),
    "rpm": ("--rpm", "N", _int_or_text, "requests per minute"),
    "tpm": ("--tpm", "N", _int_or_text, "tokens per minute"),
    "max_concurrency": ("--max-concurrency", "N", _int_or_text, "requests in flight at once"),
    "allowed_models": (
        "--allowed-models",
        "A,B*",
        _comma_list,
        "the models it may use: exact ids or prefixes ending in '*'",
    ),
    "monthly_token_budget": ("--monthly-token-budget", "N", _int_or_text, "tokens per calendar month (UTC)"),
}
_KEY_OPTIONS = {"name": "--name", "limits_locked": "--locked"} | {
    field: spec[0] for field, spec in KEY_LIMIT_OPTIONS.items()
}
# The limits as ``key list`` and ``key create`` show them.
_LIMIT_LABELS = {
    "rpm": "rpm",
    "tpm": "tpm",
    "max_concurrency": "concurrency",
    "allowed_models": "models",
    "monthly_token_budget": "budget",
}


def key_fields(args: argparse.Namespace) -> dict[str, Any]:
    """``key create``'s options, checked as the API checks a body (the CLI acts as the admin)."""
    body: dict[str, Any] = {"name": args.name}
    body |= {field: getattr(args, field) for field in LIMIT_FIELDS if getattr(args, field) is not None}
    if args.locked:
        body["limits_locked"] = 1
    try:
        fields = parse_key_fields(body, creating=True)
        check_expiry_ahead(fields, datetime.now(UTC))
    except InvalidRequest as exc:
        option = f"{_KEY_OPTIONS[exc.param]}: " if exc.param in _KEY_OPTIONS else ""
        raise UsageError(f"key create: {option}{exc.message}") from None
    return fields


def _key_limits(key: ApiKey) -> str:
    shown = [
        f"{label}={_cell(','.join(value) if isinstance(value, list) else value, 200)}"
        for field, label in _LIMIT_LABELS.items()
        if (value := getattr(key, field)) is not None
    ]
    if key.limits_locked:
        shown.append("locked")
    return " ".join(shown) or "none"


def _key_status(key: ApiKey) -> str:
    if key.status != 1:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        return "expired"
    return "active"


def key_table(keys: list[ApiKey]) -> str:
    """``key list``: never a secret (the repository has none to give)."""
    header = ("ID", "USER", "NAME", "KEY", "STATUS", "LIMITS", "EXPIRES", "LAST USED")
    rows = [
        (
            _cell(k.key_id),
            _cell(k.user_id),
            _cell(k.name or "-"),
            _cell(k.key_prefix) + "…",
            _key_status(k),
            _cell(_key_limits(k), 60),
            _cell(k.expires_at or "never"),
            _cell(k.last_used_at or "never"),
        )
        for k in keys
    ]
    return "\n".join([*_table(header, rows), f"({len(rows)} key{'' if len(rows) == 1 else 's'})"])


def _created_key(key: Any) -> str:
    lines = [
        f"key_id      {key.key_id}",
        f"user_id     {key.user_id}",
        f"name        {_cell(key.name, 200)}",
        f"key_prefix  {_cell(key.key_prefix)}…",
        f"limits      {_key_limits(key)}",
        f"expires_at  {_cell(key.expires_at or 'never')}",
        f"api_key     {key.api_key}",
        "store the api_key now: it is not shown again",
    ]
    return "\n".join(lines)


def cmd_key(config: Config, args: argparse.Namespace) -> int:
    fields = key_fields(args) if args.action == "create" else {}

    async def act(db: Database) -> Any:
        repository = ApiKeyRepository(db)
        if args.action == "create":
            return await repository.create(args.user, fields.pop("name"), fields)
        if args.action == "list":
            if args.user is not None:
                await users.UserRepository(db).get(args.user)  # an unknown user is not "no keys"
            return await repository.of_user(args.user)
        if args.action == "revoke":
            revoked, _ = await repository.update(args.key_id, {"status": 0})
            return revoked
        await repository.delete(args.key_id)
        return {"deleted": args.key_id}

    result = asyncio.run(_with_db(config, act))
    if args.json:
        _print_json(result)
        return 0
    # No running instance is told: each one's key cache holds the key at most CACHE_TTL.
    stops = f"an instance refuses it once it reloads it, every instance within {CACHE_TTL:g} seconds"
    texts: dict[str, Callable[[Any], str]] = {
        "create": _created_key,
        "list": key_table,
        "revoke": lambda key: f"revoked key {key.key_id} of user {key.user_id} (status 0): {stops}",
        "delete": lambda _: f"deleted key {args.key_id} (its usage history is kept): {stops}",
    }
    print(texts[args.action](result))
    return 0


def _event_loop_factory() -> asyncio.AbstractEventLoop | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop()


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    host = args.host or config.server.host
    port = args.port or config.server.port
    refuse_plaintext_tokens(config)  # before anything starts, and in the supervisor too
    if not args.worker:
        asyncio.run(migrate(database_dsn(config, start=True)))
    if args.workers > 1 and not args.worker:
        return _run_workers(args, host, port)
    app = create_app(config)

    def listening() -> None:
        identity = app[CLIENT_IDENTITY]
        log.info(
            "listening",
            address=f"{host}:{port}",
            workers=args.workers,
            pid=os.getpid(),
            client_version=identity.version,
            user_agent=identity.user_agent,
        )

    try:
        serving.run(
            serving.serve(
                app,
                host,
                port,
                reuse_port=bool(args.worker),
                shutdown_timeout=config.server.shutdown_timeout,
                listening=listening,
            ),
            loop=_event_loop_factory(),
        )
    except OSError as exc:
        # Binding is the one step of serving that raises OSError (the rest are caught).
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        print(f"antigv: cannot listen on {host}:{port}: {why}", file=sys.stderr)
        return 1
    log.info("stopped", address=f"{host}:{port}", pid=os.getpid())
    return 0


async def _run_task(config: Config, name: str) -> None:
    """Run one background task once, with the app's services but without serving."""
    app = create_app(dataclasses.replace(config, tasks=dataclasses.replace(config.tasks, enabled=False)))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        if not await app[TASKS].run_once(name):
            print(f"{name}: another instance is running it right now")
    finally:
        await runner.cleanup()


def cmd_recover_quotas(config: Config, args: argparse.Namespace) -> int:
    _print_json(asyncio.run(_with_db(config, cli_recover_quotas)))
    return 0


def cmd_refresh_tokens(config: Config, args: argparse.Namespace) -> int:
    database_dsn(config)  # says so when the embedded cluster is stopped
    asyncio.run(_run_task(config, "refresh_tokens"))
    print("token refresh done")
    return 0


def _run_workers(args: argparse.Namespace, host: str, port: int) -> int:
    """N processes on one port (SO_REUSEPORT); the kernel spreads connections.

    The workers share a metrics directory so any of them answers /metrics for all.
    """
    command = [sys.executable, "-m", "antigv"]
    if args.config:
        command += ["--config", args.config]
    command += ["serve", "--worker", "--workers", str(args.workers), "--host", host, "--port", str(port)]
    metrics_dir = tempfile.mkdtemp(prefix="antigv-metrics-")
    env = {**os.environ, MULTIPROC_ENV: metrics_dir}
    try:
        return _supervise(lambda: subprocess.Popen(command, env=env), args.workers)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(spawn: Callable[[], subprocess.Popen], count: int) -> int:
    """Start ``count`` workers and wait for them, passing SIGTERM/SIGINT on; 0 when all
    stopped cleanly.

    The handlers go in before the first worker starts, so no signal is lost, and a
    signal that arrives while ``spawn()`` runs is passed to that worker once it
    exists. A worker still starting up has no handler yet and dies by the signal
    it was sent: that is a clean stop too (status -signum), not a failure.
    """
    received: set[int] = set()
    children: list[subprocess.Popen] = []
    sent: dict[int, set[int]] = {}  # pid -> the signals that worker was sent

    def pass_on() -> None:
        for child in children:
            told = sent.setdefault(child.pid, set())
            for signum in sorted(received - told):
                told.add(signum)
                if child.poll() is None:
                    child.send_signal(signum)

    def on_signal(signum: int, _frame: Any) -> None:
        received.add(signum)
        pass_on()

    stop_signals = {signal.SIGTERM, signal.SIGINT}
    previous = {signum: signal.signal(signum, on_signal) for signum in stop_signals}
    try:
        for _ in range(count):
            if received:
                break
            child = spawn()
            # Blocked, so the handler cannot interleave and send this worker a signal twice.
            signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
            try:
                children.append(child)
                pass_on()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
        codes = [child.wait() for child in children]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if all(code == 0 or -code in received for code in codes) else 1


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def _user_name(text: str) -> str:
    # The API's own check, so a name the CLI takes is one the API would take.
    try:
        return optional_str({"name": text}, "name", max_len=users.NAME_MAX_LEN)
    except InvalidRequest as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="antigv", description="OpenAI-compatible gateway for Antigravity")
    parser.add_argument("--config", help="config file (default: $ANTIGV_CONFIG or ./config.toml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(group: Any, name: str, text: str) -> argparse.ArgumentParser:
        return group.add_parser(name, help=text, description=text)

    init = command(commands, "init-config", "write a config with fresh secrets (never overwrites)")
    init.add_argument("path", nargs="?")
    init.add_argument(
        "--add-token-key",
        action="store_true",
        help="give an existing config a token encryption key if it has none",
    )

    command(commands, "migrate", "apply pending database migrations (starts the embedded database)")
    command(commands, "refresh-tokens", "refresh access tokens that expire soon, once")
    command(commands, "recover-quotas", "run shared-pool recovery once")

    serve = command(commands, "serve", "run the HTTP server (starts the embedded database)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=_int_range(1, 65535))
    serve.add_argument("--workers", type=_int_range(1, 256), default=1, help="processes sharing the port")
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)

    db = command(commands, "db", "manage the embedded PostgreSQL cluster, back up and restore")
    db_actions = {
        "start": "start the embedded cluster (created the first time)",
        "stop": "stop the embedded cluster",
        "status": "say whether the embedded cluster runs (exit 3 when stopped)",
        "url": "print the database DSN",
        "backup": "pg_dump the database to FILE (mode 0600)",
        "restore": "pg_restore FILE into the database (replaces its data)",
    }
    db.add_argument(
        "action",
        choices=list(db_actions),
        metavar="ACTION",
        help="; ".join(f"{name}: {text}" for name, text in db_actions.items()),
    )
    db.add_argument("file", nargs="?", help="dump file for backup/restore")

    user = command(commands, "user", "manage users and their API keys")
    user_actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = command(user_actions, "create", "create a user and print its API key (shown this once)")
    create.add_argument("--name", type=_user_name, default="")
    create.add_argument("--prefer-shared", action="store_true", help="use the shared pool first")
    listing = command(
        user_actions, "list", "list users: a table on a terminal, JSON otherwise or with --json"
    )
    listing.add_argument(
        "--limit",
        type=_int_range(1, users.LIST_LIMIT_MAX),
        default=users.LIST_LIMIT_DEFAULT,
    )
    listing.add_argument("--offset", type=_int_range(0, users.LIST_OFFSET_MAX), default=0)
    listing.add_argument("--json", action="store_true", help="print JSON even on a terminal")
    for action, text in (
        ("regenerate-key", "give a user a new API key; the old one stops working"),
        ("disable", "disable a user: their key is refused"),
        ("enable", "enable a user again"),
        ("delete", "delete a user, their accounts and pools (usage history is kept)"),
    ):
        command(user_actions, action, text).add_argument("user_id", type=int)

    key = command(commands, "key", "manage a user's API keys and their limits")
    key_actions = key.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = command(key_actions, "create", "give a user another API key and print it (shown this once)")
    create.add_argument("--user", type=int, required=True, metavar="ID", help="the user it is for")
    create.add_argument("--name", required=True, help="what the key is for")
    for option, metavar, kind, text in KEY_LIMIT_OPTIONS.values():
        create.add_argument(option, type=kind, metavar=metavar, help=text)
    create.add_argument(
        "--locked", action="store_true", help="its owner may lower the limits, not raise them"
    )
    create.add_argument("--json", action="store_true", help="print the key as JSON")
    listing = command(key_actions, "list", "list API keys, a user's or everyone's (never a secret)")
    listing.add_argument("--user", type=int, metavar="ID", help="only this user's keys")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for action, text in (
        ("revoke", "switch a key off (status 0): it is refused, its limits and usage kept"),
        ("delete", "delete a key (its usage history is kept)"),
    ):
        sub = command(key_actions, action, text)
        sub.add_argument("key_id", type=int)
        sub.add_argument("--json", action="store_true", help="print JSON")
    return parser


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "migrate": cmd_migrate,
    "serve": cmd_serve,
    "db": cmd_db,
    "user": cmd_user,
    "key": cmd_key,
    "refresh-tokens": cmd_refresh_tokens,
    "recover-quotas": cmd_recover_quotas,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "init-config":
            return cmd_init_config(args)
        config = load_config(config_path(args.config))
        # Only the server logs to stdout; other commands keep it for their output.
        configure_logging(config.logging, sys.stdout if args.command == "serve" else sys.stderr)
        code = COMMANDS[args.command](config, args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader went away (``antigv user list | head``): that is not an error to report.
        # Later flushes of stdout go nowhere instead of raising again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except (ConfigError, EmbeddedError, QueryError, UsageError) as exc:
        print(f"antigv: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"antigv: {exc.message}", file=sys.stderr)
        return 1
    except psycopg2.Error as exc:
        print(f"antigv: database error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
