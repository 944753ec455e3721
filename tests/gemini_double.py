"""A steerable stand-in for Google's public Gemini API (``generativelanguage.googleapis.com``, API keys).

Start it in-process::

    double = GeminiApiDouble()               # or GeminiApiDouble(start=datetime(...), frozen=True)
    base = await double.start()              # "http://127.0.0.1:PORT"
    double.add_key("AIza-test", tier="free")
    ...                                      # x-goog-api-key: AIza-test
    await double.stop()

or standalone: ``python -m tests.gemini_double --port 8090 [--key K] [--tier paid] [--any-key]``.

This is the Gemini API, not Cloud Code: bodies are bare ``GenerateContentRequest`` objects (no
``project``/``requestId``/``model``/``request`` envelope), the caller is an API key, the quotas are
RPM/TPM/RPD per project and model. Its sibling :mod:`tests.upstream_double` plays Antigravity; the
reply builders (:class:`Reply`, :func:`text_part`, :func:`function_call_part`, ...) and
:class:`Transport` are shared with it and re-exported here.

Routes (``v1`` is accepted wherever ``v1beta`` is):

- ``GET /v1beta/models?pageSize=N&pageToken=T``: ``{"models": [...], "nextPageToken": ...}``, 50 a
  page by default, at most 1000; the token is opaque;
- ``GET /v1beta/models/{id}``: one Model resource;
- ``POST /v1beta/models/{id}:generateContent``: a unary ``GenerateContentResponse``;
- ``POST /v1beta/models/{id}:streamGenerateContent?alt=sse``: SSE, ``data: {...}\\r\\n\\r\\n`` a
  chunk (without ``alt=sse``: one JSON array of the chunks);
- ``POST /v1beta/models/{id}:countTokens``: ``{"totalTokens": N, "promptTokensDetails": [...]}`` for
  ``{"contents": [...]}`` or ``{"generateContentRequest": {...}}``;
- ``GET /healthz``: ``{"ok": true}``, no key needed. Anything else is a 404.

Checks, in order (first failure answers):

1. key: ``x-goog-api-key`` header, else ``?key=``. None: 403 "Method doesn't allow unregistered
   callers"; unknown: 400 ``API_KEY_INVALID`` (ErrorInfo + LocalizedMessage); suspended
   (:meth:`GeminiApiDouble.suspend`): 403 ``CONSUMER_SUSPENDED``;
2. :meth:`GeminiApiDouble.fail` injections (500 INTERNAL, 503 "The model is overloaded", ...);
3. model: unknown, hidden from the key (``add_key(models=...)``) or without the method (the
   embedding and Imagen models have no ``generateContent``): 404 "models/X is not found for API
   version v1beta, or is not supported for generateContent. Call ListModels ...";
4. request: unknown field at any level (``project``, ``requestId``, ``request``, ``model``,
   ``labels``, ...) 400 "Invalid JSON payload received. Unknown name ..." with a BadRequest;
   ``contents`` missing; a role other than user/model; empty ``parts``; a bad function name;
   ``$schema``/``$ref``/``$defs``/``$id``/``const``/``definitions`` or a non-OpenAPI ``type`` in a
   function's ``parameters`` (``parametersJsonSchema`` takes full JSON Schema); function responses
   not answering the previous turn's calls one for one; ``thinkingBudget`` with ``thinkingLevel``;
   ``thinkingLevel`` on a 2.5 model or a level the model lacks; ``thinkingBudget: 0`` on 2.5 Pro and
   Gemini 3 Pro; ``maxOutputTokens`` above the model's ``outputTokenLimit``; input above
   ``inputTokenLimit``; a TTS model asked for text; Gemini 3 (not 3 Pro Image): the first
   ``functionCall`` of each model step of the current turn without a ``thoughtSignature`` ("Function
   call is missing a thought_signature in functionCall parts ...") or, with ``strict_signatures``,
   with one this double did not issue ("Corrupted thought signature.");
   ``skip_thought_signature_validator`` and ``context_engineering_is_the_way_to_go`` always pass;
5. quota (generate calls only; countTokens is free): per project (a key's, shared by keys added with
   the same ``project=``) and model, requests per minute, input tokens per minute and requests per
   day. Minutes are wall-clock minutes (reset at second :00); days end at midnight
   America/Los_Angeles. Over any: 429 RESOURCE_EXHAUSTED with ``google.rpc.Help``,
   ``google.rpc.QuotaFailure`` (one violation per exceeded limit: ``quotaMetric``, ``quotaId`` with
   ``-FreeTier`` on free projects, ``quotaDimensions{location: global, model}``, ``quotaValue``) and
   ``google.rpc.RetryInfo``; the delay is to the next minute, for a per-day violation too (as Google
   sends). Rejected requests do not count. Defaults per model and tier are in :func:`default_models`;
   ``set_limits`` overrides; ``None`` is unlimited, ``0`` is "no free tier for this model".

The clock is the double's own (:meth:`~GeminiApiDouble.now`, :meth:`~GeminiApiDouble.advance`,
:meth:`~GeminiApiDouble.set_time`, ``frozen=True``), so tests move time instead of sleeping.

Which reply a generate call gets, first match wins:

1. the :meth:`GeminiApiDouble.script` queue (entries may be limited to a key or model);
2. ``double.responder(ctx)`` if set and it returns a :class:`Reply`;
3. a marker in the last user text, only when the conversation ends with a user *text* turn (after
   function responses the reply is the default text, so tool loops end):

   ============================  ============================================================
   ``[[tool]]``/``[[tool:NAME]]`` one function call (first declared tool, args from its schema)
   ``[[parallel]]``              two calls in one chunk (first two tools, or the first twice)
   ``[[parallel-frames]]``       two calls, one chunk each
   ``[[think]]``                 thought parts (shown only with ``includeThoughts``), then text
                                 carrying the signature; combines with the tool markers
   ``[[image]]``                 text then an ``inlineData`` PNG part
   ``[[length]]``                text ending with ``finishReason: MAX_TOKENS``
   ``[[safety]]``                a little text, then a content-less ``SAFETY`` chunk
   ``[[empty]]``                 200 with no chunks
   ``[[ws]]``, ``[[utf8]]``      whitespace-only deltas; multi-byte text
   ``[[long]]``, ``[[echo]]``    200 short chunks; the user text minus the marker
   ============================  ============================================================

4. by model: image models an image, TTS models ``audio/L16`` PCM, others ``"Hello world!"`` in
   three chunks.

A thinking model (2.5 Pro, 2.5 Flash unless ``thinkingBudget: 0``, 2.5 Flash-Lite only with a
budget, every Gemini 3) signs the first function call of a reply and bills hidden thoughts in
``thoughtsTokenCount``. Streamed chunks carry ``usageMetadata`` with the prompt count only; the last
carries the full count (``Transport.usage`` "every"/"last"/"separate" changes that).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import json
import math
import re
import secrets
import string
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.upstream_double import (
    FUNCTION_NAME_RE,
    GEMINI_CHUNKS,
    GEMINI_THOUGHTS,
    MARKER_RE,
    SIGN,
    SKIP_SIGNATURE,
    UTF8_CHUNKS,
    Reply,
    Transport,
    UpstreamError,
    calls_of,
    empty_reply,
    estimate_tokens,
    function_call_part,
    gemini_thinking_reply,
    get,
    google_error,
    image_reply,
    invalid_argument_body,
    long_reply,
    max_tokens_reply,
    new_signature,
    parse_sse,
    parts_of,
    responses_of,
    safety_reply,
    sample_args,
    snake,
    text_part,
    text_reply,
    tool_call_reply,
    validate_function_turns,
    whitespace_reply,
)

__all__ = [
    "ApiKey",
    "ChatContext",
    "GeminiApiDouble",
    "Limits",
    "ModelSpec",
    "Project",
    "RecordedRequest",
    "Reply",
    "Transport",
    "default_models",
    "function_call_part",
    "parse_sse",
    "text_part",
    "text_reply",
]

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

SERVICE = "generativelanguage.googleapis.com"
API_VERSIONS = ("v1beta", "v1")
RATE_LIMIT_DOC = "https://ai.google.dev/gemini-api/docs/rate-limits"
USAGE_URL = "https://ai.dev/rate-limit"
THOUGHT_SIGNATURE_DOC = "https://ai.google.dev/gemini-api/docs/thought-signatures"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Signatures the API accepts in place of a real one (the thought-signatures guide's FAQ).
SIGNATURE_SENTINELS = frozenset({SKIP_SIGNATURE, "context_engineering_is_the_way_to_go"})
GENERATE_RPCS = ("generateContent", "streamGenerateContent")
MODEL_RPCS = (*GENERATE_RPCS, "countTokens")
ALL_RPCS = (*MODEL_RPCS, "models.list", "models.get")
#: Keys an OpenAPI ``Schema`` (function ``parameters``) has no field for; the public API answers 400.
FORBIDDEN_SCHEMA_KEYS = frozenset({"$schema", "$ref", "$defs", "$id", "const", "definitions"})
SCHEMA_TYPES = frozenset(
    {"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}
)
IMAGE_TOKENS = 258  # what one image or file part costs in the prompt
TTS_MIME = "audio/L16;codec=pcm;rate=24000"
TTS_PCM = base64.b64encode(bytes(480)).decode()  # 10 ms of silence
GENERATE_METHODS = ("generateContent", "countTokens", "createCachedContent", "batchGenerateContent")
FREE, PAID = "free", "paid"


def _rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_api_key() -> str:
    """The shape of a Google API key: ``AIza`` + 35 characters."""
    return "AIza" + _rand(35, string.ascii_letters + string.digits + "-_")


def response_id() -> str:
    return _rand(23, string.ascii_letters + string.digits + "-_")


# --------------------------------------------------------------------------------------
# The model lineup
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Requests per minute, input tokens per minute, requests per day; ``None`` = unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    rpd: int | None = None


@dataclass
class ModelSpec:
    """A model: its ``models.list`` entry and how it behaves."""

    id: str
    version: str
    display_name: str
    description: str
    input_token_limit: int
    output_token_limit: int
    methods: tuple[str, ...] = GENERATE_METHODS
    thinking: bool | None = None  # the listing's "thinking" flag; None leaves it out
    sampling: bool = True  # temperature/topP/topK/maxTemperature in the listing
    output: str = "text"  # text | image | audio | embedding | imagen
    thinks_by_default: bool = False
    budget_zero_ok: bool = True  # thinkingBudget 0 turns thinking off (else a 400)
    thinking_levels: tuple[str, ...] = ()  # accepted thinkingLevel values; () = thinkingLevel is a 400
    signatures_enforced: bool = False  # Gemini 3: current-turn calls need a thoughtSignature
    quota_model: str | None = None  # the model quota errors name (default: the id minus "-preview")
    free: Limits = field(default_factory=Limits)
    paid: Limits = field(default_factory=Limits)

    @property
    def name(self) -> str:
        return f"models/{self.id}"

    @property
    def quota_name(self) -> str:
        return self.quota_model or self.id.removesuffix("-preview")

    def limits(self, tier: str) -> Limits:
        return self.paid if tier == PAID else self.free

    def listing(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "displayName": self.display_name,
            "description": self.description,
            "inputTokenLimit": self.input_token_limit,
            "outputTokenLimit": self.output_token_limit,
            "supportedGenerationMethods": list(self.methods),
        }
        if self.sampling:
            entry.update({"temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2})
        if self.thinking is not None:
            entry["thinking"] = self.thinking
        return entry


def _text_model(
    model_id: str, version: str, display: str, description: str, free: Limits, paid: Limits, **extra: Any
) -> ModelSpec:
    gemini3 = model_id.startswith("gemini-3")
    defaults: dict[str, Any] = {
        "thinking": True,
        "thinks_by_default": True,
        "signatures_enforced": gemini3,
        "thinking_levels": ("minimal", "low", "medium", "high") if gemini3 else (),
    }
    defaults.update(extra)
    return ModelSpec(
        model_id, version, display, description, 1048576, 65536, free=free, paid=paid, **defaults
    )


def default_models() -> dict[str, ModelSpec]:
    """Today's lineup (ai.google.dev models page and a live ``models.list``), in listing order.

    The limits are approximations of the rate-limits page (which now defers to AI Studio): free
    Gemini 3 Pro is 0 (the free tier has none; Google answers 429 ``limit: 0``), paid is Tier 1.
    """
    pro_levels = ("low", "high")
    return {
        m.id: m
        for m in (
            _text_model(
                "gemini-2.5-pro",
                "2.5",
                "Gemini 2.5 Pro",
                "Stable release (June 17th, 2025) of Gemini 2.5 Pro",
                Limits(5, 250_000, 100),
                Limits(150, 2_000_000, 10_000),
                budget_zero_ok=False,
            ),
            _text_model(
                "gemini-2.5-flash",
                "001",
                "Gemini 2.5 Flash",
                "Stable version of Gemini 2.5 Flash, our mid-size multimodal model that supports up to 1 "
                "million tokens, released in June of 2025.",
                Limits(10, 250_000, 250),
                Limits(1000, 1_000_000, 10_000),
            ),
            _text_model(
                "gemini-2.5-flash-lite",
                "001",
                "Gemini 2.5 Flash-Lite",
                "Stable version of Gemini 2.5 Flash-Lite, released in July of 2025",
                Limits(15, 250_000, 1000),
                Limits(4000, 4_000_000, None),
                thinks_by_default=False,
            ),
            _text_model(
                "gemini-3-pro-preview",
                "3-pro-preview-11-2025",
                "Gemini 3 Pro Preview",
                "Gemini 3 Pro Preview",
                Limits(0, 0, 0),
                Limits(25, 1_000_000, 250),
                budget_zero_ok=False,
                thinking_levels=pro_levels,
            ),
            _text_model(
                "gemini-3.1-pro-preview",
                "3.1-pro-preview-02-2026",
                "Gemini 3.1 Pro Preview",
                "Gemini 3.1 Pro Preview",
                Limits(0, 0, 0),
                Limits(25, 1_000_000, 250),
                budget_zero_ok=False,
                thinking_levels=("low", "medium", "high"),
            ),
            _text_model(
                "gemini-3-flash-preview",
                "3-flash-preview-12-2025",
                "Gemini 3 Flash Preview",
                "Gemini 3 Flash Preview",
                Limits(5, 250_000, 20),
                Limits(1000, 1_000_000, 10_000),
            ),
            _text_model(
                "gemini-3.1-flash-lite",
                "3.1-flash-lite",
                "Gemini 3.1 Flash-Lite",
                "Gemini 3.1 Flash-Lite",
                Limits(15, 250_000, 500),
                Limits(4000, 4_000_000, 150_000),
            ),
            ModelSpec(
                "gemini-2.5-flash-image",
                "2.0",
                "Nano Banana",
                "Gemini 2.5 Flash Image",
                32768,
                32768,
                methods=("generateContent", "countTokens", "batchGenerateContent"),
                thinking=False,
                output="image",
                free=Limits(10, 250_000, 100),
                paid=Limits(500, 500_000, 2000),
            ),
            ModelSpec(
                "gemini-3-pro-image",
                "3.0",
                "Nano Banana Pro",
                "Gemini 3 Pro Image",
                65536,
                32768,
                methods=("generateContent", "countTokens", "batchGenerateContent"),
                thinking=True,
                output="image",
                thinks_by_default=True,
                budget_zero_ok=False,
                # Gemini 3 Pro Image does not enforce signatures (thought-signatures guide).
                free=Limits(0, 0, 0),
                paid=Limits(20, 100_000, 250),
            ),
            ModelSpec(
                "gemini-2.5-flash-preview-tts",
                "gemini-2.5-flash-exp-tts-2025-05-19",
                "Gemini 2.5 Flash Preview TTS",
                "Gemini 2.5 Flash Preview TTS",
                8192,
                16384,
                methods=("countTokens", "generateContent"),
                output="audio",
                free=Limits(3, 10_000, 15),
                paid=Limits(10, 10_000, 100),
            ),
            ModelSpec(
                "gemini-embedding-001",
                "001",
                "Gemini Embedding 001",
                "Obtain a distributed representation of a text.",
                2048,
                1,
                methods=("embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent"),
                sampling=False,
                output="embedding",
            ),
            ModelSpec(
                "imagen-4.0-generate-001",
                "001",
                "Imagen 4",
                "Vertex served Imagen 4.0 model",
                480,
                8192,
                methods=("predict",),
                sampling=False,
                output="imagen",
            ),
        )
    }


# --------------------------------------------------------------------------------------
# Time: the Pacific day and duration text
# --------------------------------------------------------------------------------------

try:
    from zoneinfo import ZoneInfo

    PACIFIC: Any = ZoneInfo("America/Los_Angeles")
except Exception:  # no tz database: US Pacific rules by hand (see _pacific_offset)
    PACIFIC = None


def _nth_sunday(year: int, month: int, n: int) -> datetime:
    first = datetime(year, month, 1, tzinfo=UTC)
    return first + timedelta(days=(6 - first.weekday()) % 7 + 7 * (n - 1))


def _pacific_offset(ts: float) -> timedelta:
    """UTC offset of US Pacific time: PDT from 2:00 on March's 2nd Sunday to 2:00 on November's 1st."""
    year = datetime.fromtimestamp(ts, UTC).year
    start = _nth_sunday(year, 3, 2) + timedelta(hours=10)  # 2:00 PST
    end = _nth_sunday(year, 11, 1) + timedelta(hours=9)  # 2:00 PDT
    return timedelta(hours=-7 if start.timestamp() <= ts < end.timestamp() else -8)


def pacific(ts: float) -> datetime:
    """``ts`` as a wall-clock time in America/Los_Angeles (naive when there is no tz database)."""
    if PACIFIC is not None:
        return datetime.fromtimestamp(ts, PACIFIC)
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None) + _pacific_offset(ts)


def pacific_day(ts: float) -> str:
    """The quota day ``ts`` falls in: RPD quotas reset at midnight Pacific time."""
    return pacific(ts).date().isoformat()


def next_pacific_midnight(ts: float) -> float:
    """The timestamp of the next midnight in America/Los_Angeles."""
    day = pacific(ts).date() + timedelta(days=1)
    if PACIFIC is not None:
        return datetime(day.year, day.month, day.day, tzinfo=PACIFIC).timestamp()
    guess = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + 8 * 3600
    return guess - (_pacific_offset(guess).total_seconds() + 8 * 3600)


def seconds_text(seconds: float) -> str:
    """``45.578569677s``: the delay as the quota message prints it."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


# --------------------------------------------------------------------------------------
# Error bodies (google.rpc.Status JSON)
# --------------------------------------------------------------------------------------


def error_info(reason: str, metadata: dict[str, str], domain: str = "googleapis.com") -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": domain,
        "metadata": metadata,
    }


def localized_message(message: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message}


def api_key_invalid_body() -> dict[str, Any]:
    message = "API key not valid. Please pass a valid API key."
    return google_error(
        400,
        "INVALID_ARGUMENT",
        message,
        [error_info("API_KEY_INVALID", {"service": SERVICE}), localized_message(message)],
    )


def unregistered_body() -> dict[str, Any]:
    return google_error(
        403,
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). Please use API "
        "Key or other form of API consumer identity to call this API.",
    )


def unauthenticated_body() -> dict[str, Any]:
    return google_error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
        "other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        [error_info("ACCESS_TOKEN_TYPE_UNSUPPORTED", {"service": SERVICE, "method": "GenerateContent"})],
    )


def suspended_body(consumer: str, project_number: str, key: str) -> dict[str, Any]:
    """``consumer`` is ``api_key:<key>`` (a suspended key) or ``projects/<number>`` (a project)."""
    message = f"Permission denied: Consumer '{consumer}' has been suspended."
    return google_error(
        403,
        "PERMISSION_DENIED",
        message,
        [
            error_info(
                "CONSUMER_SUSPENDED",
                {
                    "consumer": f"projects/{project_number}",
                    "service": SERVICE,
                    "containerInfo": f"api_key:{key}",
                },
            ),
            localized_message(message),
        ],
    )


def model_not_found_body(model: str, version: str, method: str) -> dict[str, Any]:
    return google_error(
        404,
        "NOT_FOUND",
        f"models/{model} is not found for API version {version}, or is not supported for {method}. Call "
        "ListModels to see the list of available models and their supported methods.",
    )


def overloaded_body() -> dict[str, Any]:
    return google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def unavailable_body() -> dict[str, Any]:
    return google_error(503, "UNAVAILABLE", "The service is currently unavailable.")


def internal_body() -> dict[str, Any]:
    return google_error(
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    )


def deadline_body() -> dict[str, Any]:
    return google_error(504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete.")


def resource_exhausted_body() -> dict[str, Any]:
    return google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")


#: (limit kind, paid project) -> (quota metric, quota id).
QUOTA_IDS: dict[tuple[str, bool], tuple[str, str]] = {
    ("rpm", False): (
        "generate_content_free_tier_requests",
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
    ),
    ("rpd", False): (
        "generate_content_free_tier_requests",
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
    ),
    ("tpm", False): (
        "generate_content_free_tier_input_token_count",
        "GenerateContentInputTokensPerModelPerMinute-FreeTier",
    ),
    ("rpm", True): ("generate_requests_per_model", "GenerateRequestsPerMinutePerProjectPerModel"),
    ("rpd", True): ("generate_requests_per_model_per_day", "GenerateRequestsPerDayPerProjectPerModel"),
    ("tpm", True): (
        "generate_content_paid_tier_input_token_count",
        "GenerateContentPaidTierInputTokensPerModelPerMinute",
    ),
}


def quota_violation(kind: str, paid: bool, model: str, value: int) -> dict[str, Any]:
    metric, quota_id = QUOTA_IDS[(kind, paid)]
    return {
        "quotaMetric": f"{SERVICE}/{metric}",
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global", "model": model},
        "quotaValue": str(value),
    }


def quota_body(violations: list[dict[str, Any]], delay: float) -> dict[str, Any]:
    """The 429 of an exceeded RPM/TPM/RPD quota: Help, QuotaFailure, RetryInfo (Google's 2026 order)."""
    lines = "".join(
        f"* Quota exceeded for metric: {v['quotaMetric']}, limit: {v['quotaValue']}, "
        f"model: {v['quotaDimensions']['model']}\n"
        for v in violations
    )
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more information "
        f"on this error, head to: {RATE_LIMIT_DOC}. To monitor your current usage, head to: {USAGE_URL}. \n"
        f"{lines}Please retry in {seconds_text(delay)}."
    )
    return google_error(
        429,
        "RESOURCE_EXHAUSTED",
        message,
        [
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{"description": "Learn more about Gemini API quotas", "url": RATE_LIMIT_DOC}],
            },
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": violations},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{int(delay)}s"},
        ],
    )


def bad_request(message: str, field_path: str = "") -> UpstreamError:
    """400 INVALID_ARGUMENT; an "Invalid JSON payload" message also gets a BadRequest violation."""
    if not message.startswith("Invalid"):
        return UpstreamError(400, invalid_argument_body(message))
    violation: dict[str, str] = {"field": field_path} if field_path else {}
    violation["description"] = message
    return UpstreamError(
        400,
        google_error(
            400,
            "INVALID_ARGUMENT",
            message,
            [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}],
        ),
    )


#: ``fail(kind)`` names -> (status, body builder).
ERROR_KINDS: dict[str, tuple[int, Callable[[], dict[str, Any]]]] = {
    "overloaded": (503, overloaded_body),
    "unavailable": (503, unavailable_body),
    "internal": (500, internal_body),
    "deadline": (504, deadline_body),
    "resource_exhausted": (429, resource_exhausted_body),
    "invalid_argument": (400, lambda: invalid_argument_body("Request contains an invalid argument.")),
    "permission_denied": (
        403,
        lambda: google_error(403, "PERMISSION_DENIED", "The caller does not have permission"),
    ),
    "not_found": (404, lambda: google_error(404, "NOT_FOUND", "Requested entity was not found.")),
    "api_key_invalid": (400, api_key_invalid_body),
}
#: The body ``fail(status)`` sends for a bare status.
STATUS_KINDS = {
    500: "internal",
    503: "overloaded",
    504: "deadline",
    429: "resource_exhausted",
    400: "invalid_argument",
}


# --------------------------------------------------------------------------------------
# Request validation (pure; raises UpstreamError)
# --------------------------------------------------------------------------------------

STRUCT = "<struct>"  # free-form JSON object (proto Struct)
SCHEMA = "<schema>"  # OpenAPI Schema subset; checked for keys it has no field for
ANY = "<any>"  # free-form value
_PROTO = "type.googleapis.com/google.ai.generativelanguage.v1beta"

_GENERATE_FIELDS: dict[str, Any] = {
    "contents": "content",
    "systemInstruction": "content",
    "tools": "tool",
    "toolConfig": "toolConfig",
    "generationConfig": "generationConfig",
    "safetySettings": "safetySetting",
    "cachedContent": None,
}
# message name -> {camelCase field: child message | None (scalar) | STRUCT | SCHEMA | ANY}
MESSAGES: dict[str, dict[str, Any]] = {
    # The generateContent body. GenerateContentRequest also has ``model`` (bound to the URL path);
    # in the body it is refused here, so a Cloud Code envelope cannot slip through.
    "GenerateContentRequest": _GENERATE_FIELDS,
    "CountTokensRequest": {"contents": "content", "generateContentRequest": "NestedGenerateContentRequest"},
    "NestedGenerateContentRequest": {**_GENERATE_FIELDS, "model": None},
    "content": {"role": None, "parts": "part"},
    "part": {
        "text": None,
        "thought": None,
        "thoughtSignature": None,
        "inlineData": "blob",
        "fileData": "fileData",
        "functionCall": "functionCall",
        "functionResponse": "functionResponse",
        "executableCode": STRUCT,
        "codeExecutionResult": STRUCT,
        "videoMetadata": STRUCT,
        "partMetadata": STRUCT,
        "mediaResolution": STRUCT,
    },
    "blob": {"mimeType": None, "data": None},
    "fileData": {"mimeType": None, "fileUri": None},
    "functionCall": {"id": None, "name": None, "args": STRUCT},
    "functionResponse": {
        "id": None,
        "name": None,
        "response": STRUCT,
        "parts": ANY,
        "willContinue": None,
        "scheduling": None,
    },
    "tool": {
        "functionDeclarations": "functionDeclaration",
        "googleSearch": STRUCT,
        "googleSearchRetrieval": STRUCT,
        "codeExecution": STRUCT,
        "urlContext": STRUCT,
        "computerUse": STRUCT,
        "fileSearch": STRUCT,
        "googleMaps": STRUCT,
    },
    "functionDeclaration": {
        "name": None,
        "description": None,
        "parameters": SCHEMA,
        "parametersJsonSchema": ANY,
        "response": SCHEMA,
        "responseJsonSchema": ANY,
        "behavior": None,
    },
    "toolConfig": {"functionCallingConfig": "functionCallingConfig", "retrievalConfig": STRUCT},
    "functionCallingConfig": {"mode": None, "allowedFunctionNames": None},
    "generationConfig": {
        "stopSequences": None,
        "responseMimeType": None,
        "responseSchema": SCHEMA,
        "responseJsonSchema": ANY,
        "responseModalities": None,
        "candidateCount": None,
        "maxOutputTokens": None,
        "temperature": None,
        "topP": None,
        "topK": None,
        "seed": None,
        "presencePenalty": None,
        "frequencyPenalty": None,
        "responseLogprobs": None,
        "logprobs": None,
        "enableEnhancedCivicAnswers": None,
        "speechConfig": STRUCT,
        "thinkingConfig": "thinkingConfig",
        "imageConfig": STRUCT,
        "mediaResolution": None,
    },
    "thinkingConfig": {"includeThoughts": None, "thinkingBudget": None, "thinkingLevel": None},
    "safetySetting": {"category": None, "threshold": None},
}
REPEATED = frozenset({"contents", "parts", "tools", "functionDeclarations", "safetySettings"})


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def _at(path: str) -> str:
    return f" at '{path}'" if path else ""


def _type_name(message: str) -> str:
    return message[0].upper() + message[1:]


def check_fields(value: Any, message: str, path: str = "") -> None:
    """Reject unknown field names (either casing accepted) and values of the wrong kind."""
    spec = MESSAGES[message]
    if not isinstance(value, dict):
        raise bad_request(
            f"Invalid value{_at(path)} ({_PROTO}.{_type_name(message)}), {json.dumps(value)[:80]}", path
        )
    for key, child_value in value.items():
        name = _camel(key) if "_" in key else key
        if name not in spec:
            raise bad_request(
                f'Invalid JSON payload received. Unknown name "{key}"{_at(path)}: Cannot find field.', path
            )
        child = spec[name]
        child_path = f"{path}.{snake(name)}" if path else snake(name)
        if child is None or child is ANY or child_value is None:
            continue
        if child is STRUCT:
            if not isinstance(child_value, dict):
                raise bad_request(
                    f"Invalid value at '{child_path}' (type.googleapis.com/google.protobuf.Struct), "
                    f"{json.dumps(child_value)[:80]}",
                    child_path,
                )
        elif child is SCHEMA:
            check_schema(child_value, child_path)
        elif name in REPEATED:
            if not isinstance(child_value, list):
                raise bad_request(
                    f"Invalid value at '{child_path}' ({_PROTO}.{_type_name(child)}), "
                    f"{json.dumps(child_value)[:80]}: Starting an object on a repeated field.",
                    child_path,
                )
            for i, item in enumerate(child_value):
                check_fields(item, child, f"{child_path}[{i}]")
        elif isinstance(child_value, list):
            raise bad_request(
                f'Invalid JSON payload received. Unknown name "{key}"{_at(path)}: '
                "Proto field is not repeating, cannot start list.",
                path,
            )
        else:
            check_fields(child_value, child, child_path)


def check_schema(schema: Any, path: str) -> None:
    """An OpenAPI ``Schema``: no JSON-Schema-only keywords, ``type`` one enum value (not a list)."""
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        if key in FORBIDDEN_SCHEMA_KEYS:
            raise bad_request(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field.", path
            )
        if key == "type":
            if isinstance(value, list):
                raise bad_request(
                    f"Invalid JSON payload received. Unknown name \"type\" at '{path}': Proto field is not "
                    "repeating, cannot start list.",
                    path,
                )
            if not isinstance(value, str) or value.upper() not in SCHEMA_TYPES:
                raise bad_request(
                    f"Invalid value at '{path}.type' ({_PROTO}.Type), {json.dumps(value)}", f"{path}.type"
                )
    props = schema.get("properties")
    if isinstance(props, dict):
        for i, sub in enumerate(props.values()):
            check_schema(sub, f"{path}.properties[{i}].value")
    if isinstance(schema.get("items"), dict):
        check_schema(schema["items"], f"{path}.items")
    if isinstance(schema.get("anyOf"), list):
        for i, sub in enumerate(schema["anyOf"]):
            check_schema(sub, f"{path}.any_of[{i}]")


def validate_contents(contents: Any) -> None:
    """``contents`` present, roles user/model, parts non-empty, function turns answered one for one."""
    if not contents:
        raise bad_request("* GenerateContentRequest.contents: contents is not specified\n")
    for i, content in enumerate(contents):
        if get(content, "role") not in (None, "user", "model"):
            raise bad_request("Please use a valid role: user, model.")
        if not get(content, "parts"):
            raise bad_request(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            )
    validate_function_turns(contents)


def validate_tools(tools: list[dict[str, Any]]) -> None:
    for i, tool in enumerate(tools):
        for j, decl in enumerate(get(tool, "functionDeclarations") or []):
            if not FUNCTION_NAME_RE.match(get(decl, "name") or ""):
                raise bad_request(
                    f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: Invalid function "
                    "name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), "
                    "underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.\n"
                )


def thinking_request(spec: ModelSpec, gen: dict[str, Any]) -> tuple[bool, bool]:
    """Validate ``thinkingConfig`` for ``spec``; return (the model thinks, thoughts are shown)."""
    tc = get(gen, "thinkingConfig") or {}
    budget, level, include = get(tc, "thinkingBudget"), get(tc, "thinkingLevel"), get(tc, "includeThoughts")
    if budget is not None and level is not None:
        raise bad_request("You can only set only one of thinking budget and thinking level.")
    if level is not None:
        if not isinstance(level, str) or level.lower() not in ("minimal", "low", "medium", "high"):
            raise bad_request(
                "Invalid value at 'generation_config.thinking_config.thinking_level' "
                f"({_PROTO}.ThinkingConfig.ThinkingLevel), {json.dumps(level)}",
                "generation_config.thinking_config.thinking_level",
            )
        if not spec.thinking_levels:
            raise bad_request("Thinking level is not supported for this model.")
        if level.lower() not in spec.thinking_levels:
            raise bad_request(f"Thinking level {level.upper()} is not supported for this model.")
    if budget == 0 and spec.thinking and not spec.budget_zero_ok:
        raise bad_request("Budget 0 is invalid. This model only works in thinking mode.")
    if not spec.thinking:
        return False, False
    thinks = spec.thinks_by_default if budget is None else budget != 0
    thinks = thinks or level is not None
    return thinks, bool(include) and thinks


def validate_signatures(contents: list[dict[str, Any]], issued: dict[str, str], strict: bool) -> None:
    """Gemini 3: in the current turn (everything after the last user turn that is not only function
    responses), the first ``functionCall`` of each model step needs a ``thoughtSignature``."""
    start = 0
    for i, content in enumerate(contents):
        if get(content, "role") != "model" and any(
            get(p, "functionResponse") is None for p in parts_of(content)
        ):
            start = i + 1
    position = 0
    for content in contents[start:]:
        for _, part in calls_of(content)[:1]:
            sig = get(part, "thoughtSignature")
            if not sig:
                name = get(get(part, "functionCall"), "name")
                raise bad_request(
                    "Function call is missing a thought_signature in functionCall parts. This is required "
                    "for tools to work correctly, and missing thought_signature may lead to degraded model "
                    f"performance. Additional data, function call `default_api:{name}` , position "
                    f"{position + 1}. Please refer to {THOUGHT_SIGNATURE_DOC} for more details."
                )
            if strict and sig not in SIGNATURE_SENTINELS and sig not in issued:
                raise bad_request("Corrupted thought signature.")
        position += len(parts_of(content))


# --------------------------------------------------------------------------------------
# Token estimates and the request context
# --------------------------------------------------------------------------------------


def text_chars(value: Any) -> int:
    """Characters of text, call arguments and results in a request fragment."""
    if isinstance(value, dict):
        n = len(value["text"]) if isinstance(value.get("text"), str) else 0
        for key in ("functionCall", "function_call", "functionResponse", "function_response"):
            if isinstance(value.get(key), dict):
                n += len(json.dumps(value[key]))
        return n + sum(text_chars(v) for k, v in value.items() if isinstance(v, (dict, list)) and k != "text")
    if isinstance(value, list):
        return sum(text_chars(v) for v in value)
    return 0


def media_parts(contents: Any) -> int:
    return sum(
        1
        for content in contents or []
        if isinstance(content, dict)
        for part in parts_of(content)
        if get(part, "inlineData") is not None or get(part, "fileData") is not None
    )


def count_prompt_tokens(request: dict[str, Any]) -> int:
    """What ``promptTokenCount`` and ``countTokens`` report: ~4 characters a token, 258 per image,
    system instruction and function declarations included."""
    contents = get(request, "contents") or []
    chars = text_chars(contents) + text_chars(get(request, "systemInstruction"))
    decls = [d for t in get(request, "tools") or [] for d in get(t, "functionDeclarations") or []]
    if decls:
        chars += len(json.dumps(decls))
    return estimate_tokens(chars) + IMAGE_TOKENS * media_parts(contents)


@dataclass
class ChatContext:
    """A parsed generate request, handed to ``responder`` callables and reply selection."""

    rpc: str
    key: ApiKey
    model: str
    spec: ModelSpec
    body: dict[str, Any]
    contents: list[dict[str, Any]]
    generation_config: dict[str, Any]
    thinking: bool  # the model thinks for this request
    include_thoughts: bool  # ... and shows its thoughts
    functions: list[dict[str, Any]]
    last_user_text: str | None  # None when the conversation does not end with a user text turn
    prompt_tokens: int


def build_context(rpc: str, key: ApiKey, spec: ModelSpec, body: dict[str, Any]) -> ChatContext:
    gen = get(body, "generationConfig") or {}
    thinking, include = thinking_request(spec, gen)
    contents = [c for c in get(body, "contents") or [] if isinstance(c, dict)]
    last_user_text = None
    if contents and get(contents[-1], "role") in (None, "user") and not responses_of(contents[-1]):
        last_user_text = "".join(get(p, "text") or "" for p in parts_of(contents[-1]))
    return ChatContext(
        rpc=rpc,
        key=key,
        model=spec.id,
        spec=spec,
        body=body,
        contents=contents,
        generation_config=gen,
        thinking=thinking,
        include_thoughts=include,
        functions=[d for t in get(body, "tools") or [] for d in get(t, "functionDeclarations") or []],
        last_user_text=last_user_text,
        prompt_tokens=count_prompt_tokens(body),
    )


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


@dataclass
class Window:
    """Use of one (project, model) in the current minute and Pacific day."""

    minute: int = -1
    minute_requests: int = 0
    minute_tokens: int = 0
    day: str = ""
    day_requests: int = 0


@dataclass
class Project:
    """Quotas belong to a project; every key lives in one."""

    id: str
    number: str
    tier: str = FREE
    suspended: bool = False
    limits: dict[str, Limits] = field(default_factory=dict)  # model -> override
    windows: dict[str, Window] = field(default_factory=dict)  # model -> use


@dataclass
class ApiKey:
    key: str
    project: Project
    models: frozenset[str] | None = None  # the models this key reaches (None: all)
    suspended: bool = False

    @property
    def tier(self) -> str:
        return self.project.tier

    @property
    def paid(self) -> bool:
        return self.project.tier == PAID

    def reaches(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass
class Scripted:
    reply: Reply | Callable[[ChatContext], Reply] | None
    transport: Transport | None = None
    key: str | None = None
    model: str | None = None
    times: int = 1


@dataclass
class Injection:
    """An error answered instead of the real reply, ``times`` times."""

    status: int
    body: Any  # dict, or a callable() -> dict
    times: int = 1
    rpcs: tuple[str, ...] = GENERATE_RPCS
    key: str | None = None
    model: str | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    fired: int = 0


@dataclass
class RecordedRequest:
    rpc: str  # generateContent, streamGenerateContent, countTokens, models.list, models.get, unknown
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: Any  # parsed JSON, or None
    raw: bytes
    time: float
    model: str | None = None
    status: int | None = None
    injected: bool = False
    reply_kind: str | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)  # chunks sent (or the unary body)
    usage: dict[str, Any] | None = None  # last usageMetadata sent
    completed: bool = False
    disconnected: bool = False

    @property
    def api_key(self) -> str | None:
        """The key as sent: the ``x-goog-api-key`` header, else ``?key=``."""
        return self.headers.get("x-goog-api-key") or self.query.get("key")

    @property
    def contents(self) -> list[dict[str, Any]]:
        return (get(self.body, "contents") or []) if isinstance(self.body, dict) else []

    @property
    def generation_config(self) -> dict[str, Any]:
        return (get(self.body, "generationConfig") or {}) if isinstance(self.body, dict) else {}


_KEEP: Any = object()


# --------------------------------------------------------------------------------------
# The double
# --------------------------------------------------------------------------------------


class GeminiApiDouble:
    """Google's public Gemini API, in one process. All state is plain attributes; see module doc."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] | None = None,
        start: float | datetime | None = None,
        frozen: bool = False,
        models: dict[str, ModelSpec] | None = None,
    ) -> None:
        """``clock``: the time source (default ``time.time``); ``start``: where the double's clock
        begins; ``frozen``: the clock stands still except for :meth:`advance`/:meth:`set_time`."""
        begin = start.timestamp() if isinstance(start, datetime) else start
        if frozen:
            fixed = begin if begin is not None else time.time()
            clock = lambda: fixed  # noqa: E731
        self._clock = clock or time.time
        self._skew = 0.0
        if begin is not None:
            self.set_time(begin)
        self.models: dict[str, ModelSpec] = models if models is not None else default_models()
        self.keys: dict[str, ApiKey] = {}
        self.projects: dict[str, Project] = {}
        self.requests: list[RecordedRequest] = []
        self.record = True
        # Steering knobs.
        self.transport = Transport(crlf=True)
        self.responder: Callable[[ChatContext], Reply | None] | None = None
        self.strict_signatures = True  # signatures this double did not issue are "Corrupted"
        self.accept_any_key = False  # unknown keys become free-tier keys of their own project
        self.enforce_quotas = True
        self.signatures: dict[str, str] = {}  # issued signature -> model
        self._script: list[Scripted] = []
        self._injections: list[Injection] = []
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None
        self.app = self._make_app()

    # ---------------------------------------------------------------- lifecycle

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/{version}/models", self._list_models)
        app.router.add_get("/{version}/models/{model}", self._get_model)
        app.router.add_post("/{version}/models/{tail}", self._model_call)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.base_url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---------------------------------------------------------------- clock

    def now(self) -> float:
        return self._clock() + self._skew

    def advance(self, seconds: float) -> None:
        """Move the double's clock forward (passes minute and Pacific-day quota resets)."""
        self._skew += seconds

    def set_time(self, when: float | datetime) -> None:
        """Put the double's clock at ``when`` (a timestamp or an aware datetime)."""
        ts = when.timestamp() if isinstance(when, datetime) else float(when)
        self._skew = ts - self._clock()

    # ---------------------------------------------------------------- keys and projects

    def add_key(
        self,
        key: str | None = None,
        *,
        tier: str = FREE,
        models: Iterable[str] | None = None,
        project: str | None = None,
    ) -> ApiKey:
        """Register a valid key (default: a fresh ``AIza...``). ``tier``: "free" or "paid", the
        project's; ``models``: the only models the key lists and reaches (others are 404);
        ``project``: a project id to share quotas with other keys of it (default: a new project)."""
        if tier not in (FREE, PAID):
            raise ValueError(f"tier must be {FREE!r} or {PAID!r}, not {tier!r}")
        key = key or new_api_key()
        proj = self.projects.get(project or "")
        if proj is None:
            number = str(secrets.randbelow(9 * 10**11) + 10**11)
            proj = Project(id=project or f"gen-lang-client-{number[:10]}", number=number, tier=tier)
            self.projects[proj.id] = proj
        else:
            proj.tier = tier
        entry = ApiKey(key, proj, frozenset(models) if models is not None else None)
        self.keys[key] = entry
        return entry

    def key(self, key: str | ApiKey) -> ApiKey:
        return key if isinstance(key, ApiKey) else self.keys[key]

    def remove_key(self, key: str | ApiKey) -> None:
        """The key stops existing: API_KEY_INVALID from then on."""
        self.keys.pop(self.key(key).key, None)

    def suspend(self, key: str | ApiKey, *, project: bool = False) -> None:
        """403 CONSUMER_SUSPENDED for the key, or (``project=True``) every key of its project.
        The message quotes the consumer: ``api_key:<key>`` or ``projects/<number>``."""
        entry = self.key(key)
        if project:
            entry.project.suspended = True
        else:
            entry.suspended = True

    def unsuspend(self, key: str | ApiKey) -> None:
        entry = self.key(key)
        entry.suspended = entry.project.suspended = False

    def set_tier(self, key: str | ApiKey, tier: str) -> None:
        self.key(key).project.tier = tier

    # ---------------------------------------------------------------- quotas

    def limits(self, key: str | ApiKey, model: str) -> Limits:
        """The limits that apply to the key's project for ``model``."""
        proj = self.key(key).project
        return proj.limits.get(model) or self.models[model].limits(proj.tier)

    def set_limits(
        self, key: str | ApiKey, model: str, *, rpm: Any = _KEEP, tpm: Any = _KEEP, rpd: Any = _KEEP
    ) -> None:
        """Override the key's project's limits for ``model``; ``None`` = unlimited, unset = keep."""
        current = self.limits(key, model)
        changes = {k: v for k, v in (("rpm", rpm), ("tpm", tpm), ("rpd", rpd)) if v is not _KEEP}
        self.key(key).project.limits[model] = replace(current, **changes)

    def _window(self, proj: Project, model: str) -> Window:
        now = self.now()
        win = proj.windows.setdefault(model, Window())
        minute, day = int(now // 60), pacific_day(now)
        if win.minute != minute:
            win.minute, win.minute_requests, win.minute_tokens = minute, 0, 0
        if win.day != day:
            win.day, win.day_requests = day, 0
        return win

    def usage(self, key: str | ApiKey, model: str) -> dict[str, int]:
        """What the key's project used of ``model`` this minute and this Pacific day."""
        win = self._window(self.key(key).project, model)
        return {"rpm": win.minute_requests, "tpm": win.minute_tokens, "rpd": win.day_requests}

    def reset_quotas(self) -> None:
        for proj in self.projects.values():
            proj.windows.clear()

    def _take_quota(self, key: ApiKey, spec: ModelSpec, tokens: int) -> None:
        win = self._window(key.project, spec.id)
        if self.enforce_quotas:
            lim = self.limits(key, spec.id)
            over = []
            if lim.rpd is not None and win.day_requests + 1 > lim.rpd:
                over.append(("rpd", lim.rpd))
            if lim.rpm is not None and win.minute_requests + 1 > lim.rpm:
                over.append(("rpm", lim.rpm))
            if lim.tpm is not None and win.minute_tokens + tokens > lim.tpm:
                over.append(("tpm", lim.tpm))
            if over:
                now = self.now()
                delay = 60 - now % 60  # to the next minute, per-day violations included
                violations = [quota_violation(kind, key.paid, spec.quota_name, value) for kind, value in over]
                raise UpstreamError(429, quota_body(violations, delay))
        win.minute_requests += 1
        win.minute_tokens += tokens
        win.day_requests += 1

    # ---------------------------------------------------------------- steering

    def script(
        self,
        *replies: Reply | Callable[[ChatContext], Reply] | None,
        transport: Transport | None = None,
        key: str | ApiKey | None = None,
        model: str | None = None,
        times: int = 1,
    ) -> None:
        """Queue replies for the next matching generate requests (each used ``times`` times).
        ``None`` as reply = the normal choice, with ``transport`` applied."""
        key_id = self.key(key).key if key is not None else None
        for reply in replies or (None,):
            self._script.append(Scripted(reply, transport, key_id, model, times))

    def next_transport(self, times: int = 1, **changes: Any) -> None:
        """The next ``times`` generate requests use the global transport with ``changes``."""
        self.script(None, transport=replace(self.transport, **changes), times=times)

    def set_transport(self, **changes: Any) -> None:
        self.transport = replace(self.transport, **changes)

    def fail(
        self,
        kind: str | int,
        *,
        times: int = 1,
        rpc: str | tuple[str, ...] = "chat",
        key: str | ApiKey | None = None,
        model: str | None = None,
        body: Any = None,
        delay: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> Injection:
        """Answer the next ``times`` matching requests (after the key check) with an error.

        ``kind``: one of ``ERROR_KINDS`` (overloaded, unavailable, internal, deadline,
        resource_exhausted, invalid_argument, permission_denied, not_found, api_key_invalid) or an
        HTTP status (500 internal, 503 overloaded, 504, 429, 400; others a generic body), or any
        status with ``body``. ``rpc``: "chat" (both generate methods), "any", or names from
        generateContent, streamGenerateContent, countTokens, models.list, models.get.
        """
        if isinstance(kind, str):
            status, builder = ERROR_KINDS[kind]
        else:
            status = kind
            builder = ERROR_KINDS[STATUS_KINDS[kind]][1] if kind in STATUS_KINDS else None
        if body is None:
            body = (
                builder
                if builder is not None
                else google_error(status, "UNKNOWN", f"Injected error {status}")
            )
        names = (rpc,) if isinstance(rpc, str) else tuple(rpc)
        expand = {"chat": GENERATE_RPCS, "any": ALL_RPCS}
        rpcs = tuple(r for name in names for r in expand.get(name, (name,)))
        inj = Injection(
            status,
            body,
            times,
            rpcs,
            self.key(key).key if key is not None else None,
            model,
            delay,
            headers or {},
        )
        self._injections.append(inj)
        return inj

    def reset_steering(self) -> None:
        self._script.clear()
        self._injections.clear()
        self.transport = Transport(crlf=True)
        self.responder = None

    # ---------------------------------------------------------------- recorded requests

    def requests_for(self, rpc: str) -> list[RecordedRequest]:
        rpcs = GENERATE_RPCS if rpc == "chat" else (rpc,)
        return [r for r in self.requests if r.rpc in rpcs]

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return self.requests_for("chat")

    def last_chat(self) -> RecordedRequest:
        return self.chat_requests[-1]

    def clear_requests(self) -> None:
        self.requests.clear()

    # ================================================================ handlers

    async def _begin(self, request: web.Request, rpc: str, model: str | None = None) -> RecordedRequest:
        raw = await request.read()
        rec = RecordedRequest(
            rpc=rpc,
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            body=None,
            raw=raw,
            time=self.now(),
            model=model,
        )
        if self.record:
            self.requests.append(rec)
        return rec

    def _error_response(self, rec: RecordedRequest, err: UpstreamError) -> web.Response:
        rec.status = err.status
        return web.Response(
            status=err.status,
            body=json.dumps(err.body, indent=2).encode(),
            headers={"Content-Type": "application/json; charset=UTF-8", **err.headers},
        )

    def _json(self, rec: RecordedRequest, payload: Any) -> web.Response:
        rec.status = 200
        return web.Response(
            body=json.dumps(payload, indent=2).encode(),
            headers={"Content-Type": "application/json; charset=UTF-8"},
        )

    def _authenticate(self, request: web.Request) -> ApiKey:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            if request.headers.get("Authorization", "")[:7].lower() == "bearer ":
                raise UpstreamError(401, unauthenticated_body())
            raise UpstreamError(403, unregistered_body())
        entry = self.keys.get(key)
        if entry is None and self.accept_any_key:
            entry = self.add_key(key)
        if entry is None:
            raise UpstreamError(400, api_key_invalid_body())
        if entry.suspended or entry.project.suspended:
            consumer = f"projects/{entry.project.number}" if entry.project.suspended else f"api_key:{key}"
            raise UpstreamError(403, suspended_body(consumer, entry.project.number, key))
        return entry

    async def _injected(self, rec: RecordedRequest, key: ApiKey, model: str | None) -> web.Response | None:
        for inj in self._injections:
            if inj.times <= 0 or rec.rpc not in inj.rpcs:
                continue
            if inj.key not in (None, key.key) or inj.model not in (None, model):
                continue
            inj.times -= 1
            inj.fired += 1
            rec.injected = True
            if inj.delay:
                await asyncio.sleep(inj.delay)
            body = inj.body() if callable(inj.body) else inj.body
            return self._error_response(rec, UpstreamError(inj.status, body, inj.headers))
        return None

    @staticmethod
    def _version(request: web.Request) -> str:
        version = request.match_info["version"]
        if version not in API_VERSIONS:
            raise UpstreamError(404, google_error(404, "NOT_FOUND", "Method not found."))
        return version

    async def _healthz(self, request: web.Request) -> web.Response:
        rec = await self._begin(request, "healthz")
        return self._json(rec, {"ok": True})

    async def _unknown(self, request: web.Request) -> web.Response:
        rec = await self._begin(request, "unknown")
        rec.status = 404
        return web.Response(status=404, text="Not Found", content_type="text/html")

    # ---------------------------------------------------------------- models.list / models.get

    async def _list_models(self, request: web.Request) -> web.Response:
        rec = await self._begin(request, "models.list")
        try:
            self._version(request)
            key = self._authenticate(request)
            injected = await self._injected(rec, key, None)
            if injected is not None:
                return injected
            raw_size = request.query.get("pageSize", "")
            try:
                size = int(raw_size) if raw_size else DEFAULT_PAGE_SIZE
            except ValueError:
                raise bad_request(
                    f"Invalid value at 'page_size' (TYPE_INT32), \"{raw_size}\"", "page_size"
                ) from None
            size = DEFAULT_PAGE_SIZE if size <= 0 else min(size, MAX_PAGE_SIZE)
            visible = [m for m in self.models.values() if key.reaches(m.id)]
            start = 0
            token = request.query.get("pageToken")
            if token:
                names = [m.name for m in visible]
                try:
                    start = names.index(_decode_token(token))
                except ValueError:
                    raise bad_request("Invalid page token.") from None
            page = visible[start : start + size]
            payload: dict[str, Any] = {"models": [m.listing() for m in page]}
            if start + size < len(visible):
                payload["nextPageToken"] = _encode_token(visible[start + size].name)
            return self._json(rec, payload)
        except UpstreamError as err:
            return self._error_response(rec, err)

    async def _get_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        rec = await self._begin(request, "models.get", model)
        try:
            version = self._version(request)
            key = self._authenticate(request)
            injected = await self._injected(rec, key, model)
            if injected is not None:
                return injected
            spec = self.models.get(model)
            if spec is None or not key.reaches(model):
                raise UpstreamError(404, model_not_found_body(model, version, "get"))
            return self._json(rec, spec.listing())
        except UpstreamError as err:
            return self._error_response(rec, err)

    # ---------------------------------------------------------------- models/{id}:{method}

    async def _model_call(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["tail"].partition(":")
        rec = await self._begin(request, method or "unknown", model)
        try:
            version = self._version(request)
            if method not in MODEL_RPCS:
                raise UpstreamError(404, google_error(404, "NOT_FOUND", "Method not found."))
            key = self._authenticate(request)
            injected = await self._injected(rec, key, model)
            if injected is not None:
                return injected
            spec = self.models.get(model)
            needed = "countTokens" if method == "countTokens" else "generateContent"
            if spec is None or not key.reaches(model) or needed not in spec.methods:
                raise UpstreamError(404, model_not_found_body(model, version, method))
            try:
                rec.body = json.loads(rec.raw or b"{}")
            except ValueError as exc:
                raise bad_request(f"Invalid JSON payload received. {exc}") from None
            if method == "countTokens":
                return self._count_tokens(rec, spec)
            return await self._generate(request, rec, key, spec)
        except UpstreamError as err:
            return self._error_response(rec, err)

    def _count_tokens(self, rec: RecordedRequest, spec: ModelSpec) -> web.Response:
        body = rec.body
        check_fields(body, "CountTokensRequest")
        nested = get(body, "generateContentRequest")
        if nested is not None and get(body, "contents") is not None:
            raise bad_request("contents and generate_content_request must not both be set.")
        request = nested if nested is not None else {"contents": get(body, "contents")}
        validate_contents(get(request, "contents"))
        total = count_prompt_tokens(request)
        return self._json(
            rec, {"totalTokens": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}
        )

    def _validate_generate(self, rec: RecordedRequest, key: ApiKey, spec: ModelSpec) -> ChatContext:
        body = rec.body
        check_fields(body, "GenerateContentRequest")
        validate_contents(get(body, "contents"))
        validate_tools(get(body, "tools") or [])
        gen = get(body, "generationConfig") or {}
        limit, requested = spec.output_token_limit, get(gen, "maxOutputTokens")
        if isinstance(requested, int) and requested > limit:
            raise bad_request(
                f"Unable to submit request because it has a maxOutputTokens value of {requested} but the "
                f"supported range is from 1 (inclusive) to {limit + 1} (exclusive). Update the value and try again."
            )
        ctx = build_context(rec.rpc, key, spec, body)
        if ctx.prompt_tokens > spec.input_token_limit:
            raise bad_request(
                f"The input token count ({ctx.prompt_tokens}) exceeds the maximum number of tokens allowed "
                f"({spec.input_token_limit})."
            )
        modalities = [str(m).upper() for m in get(gen, "responseModalities") or []]
        if spec.output == "audio" and "AUDIO" not in modalities:
            raise bad_request("Model does not support the requested response modalities: text")
        if spec.signatures_enforced:
            validate_signatures(ctx.contents, self.signatures, self.strict_signatures)
        return ctx

    async def _generate(
        self, request: web.Request, rec: RecordedRequest, key: ApiKey, spec: ModelSpec
    ) -> web.StreamResponse:
        ctx = self._validate_generate(rec, key, spec)
        self._take_quota(key, spec, ctx.prompt_tokens)
        reply, transport = self._choose_reply(ctx)
        rec.reply_kind = reply.kind
        if rec.rpc == "generateContent":
            return await self._send_unary(request, rec, ctx, reply, transport)
        return await self._send_stream(request, rec, ctx, reply, transport)

    # ---------------------------------------------------------------- reply choice

    def _choose_reply(self, ctx: ChatContext) -> tuple[Reply, Transport]:
        transport = self.transport
        for entry in self._script:
            if entry.key not in (None, ctx.key.key) or entry.model not in (None, ctx.model):
                continue
            entry.times -= 1
            if entry.times <= 0:
                self._script.remove(entry)
            transport = entry.transport or transport
            if entry.reply is not None:
                return (entry.reply(ctx) if callable(entry.reply) else entry.reply), transport
            break
        if self.responder is not None:
            reply = self.responder(ctx)
            if reply is not None:
                return reply, transport
        return self._reply_for(ctx), transport

    def _reply_for(self, ctx: ChatContext) -> Reply:
        """Markers, then the per-model default (see module doc)."""
        markers = {m.group(1): m.group(2) for m in MARKER_RE.finditer(ctx.last_user_text or "")}
        show = ctx.include_thoughts and "think" in markers
        if "tool" in markers or "parallel" in markers or "parallel-frames" in markers:
            count = 1 if "tool" in markers else 2
            wanted = markers.get("tool") or markers.get("parallel") or markers.get("parallel-frames")
            return tool_call_reply(
                self._pick_calls(ctx, wanted, count),
                separate_frames="parallel-frames" in markers,
                signed=ctx.thinking,
                thoughts=GEMINI_THOUGHTS if show else (),
            )
        simple: dict[str, Callable[[], Reply]] = {
            "image": image_reply,
            "length": max_tokens_reply,
            "safety": safety_reply,
            "empty": empty_reply,
            "ws": whitespace_reply,
            "long": long_reply,
        }
        for name, builder in simple.items():
            if name in markers:
                return builder()
        if "echo" in markers:
            text = MARKER_RE.sub("", ctx.last_user_text or "").strip() or "(empty)"
            return text_reply(tuple(re.findall(r"\S+\s*|\s+", text)), kind="echo")
        if "utf8" in markers:
            return text_reply(UTF8_CHUNKS, kind="utf8")
        if "think" in markers:
            return gemini_thinking_reply(show_thoughts=ctx.include_thoughts)
        if ctx.spec.output == "image":
            return image_reply()
        if ctx.spec.output == "audio":
            return Reply("audio", [[{"inlineData": {"mimeType": TTS_MIME, "data": TTS_PCM}}]], "STOP")
        return text_reply(GEMINI_CHUNKS)

    def _pick_calls(self, ctx: ChatContext, wanted: str | None, count: int) -> list[dict[str, Any]]:
        decls = {get(d, "name"): d for d in ctx.functions}
        names = [n.strip() for n in wanted.split(",") if n.strip()] if wanted else list(decls)[:count]
        names = names or ["get_weather"]
        while len(names) < count:
            names.append(names[-1])
        calls = []
        for k, name in enumerate(names, start=1):
            decl = decls.get(name) or {}
            schema = get(decl, "parameters") or get(decl, "parametersJsonSchema")
            calls.append({"name": name, "args": sample_args(schema, k)})
        return calls

    # ---------------------------------------------------------------- rendering

    def _render(
        self, reply: Reply, ctx: ChatContext, usage_mode: str, *, unary: bool = False
    ) -> list[dict[str, Any]]:
        """Reply -> ``GenerateContentResponse`` chunks; issues signatures.

        ``usage_mode``: "public" (prompt count on each chunk, the full count on the last),
        "every" (the cumulative full count on each), "last", or "separate" (an extra usage-only chunk).
        A reply without frames streams no chunks; its unary body has usage and ids only.
        """
        rid = reply.response_id or response_id()
        issued: list[list[dict[str, Any]]] = []
        cand_chars = thought_chars = calls = media = 0
        for parts in reply.frames:
            out = []
            for part in parts:
                part = dict(part)
                if part.get("thought"):
                    thought_chars += len(part.get("text", ""))
                elif "text" in part:
                    cand_chars += len(part["text"])
                calls += "functionCall" in part
                media += "inlineData" in part
                if part.get("thoughtSignature") == SIGN:
                    sig = new_signature()
                    self.signatures[sig] = ctx.model
                    part["thoughtSignature"] = sig
                out.append(part)
            issued.append(out)
        candidates = (math.ceil(cand_chars / 4) if cand_chars else 0) + 12 * calls + IMAGE_TOKENS * media
        thoughts = math.ceil(thought_chars / 4) if thought_chars else 0
        if ctx.thinking and not thoughts:  # hidden thoughts are billed all the same
            thoughts = math.ceil(sum(len(t) for t in GEMINI_THOUGHTS) / 4)
        prompt = ctx.prompt_tokens
        details = [{"modality": "TEXT", "tokenCount": prompt}]
        full: dict[str, Any] = {"promptTokenCount": prompt}
        if candidates:
            full["candidatesTokenCount"] = candidates
        full["totalTokenCount"] = prompt + candidates + thoughts
        full["promptTokensDetails"] = details
        if thoughts:
            full["thoughtsTokenCount"] = thoughts
        if reply.usage is not None:
            full = dict(reply.usage)
        prompt_only = {"promptTokenCount": prompt, "totalTokenCount": prompt, "promptTokensDetails": details}

        def chunk(
            parts: list[dict[str, Any]] | None, finish: str | None, use: dict | None, cands: bool = True
        ):
            resp: dict[str, Any] = {}
            if cands:
                cand: dict[str, Any] = {}
                if parts:
                    cand["content"] = {"parts": parts, "role": "model"}
                if finish:
                    cand["finishReason"] = finish
                resp["candidates"] = [cand]
            if use is not None:
                resp["usageMetadata"] = use
            resp["modelVersion"] = ctx.model
            resp["responseId"] = rid
            return resp

        frames = []
        n = len(issued)
        for i, parts in enumerate(issued):
            last = i == n - 1
            use: dict[str, Any] | None = None
            if usage_mode == "every" or (usage_mode in ("public", "last") and last):
                use = full
            elif usage_mode in ("public", "separate"):
                use = prompt_only
            frames.append(chunk(parts, reply.finish_reason if last else None, use))
        if n and usage_mode == "separate":
            frames.append(chunk(None, None, full, cands=False))
        if not n and unary:
            frames.append(chunk(None, None, prompt_only, cands=False))
        return frames

    def _chunks_for_wire(self, frames: list[dict[str, Any]], tr: Transport) -> list[dict[str, Any]]:
        """``trailing_empty`` and ``snake_case`` transport variations, applied to rendered chunks."""
        if tr.trailing_empty and frames and frames[-1].get("candidates"):
            last = frames[-1]
            finish = last["candidates"][0].pop("finishReason", None)
            use = last.pop("usageMetadata", None)
            tail: dict[str, Any] = {"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}}]}
            if finish:
                tail["candidates"][0]["finishReason"] = finish
            if use is not None:
                tail["usageMetadata"] = use
            tail.update({k: last[k] for k in ("modelVersion", "responseId")})
            frames = [*frames, tail]
        if tr.snake_case:
            for frame in frames:
                for cand in frame.get("candidates", ()):
                    for part in cand.get("content", {}).get("parts", ()):
                        _snake_case_part(part)
        return frames

    # ---------------------------------------------------------------- sending

    async def _send_unary(
        self, request: web.Request, rec: RecordedRequest, ctx: ChatContext, reply: Reply, tr: Transport
    ) -> web.Response:
        if tr.first_byte_delay:
            await asyncio.sleep(tr.first_byte_delay)
        payload = merge_unary(self._render(reply, ctx, "last", unary=True))
        if tr.snake_case:
            for cand in payload.get("candidates", ()):
                for part in cand.get("content", {}).get("parts", ()):
                    _snake_case_part(part)
        rec.frames = [payload]
        rec.usage = payload.get("usageMetadata")
        rec.completed = True
        rec.status = 200
        data = (json.dumps(payload, indent=2) if tr.pretty else json.dumps(payload)).encode()
        headers = {"Content-Type": "application/json; charset=UTF-8", **_GOOGLE_HEADERS}
        if tr.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=data, headers=headers)

    async def _send_stream(
        self, request: web.Request, rec: RecordedRequest, ctx: ChatContext, reply: Reply, tr: Transport
    ) -> web.StreamResponse:
        frames = self._chunks_for_wire(self._render(reply, ctx, tr.usage or "public"), tr)
        sse = request.query.get("alt") == "sse"
        eol = b"\r\n" if tr.crlf else b"\n"
        if sse:
            events = [b"data: " + _wire_json(f) + eol + eol for f in frames]
        else:  # a JSON array streamed element by element, as Google does without alt=sse
            events = [
                (b"[" if i == 0 else b",\r\n") + json.dumps(f, indent=2).encode()
                for i, f in enumerate(frames)
            ]
            events.append(b"]" if frames else b"[]")
        if tr.first_byte_delay:
            await asyncio.sleep(tr.first_byte_delay)
        headers = {
            "Content-Type": "text/event-stream" if sse else "application/json; charset=UTF-8",
            "Content-Disposition": "attachment",
            **_GOOGLE_HEADERS,
        }
        compressor = None
        if tr.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        resp = web.StreamResponse(status=200, headers=headers)
        rec.status = 200
        broken = tr.break_after is not None and tr.break_after < len(frames)
        if broken:
            cut = events[tr.break_after]
            events = [*events[: tr.break_after], cut[: len(cut) // 2]]
        step = max(1, tr.coalesce)
        writes = [(b"".join(events[i : i + step]), frames[i : i + step]) for i in range(0, len(events), step)]
        if broken and writes:  # the half event is not a chunk the client can see
            writes[-1] = (writes[-1][0], writes[-1][1][:-1])

        async def send(data: bytes) -> None:
            if compressor is not None:
                data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            await resp.write(data)

        try:
            await resp.prepare(request)
            for i, (data, sent) in enumerate(writes):
                delay = tr.first_frame_delay if i == 0 else tr.frame_delay
                while sse and delay > 0 and tr.keepalive > 0:
                    await asyncio.sleep(min(delay, tr.keepalive))
                    delay -= tr.keepalive
                    await send(b": keep-alive" + eol + eol)
                if delay > 0:
                    await asyncio.sleep(delay)
                for j, piece in enumerate(_pieces(data, tr.split)):
                    if j and tr.split_pause:
                        await asyncio.sleep(tr.split_pause)
                    await send(piece)
                rec.frames.extend(sent)
            if broken:
                await asyncio.sleep(0.02)
                rec.disconnected = True
                if request.transport is not None:
                    request.transport.close()
                return resp
            if compressor is not None:
                await resp.write(compressor.flush())
            await resp.write_eof()
        except ConnectionError:  # the client went away
            rec.disconnected = True
            return resp
        except asyncio.CancelledError:
            rec.disconnected = True
            raise
        rec.completed = True
        rec.usage = next((f["usageMetadata"] for f in reversed(frames) if "usageMetadata" in f), None)
        return resp


# --------------------------------------------------------------------------------------
# Helpers used by the handlers
# --------------------------------------------------------------------------------------

_GOOGLE_HEADERS = {
    "Server": "scaffolding on HTTPServer2",
    "Vary": "Origin, X-Origin, Referer",
    "Server-Timing": "gfet4t7; dur=42",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "X-XSS-Protection": "0",
}


def _wire_json(value: Any) -> bytes:
    """Google's SSE spacing: ``{"a": 1,"b": [...]}`` (a space after colons, none after commas)."""
    return json.dumps(value, separators=(",", ": "), ensure_ascii=False).encode()


def _encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).rstrip(b"=").decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return ""


def _snake_case_part(part: dict[str, Any]) -> None:
    """Proto field names in a response part (``thought_signature``, ``inline_data{mime_type}``)."""
    if "thoughtSignature" in part:
        part["thought_signature"] = part.pop("thoughtSignature")
    if "inlineData" in part:
        inline = part.pop("inlineData")
        part["inline_data"] = {("mime_type" if k == "mimeType" else k): v for k, v in inline.items()}


def _pieces(data: bytes, pieces: int) -> list[bytes]:
    """``data`` cut into ``pieces`` byte ranges (may cut UTF-8 characters, on purpose)."""
    if pieces <= 1 or len(data) < 2:
        return [data]
    pieces = min(pieces, len(data))
    cuts = [round(len(data) / pieces * i) for i in range(pieces + 1)]
    return [data[cuts[i] : cuts[i + 1]] for i in range(pieces) if cuts[i] < cuts[i + 1]]


def merge_unary(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """Chunks -> the ``generateContent`` body: adjacent texts of the same kind (thought or not)
    joined, a run's signature kept, empty text parts dropped, ``index: 0`` on the candidate."""
    parts: list[dict[str, Any]] = []
    finish = None
    usage = None
    head: dict[str, Any] = {}
    saw_candidates = False
    for frame in frames:
        head = {k: frame[k] for k in ("modelVersion", "responseId") if k in frame}
        usage = frame.get("usageMetadata", usage)
        for cand in frame.get("candidates", []):
            saw_candidates = True
            finish = cand.get("finishReason", finish)
            for part in cand.get("content", {}).get("parts", []):
                prev = parts[-1] if parts else None
                textual = set(part) <= {"text", "thought", "thoughtSignature"} and "text" in part
                if (
                    textual
                    and prev is not None
                    and set(prev) <= {"text", "thought", "thoughtSignature"}
                    and "text" in prev
                    and bool(prev.get("thought")) == bool(part.get("thought"))
                    and "thoughtSignature" not in prev
                ):
                    merged = {**prev, "text": prev["text"] + part["text"]}
                    if "thoughtSignature" in part:
                        merged["thoughtSignature"] = part["thoughtSignature"]
                    parts[-1] = merged
                elif part.get("text") == "" and len(part) == 1:
                    continue
                else:
                    parts.append(dict(part))
    resp: dict[str, Any] = {}
    if saw_candidates:
        cand_out: dict[str, Any] = {}
        if parts:
            cand_out["content"] = {"parts": parts, "role": "model"}
        if finish:
            cand_out["finishReason"] = finish
        cand_out["index"] = 0
        resp["candidates"] = [cand_out]
    if usage is not None:
        resp["usageMetadata"] = usage
    resp.update(head)
    return resp


# --------------------------------------------------------------------------------------
# Standalone
# --------------------------------------------------------------------------------------


async def _serve(host: str, port: int, keys: list[str], tier: str, any_key: bool) -> None:
    double = GeminiApiDouble()
    double.accept_any_key = any_key
    added = [double.add_key(k or None, tier=tier).key for k in keys or [""]]
    url = await double.start(host, port)
    print(f"gemini api double listening on {url} (keys: {', '.join(added)}; tier {tier})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await double.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.gemini_double", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--key", action="append", default=[], help="a valid API key (repeatable; default: one fresh)"
    )
    parser.add_argument("--tier", choices=(FREE, PAID), default=FREE)
    parser.add_argument("--any-key", action="store_true", help="accept unknown keys as free-tier keys")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.key, args.tier, args.any_key))


if __name__ == "__main__":
    main()
