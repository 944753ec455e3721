"""``make bench``: the gateway's overhead, throughput, tail latency and memory, against
the direct path and a null proxy, measured in one run with the targets interleaved.

    python -m bench.run [--rounds 3] [--quick] [--profile] [--out BENCHMARKS.md]

Processes (each its own, nothing pinned): a private PostgreSQL with
``pg_stat_statements``; the upstream double in its bench profile (bench/upstream.py,
which also counts upstream calls); the null proxy (bench/null_proxy.py); the gateway
(``python -m antigv serve``, one process) with four accounts; and the load generator
(bench/loadgen.py), started afresh for every phase.

Targets: **direct** (clients speak v1internal to the double, with the very body the
gateway would send), **null** (the same through a 30-line aiohttp pass-through),
**gw-stream** and **gw-unary** (OpenAI chat completions through the gateway; usage
rows are recorded), **gw-stream-limited** (gw-stream's request with a second key of the
same user whose limits are set so high that they never refuse: every limit path runs),
**gw-messages** (Anthropic's ``POST /v1/messages``, streamed, the same model and prompt
through the same gateway). Rounds run every concurrency level, and within each level every
target in an order rotated per round, so the machine's noise falls on all alike.
Then 1,000 streams are held open at once against each streaming target for memory.
Results go to BENCHMARKS.md and stdout; raw samples, logs and profiles to bench/results/.

For A/B work on the hot path: ``--only gw-stream,null --levels 1,64 --no-open-streams
--gateway-wrapper FILE`` (FILE is run instead of ``-m antigv``, e.g. to patch first),
``--hold`` leaves everything running and prints how to load each target by hand.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

MODEL = "gemini-3-flash"
PROMPT = "Say hello to the benchmark."
ACCOUNTS = 4
TARGETS = ("direct", "null", "gw-stream", "gw-stream-limited", "gw-messages", "gw-unary")
STREAM_TARGETS = ("direct", "null", "gw-stream", "gw-stream-limited", "gw-messages")
MESSAGES_MAX_TOKENS = 1024  # Anthropic requires max_tokens; the upstream body differs only there
LEVELS = (1, 16, 64)
OPEN_STREAMS = 1000
# The memory phase slows the frames so that the first streams are still open when the last open.
OPEN_STREAM_FRAME_DELAY = 0.75
OPEN_STREAM_RAMP = 3.0
OVERHEAD_HEADER = "x-antigv-overhead-ms"
# gw-stream-limited's key (issue 14, POST /api/keys): every limit set, none ever reached, so
# admission runs every check (model allow-list, budget, requests in flight, rpm, tpm) and the
# reconcile loop has a key to report and learn. The allow-list is a prefix of the model.
LIMITED_KEY = {
    "name": "bench-limited",
    "rpm": 10_000_000,
    "tpm": 10_000_000_000,
    "max_concurrency": 100_000,
    "allowed_models": [MODEL[:3] + "*"],
    "monthly_token_budget": 10**15,
}

LIMITS = {
    "added_p50_c1_ms": 1.0,
    "added_p99_c1_ms": 5.0,
    "stream_throughput_vs_null_c64": 0.70,
    "added_p99_c64_ms": 50.0,
    "db_round_trips_per_request": 2.0,
    # Issue 14: with limits set, the request path plus the limiter's reconcile, per chat.
    "db_round_trips_per_chat_limited": 0.03,
    "open_streams_rss_mb": 300.0,
}

# Named queries by where they run (the names are the project's, from sql/queries/*.sql).
BEFORE_UPSTREAM = {"account_candidates", "key_by_hash", "user_by_key_hash", "get_signatures"}
AFTER_UPSTREAM = {"store_signatures", "set_cooldown", "disable_account"}
BATCHED = {"insert_usage_batch"}
# The key limiter's reconcile loop (gateway/admission.py), about once a second while a limited
# key is known to the instance (it is forgotten 120 s after its last use).
LIMITER = {"reconcile_keys", "delete_old_key_activity"}
LIMITER_WHERE = "key limiter reconcile (background)"
CHAT_RPCS = {"streamGenerateContent", "generateContent"}
# Quota reads after usage batches, debounced per account: both calls of one read (PROTOCOL §13.6).
BACKGROUND_RPCS = {"fetchAvailableModels", "retrieveUserQuotaSummary"}


# --------------------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------------------


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime+stime (and the reaped children's, when asked) of one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Linux resets VmHWM to the current RSS on ``echo 5 > clear_refs``."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def cpu_ticks() -> tuple[int, int, int]:
    """(steal, idle+iowait, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    steal = parts[7] if len(parts) > 7 else 0
    return steal, parts[3] + parts[4], sum(parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile() -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def revision() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "antigv", "sql"],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if dirty:
        return f"{head} + {len(dirty.splitlines())} uncommitted files under antigv/ and sql/"
    return head


# --------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_service(name: str, argv: list[str], logdir: Path) -> Service:
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=raise_nofile,
                                start_new_session=True)  # fmt: skip
    return Service(name, proc, log)


def wait_http(url: str, service: Service, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise SystemExit(f"bench: {service.name} exited early:\n{service.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return  # it answers
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench: {service.name} did not answer {url} within {timeout:.0f}s:\n{service.tail()}")


def http_json(url: str, data: Any = None, headers: dict[str, str] | None = None) -> Any:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def rate_limit_headers(url: str, key: str) -> dict[str, str]:
    """The x-ratelimit-* headers of one streamed chat with ``key`` (read to its end)."""
    req = urllib.request.Request(url, data=json.dumps(openai_body(True)).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
        if b"[DONE]" not in body:
            raise SystemExit(f"bench: a streamed chat did not end with [DONE]: {body[-200:]!r}")
        return {k.lower(): v for k, v in r.headers.items() if k.lower().startswith("x-ratelimit-")}


class PostgresBench:
    """A throwaway cluster (antigv's Cluster helpers) with pg_stat_statements loaded."""

    def __init__(self, root: Path) -> None:
        from antigv.ops.embedded_pg import Cluster

        self.cluster = Cluster(root, port=free_port())
        self._snap: Any = None

    def start(self) -> None:
        c = self.cluster
        c.init()
        options = [
            f"-k {c.socket_dir}",
            "-c listen_addresses=''",
            f"-p {c.port}",
            "-c shared_preload_libraries=pg_stat_statements",
            # Top-level statements only: one per round trip (no foreign-key checks, no functions' inner SQL).
            "-c pg_stat_statements.track=top",
            "-c pg_stat_statements.track_utility=on",
        ]
        c._run("pg_ctl", "start", "-D", str(c.data_dir), "-l", str(c.log_file), "-w", "-t", "60",
               "-o", " ".join(options))  # fmt: skip
        c.create_database("antigv")
        self.sql("postgres", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def sql(self, database: str, query: str, params: Any = None) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(self.cluster.dsn(database))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    @property
    def postmaster_pid(self) -> int:
        return int((self.cluster.data_dir / "postmaster.pid").read_text().split()[0])

    def cpu(self) -> float:
        pm = self.postmaster_pid
        return cpu_seconds(pm, children=True) + sum(cpu_seconds(k) for k in children_of(pm))

    def reset_statements(self) -> None:
        self.sql("postgres", "SELECT pg_stat_statements_reset()")

    def snapshot(self) -> dict[str, int]:
        """calls per statement text now, on one connection kept open (no backend started
        per phase, whose CPU would land in a phase's PG CPU)."""
        import psycopg2

        if self._snap is None:
            self._snap = psycopg2.connect(self.cluster.dsn("postgres"))
            self._snap.autocommit = True
        with self._snap.cursor() as cur:
            cur.execute(
                "SELECT query, sum(calls)::bigint FROM pg_stat_statements "
                "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'antigv') GROUP BY query"
            )
            return dict(cur.fetchall())

    def statements(self) -> list[tuple[str, int]]:
        return self.sql(
            "postgres",
            "SELECT query, calls FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'antigv') ORDER BY calls DESC",
        )

    def version(self) -> str:
        return self.sql("postgres", "SHOW server_version")[0][0]

    def stop(self) -> None:
        if self._snap is not None:
            self._snap.close()
        self.cluster.stop()


# --------------------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------------------


def http_request(path: str, port: int, headers: dict[str, str], body: bytes) -> str:
    """A whole HTTP/1.1 request as latin-1 text (the load generator sends its bytes)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines) + body.decode("latin-1")


def openai_body(stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def anthropic_body() -> dict[str, Any]:
    """The Messages API twin of the streaming chat request: same model, same prompt."""
    return {
        "model": MODEL,
        "max_tokens": MESSAGES_MAX_TOKENS,
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }


def upstream_body() -> bytes:
    """Exactly what the gateway sends upstream for the benchmark's chat request."""
    import orjson

    from antigv.backends.antigravity.envelope import build_upstream_request
    from antigv.config import DefaultsConfig
    from antigv.protocols.openai.parse import parse_chat_request

    req = parse_chat_request(openai_body(stream=True))
    up = build_upstream_request(
        req, project="bench-project-1", defaults=DefaultsConfig(), request_id="agent-bench"
    )
    return orjson.dumps(up.body)


@dataclass
class Target:
    name: str
    port: int
    request: str
    expect: str  # bytes the end of every good response contains
    server: Service
    header: str = ""


# --------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------


@dataclass
class Phase:
    target: str
    concurrency: int
    requests: int
    errors: int
    first_error: str
    wall: float
    samples: list[list[float]]
    server_cpu: float
    upstream_cpu: float
    pg_cpu: float
    loadgen_cpu: float
    peak_rss_kb: int
    max_open: int
    calls: dict[str, int] = field(default_factory=dict)
    overhead: list[float] = field(default_factory=list)
    # Gateway phases: calls per named statement between the phase's start and end.
    statements: dict[str, int] = field(default_factory=dict)


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, status_kb(self.pid, "VmRSS"))
            self._halt.wait(self.every)

    def finish(self) -> int:
        self._halt.set()
        self.join()
        return max(self.peak, status_kb(self.pid, "VmRSS"))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="antigv-bench-"))
        self.work.chmod(0o755)  # the cluster runs as postgres when we are root
        self.logdir = RESULTS / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.services: list[Service] = []
        self.pg: PostgresBench | None = None
        self.targets: dict[str, Target] = {}
        self.phases: list[Phase] = []
        self.notes: list[str] = []
        self.setup_seconds = 0.0
        # Taken as the gateway starts, so that edits to the tree during a run cannot mislabel it.
        self.revision = "unknown"
        self.query_prints: dict[str, str] = {}
        self.limited_headers: dict[str, str] = {}
        self.measure_started = 0.0

    # --- set-up ---------------------------------------------------------------------

    def setup(self) -> None:
        t0 = time.monotonic()
        self.pg = PostgresBench(self.work / "pg")
        self.pg.start()
        up_port, control_port, null_port, gw_port = (free_port() for _ in range(4))
        self.control = f"http://127.0.0.1:{control_port}"
        self.upstream = self._start(
            "upstream",
            [PY, "-m", "bench.upstream", "--port", str(up_port), "--control-port", str(control_port)],
        )
        null = self._start(
            "null-proxy",
            [
                PY,
                "-m",
                "bench.null_proxy",
                "--port",
                str(null_port),
                "--upstream",
                f"http://127.0.0.1:{up_port}",
            ],
        )
        config = self.work / "antigv.toml"
        config.write_text(self._config(gw_port, up_port))
        cli = [PY, "-m", "antigv", "--config", str(config)]
        self._run([*cli, "migrate"], "migrate")
        user = json.loads(self._run([*cli, "user", "create", "--name", "bench"], "user create"))
        self._insert_accounts(user["user_id"])
        serve = [PY, self.args.gateway_wrapper] if self.args.gateway_wrapper else [PY, "-m", "antigv"]
        self.revision, self.query_prints = revision(), query_prints()
        self.gateway = self._start("gateway", [*serve, "--config", str(config), "serve"])
        wait_http(f"http://127.0.0.1:{up_port}/healthz", self.upstream)
        wait_http(f"http://127.0.0.1:{null_port}/", null)  # any answer will do
        wait_http(f"http://127.0.0.1:{gw_port}/healthz", self.gateway)
        gw_url = f"http://127.0.0.1:{gw_port}"
        made = http_json(gw_url + "/api/keys", LIMITED_KEY, {"Authorization": f"Bearer {user['api_key']}"})
        limited_key = made["data"]["api_key"]
        # Both keys once before any load: the limited one must carry its limits' headers, the other none.
        self.limited_headers = rate_limit_headers(gw_url + "/v1/chat/completions", limited_key)
        plain = rate_limit_headers(gw_url + "/v1/chat/completions", user["api_key"])
        if self.limited_headers.get("x-ratelimit-limit-requests") != str(LIMITED_KEY["rpm"]) or plain:
            raise SystemExit(
                f"bench: x-ratelimit-* headers: limited key {self.limited_headers}, unlimited {plain}"
            )

        direct_headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Authorization": "Bearer bench-token",
            "User-Agent": "antigravity/1.11.3 windows/amd64",
        }
        path = "/v1internal:streamGenerateContent?alt=sse"
        ubody = upstream_body()
        gw_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {user['api_key']}"}
        limited_headers = {**gw_headers, "Authorization": f"Bearer {limited_key}"}
        chat = "/v1/chat/completions"
        # As Anthropic's SDKs send it: the key in x-api-key, plus the API version.
        msg_headers = {"Content-Type": "application/json", "x-api-key": user["api_key"],
                       "anthropic-version": "2023-06-01"}  # fmt: skip
        self.targets = {
            "direct": Target("direct", up_port, http_request(path, up_port, direct_headers, ubody),
                             "usageMetadata", self.upstream),
            "null": Target("null", null_port, http_request(path, null_port, direct_headers, ubody),
                           "usageMetadata", null),
            "gw-stream": Target("gw-stream", gw_port, http_request(chat, gw_port, gw_headers,
                                json.dumps(openai_body(True)).encode()), "[DONE]", self.gateway, OVERHEAD_HEADER),
            "gw-stream-limited": Target("gw-stream-limited", gw_port, http_request(chat, gw_port,
                                        limited_headers, json.dumps(openai_body(True)).encode()), "[DONE]",
                                        self.gateway, OVERHEAD_HEADER),
            "gw-messages": Target("gw-messages", gw_port, http_request("/v1/messages", gw_port, msg_headers,
                                  json.dumps(anthropic_body()).encode()), "message_stop", self.gateway,
                                  OVERHEAD_HEADER),
            "gw-unary": Target("gw-unary", gw_port, http_request(chat, gw_port, gw_headers,
                               json.dumps(openai_body(False)).encode()), '"usage"', self.gateway, OVERHEAD_HEADER),
        }  # fmt: skip
        self.setup_seconds = time.monotonic() - t0

    def _start(self, name: str, argv: list[str]) -> Service:
        service = start_service(name, argv, self.logdir)
        self.services.append(service)
        return service

    def _run(self, argv: list[str], what: str) -> str:
        run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"bench: {what} failed: {(run.stderr or run.stdout).strip()}")
        return run.stdout

    def _config(self, gw_port: int, up_port: int) -> str:
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        return f"""
[server]
host = "127.0.0.1"
port = {gw_port}
shutdown_timeout = 2

[database]
dsn = "{self.pg.cluster.dsn()}"

[security]
admin_api_key = "sk-admin-{secrets.token_urlsafe(24)}"
token_encryption_key = "{key}"

[upstream]
base_urls = ["http://127.0.0.1:{up_port}"]

[tasks]
enabled = false

[logging]
level = "warning"
format = "json"
"""

    def _insert_accounts(self, user_id: int) -> None:
        for i in range(1, ACCOUNTS + 1):
            self.pg.sql(
                "antigv",
                "INSERT INTO accounts (user_id, email, name, project_id, tier, refresh_token, access_token,"
                " access_token_expires_at) VALUES (%s, %s, %s, %s, 'standard-tier', %s, %s, '2099-01-01Z')",
                (user_id, f"bench{i}@example.com", f"bench {i}", f"bench-project-{i}",
                 f"plain:bench-refresh-{i}", f"plain:bench-access-{i}"),
            )  # fmt: skip

    # --- load -----------------------------------------------------------------------

    def calls(self) -> dict[str, int]:
        return http_json(self.control + "/stats")["calls"]

    def load(
        self, target: Target, concurrency: int, duration: float, *, one_shot: bool = False, ramp: float = 0.0
    ) -> Phase:
        # Two generator processes at 64 (one is enough below); one for the open streams, so
        # that it can count them at one moment.
        procs = 1 if concurrency <= 16 or one_shot else 2
        start_at = time.time() + 0.4
        specs = []
        for i in range(procs):
            spec = {
                "host": "127.0.0.1",
                "port": target.port,
                "request": target.request,
                "expect": target.expect,
                "header": target.header,
                "concurrency": concurrency // procs + (1 if i < concurrency % procs else 0),
                "duration": duration,
                "start_at": start_at,
                "one_shot": one_shot,
                "ramp": ramp,
            }
            path = self.work / f"spec-{i}.json"
            path.write_text(json.dumps(spec))
            specs.append(path)
        server = target.server.pid
        gateway_phase = target.server is self.gateway
        stmts0 = self.pg.snapshot() if gateway_phase else {}
        reset_peak_rss(server)
        sampler = RssSampler(server)
        sampler.start()
        calls0 = self.calls()
        cpu0 = (cpu_seconds(server), cpu_seconds(self.upstream.pid), self.pg.cpu())
        gens = [
            subprocess.Popen([PY, "-m", "bench.loadgen", str(p)], cwd=ROOT, stdout=subprocess.PIPE,
                             preexec_fn=raise_nofile)
            for p in specs
        ]  # fmt: skip
        outputs = []
        for g in gens:
            out, _ = g.communicate()
            if g.returncode:
                raise SystemExit(f"bench: the load generator failed on {target.name}")
            outputs.append(json.loads(out))
        cpu1 = (cpu_seconds(server), cpu_seconds(self.upstream.pid), self.pg.cpu())
        calls1 = self.calls()
        peak = sampler.finish()
        stmts1 = self.pg.snapshot() if gateway_phase else {}
        samples = [s for o in outputs for s in o["samples"]]
        errors = sum(o["errors"] for o in outputs)
        phase = Phase(
            target=target.name,
            concurrency=concurrency,
            requests=len(samples),
            errors=errors,
            first_error=next((o["first_error"] for o in outputs if o["first_error"]), ""),
            wall=max(o["finished"] for o in outputs) - min(o["started"] for o in outputs),
            samples=samples,
            server_cpu=cpu1[0] - cpu0[0],
            upstream_cpu=cpu1[1] - cpu0[1],
            pg_cpu=cpu1[2] - cpu0[2],
            loadgen_cpu=sum(o["cpu"] for o in outputs),
            peak_rss_kb=max(peak, status_kb(server, "VmHWM")),
            max_open=sum(o["max_open"] for o in outputs),
            calls={k: calls1.get(k, 0) - calls0.get(k, 0) for k in set(calls0) | set(calls1)},
            overhead=[v for o in outputs for v in o.get("header_values", [])],
            statements=statement_delta(stmts0, stmts1, self.query_prints),
        )
        rps = phase.requests / phase.wall if phase.wall else 0
        ttfb = sorted(s[0] for s in samples)
        total = sorted(s[1] for s in samples)
        print(
            f"  {target.name:11} c={concurrency:<4} {phase.requests:6} ok {errors:4} err {rps:7.1f} req/s  "
            f"p50 {pct(total, 50):7.2f}  p99 {pct(total, 99):7.2f}  ttfb p50 {pct(ttfb, 50):7.2f} ms  "
            f"cpu {phase.server_cpu:5.2f} s  rss {phase.peak_rss_kb / 1024:5.0f} MB"
            + (f"  open {phase.max_open}" if one_shot else "")
            + (f"  [{phase.first_error[:100]}]" if errors else ""),
            flush=True,
        )
        return phase

    def selected(self) -> list[str]:
        return [t for t in TARGETS if t in self.args.only]

    def warm_up(self) -> None:
        for name in self.selected():
            self.load(self.targets[name], 8, 1.5)

    def measure(self) -> None:
        a = self.args
        names = self.selected()
        for r in range(a.rounds):
            print(f"round {r + 1}/{a.rounds}", flush=True)
            for li, level in enumerate(a.levels):
                k = (r + li) % len(names)
                for name in names[k:] + names[:k]:
                    duration = a.c1_seconds if level == 1 else a.seconds
                    self.phases.append(self.load(self.targets[name], level, duration))

    def open_streams(self) -> dict[str, Phase]:
        print(
            f"{OPEN_STREAMS} concurrent open streams (frames {OPEN_STREAM_FRAME_DELAY * 1000:.0f} ms apart)"
        )
        http_json(self.control + "/transport", {"frame_delay": OPEN_STREAM_FRAME_DELAY})
        out = {}
        try:
            for name in (t for t in STREAM_TARGETS if t in self.args.only):
                out[name] = self.load(
                    self.targets[name], OPEN_STREAMS, 0.0, one_shot=True, ramp=OPEN_STREAM_RAMP
                )
        finally:
            http_json(self.control + "/transport", {"frame_delay": None})
        return out

    def profile(self) -> dict[str, Any] | None:
        spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        if not Path(spy).exists():
            self.notes.append("profile skipped: py-spy is not installed (`.venv/bin/pip install py-spy`)")
            return None
        seconds = max(5, int(self.args.seconds))
        print(f"profiling the gateway under gw-stream c=64 for {seconds} s (py-spy)", flush=True)
        raw = RESULTS / "profile-gw-stream-c64.txt"
        svg = RESULTS / "profile-gw-stream-c64.svg"
        for fmt_, path in (("raw", raw), ("flamegraph", svg)):
            spy_proc = subprocess.Popen(
                [spy, "record", "--pid", str(self.gateway.pid), "--rate", "250", "--duration", str(seconds),
                 "--nonblocking", "--format", fmt_, "--output", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            time.sleep(0.3)
            self.load(self.targets["gw-stream"], 64, seconds)
            _, err = spy_proc.communicate()
            if spy_proc.returncode:
                self.notes.append(f"py-spy failed: {err.decode(errors='replace').strip()[-200:]}")
                return None
        return {"raw": raw, "svg": svg, "areas": profile_areas(raw), "self": profile_functions(raw)}

    def db_and_calls(self) -> dict[str, Any]:
        time.sleep(1.0)  # the usage writer flushes every 0.25 s
        gw = [p for p in self.phases if p.target.startswith("gw-")]
        calls: dict[str, int] = {}
        for p in gw:
            for k, v in p.calls.items():
                calls[k] = calls.get(k, 0) + v
        by_target: dict[str, dict[str, Any]] = {}
        for p in gw:
            t = by_target.setdefault(p.target, {"requests": 0, "statements": {}})
            t["requests"] += p.requests + p.errors
            for k, v in p.statements.items():
                t["statements"][k] = t["statements"].get(k, 0) + v
        statements = classify_statements(self.pg.statements(), self.query_prints)
        return {
            "requests": sum(p.requests + p.errors for p in gw),
            "seconds": sum(p.wall for p in gw),
            # From the statements' reset after the warm-up to their read: the background loops' span.
            "measured_seconds": time.monotonic() - self.measure_started,
            "statements": statements,
            "upstream_calls": {k: v for k, v in calls.items() if v},
            "by_target": by_target,
        }

    # --- tear-down ------------------------------------------------------------------

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()
        if self.pg is not None:
            try:
                self.pg.stop()
            except Exception as exc:  # keep tearing down
                print(f"bench: stopping PostgreSQL: {exc}", file=sys.stderr)
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


# --------------------------------------------------------------------------------------
# analysis
# --------------------------------------------------------------------------------------


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (what HdrHistogram reports)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _fingerprint(sql: str) -> str:
    text = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    text = re.split(r"%\(|\$\d|'|\bARRAY\b", " ".join(text.split()))[0]
    return text[:80].lower().strip()


def query_prints() -> dict[str, str]:
    """Fingerprint -> name of the project's named SQL, read when the gateway starts (what it loads)."""
    from antigv.store.db import Queries

    return {_fingerprint(sql): name for name, sql in Queries.load()._queries.items()}


def statement_name(query: str, prints: dict[str, str]) -> str:
    fp = _fingerprint(query)
    name = next((n for p, n in prints.items() if p and fp and (fp.startswith(p) or p.startswith(fp))), None)
    return name if name is not None else " ".join(query.split())[:50]


def statement_delta(before: dict[str, int], after: dict[str, int], prints: dict[str, str]) -> dict[str, int]:
    """Calls per statement name between two snapshots (a reset in between counts from zero)."""
    out: dict[str, int] = {}
    for query, calls in after.items():
        n = calls - before.get(query, 0)
        if n < 0:
            n = calls
        if n:
            name = statement_name(query, prints)
            out[name] = out.get(name, 0) + n
    return out


def statement_where(name: str) -> str:
    if name in BEFORE_UPSTREAM:
        return "request path, before upstream"
    if name in AFTER_UPSTREAM:
        return "request path, after upstream"
    if name in BATCHED:
        return "usage writer, batched"
    if name in LIMITER:
        return LIMITER_WHERE
    if name.upper() in ("BEGIN", "COMMIT", "ROLLBACK"):
        return "transaction control (background)"
    return "background (quota reads, tasks)"


def classify_statements(rows: list[tuple[str, int]], prints: dict[str, str]) -> list[dict[str, Any]]:
    """Calls per named query (psycopg2 inlines arrays, so one name may have many entries)."""
    merged: dict[str, int] = {}
    for query, calls in rows:
        name = statement_name(query, prints)
        merged[name] = merged.get(name, 0) + calls
    return [{"name": name, "calls": calls, "where": statement_where(name)}
            for name, calls in sorted(merged.items(), key=lambda kv: -kv[1])]  # fmt: skip


_AREAS = [  # the deepest frame that matches names the area of a sample
    (
        "DB: account_candidates (aiopg/psycopg2)",
        r"AccountRouter\.candidates|Database\.(all|one)|aiopg|psycopg",
    ),
    ("background: usage writer, quota reads", r"UsageRecorder|QuotaService|settle_read|usage_writer"),
    ("upstream: SSE parse + orjson.loads", r"SSEParser|_parse_frame"),
    ("translate: FrameDecoder.feed", r"FrameDecoder"),
    ("render: StreamRenderer / assemble_completion", r"StreamRenderer|assemble_completion"),
    (
        "server: response write/prepare",
        r"StreamResponse\.(write|prepare|write_eof)|_write_headers|json_response",
    ),
    ("upstream: read (readany, timeouts)", r"UpstreamStream\.batches|StreamReader|reschedule"),
    (
        "upstream: open request (ClientSession)",
        r"UpstreamClient\._post|ClientSession|ClientResponse|TCPConnector",
    ),
    ("upstream: client protocol", r"ResponseHandler|client_proto"),
    (
        "request: parse + build upstream body",
        r"parse_chat_request|build_upstream_request|replayed_tool_call_ids|SignatureStore\.find",
    ),
    ("selection: rank_candidates", r"rank_candidates"),
    (
        "chat handler + service (own frames)",
        r"protocols/openai/chat\.py|gateway/service\.py|chat_completions|_stream \(|_complete \(|Gateway",
    ),
    ("tokens", r"TokenManager"),
    ("finish: usage record, release", r"Gateway\._close"),
    ("request: read body + orjson", r"read_json"),
    ("metrics (prometheus_client)", r"prometheus|metrics\.py"),
    ("middleware + auth + logging", r"auth_middleware|request_middleware|structlog|key_digest"),
    ("server: aiohttp protocol", r"web_protocol|http_parser|web_app"),
    ("event loop", r"run_app|serving\.py|uvloop|base_events"),
]


def _stacks(raw: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            out.append((stack.split(";"), int(count)))
    return out


def profile_areas(raw: Path) -> list[tuple[str, float]]:
    counts: dict[str, int] = {}
    total = 0
    for frames, n in _stacks(raw):
        total += n
        label = "other"
        for f in reversed(frames):
            hit = next((name for name, rx in _AREAS if re.search(rx, f)), None)
            if hit:
                label = hit
                break
        counts[label] = counts.get(label, 0) + n
    return [(k, 100 * v / max(total, 1)) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]


def profile_functions(raw: Path, top: int = 20) -> list[tuple[str, float]]:
    counts: dict[str, int] = {}
    total = 0
    for frames, n in _stacks(raw):
        total += n
        leaf = re.sub(r" \((?:.*/)?(?:site-packages/)?([^()]*?):\d+\)$", r" (\1)", frames[-1])
        counts[leaf] = counts.get(leaf, 0) + n
    return [(k, 100 * v / max(total, 1)) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]


@dataclass
class Row:
    target: str
    concurrency: int
    n: int
    errors: int
    rps: float
    p50: float
    p95: float
    p99: float
    ttfb50: float
    ttfb99: float
    cpu_ms: float
    upstream_cpu_ms: float
    pg_cpu_ms: float
    loadgen_cpu_pct: float
    server_cpu_pct: float
    rss_mb: float
    overhead50: float
    overhead99: float
    totals: list[float]
    ttfbs: list[float]


def aggregate(phases: list[Phase]) -> dict[tuple[str, int], Row]:
    rows = {}
    for name in TARGETS:
        for level in sorted({p.concurrency for p in phases}):
            ps = [p for p in phases if p.target == name and p.concurrency == level]
            if not ps:
                continue
            totals = sorted(s[1] for p in ps for s in p.samples)
            ttfbs = sorted(s[0] for p in ps for s in p.samples)
            overhead = sorted(v for p in ps for v in p.overhead)
            n = len(totals)
            wall = sum(p.wall for p in ps)
            rows[name, level] = Row(
                target=name,
                concurrency=level,
                n=n,
                errors=sum(p.errors for p in ps),
                rps=n / wall if wall else 0.0,
                p50=pct(totals, 50),
                p95=pct(totals, 95),
                p99=pct(totals, 99),
                ttfb50=pct(ttfbs, 50),
                ttfb99=pct(ttfbs, 99),
                cpu_ms=1000 * sum(p.server_cpu for p in ps) / max(n, 1),
                upstream_cpu_ms=1000 * sum(p.upstream_cpu for p in ps) / max(n, 1),
                pg_cpu_ms=1000 * sum(p.pg_cpu for p in ps) / max(n, 1),
                loadgen_cpu_pct=100 * sum(p.loadgen_cpu for p in ps) / wall if wall else 0.0,
                server_cpu_pct=100 * sum(p.server_cpu for p in ps) / wall if wall else 0.0,
                rss_mb=max(p.peak_rss_kb for p in ps) / 1024,
                overhead50=pct(overhead, 50),
                overhead99=pct(overhead, 99),
                totals=totals,
                ttfbs=ttfbs,
            )
    return rows


def added(rows: dict, name: str, level: int, q: float, which: str = "totals", base: str = "direct") -> float:
    b, row = rows.get((base, level)), rows.get((name, level))
    if b is None or row is None:
        return float("nan")
    return pct(getattr(row, which), q) - pct(getattr(b, which), q)


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def machine_info(pg_version: str, rev: str) -> dict[str, str]:
    import aiohttp

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    versions = {}
    for module in ("uvloop", "orjson", "aiopg", "psycopg2"):
        try:
            versions[module] = __import__(module).__version__.split(" ")[0]
        except ImportError:
            versions[module] = "not installed"
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores (shared with other work, nothing pinned)",
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "OS": f"Linux {platform.release()}",
        "Python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        **versions,
        "PostgreSQL": pg_version,
        "antigv revision": f"{rev} (when the gateway started)",
    }


def fmt(v: float, digits: int = 1) -> str:
    return "–" if v != v else f"{v:.{digits}f}"


def signed(v: float, digits: int = 2) -> str:
    return "–" if v != v else f"{v:+.{digits}f}"


def measured(rows: dict, levels: list[int]) -> Iterator[tuple[str, int, Any]]:
    """(target, concurrency, row) for every measured phase, in table order."""
    for level in levels:
        for name in TARGETS:
            if (row := rows.get((name, level))) is not None:
                yield name, level, row


def latency_table(rows: dict, levels: list[int]) -> list[str]:
    out = [
        "| target | conc | req/s | p50 | p95 | p99 | TTFB p50 | TTFB p99 | added p50 | added p99 "
        "| added TTFB p50 | added TTFB p99 |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, level, r in measured(rows, levels):
        add = [""] * 4 if name == "direct" else [
            signed(added(rows, name, level, 50)), signed(added(rows, name, level, 99)),
            signed(added(rows, name, level, 50, "ttfbs")), signed(added(rows, name, level, 99, "ttfbs"))]  # fmt: skip
        out.append(
            f"| {name} | {level} | {fmt(r.rps)} | {fmt(r.p50, 2)} | {fmt(r.p95, 2)} | {fmt(r.p99, 2)} "
            f"| {fmt(r.ttfb50, 2)} | {fmt(r.ttfb99, 2)} | " + " | ".join(add) + " |"
        )
    return out


def cost_table(rows: dict, levels: list[int]) -> list[str]:
    out = [
        "| target | conc | requests | errors | server CPU ms/req | server CPU % of a core | double CPU ms/req "
        "| PG CPU ms/req | peak RSS MB | loadgen CPU % | gateway-reported overhead p50 / p99 ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, level, r in measured(rows, levels):
        ov = "" if r.overhead50 != r.overhead50 else f"{r.overhead50:.2f} / {r.overhead99:.2f}"
        out.append(
            f"| {name} | {level} | {r.n} | {r.errors} | {fmt(r.cpu_ms, 3)} | {fmt(r.server_cpu_pct, 0)} "
            f"| {fmt(r.upstream_cpu_ms, 3)} | {fmt(r.pg_cpu_ms, 3)} | {fmt(r.rss_mb)} "
            f"| {fmt(r.loadgen_cpu_pct, 0)} | {ov} |"
        )
    return out


def ratio_table(rows: dict, levels: list[int]) -> list[str]:
    out = [
        "| conc | metric | gw-stream / direct | gw-stream / null | gw-unary / direct | gw-unary / null "
        "| null / direct |",
        "|--:|---|--:|--:|--:|--:|--:|",
    ]

    def ratio(a: str, b: str, level: int, attr: str) -> str:
        ra, rb = rows.get((a, level)), rows.get((b, level))
        if ra is None or rb is None or not getattr(rb, attr):
            return "–"
        return f"{getattr(ra, attr) / getattr(rb, attr):.2f}"

    for level in levels:
        for attr, label in (("rps", "throughput"), ("p50", "p50 latency"), ("p99", "p99 latency"),
                            ("ttfb50", "TTFB p50"), ("cpu_ms", "server CPU per request")):  # fmt: skip
            pairs = (("gw-stream", "direct"), ("gw-stream", "null"), ("gw-unary", "direct"), ("gw-unary", "null"),
                     ("null", "direct"))  # fmt: skip
            out.append(
                f"| {level} | {label} | " + " | ".join(ratio(a, b, level, attr) for a, b in pairs) + " |"
            )
    return out


def beyond_null_table(rows: dict, levels: list[int]) -> list[str]:
    out = [
        "| target | conc | TTFB p50 | TTFB p99 | p50 | p99 | server CPU ms/req |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for level in levels:
        for name in ("gw-stream", "gw-stream-limited", "gw-messages"):
            g, n = rows.get((name, level)), rows.get(("null", level))
            if g is None or n is None:
                continue
            out.append(
                f"| {name} | {level} | {signed(added(rows, name, level, 50, 'ttfbs', 'null'))} "
                f"| {signed(added(rows, name, level, 99, 'ttfbs', 'null'))} "
                f"| {signed(added(rows, name, level, 50, base='null'))} "
                f"| {signed(added(rows, name, level, 99, base='null'))} | {signed(g.cpu_ms - n.cpu_ms, 3)} |"
            )
    return out


# (label, Row attribute, digits) of the messages-vs-chat table.
_MESSAGES_METRICS = (
    ("throughput req/s", "rps", 1),
    ("TTFB p50", "ttfb50", 2),
    ("TTFB p99", "ttfb99", 2),
    ("p50 latency", "p50", 2),
    ("p99 latency", "p99", 2),
    ("server CPU ms/req", "cpu_ms", 3),
    ("PG CPU ms/req", "pg_cpu_ms", 3),
    ("gateway-reported overhead p50", "overhead50", 2),
    ("gateway-reported overhead p99", "overhead99", 2),
    ("peak RSS MB", "rss_mb", 1),
)


def messages_table(rows: dict, levels: list[int]) -> list[str]:
    """gw-messages beside gw-stream: the same model, prompt, gateway and upstream frames."""
    return pair_table(rows, levels, "gw-stream", "gw-messages", "chat", "messages",
                      "gw-stream (chat completions)", "gw-messages (/v1/messages)")  # fmt: skip


def limited_table(rows: dict, levels: list[int]) -> list[str]:
    """gw-stream-limited beside gw-stream: the same request, gateway and user, another key."""
    return pair_table(rows, levels, "gw-stream", "gw-stream-limited", "unlimited", "limited",
                      "gw-stream (unlimited key)", "gw-stream-limited (limited key)")  # fmt: skip


def pair_table(rows: dict, levels: list[int], base: str, other: str, base_short: str, other_short: str,
               base_label: str, other_label: str) -> list[str]:  # fmt: skip
    """``other`` beside ``base`` per level and metric: both, their ratio and difference, and
    ``other``'s percentile minus direct's."""
    out = [
        f"| conc | metric | {base_label} | {other_label} | {other_short} / {base_short} "
        f"| {other_short} − {base_short} | {other_short} added vs direct |",
        "|--:|---|--:|--:|--:|--:|--:|",
    ]
    direct_based = {
        "ttfb50": (50, "ttfbs"),
        "ttfb99": (99, "ttfbs"),
        "p50": (50, "totals"),
        "p99": (99, "totals"),
    }
    for level in levels:
        c, m = rows.get((base, level)), rows.get((other, level))
        if c is None or m is None:
            continue
        for label, attr, digits in _MESSAGES_METRICS:
            a, b = getattr(c, attr), getattr(m, attr)
            ratio = "–" if a != a or b != b or not a else f"{b / a:.2f}"
            vs_direct = ""
            if attr in direct_based:
                q, which = direct_based[attr]
                vs_direct = signed(added(rows, other, level, q, which))
            out.append(
                f"| {level} | {label} | {fmt(a, digits)} | {fmt(b, digits)} | {ratio} "
                f"| {signed(b - a, digits)} | {vs_direct} |"
            )
    return out


def limited_db(db: dict) -> dict[str, float] | None:
    """DB round trips per chat with limits set: the request path from gw-stream-limited's own
    phases, the limiter's reconcile (a background loop) against all of the run's gateway requests."""
    by_target = db.get("by_target", {})
    lim, unl = by_target.get("gw-stream-limited"), by_target.get("gw-stream")
    if lim is None:
        return None

    def path(t: dict | None) -> float:
        if t is None:
            return math.nan
        calls = sum(v for k, v in t["statements"].items() if statement_where(k).startswith("request path"))
        return calls / max(t["requests"], 1)

    reconcile = sum(s["calls"] for s in db["statements"] if s["where"] == LIMITER_WHERE)
    return {
        "path_limited": path(lim),
        "path_unlimited": path(unl),
        "reconcile_calls": reconcile,
        "reconcile_per_chat": reconcile / max(db["requests"], 1),
        "reconcile_per_limited_chat": reconcile / max(lim["requests"], 1),
        "reconcile_per_second": reconcile / max(db.get("measured_seconds", 0.0), 1e-9),
        "limited_requests": lim["requests"],
    }


def evaluate(rows: dict, db: dict, open_phases: dict[str, Phase]) -> list[tuple[str, str, str, bool | None]]:
    checks: list[tuple[str, str, str, bool | None]] = []

    def ok(*values: float, limit: float) -> bool | None:
        return None if any(v != v for v in values) else max(values) <= limit

    a50, a99 = added(rows, "gw-stream", 1, 50), added(rows, "gw-stream", 1, 99)
    t50, t99 = added(rows, "gw-stream", 1, 50, "ttfbs"), added(rows, "gw-stream", 1, 99, "ttfbs")
    u50, u99 = added(rows, "gw-unary", 1, 50), added(rows, "gw-unary", 1, 99)
    checks.append(
        (
            "added latency at c=1, stream first byte: p50 / p99",
            "<= 1 / 5 ms",
            f"{signed(t50)} / {signed(t99)} ms",
            None if t50 != t50 else t50 <= LIMITS["added_p50_c1_ms"] and t99 <= LIMITS["added_p99_c1_ms"],
        )
    )
    checks.append(
        (
            "added latency at c=1, last byte: stream p50 / p99, unary p50 / p99 (see noise below)",
            "<= 1 / 5 ms",
            f"{signed(a50)} / {signed(a99)}, {signed(u50)} / {signed(u99)} ms",
            ok(a50, u50, limit=LIMITS["added_p50_c1_ms"]) and ok(a99, u99, limit=LIMITS["added_p99_c1_ms"]),
        )
    )
    n50, n99 = added(rows, "null", 1, 50, "ttfbs"), added(rows, "null", 1, 99, "ttfbs")
    checks.append(("(floor) the null proxy's added latency at c=1, first byte p50 / p99",
                   "for reference", f"{signed(n50)} / {signed(n99)} ms", None))  # fmt: skip
    gs, nl = rows.get(("gw-stream", 64)), rows.get(("null", 64))
    share = gs.rps / nl.rps if gs and nl and nl.rps else float("nan")
    checks.append(("streaming throughput at c=64, share of the null proxy's", ">= 70%",
                   f"{share * 100:.0f}% ({fmt(gs.rps if gs else math.nan)} vs {fmt(nl.rps if nl else math.nan)} req/s)",
                   None if share != share else share >= LIMITS["stream_throughput_vs_null_c64"]))  # fmt: skip
    s99, su99 = added(rows, "gw-stream", 64, 99), added(rows, "gw-unary", 64, 99)
    checks.append(("added p99 at c=64: stream / unary", "<= 50 ms", f"{signed(s99, 1)} / {signed(su99, 1)} ms",
                   ok(s99, su99, limit=LIMITS["added_p99_c64_ms"])))  # fmt: skip
    if ("gw-messages", 1) in rows or ("gw-messages", 64) in rows:
        m50, m99 = added(rows, "gw-messages", 1, 50, "ttfbs"), added(rows, "gw-messages", 1, 99, "ttfbs")
        gm = rows.get(("gw-messages", 64))
        mshare = gm.rps / gs.rps if gm and gs and gs.rps else float("nan")
        checks.append(("(for reference) /v1/messages stream: added first byte at c=1 p50 / p99; "
                       "throughput at c=64 as a share of chat completions' stream", "for reference",
                       f"{signed(m50)} / {signed(m99)} ms; {mshare * 100:.0f}% "
                       f"({fmt(gm.rps if gm else math.nan)} vs {fmt(gs.rps if gs else math.nan)} req/s)", None))  # fmt: skip
    n = max(db["requests"], 1)

    def per(where: str) -> float:
        return sum(s["calls"] for s in db["statements"] if s["where"] == where) / n

    before, after = per("request path, before upstream"), per("request path, after upstream")
    choice = sum(s["calls"] for s in db["statements"] if s["name"] == "account_candidates") / n
    checks.append(("DB round trips per chat request on the request path: all / account choice / other "
                   "before upstream", "<= 2 / <= 1 / 0",
                   f"{before + after:.3f} / {choice:.3f} / {before - choice:.3f} (key-cache refills)",
                   before + after <= LIMITS["db_round_trips_per_request"] and choice <= 1.0
                   and before - choice <= 0.05))  # fmt: skip
    if (ld := limited_db(db)) is not None:
        total = ld["path_limited"] + ld["reconcile_per_chat"]
        checks.append(("DB round trips per chat with limits set (gw-stream-limited): request path + key limiter "
                       "reconcile", "<= 0.03",
                       f"{ld['path_limited']:.3f} + {ld['reconcile_per_chat']:.3f} = {total:.3f} (reconcile: "
                       f"{ld['reconcile_calls']} statements, {ld['reconcile_per_second']:.1f}/s, against the run's "
                       f"{db['requests']} gateway requests; unlimited gw-stream's request path "
                       f"{ld['path_unlimited']:.3f})", total <= LIMITS["db_round_trips_per_chat_limited"]))  # fmt: skip
    calls = db["upstream_calls"]
    chat = sum(v for k, v in calls.items() if k in CHAT_RPCS)
    extra = sum(v for k, v in calls.items() if k not in CHAT_RPCS | BACKGROUND_RPCS) + max(0, chat - n)
    background = sum(v for k, v in calls.items() if k in BACKGROUND_RPCS)
    checks.append(("upstream calls per chat request", "1, zero extra",
                   f"{chat / n:.3f} chat, {extra} extra; {background} background quota reads "
                   f"(fetchAvailableModels + retrieveUserQuotaSummary, debounced per account, not per request)", chat == n and extra == 0))  # fmt: skip
    og = open_phases.get("gw-stream")
    if og is not None:
        mb = og.peak_rss_kb / 1024
        checks.append((f"gateway peak RSS with {OPEN_STREAMS} concurrent open streams", "<= 300 MB",
                       f"{mb:.0f} MB ({og.max_open} open at once, {og.errors} errors)",
                       mb <= LIMITS["open_streams_rss_mb"] and og.max_open >= OPEN_STREAMS and not og.errors))  # fmt: skip
    return checks


def render(bench: Bench, rows: dict, db: dict | None, open_phases: dict[str, Phase], profile: dict | None,
           machine: dict[str, str], elapsed: float, load: dict[str, float], gw_uvloop: bool) -> str:  # fmt: skip
    a = bench.args
    levels = [lv for lv in a.levels if any(k[1] == lv for k in rows)]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` (`python -m bench.run`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in "
        f"{elapsed:.0f} s. All numbers come from this one run, with the targets interleaved, so the ratios "
        "compare like with like. Times are in milliseconds.",
        "",
        "## Targets",
        "",
        "| target | goal | measured | holds |",
        "|---|---|---|---|",
    ]
    if db is not None:
        verdict = {True: "yes", False: "**no**", None: "–"}
        lines += [
            f"| {c} | {goal} | {got} | {verdict[v]} |" for c, goal, got, v in evaluate(rows, db, open_phases)
        ]
    lines += [
        f"| uvloop in the gateway process | used when installed | "
        f"{'uvloop loaded' if gw_uvloop else 'not loaded'} | {'yes' if gw_uvloop else '**no**'} |",
        "",
    ]
    noise = [pct(sorted(s[1] for s in p.samples), 50) for p in bench.phases
             if p.target == "direct" and p.concurrency == 1 and p.samples]  # fmt: skip
    noise_ttfb = [pct(sorted(s[0] for s in p.samples), 50) for p in bench.phases
                  if p.target == "direct" and p.concurrency == 1 and p.samples]  # fmt: skip
    if len(noise) > 1:
        lines += [
            "",
            f"Noise: between rounds, direct's own c=1 p50 moved over {max(noise) - min(noise):.1f} ms for the last "
            f"byte ({min(noise):.1f}–{max(noise):.1f}) and {max(noise_ttfb) - min(noise_ttfb):.1f} ms for the "
            "first byte, so last-byte differences at c=1 below that are not resolved by this machine; the "
            "first byte is the sharper measure of what a proxy adds before the stream.",
        ]
    lines += ["", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in machine.items()]
    lines += [
        f"- load while measuring: our processes plus whatever else ran; load average {load['loadavg']}, "
        f"machine CPU busy {load['busy']:.0f}% on average, steal {load['steal']:.1f}%",
        "",
        "## Method",
        "",
        "- **Upstream**: `tests/upstream_double.py` in its bench profile (about 20 ms to the first frame, then "
        "20 text frames 3 ms apart, usage on the last frame), served by `bench/upstream.py` (uvloop), which "
        "also counts the calls it answers, by RPC.",
        "- **direct**: the load generator speaks `v1internal:streamGenerateContent?alt=sse` to the double "
        "itself, with the exact body the gateway sends for the benchmark's chat request.",
        "- **null**: the same request through `bench/null_proxy.py`, a 30-line aiohttp pass-through on uvloop "
        "(no auth, no translation, chunks forwarded as they arrive): the floor for any aiohttp gateway.",
        f"- **gw-stream / gw-unary**: `POST /v1/chat/completions` (`{MODEL}`, one user message; "
        "`stream: true` with `include_usage`, or `stream: false`) through `python -m antigv serve` as one "
        f"process, with {ACCOUNTS} accounts, API-key auth, usage rows written (batched), logging at warning and "
        "background tasks off. The gateway always streams from upstream, so gw-unary is compared with "
        "direct streaming.",
        f"- **gw-messages**: Anthropic's `POST /v1/messages` through the same gateway process, `{MODEL}`, the "
        f"same user message, `max_tokens: {MESSAGES_MAX_TOKENS}`, `stream: true`, the key in `x-api-key`; a "
        "good response ends with `message_stop`. Its upstream body differs from the chat request's only in "
        "`maxOutputTokens`, so direct is its baseline too, and the double answers both with the same frames.",
        "- **gw-stream-limited**: gw-stream's request with a second key of the same user whose limits "
        "(rpm, tpm, requests in flight, a model allow-list, a monthly token budget) are set so high they "
        "never refuse, so every admission check runs and the key limiter reconciles with PostgreSQL about "
        "once a second; beside gw-stream it is the cost of per-key limits.",
        "- **Load**: `bench/loadgen.py`, an asyncio (uvloop) closed-loop generator in its own process (two at "
        "concurrency 64), one keep-alive HTTP/1.1 connection per concurrent client, each a raw "
        "`asyncio.Protocol` that frames the response (chunked or Content-Length) and checks its end. Not "
        "wrk: wrk cannot time a stream's first byte and is not on a clean machine. Not the aiohttp client: "
        "it spends more CPU per chunk than the servers under test. `loadgen CPU %` shows that the generator "
        "is not the bottleneck.",
        f"- **Schedule**: a warm-up per target, then {a.rounds} rounds; each round runs concurrency "
        + ", ".join(str(lv) for lv in a.levels)
        + f" ({a.c1_seconds:g} s per target at 1, {a.seconds:g} s per target otherwise), every target in "
        "an order rotated per round. A phase stops issuing at its end and lets requests in flight finish.",
        "- **Latency**: per request, from writing the request to the last byte (p50/p95/p99), and to the "
        "first body byte (TTFB; for a stream its first SSE event). Nearest-rank percentiles over every "
        "sample of every round. **added** = the target's percentile minus direct's at the same concurrency. "
        "The double's 20 timed frames make last-byte latency noisy (a few ms between rounds at c=1), so "
        "first-byte differences are the sharper measure of what a proxy adds.",
        "- **CPU per request**: utime+stime of the server process (/proc/PID/stat) over the phase divided by "
        "the requests; the server is the double for direct, the null proxy for null, the gateway for gw-*. "
        "`double CPU` is the upstream double's share, `PG CPU` the PostgreSQL cluster's (postmaster, "
        "backends, reaped children). `server CPU %` is of one core.",
        "- **Peak RSS**: VmHWM of the server process (reset per phase through /proc/PID/clear_refs) and its "
        "RSS sampled every 50 ms.",
        f"- **Open streams**: the double's frames slowed to {OPEN_STREAM_FRAME_DELAY * 1000:.0f} ms apart (a "
        f"~{OPEN_STREAM_FRAME_DELAY * 19 + 0.02:.0f} s stream); {OPEN_STREAMS} connections opened over "
        f"{OPEN_STREAM_RAMP:g} s, each sends one streaming request; `open at once` is the most streams that "
        "had their first byte and not yet their last at one moment.",
        "- **DB round trips**: `pg_stat_statements` (preloaded; top-level statements, so one per round trip) "
        "reset after the warm-up and read after the measured phases; statements are named by matching the "
        "project's named SQL and divided by the gateway's requests. **Upstream calls**: the double's "
        "counters, before and after every gateway phase.",
        "",
        "## Results",
        "",
        "Latency and throughput:",
        "",
    ]
    lines += latency_table(rows, levels)
    lines += ["", "Cost:", ""]
    lines += cost_table(rows, levels)
    lines += ["", "## Ratios (same run)", ""]
    lines += ratio_table(rows, levels)
    lines += ["", "The gateway beyond the null proxy (target minus null, same run):", ""]
    lines += beyond_null_table(rows, levels)
    if any(k[0] == "gw-messages" for k in rows):
        lines += ["", "## /v1/messages vs /v1/chat/completions, streaming (same run)", "",
                  "Both through the same gateway process, same model and prompt, interleaved in every round; "
                  "`messages added vs direct` is gw-messages' percentile minus direct's.", ""]  # fmt: skip
        lines += messages_table(rows, levels)
    if any(k[0] == "gw-stream-limited" for k in rows):
        limits = ", ".join(f"{k} {v}" for k, v in LIMITED_KEY.items() if k != "name")
        seen = ", ".join(f"`{k}: {v}`" for k, v in sorted(bench.limited_headers.items()))
        lines += ["", "## A limited key beside an unlimited one, streaming (same run)", "",
                  "gw-stream-limited sends gw-stream's very request through the same gateway process with a "
                  f"second key of the same user, made with `POST /api/keys` ({limits}): limits that are never "
                  "reached, so every admission check runs (allow-list, monthly budget, requests in flight, rpm, "
                  "tpm), every response carries the x-ratelimit-* headers, and the limiter's reconcile loop has "
                  f"a key to report and learn. Headers of one request before the load: {seen or 'none'}; the "
                  "unlimited key's response had none. `limited added vs direct` is gw-stream-limited's "
                  "percentile minus direct's.", ""]  # fmt: skip
        lines += limited_table(rows, levels)
        if db is not None and (ld := limited_db(db)) is not None:
            total = ld["path_limited"] + ld["reconcile_per_chat"]
            lines += ["", "Database round trips per chat with limits set:", "",
                      f"- request path (statements between the start and end of gw-stream-limited's phases, over "
                      f"its {ld['limited_requests']} requests): **{ld['path_limited']:.4f}** per chat; "
                      f"gw-stream's (unlimited key) {ld['path_unlimited']:.4f}. Admission itself reads nothing.",
                      f"- key limiter reconcile (a background loop, about once a second while a limited key was "
                      f"used in the last 120 s, whatever the load): {ld['reconcile_calls']} statements in "
                      f"{db['measured_seconds']:.0f} s ({ld['reconcile_per_second']:.1f} per second); counted "
                      f"against the run's {db['requests']} gateway requests, as the other background statements "
                      f"are: **{ld['reconcile_per_chat']:.4f}** per chat (against the limited key's own "
                      f"{ld['limited_requests']} requests alone: {ld['reconcile_per_limited_chat']:.4f}).",
                      f"- together: **{total:.4f}** per chat with limits set (goal <= "
                      f"{LIMITS['db_round_trips_per_chat_limited']}).",
                      ]  # fmt: skip
    if open_phases:
        lines += ["", f"## {OPEN_STREAMS} concurrent open streams", "",
                  "| target | streams ok | errors | open at once | peak RSS MB (server process) | server CPU s |",
                  "|---|--:|--:|--:|--:|--:|"]  # fmt: skip
        for name, p in open_phases.items():
            lines.append(f"| {name} | {p.requests} | {p.errors} | {p.max_open} | {p.peak_rss_kb / 1024:.0f} "
                         f"| {p.server_cpu:.2f} |")  # fmt: skip
    if db is not None:
        n = max(db["requests"], 1)
        lines += ["", "## Database round trips and upstream calls per chat request", "",
                  f"Gateway requests in the measured phases: {db['requests']} over {db['seconds']:.0f} s.", "",
                  "| statement | where | calls | per request |", "|---|---|--:|--:|"]  # fmt: skip
        for s in db["statements"]:
            lines.append(f"| `{s['name']}` | {s['where']} | {s['calls']} | {s['calls'] / n:.4f} |")
        if db.get("by_target"):
            lines += ["", "Per target (statements between the start and end of each target's phases, over its "
                      "requests; a background statement falls on whichever phase runs when it does):", "",
                      "| target | requests | request path | `account_candidates` | `key_by_hash` | usage writer "
                      "| key limiter reconcile | other background |", "|---|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
            for name in TARGETS:
                if (t := db["by_target"].get(name)) is not None:
                    lines.append(per_target_row(name, t))
        lines += ["", "| upstream RPC | calls | per request |", "|---|--:|--:|"]
        for k, v in sorted(db["upstream_calls"].items()):
            lines.append(f"| {k} | {v} | {v / n:.4f} |")
    if profile:
        lines += ["", "## Profile: the gateway at gw-stream, concurrency 64 (py-spy)", "",
                  f"Flame graph `{profile['svg'].relative_to(ROOT)}`, collapsed stacks "
                  f"`{profile['raw'].relative_to(ROOT)}`. Shares of wall-clock samples of the event loop "
                  "(a sample blocked in a syscall counts where it blocked).", "",
                  "| share | area (deepest matching frame) |", "|--:|---|"]  # fmt: skip
        lines += [f"| {share:.1f}% | {area} |" for area, share in profile["areas"]]
        lines += ["", "| self | function |", "|--:|---|"]
        lines += [f"| {share:.1f}% | `{fn}` |" for fn, share in profile["self"]]
    errors = [p for p in bench.phases if p.errors]
    if errors or bench.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {note}" for note in bench.notes]
        lines += [f"- {p.target} c={p.concurrency}: {p.errors} errors, first: `{p.first_error[:160]}`"
                  for p in errors]  # fmt: skip
    return "\n".join(lines) + "\n"


def per_target_row(name: str, t: dict[str, Any]) -> str:
    """One target's statements per request, by where they run."""
    columns = {"path": 0, "account_candidates": 0, "key": 0, "usage": 0, "limiter": 0, "other": 0}
    for k, v in t["statements"].items():
        where = statement_where(k)
        if where.startswith("request path"):
            columns["path"] += v
            if k == "account_candidates":
                columns["account_candidates"] += v
            elif k in ("key_by_hash", "user_by_key_hash"):
                columns["key"] += v
        elif k in BATCHED:
            columns["usage"] += v
        elif k in LIMITER:
            columns["limiter"] += v
        else:
            columns["other"] += v
    n = max(t["requests"], 1)
    return f"| {name} | {t['requests']} | " + " | ".join(f"{v / n:.4f}" for v in columns.values()) + " |"


def hold(bench: Bench) -> int:
    """Leave everything running for manual load or profiling; SIGTERM or Ctrl-C ends it."""
    for t in bench.targets.values():
        spec = bench.work / f"hold-{t.name}.json"
        spec.write_text(json.dumps({"host": "127.0.0.1", "port": t.port, "request": t.request, "expect": t.expect,
                                    "header": t.header, "concurrency": 64, "duration": 10}))  # fmt: skip
        print(f"{t.name:11} pid {t.server.pid:7}  port {t.port}  load: {PY} -m bench.loadgen {spec}")
    print(f"control: {bench.control}  postgres: {bench.pg.cluster.dsn()}", flush=True)

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per target per round at c=16 and c=64")
    parser.add_argument("--c1-seconds", type=float, default=12.0, help="per target per round at c=1")
    parser.add_argument("--quick", action="store_true", help="1 round, short phases (a smoke test)")
    parser.add_argument("--only", default=",".join(TARGETS), help="targets to run (comma-separated)")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="concurrency levels")
    parser.add_argument(
        "--no-open-streams", action="store_true", help=f"skip the {OPEN_STREAMS}-stream phase"
    )
    parser.add_argument("--profile", action="store_true", help="also record a py-spy profile of the gateway")
    parser.add_argument("--gateway-wrapper", help="a script run instead of `-m antigv` (A/B experiments)")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory (cluster, config)")
    parser.add_argument("--hold", action="store_true", help="set up, print the targets, wait for Ctrl-C")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target does not hold")
    args = parser.parse_args(argv)
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    args.levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if unknown := [t for t in args.only if t not in TARGETS]:
        parser.error(f"unknown targets: {', '.join(unknown)}")
    if args.quick:
        args.rounds, args.seconds, args.c1_seconds = 1, 2.0, 3.0
    started = time.monotonic()
    bench = Bench(args)
    profile = db = None
    open_phases: dict[str, Phase] = {}
    try:
        bench.setup()
        print(f"set up in {bench.setup_seconds:.1f} s (work dir {bench.work})", flush=True)
        if args.hold:
            return hold(bench)
        with open(f"/proc/{bench.gateway.pid}/maps") as f:
            gw_uvloop = "uvloop" in f.read()
        print("warm-up", flush=True)
        bench.warm_up()
        bench.pg.reset_statements()
        bench.measure_started = time.monotonic()
        ticks0, load0 = cpu_ticks(), os.getloadavg()
        bench.measure()
        ticks1, load1 = cpu_ticks(), os.getloadavg()
        db = bench.db_and_calls()
        if not args.no_open_streams:
            open_phases = bench.open_streams()
        if args.profile:
            profile = bench.profile()
        machine = machine_info(bench.pg.version(), bench.revision)
    finally:
        bench.close()
    total = max(1, ticks1[2] - ticks0[2])
    load = {
        "loadavg": f"{load0[0]:.1f} before, {load1[0]:.1f} after",
        "busy": 100 * (1 - (ticks1[1] - ticks0[1]) / total),
        "steal": 100 * (ticks1[0] - ticks0[0]) / total,
    }
    rows = aggregate(bench.phases)
    elapsed = time.monotonic() - started
    report = render(bench, rows, db, open_phases, profile, machine, elapsed, load, gw_uvloop)
    Path(args.out).write_text(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "phases.json").write_text(json.dumps([asdict(p) for p in bench.phases]))
    summary = {f"{k[0]}@{k[1]}": {f: v for f, v in asdict(r).items() if f not in ("totals", "ttfbs")}
               for k, r in rows.items()}  # fmt: skip
    (RESULTS / "summary.json").write_text(json.dumps({"rows": summary, "db": db}, indent=1, default=str))
    print()
    print(report)
    print(f"wrote {args.out} ({elapsed:.0f} s)")
    if args.check and db is not None:
        failed = [c for c, _goal, _got, ok in evaluate(rows, db, open_phases) if ok is False]
        if failed or not gw_uvloop:
            print("targets missed: " + "; ".join(failed + ([] if gw_uvloop else ["uvloop"])), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
