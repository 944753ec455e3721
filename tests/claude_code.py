"""Run the real Claude Code CLI, headless, against a base URL (the gateway under test).

The CLI is the pinned npm package ``deploy/claude-code/package.json``, installed by
``deploy/install-claude-code.sh`` into ``.venv/claude-code``; ``ANTIGV_CLAUDE_BIN`` names
another binary. Without it the tests that need it skip, unless ``ANTIGV_REQUIRE_CLAUDE_CODE=1``
(CI sets it): then they fail.

Each run gets a fresh environment, not the caller's: a temporary ``HOME`` (no login, no
settings, no history), the base URL and key, and every switch that keeps the CLI off the
network and quiet (no telemetry, error reports, auto-update, non-essential traffic, retries).
Measured with strace on 2.1.332: the only connection it opens is to the base URL.

    run = await run_claude("say hi", base_url=..., api_key=..., cwd=tmp_path)
    assert run.ok, run.describe()
    run.result_text  # the ``result`` event's text

:class:`RecordingProxy` sits between the CLI and the gateway and keeps each exchange (the
request as Claude Code sent it, the gateway's status, headers and body), so a failure can
show both sides.

``--dangerously-skip-permissions`` refuses to run as root (unless ``IS_SANDBOX=1``); tests
that need a tool pass ``--allowedTools <name>`` instead, and Read needs nothing for a file
under ``cwd``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout, web

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BIN = ROOT / ".venv" / "claude-code" / "node_modules" / ".bin" / "claude"
INSTALL_HINT = "deploy/install-claude-code.sh"

#: What keeps the CLI headless and off the network (besides the temporary HOME).
QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    # A failed request is reported at once instead of retried with backoff (ten tries by
    # default, about two minutes when nothing answers).
    "CLAUDE_CODE_MAX_RETRIES": "0",
    "CI": "1",
    "TERM": "dumb",
    "NO_COLOR": "1",
    "LANG": "C.UTF-8",
}


def claude_bin() -> Path | None:
    """The CLI to run: ``ANTIGV_CLAUDE_BIN``, else the project-local install; None if absent."""
    named = os.environ.get("ANTIGV_CLAUDE_BIN")
    path = Path(named) if named else DEFAULT_BIN
    return path if path.is_file() and os.access(path, os.X_OK) else None


def require_claude() -> Path:
    """The CLI, or skip the test (fail it when ``ANTIGV_REQUIRE_CLAUDE_CODE=1``)."""
    path = claude_bin()
    if path is not None:
        return path
    where = os.environ.get("ANTIGV_CLAUDE_BIN") or str(DEFAULT_BIN.relative_to(ROOT))
    reason = f"Claude Code CLI not found at {where}: run {INSTALL_HINT}"
    if os.environ.get("ANTIGV_REQUIRE_CLAUDE_CODE") == "1":
        pytest.fail(reason + " (ANTIGV_REQUIRE_CLAUDE_CODE=1)", pytrace=False)
    pytest.skip(reason)


def claude_env(
    base_url: str,
    api_key: str,
    home: Path,
    *,
    key_var: str = "ANTHROPIC_API_KEY",
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of a run. ``key_var``: ``ANTHROPIC_API_KEY`` (sent as
    ``x-api-key``) or ``ANTHROPIC_AUTH_TOKEN`` (sent as ``Authorization: Bearer``)."""
    assert key_var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"), key_var
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "TMPDIR": os.environ.get("TMPDIR", tempfile.gettempdir()),
        "ANTHROPIC_BASE_URL": base_url.rstrip("/"),
        key_var: api_key,
        **QUIET_ENV,
    }
    env.update(extra or {})
    return env


@dataclass
class ClaudeRun:
    argv: list[str]
    cwd: Path
    returncode: int | None  # None: killed on timeout
    stdout: str
    stderr: str
    seconds: float
    events: list[dict[str, Any]] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)  # stdout lines that were not JSON

    @property
    def result(self) -> dict[str, Any] | None:
        """The final ``{"type": "result", ...}`` event."""
        results = [e for e in self.events if e.get("type") == "result"]
        return results[-1] if results else None

    @property
    def result_text(self) -> str | None:
        return None if self.result is None else self.result.get("result")

    @property
    def ok(self) -> bool:
        r = self.result
        return (
            self.returncode == 0 and r is not None and not r.get("is_error") and r.get("subtype") == "success"
        )

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]

    def tool_uses(self) -> list[dict[str, Any]]:
        """The ``tool_use`` blocks of the assistant messages, in order."""
        return [
            block
            for e in self.of_type("assistant")
            for block in (e.get("message") or {}).get("content") or []
            if block.get("type") == "tool_use"
        ]

    def tool_results(self) -> list[dict[str, Any]]:
        """The ``tool_result`` blocks Claude Code produced (the ``user`` events)."""
        return [
            block
            for e in self.of_type("user")
            for block in (e.get("message") or {}).get("content") or []
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]

    def describe(self) -> str:
        """What went wrong, for an assertion message."""
        r = self.result or {}
        lines = [
            f"claude exited {self.returncode} after {self.seconds:.1f}s: {' '.join(self.argv[1:])}",
            f"result: is_error={r.get('is_error')} subtype={r.get('subtype')} "
            f"api_error_status={r.get('api_error_status')} api_error={r.get('api_error')}",
            f"result text: {r.get('result')!r}",
        ]
        retries = self.of_type("system")
        lines += [f"system event: {json.dumps(e)[:400]}" for e in retries if e.get("subtype") == "api_retry"]
        if self.stderr.strip():
            lines.append("stderr: " + self.stderr.strip()[-2000:])
        if self.unparsed:
            lines.append("non-JSON stdout: " + " | ".join(self.unparsed)[-1000:])
        return "\n".join(lines)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def parse_stream_json(stdout: str) -> tuple[list[dict[str, Any]], list[str]]:
    events: list[dict[str, Any]] = []
    unparsed: list[str] = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            unparsed.append(line)
            continue
        if isinstance(event, dict):
            events.append(event)
        else:
            unparsed.append(line)
    return events, unparsed


async def run_claude(
    prompt: str,
    *,
    base_url: str,
    api_key: str,
    cwd: Path,
    home: Path | None = None,
    model: str | None = None,
    args: Sequence[str] = (),
    key_var: str = "ANTHROPIC_API_KEY",
    env: dict[str, str] | None = None,
    time_limit: float = 60.0,
) -> ClaudeRun:
    """``claude -p PROMPT --output-format stream-json --verbose [--model M] ARGS`` in ``cwd``.

    ``home`` defaults to a fresh ``claude-home-*`` folder next to ``cwd``. On
    ``time_limit`` the CLI's process group is killed and the run is returned with ``returncode``
    None, so a test can say what it saw.
    """
    binary = require_claude()
    if home is None:
        home = Path(tempfile.mkdtemp(prefix="claude-home-", dir=cwd.parent))
    home.mkdir(parents=True, exist_ok=True)
    argv = [str(binary), "-p", prompt, "--output-format", "stream-json", "--verbose"]
    if model is not None:
        argv += ["--model", model]
    argv += list(args)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(cwd),
        env=claude_env(base_url, api_key, home, key_var=key_var, extra=env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, so a timeout kills its children too
    )
    returncode: int | None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), time_limit)
        returncode = proc.returncode
    except TimeoutError:
        _kill_group(proc.pid)
        out, err = await proc.communicate()
        returncode = None
    except BaseException:
        _kill_group(proc.pid)
        raise
    stdout = out.decode("utf-8", "replace")
    events, unparsed = parse_stream_json(stdout)
    return ClaudeRun(
        argv=argv,
        cwd=cwd,
        returncode=returncode,
        stdout=stdout,
        stderr=err.decode("utf-8", "replace"),
        seconds=time.monotonic() - started,
        events=events,
        unparsed=unparsed,
    )


# --------------------------------------------------------------------------------------
# A recording proxy: Claude Code -> proxy -> gateway
# --------------------------------------------------------------------------------------

_HOP = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "accept-encoding", "upgrade"}
)


@dataclass
class Exchange:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # parsed JSON, else the text
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    response: bytes = b""

    @property
    def response_text(self) -> str:
        return self.response.decode("utf-8", "replace")

    def summary(self, limit: int = 3000) -> str:
        body = self.body if isinstance(self.body, dict) else {}
        messages = body.get("messages") or []
        roles = [m.get("role") for m in messages if isinstance(m, dict)]
        blocks = [
            [b.get("type") for b in m["content"]] if isinstance(m.get("content"), list) else "str"
            for m in messages
            if isinstance(m, dict)
        ]
        head = (
            f"{self.method} {self.path}{'?' + self.query if self.query else ''} -> {self.status}\n"
            f"  sent: model={body.get('model')} stream={body.get('stream')} max_tokens={body.get('max_tokens')} "
            f"thinking={body.get('thinking')} tools={len(body.get('tools') or [])} roles={roles} blocks={blocks}\n"
            f"  anthropic-beta: {self.headers.get('anthropic-beta')}\n"
            f"  answer ({self.response_headers.get('Content-Type')}): "
        )
        text = self.response_text
        return head + (text if len(text) <= limit else text[:limit] + f"... [{len(text)} chars]")


class RecordingProxy:
    """Forwards every request to ``target`` and records it; ``base_url`` is what to give the CLI."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.exchanges: list[Exchange] = []
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self.base_url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = ClientSession(timeout=ClientTimeout(total=None, sock_read=120), auto_decompress=False)
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> RecordingProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def describe(self, last: int = 4) -> str:
        if not self.exchanges:
            return "no request reached the gateway"
        shown = self.exchanges[-last:]
        return "\n".join(
            f"exchange #{len(self.exchanges) - len(shown) + i}: {x.summary()}" for i, x in enumerate(shown)
        )

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        exchange = Exchange(request.method, request.path, request.query_string, dict(request.headers), body)
        self.exchanges.append(exchange)
        url = self.target + request.path_qs
        async with self._session.request(request.method, url, headers=headers, data=raw) as upstream:
            exchange.status = upstream.status
            exchange.response_headers = dict(upstream.headers)
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            response = web.StreamResponse(status=upstream.status, headers=out_headers)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                if len(exchange.response) < 4 * 1024 * 1024:
                    exchange.response += chunk
                await response.write(chunk)
            await response.write_eof()
            return response
