"""Prometheus metrics: ``GET /metrics`` (admin key or an allow-listed address).

Counters and histograms live in the process; cluster-wide gauges (accounts by
state, cooldowns, pools) are read from the database at scrape time. With
``serve --workers N`` the workers share ``PROMETHEUS_MULTIPROC_DIR`` and any
one of them answers for all.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from antigv.appkeys import CONFIG, DB, METRICS
from antigv.core.errors import Forbidden, ServiceUnavailable
from antigv.protocols.auth import PUBLIC, access, authenticate
from antigv.store.gauges import GaugeRepository

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class _DatabaseGauges:
    """A collector that reports the snapshot the scrape handler just read."""

    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = {}
        self.pool: tuple[int, int] = (0, 0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        accounts = GaugeMetricFamily("antigv_accounts", "Accounts by state", labels=["state"])
        for state in ("enabled", "disabled", "shared"):
            accounts.add_metric([state], float(self.snapshot.get(f"accounts_{state}", 0)))
        yield accounts
        for key, help_text in (
            ("cooldowns_active", "Account+model pairs cooling down"),
            ("models_exhausted", "Account+model pairs at zero quota until reset"),
            ("pool_balance_total", "Sum of all shared pool balances"),
            ("pool_max_total", "Sum of all shared pool maxima"),
            ("usage_unsettled", "Usage rows waiting for a quota read"),
        ):
            yield GaugeMetricFamily(f"antigv_{key}", help_text, value=float(self.snapshot.get(key, 0)))
        size, free = self.pool
        pool = GaugeMetricFamily("antigv_db_pool_connections", "This process's DB pool", labels=["state"])
        pool.add_metric(["in_use"], float(size - free))
        pool.add_metric(["idle"], float(free))
        yield pool


class UpstreamClientInfo:
    """``antigv_upstream_client_info{version="…"} 1``: the client version upstream calls
    report, so operators see which one is in use (PROTOCOL §13.11)."""

    def __init__(self) -> None:
        self.version = ""

    def set(self, version: str) -> None:
        self.version = version

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily(
            "antigv_upstream_client_info", "Client version sent to the upstream", labels=["version"]
        )
        if self.version:
            info.add_metric([self.version], 1.0)
        yield info


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "antigv_requests", "HTTP requests", ["route", "method", "status"], registry=registry
        )
        self.request_seconds = Histogram(
            "antigv_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.chat_requests = Counter(
            "antigv_chat_requests",
            "Chat requests by outcome and client surface (chat_completions, messages)",
            ["model", "stream", "outcome", "surface"],
            registry=registry,
        )
        self.overhead_seconds = Histogram(
            "antigv_gateway_overhead_seconds",
            "Time the gateway itself adds before the first byte",
            buckets=_OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.first_token_seconds = Histogram(
            "antigv_time_to_first_token_seconds",
            "Request arrival to the first token sent",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "antigv_upstream_errors", "Failed upstream attempts by class", ["kind"], registry=registry
        )
        self.failovers = Counter(
            "antigv_failovers",
            "Attempts retried on the same or another account",
            ["target"],
            registry=registry,
        )
        self.token_refreshes = Counter(
            "antigv_token_refreshes", "Access token refreshes by outcome", ["outcome"], registry=registry
        )
        self.usage_rows_dropped = Counter(
            "antigv_usage_rows_dropped",
            "Usage rows the database refused, dropped so that the rest of their batch was written",
            registry=registry,
        )
        self.database_gauges = _DatabaseGauges()
        registry.register(self.database_gauges)
        self.upstream_client = UpstreamClientInfo()
        registry.register(self.upstream_client)

    def scrape_registry(self) -> CollectorRegistry:
        if not os.environ.get(MULTIPROC_ENV):
            return self.registry
        # Workers write their samples to files; add this process's DB gauges on top.
        combined = CollectorRegistry()
        MultiProcessCollector(combined)
        combined.register(self.database_gauges)
        combined.register(self.upstream_client)
        return combined


def route_label(request: web.Request) -> str:
    """The route's pattern (bounded cardinality), not the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _allowed_address(request: web.Request) -> bool:
    networks = request.app[CONFIG].metrics.allowed_addresses
    if not networks or not request.remote:
        return False
    try:
        address = ipaddress.ip_address(request.remote)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in networks)


@access(PUBLIC)
async def metrics_endpoint(request: web.Request) -> web.Response:
    if not _allowed_address(request):
        principal = await authenticate(request)
        if not principal.is_admin:
            raise Forbidden("/metrics needs the admin key or an allow-listed address", code="admin_required")
    metrics = request.app[METRICS]
    db = request.app[DB]
    try:
        metrics.database_gauges.snapshot = await GaugeRepository(db).snapshot()
    except ServiceUnavailable:
        metrics.database_gauges.snapshot = {}
    metrics.database_gauges.pool = (db.pool.size, db.pool.freesize)
    body = generate_latest(metrics.scrape_registry())
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    app[METRICS] = Metrics()
    app.router.add_get("/metrics", metrics_endpoint)
