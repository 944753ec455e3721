"""Calls to Google's Gemini API (``{base}/v1beta``) with an API key in ``x-goog-api-key``,
over the app's one ClientSession; the [upstream] timeouts (issue 15)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import structlog

from antigv.backends.gemini_api.failures import classify
from antigv.backends.google.stream import UpstreamStream, read_json_reply
from antigv.config import GeminiApiConfig, UpstreamConfig
from antigv.core.failures import FailureKind, UpstreamFailure

log = structlog.get_logger(__name__)

# Models a page asks for when listing (the API's maximum is 1000).
_PAGE_SIZE = 1000
# Pages read at most: far above any key's lineup, and an end to a pageToken loop.
_MAX_PAGES = 20


class GeminiApiClient:
    def __init__(
        self, session: aiohttp.ClientSession, upstream: UpstreamConfig, config: GeminiApiConfig
    ) -> None:
        self._session = session
        self._upstream = upstream
        self._base = config.base_url + "/v1beta"
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=upstream.connect_timeout, sock_connect=upstream.connect_timeout
        )

    def _headers(self, key: str, accept: str = "application/json") -> dict[str, str]:
        return {"x-goog-api-key": key, "Content-Type": "application/json", "Accept": accept}

    async def _request(
        self, method: str, url: str, key: str, body: bytes | None, accept: str
    ) -> aiohttp.ClientResponse:
        """The response once it is a 200; raises the classified failure otherwise."""
        try:
            async with asyncio.timeout(self._upstream.first_byte_timeout):
                response = await self._session.request(
                    method, url, data=body, headers=self._headers(key, accept), timeout=self._timeout
                )
                if response.status == 200:
                    return response
                raw = await response.read()
                response.release()
        except TimeoutError:
            raise UpstreamFailure(FailureKind.TIMEOUT, 504, "no answer from the Gemini API") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamFailure(
                FailureKind.NETWORK, 502, f"{type(exc).__name__} calling the Gemini API"
            ) from None
        failure = classify(response.status, raw, dict(response.headers), key=key)
        log.info(
            "gemini_api_call_failed", kind=failure.kind.value, status=failure.status, reason=failure.reason
        )
        raise failure

    async def _json(self, method: str, url: str, key: str, payload: Any = None) -> dict[str, Any]:
        body = None if payload is None else orjson.dumps(payload)
        response = await self._request(method, url, key, body, "application/json")
        return await read_json_reply(response, self._upstream.idle_timeout, "the Gemini API")

    def _model_url(self, model: str, method: str) -> str:
        return f"{self._base}/models/{quote(model, safe='')}:{method}"

    async def list_models(self, key: str) -> list[dict[str, Any]]:
        """Every model the key may use (``models.list``, all pages)."""
        models: list[dict[str, Any]] = []
        token = ""
        for _ in range(_MAX_PAGES):
            query = f"?pageSize={_PAGE_SIZE}" + (f"&pageToken={quote(token, safe='')}" if token else "")
            page = await self._json("GET", f"{self._base}/models{query}", key)
            found = page.get("models")
            if isinstance(found, list):
                models += [model for model in found if isinstance(model, dict)]
            token = page.get("nextPageToken") or ""
            if not isinstance(token, str) or not token:
                break
        return models

    async def open_stream(self, key: str, model: str, body: bytes) -> UpstreamStream:
        url = self._model_url(model, "streamGenerateContent") + "?alt=sse"
        response = await self._request("POST", url, key, body, "text/event-stream")

        def classify_frame(status: int, raw: bytes) -> UpstreamFailure:
            return classify(status, raw, key=key)

        return UpstreamStream(response, self._upstream, classify_frame)

    async def count_tokens(self, key: str, model: str, request: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", self._model_url(model, "countTokens"), key, request)
