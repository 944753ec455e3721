"""The cluster-wide gauges ``/metrics`` reports, read at scrape time."""

from __future__ import annotations

from typing import Any

from antigv.store.db import Database


class GaugeRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def snapshot(self) -> dict[str, Any]:
        """Counts every instance reports alike (accounts, pools, ...); see ``metrics_snapshot``."""
        return await self._db.one("metrics_snapshot") or {}
