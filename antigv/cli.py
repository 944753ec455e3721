"""The ``antigv`` command line."""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg2
from aiohttp import web

from . import users
from .app import create_app
from .config import Config, ConfigError, config_path, load_config
from .db import Database, Queries, QueryError, close_pool, create_pool, migrate, sql_dir
from .embedded_pg import EmbeddedError, default_cluster, find_bindir
from .errors import ApiError
from .logs import configure_logging
from .metrics import MULTIPROC_ENV
from .quotas.pools import cli_recover_quotas
from .tasks import TASKS


def _example_config() -> Path:
    for candidate in (sql_dir().parent / "config.toml.example", Path("config.toml.example")):
        if candidate.exists():
            return candidate
    raise ConfigError("config.toml.example not found")


def render_config(example: str) -> str:
    """The example with fresh secrets filled in."""
    admin_key = "sk-admin-" + secrets.token_urlsafe(32)
    encryption_key = base64.b64encode(secrets.token_bytes(32)).decode()
    text = re.sub(r"(?m)^admin_api_key\s*=.*$", f'admin_api_key = "{admin_key}"', example)
    return re.sub(r"(?m)^token_encryption_key\s*=.*$", f'token_encryption_key = "{encryption_key}"', text)


def cmd_init_config(args: argparse.Namespace) -> int:
    target = Path(args.path or args.config or os.environ.get("ANTIGV_CONFIG") or "config.toml")
    text = render_config(_example_config().read_text(encoding="utf-8"))
    try:
        # Created exclusively and private from the first byte: it holds secrets.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"antigv: {target} exists; not overwriting it", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    print(f"wrote {target} with a fresh admin key and token encryption key")
    return 0


def database_dsn(config: Config) -> str:
    """The DSN to use; with none configured, the embedded cluster (started if needed)."""
    if config.database.dsn:
        return config.database.dsn
    cluster = default_cluster(config.database.embedded_dir)
    cluster.start()
    return cluster.dsn()


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    applied = asyncio.run(migrate(database_dsn(config)))
    print(
        f"migrations applied: {len(applied)}"
        + (f" ({', '.join(m.name for m in applied)})" if applied else "")
    )
    return 0


def _pg_tool(name: str) -> str:
    return shutil.which(name) or str(find_bindir() / name)


def cmd_db(config: Config, args: argparse.Namespace) -> int:
    cluster = default_cluster(config.database.embedded_dir)
    if args.action in ("backup", "restore"):
        if not args.file:
            print(f"antigv: db {args.action} needs a FILE", file=sys.stderr)
            return 2
        dsn = database_dsn(config)
        if args.action == "backup":
            command = [_pg_tool("pg_dump"), "--format=custom", f"--file={args.file}", dsn]
        else:
            command = [
                _pg_tool("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                f"--dbname={dsn}",
                args.file,
            ]
        result = subprocess.run(command)
        if result.returncode == 0:
            print(f"db {args.action}: {args.file}")
        return result.returncode
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


def cmd_user(config: Config, args: argparse.Namespace) -> int:
    actions: dict[str, Callable[[Database], Awaitable[Any]]] = {
        "create": lambda db: users.create_user(db, args.name or "", int(args.prefer_shared)),
        "list": lambda db: users.list_users(db, args.limit, args.offset),
        "regenerate-key": lambda db: users.regenerate_key(db, args.user_id),
        "disable": lambda db: users.set_status(db, args.user_id, 0),
        "enable": lambda db: users.set_status(db, args.user_id, 1),
        "delete": lambda db: users.delete_user(db, args.user_id),
    }
    result = asyncio.run(_with_db(config, actions[args.action]))
    _print_json(result if result is not None else {"deleted": args.user_id})
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
    if not args.worker:
        asyncio.run(migrate(database_dsn(config)))
    if args.workers > 1:
        return _run_workers(args, host, port)
    web.run_app(
        create_app(config),
        host=host,
        port=port,
        shutdown_timeout=config.server.shutdown_timeout,
        access_log=None,
        reuse_port=args.worker or None,
        print=None,
        # A client that goes away cancels its handler, which aborts the upstream call.
        handler_cancellation=True,
        loop=_event_loop_factory(),
    )
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
    database_dsn(config)
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
    command += ["serve", "--worker", "--host", host, "--port", str(port)]
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="antigv", description="OpenAI-compatible gateway for Antigravity")
    parser.add_argument("--config", help="config file (default: $ANTIGV_CONFIG or ./config.toml)")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init-config", help="write a config with fresh secrets")
    init.add_argument("path", nargs="?")

    commands.add_parser("migrate", help="apply pending database migrations")
    commands.add_parser("refresh-tokens", help="refresh access tokens that expire soon, once")
    commands.add_parser("recover-quotas", help="run shared-pool recovery once")

    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)

    db = commands.add_parser("db", help="manage the embedded PostgreSQL cluster")
    db.add_argument("action", choices=["start", "stop", "status", "url", "backup", "restore"])
    db.add_argument("file", nargs="?", help="dump file for backup/restore")

    user = commands.add_parser("user", help="manage users")
    user_actions = user.add_subparsers(dest="action", required=True)
    create = user_actions.add_parser("create")
    create.add_argument("--name", default="")
    create.add_argument("--prefer-shared", action="store_true")
    listing = user_actions.add_parser("list")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--offset", type=int, default=0)
    for action in ("regenerate-key", "disable", "enable", "delete"):
        user_actions.add_parser(action).add_argument("user_id", type=int)
    return parser


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "migrate": cmd_migrate,
    "serve": cmd_serve,
    "db": cmd_db,
    "user": cmd_user,
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
        return COMMANDS[args.command](config, args)
    except (ConfigError, EmbeddedError, QueryError) as exc:
        print(f"antigv: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"antigv: {exc.message}", file=sys.stderr)
        return 1
    except psycopg2.Error as exc:
        print(f"antigv: database error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
