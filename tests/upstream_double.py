"""A steerable stand-in for Google's side of antigv: Cloud Code ``v1internal`` and OAuth.

Start it in-process::

    double = UpstreamDouble()
    base = await double.start()             # "http://127.0.0.1:PORT"
    acc = double.add_account("a@example.com")
    ...
    await double.stop()

or standalone: ``python -m tests.upstream_double --port 8089 [--profile bench]``.

Routes (PROTOCOL §9): ``POST /v1internal:{streamGenerateContent?alt=sse, generateContent,
fetchAvailableModels, retrieveUserQuotaSummary, loadCodeAssist, onboardUser, countTokens}``,
``POST /token`` (form),
``GET /oauth2/v2/userinfo`` and ``/oauth2/v1/userinfo``, ``GET /o/oauth2/v2/auth`` (redirects
to ``redirect_uri`` with a code queued by :meth:`UpstreamDouble.queue_login`), ``GET
/manifest/<name>.yml`` (the hub's auto-updater manifest, ``version: X.Y.Z``; PROTOCOL §13.1).

Client version gate (PROTOCOL §13.12): the User-Agent is ``antigravity/hub/<v> <os>/<arch>`` or
the older ``antigravity/<v> <os>/<arch>``; a chat for a model in ``new_models`` from a client
below ``new_model_min_version`` (2.9.0) is a 404 "Requested entity was not found"; a chat body
with ``"project": ""`` (and fetchAvailableModels with it) is a 400.

Which reply a chat request gets, first match wins:

0. a retired id (in ``retired_models``, not in ``models``): "<id> is no longer available. Please
   switch to <replacement>." as reply text (200, 0 tokens; PROTOCOL §13.4);
1. ``min_version`` (default 1.15) set and the User-Agent version is lower: the version notice
   (200, 0 tokens);
2. the :meth:`UpstreamDouble.script` queue (entries may be limited to an account or model);
3. ``double.responder(ctx)`` if set and it returns a :class:`Reply`;
4. a marker in the last user text, only when the conversation ends with a user *text* turn
   (after a tool result the reply is always the default text, so tool loops terminate):

   ============================  ============================================================
   ``[[tool]]``/``[[tool:NAME]]`` one function call (first declared tool, args from its schema)
   ``[[parallel]]``              two calls in one frame (first two tools, or the first twice)
   ``[[parallel-frames]]``       two calls, one frame each
   ``[[think]]``                 Gemini: thought parts, then text carrying the signature
                                 (thoughts only shown when ``includeThoughts``); Claude: A.2
   ``[[image]]``                 text then an ``inlineData`` PNG part
   ``[[length]]``                text ending with ``finishReason: MAX_TOKENS``
   ``[[safety]]``                a little text, then a content-less ``SAFETY`` frame
   ``[[empty]]``                 200 with zero frames
   ``[[ws]]``                    whitespace-only deltas between words
   ``[[utf8]]``                  multi-byte text (pair with ``split`` to cut characters)
   ``[[long]]``                  200 short text chunks
   ``[[echo]]``                  replies with the user text minus the marker
   ``[[version]]``               the version notice text
   ============================  ============================================================

   ``[[think]]`` combines with ``[[tool]]``/``[[parallel]]`` (A.1 shape for Gemini);
5. default by family: Gemini/GPT plain text ``"Hello world!"`` in three chunks; Claude with
   thinking on: the A.2 shape (thoughts, signature-only thought part, text with a
   whitespace-only delta); Claude without thinking: the same text; ``*-image`` models: image.

Claude replies to thinking-on requests always start with thinking (tool calls too). Gemini
function calls carry a ``thoughtSignature`` on the first call when the model is thinking.
Every signature the double issues is random and remembered (family + exact thinking text),
so replays are checked (see the validation list in ``_validate_chat``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fnmatch
import gzip
import json
import math
import re
import secrets
import string
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

# --------------------------------------------------------------------------------------
# Constants and fixtures
# --------------------------------------------------------------------------------------

ANTIGRAVITY_CLIENT_ID = "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com"
ANTIGRAVITY_CLIENT_SECRET = "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"
SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email "
    "https://www.googleapis.com/auth/userinfo.profile https://www.googleapis.com/auth/cclog "
    "https://www.googleapis.com/auth/experimentsandconfigs"
)
SKIP_SIGNATURE = "skip_thought_signature_validator"
#: Placeholder a reply builder puts where a fresh signature must be issued at send time.
SIGN = "\x00issue-signature"
VERSION_NOTICE = (
    "This version of Antigravity is no longer supported. Please update to receive the latest features!"
)
DEFAULT_TEXT = "Hello world!"
GEMINI_CHUNKS = ("Hello", " world", "!")
CLAUDE_CHUNKS = ("Hello", " ", "world", "!")
CLAUDE_THOUGHTS = ("Let me think about", " this.")
GEMINI_THOUGHTS = ("**Planning the answer**\n\nThe user", " wants a short greeting.")
UTF8_CHUNKS = ("Grüße, ", "世界 ", "🌍🚀", " naïve café")
# 1x1 transparent PNG.
TINY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="

CHAT_RPCS = ("streamGenerateContent", "generateContent")
V1INTERNAL_RPCS = (
    *CHAT_RPCS,
    "fetchAvailableModels",
    "retrieveUserQuotaSummary",
    "loadCodeAssist",
    "onboardUser",
    "countTokens",
)

#: Quota groups by provider family, like antigv.config's defaults (PROTOCOL §13.6): model names
#: or patterns, "!" leaves out; a model in no group (each image model) is its own group.
QUOTA_GROUPS: dict[str, tuple[str, ...]] = {
    "gemini": ("gemini-*", "!*-image"),
    "claude_gpt": ("claude-*", "gpt-oss-*"),
}
#: retrieveUserQuotaSummary (PROTOCOL §13.6): group -> (bucket family, group displayName). Each
#: family bucket has a 5-hour and a weekly window; ``quotaInfo`` of fetchAvailableModels is the 5-hour one.
SUMMARY_BUCKETS: dict[str, tuple[str, str]] = {
    "gemini": ("gemini", "Gemini Models"),
    "claude_gpt": ("3p", "Claude and GPT models"),
}
FIVE_HOURS = "5h"
WEEKLY = "weekly"
WINDOW_SECONDS = {FIVE_HOURS: 5 * 3600.0, WEEKLY: 7 * 24 * 3600.0}


def _gemini(name: str, *, thinking: bool = True, images: bool = False, **extra: Any) -> dict[str, Any]:
    d = {
        "displayName": name,
        "maxTokens": 1048576,
        "maxOutputTokens": 65535,
        "supportsThinking": thinking,
        "supportsImages": images,
        "apiProvider": "API_PROVIDER_GOOGLE_GEMINI",
        "modelProvider": "MODEL_PROVIDER_GOOGLE",
    }
    d.update(extra)
    return d


def _claude_model(name: str, *, thinking: bool, max_output: int = 64000) -> dict[str, Any]:
    return {
        "displayName": name,
        "maxTokens": 200000,
        "maxOutputTokens": max_output,
        "supportsThinking": thinking,
        "apiProvider": "API_PROVIDER_ANTHROPIC_VERTEX",
        "modelProvider": "MODEL_PROVIDER_ANTHROPIC",
    }


def default_models() -> dict[str, dict[str, Any]]:
    """Today's lineup (PROTOCOL §13.4): ``fetchAvailableModels`` entries without ``quotaInfo``."""
    return {
        "gemini-pro-agent": _gemini(
            "Gemini 3.1 Pro (High)", images=True, thinkingLevel="high", recommended=True
        ),
        "gemini-3.1-pro-low": _gemini("Gemini 3.1 Pro (Low)", images=True, thinkingLevel="low"),
        "gemini-3-flash": _gemini("Gemini 3 Flash", images=True, maxOutputTokens=65536),
        "gemini-3-flash-agent": _gemini("Gemini 3 Flash (Agent)", images=True, maxOutputTokens=65536),
        "gemini-3.1-flash-lite": _gemini("Gemini 3.1 Flash Lite", thinking=False, maxOutputTokens=65536),
        "gemini-3.1-flash-image": _gemini(
            "Gemini 3.1 Flash Image", thinking=False, images=True, maxTokens=131072, maxOutputTokens=32768
        ),
        "gemini-3.6-flash-high": _gemini("Gemini 3.6 Flash (High)", images=True, maxOutputTokens=65536),
        "gemini-3.7-flash-high": _gemini("Gemini 3.7 Flash (High)", images=True, maxOutputTokens=65536),
        "gemini-3.8-flash-tiered": _gemini("Gemini 3.8 Flash", images=True, maxOutputTokens=65536),
        "claude-opus-4-6-thinking": _claude_model("Claude Opus 4.6 (Thinking)", thinking=True),
        "claude-sonnet-4-6": _claude_model("Claude Sonnet 4.6", thinking=True),
        "gpt-oss-120b-medium": {
            "displayName": "GPT-OSS 120B (Medium)",
            "maxTokens": 131072,
            "maxOutputTokens": 32768,
            "supportsThinking": True,
            "apiProvider": "API_PROVIDER_OPENAI_VERTEX",
            "modelProvider": "MODEL_PROVIDER_OPENAI",
        },
        # Internal ids a gateway must hide from /v1/models and refuse for chat.
        "chat_20706": {"displayName": "chat_20706", "isInternal": True},
        "chat_23310": {"displayName": "chat_23310", "isInternal": True},
        "tab_flash_lite_preview": {"displayName": "tab_flash_lite_preview"},
        "tab_jump_flash_lite_preview": {"displayName": "tab_jump_flash_lite_preview"},
    }


def default_deprecated_ids() -> dict[str, str]:
    """``deprecatedModelIds`` of fetchAvailableModels: old id -> new id (PROTOCOL §13.4)."""
    return {
        "gemini-3-pro-high": "gemini-pro-agent",
        "gemini-3.1-pro-high": "gemini-pro-agent",
        "gemini-3-pro-low": "gemini-3.1-pro-low",
        "claude-sonnet-4-5": "claude-sonnet-4-6",
        "claude-sonnet-4-5-thinking": "claude-sonnet-4-6",
        "claude-opus-4-5-thinking": "claude-opus-4-6-thinking",
    }


def default_retired_models() -> dict[str, str]:
    """Retired ids answered with the retirement text when asked for directly: id -> what to use."""
    return {
        "gemini-3-pro-high": "Gemini 3.1 Pro (High)",
        "gemini-3-pro-low": "Gemini 3.1 Pro (Low)",
        "gemini-3.1-pro-high": "Gemini 3.1 Pro (High)",
        "gemini-3-pro-image": "Gemini 3.1 Flash Image",
        "claude-sonnet-4-5": "Claude Sonnet 4.6",
        "claude-sonnet-4-5-thinking": "Claude Sonnet 4.6",
        "claude-opus-4-5-thinking": "Claude Opus 4.6 (Thinking)",
        "claude-sonnet-4-6-thinking": "Claude Sonnet 4.6",
        "gemini-3.5-flash-high": "Gemini 3.7 Flash",
        "gemini-3.5-flash-low": "Gemini 3.7 Flash",
        "gemini-2.5-flash": "Gemini 3 Flash",
        "gemini-2.5-pro": "Gemini 3.1 Pro (High)",
    }


def retirement_text(model: str, replacement: str) -> str:
    return f"{model} is no longer available. Please switch to {replacement}."


def is_internal_model(model: str) -> bool:
    return model.startswith(("chat_", "tab_"))


def model_family(model: str) -> str:
    if model.startswith("claude-"):
        return "claude"
    if model.startswith("gpt-"):
        return "gpt"
    return "gemini"


_GEMINI_VERSION_RE = re.compile(r"^gemini-(\d+)(?:\.(\d+))?-")


def gemini_version(model: str) -> tuple[int, int] | None:
    """``gemini-3.7-flash-high`` -> (3, 7); unversioned Gemini ids (``gemini-pro-agent``) are current."""
    if model_family(model) != "gemini":
        return None
    m = _GEMINI_VERSION_RE.match(model)
    if m is None:
        return (3, 1)
    return (int(m.group(1)), int(m.group(2) or 0))


def is_image_model(model: str) -> bool:
    return model.endswith("-image")


def thinking_only(model: str) -> bool:
    """Models that answer ``thinkingBudget: 0`` with 400 (PROTOCOL §13.5): Gemini >= 3 Pro, newer Flash."""
    version = gemini_version(model)
    if version is None or is_image_model(model):
        return False
    if "-pro" in model or model == "gemini-pro-agent":
        return version >= (2, 5)
    return version >= (3, 6)


def rejects_prefill(model: str) -> bool:
    """A trailing model turn is a 400 for Claude and Gemini >= 3.6 (PROTOCOL §13.5)."""
    version = gemini_version(model)
    return model_family(model) == "claude" or (version is not None and version >= (3, 6))


# Today's ``antigravity/hub/<v> <os>/<arch>`` and the older ``antigravity/<v> <os>/<arch>`` (PROTOCOL §13.1).
UA_RE = re.compile(r"^antigravity/(?:hub/)?(\d+(?:\.\d+)*) ([A-Za-z0-9_]+)/([A-Za-z0-9_]+)$")
#: PROTOCOL §13.1/§13.12: below this the upstream answers the outdated-client text ...
OUTDATED_BELOW = "1.15"
#: ... and 404 "Requested entity was not found" for the models marked new (``UpstreamDouble.new_models``).
NEW_MODEL_MIN_VERSION = "2.9.0"
#: The 2026 models of today's lineup (§13.4) that Cloud Code resolves only for clients >= 2.9.0.
NEW_MODELS = frozenset(
    {
        "gemini-pro-agent",
        "gemini-3.1-pro-low",
        "gemini-3-flash-agent",
        "gemini-3.1-flash-lite",
        "gemini-3.1-flash-image",
        "gemini-3.6-flash-high",
        "gemini-3.7-flash-high",
        "gemini-3.8-flash-tiered",
        "claude-opus-4-6-thinking",
        "claude-sonnet-4-6",
    }
)
#: What the hub's auto-updater manifest (GET /manifest/<name>.yml) says by default (§13.1).
MANIFEST_VERSION = "2.9.1"
FUNCTION_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
CLAUDE_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
FORBIDDEN_SCHEMA_KEYS = frozenset({"const", "$ref", "$defs", "$schema", "default", "examples"})
MARKER_RE = re.compile(r"\[\[([a-z0-9-]+)(?::([^\]]*))?\]\]")

_ADJECTIVES = ("useful", "bright", "swift", "calm", "bold", "cogent", "rising")
_NOUNS = ("fuze", "wave", "spark", "flow", "core", "snow", "fact")


def random_project_id() -> str:
    tail = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{tail}"


def _rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_signature() -> str:
    return base64.b64encode(secrets.token_bytes(48)).decode()


def claude_tool_id() -> str:
    return "toolu_vrtx_" + _rand(24)


def trace_id() -> str:
    return secrets.token_hex(8)


# --------------------------------------------------------------------------------------
# Time and duration formatting
# --------------------------------------------------------------------------------------


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _create_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _trim(x: float, digits: int) -> str:
    return f"{x:.{digits}f}".rstrip("0").rstrip(".")


def go_duration(seconds: float) -> str:
    """Go ``time.Duration`` string: ``13h19m1.20964964s``, ``976.066617ms``, ``0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return _trim(seconds * 1000, 6) + "ms"
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    out = ""
    if hours >= 1:
        out += f"{int(hours)}h"
    if hours >= 1 or minutes >= 1:
        out += f"{int(minutes)}m"
    return out + _trim(secs, 9) + "s"


def proto_duration(seconds: float) -> str:
    """protobuf JSON Duration: ``25s``, ``0.976066617s``, ``47941.209649640s``."""
    whole = int(seconds)
    nanos = round((seconds - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, 0
    return f"{whole}s" if nanos == 0 else f"{whole}.{nanos:09d}s"


def _as_timestamp(value: float | str | datetime | None, now: float, default: float) -> float:
    """A reset time given as seconds-from-now, an RFC 3339 string or a datetime."""
    if value is None:
        return now + default
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return now + float(value)


# --------------------------------------------------------------------------------------
# Error bodies (Google RPC shape, PROTOCOL §8)
# --------------------------------------------------------------------------------------


class UpstreamError(Exception):
    """Raised by handlers; becomes an HTTP error response."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}


def google_error(code: int, status: str, message: str, details: list[dict] | None = None) -> dict:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def error_info(
    reason: str, metadata: dict[str, str] | None = None, domain: str = "cloudcode-pa.googleapis.com"
):
    d: dict[str, Any] = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": domain,
    }
    if metadata:
        d["metadata"] = metadata
    return d


def retry_info(seconds: float) -> dict:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": proto_duration(seconds)}


def quota_exhausted_body(model: str, reset_in: float, now: float) -> dict:
    return google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You have exhausted your capacity on this model. Your quota will reset after "
        f"{go_duration(int(reset_in))}.",
        [
            error_info(
                "QUOTA_EXHAUSTED",
                {
                    "model": model,
                    "uiMessage": "true",
                    "quotaResetDelay": go_duration(reset_in),
                    "quotaResetTimeStamp": rfc3339(now + reset_in),
                },
            ),
            retry_info(reset_in),
        ],
    )


def rate_limit_body(model: str, delay: float = 0.976066617) -> dict:
    return google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You have exhausted your capacity on this model. Your quota will reset after 0s.",
        [
            error_info(
                "RATE_LIMIT_EXCEEDED",
                {"model": model, "uiMessage": "true", "quotaResetDelay": go_duration(delay)},
            ),
            retry_info(delay),
        ],
    )


def capacity_body(model: str, code: int = 429) -> dict:
    status = "RESOURCE_EXHAUSTED" if code == 429 else "UNAVAILABLE"
    details = [error_info("MODEL_CAPACITY_EXHAUSTED", {"model": model})]
    if code == 503:
        details.append(retry_info(25))
    return google_error(code, status, f"No capacity available for model {model} on the server", details)


def internal_body() -> dict:
    return google_error(500, "INTERNAL", "Internal error encountered.")


def unauthenticated_body(reason: str = "ACCESS_TOKEN_TYPE_UNSUPPORTED") -> dict:
    return google_error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
        "other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project.",
        [error_info(reason, {"service": "cloudcode-pa.googleapis.com"}, domain="googleapis.com")],
    )


def permission_denied_body() -> dict:
    return google_error(403, "PERMISSION_DENIED", "The caller does not have permission")


def validation_required_body() -> dict:
    return google_error(
        403,
        "PERMISSION_DENIED",
        "Verify your account to continue.",
        [
            error_info(
                "VALIDATION_REQUIRED",
                {"validation_url": "https://accounts.google.com/signin/continue?sarp=1&scc=1"},
            ),
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{"description": "Verify your account", "url": "https://accounts.google.com/"}],
            },
        ],
    )


def banned_body() -> dict:
    return google_error(
        403,
        "PERMISSION_DENIED",
        "This service has been disabled in this account for violation of Terms of Service.",
    )


def project_invalid_body() -> dict:
    return google_error(
        400,
        "INVALID_ARGUMENT",
        "Invalid resource field value in the request.",
        [error_info("RESOURCE_PROJECT_INVALID", {"service": "cloudcode-pa.googleapis.com"})],
    )


def not_found_body() -> dict:
    return google_error(404, "NOT_FOUND", "Requested entity was not found.")


def credits_exhausted_body(model: str) -> dict:
    """429 for an account whose AI credits are spent (PROTOCOL §13.9, CPA-0822 credits)."""
    return google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Resource has been exhausted (e.g. check quota).",
        [error_info("INSUFFICIENT_G1_CREDITS_BALANCE", {"model": model})],
    )


def no_capacity_503_body(model: str) -> dict:
    """A 503 that says "no capacity" in its text only, without an ErrorInfo (PROTOCOL §13.9)."""
    return google_error(503, "UNAVAILABLE", f"No capacity available for model {model} on the server")


def empty_project_body() -> dict:
    """``"project": ""`` (PROTOCOL §13.3, AGM#1939)."""
    return google_error(400, "INVALID_ARGUMENT", "Invalid project resource name projects/")


def invalid_argument_body(message: str, field_path: str | None = None) -> dict:
    details = None
    if field_path is not None:
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field_path, "description": message}],
            }
        ]
    return google_error(400, "INVALID_ARGUMENT", message, details)


def anthropic_error_body(message: str) -> dict:
    """Claude-originated 400: Anthropic's error JSON embedded as a string (PROTOCOL §8.1)."""
    inner = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": message},
        "request_id": "req_vrtx_" + _rand(24),
    }
    return google_error(400, "INVALID_ARGUMENT", json.dumps(inner))


def _bad(message: str, field_path: str | None = None) -> UpstreamError:
    return UpstreamError(400, invalid_argument_body(message, field_path))


def _anthropic(message: str) -> UpstreamError:
    return UpstreamError(400, anthropic_error_body(message))


#: ``fail(kind)`` names -> (status, body builder(model, now)).
ERROR_KINDS: dict[str, tuple[int, Callable[[str, float], Any]]] = {
    "quota": (429, lambda m, now: quota_exhausted_body(m, 4 * 3600 + 30 * 60 + 28.060903746, now)),
    "rate_limit": (429, lambda m, now: rate_limit_body(m)),
    "capacity": (429, lambda m, now: capacity_body(m, 429)),
    "capacity_503": (503, lambda m, now: capacity_body(m, 503)),
    "internal": (500, lambda m, now: internal_body()),
    "unauthenticated": (401, lambda m, now: unauthenticated_body()),
    "permission_denied": (403, lambda m, now: permission_denied_body()),
    "validation_required": (403, lambda m, now: validation_required_body()),
    "banned": (403, lambda m, now: banned_body()),
    "project_invalid": (400, lambda m, now: project_invalid_body()),
    "not_found": (404, lambda m, now: not_found_body()),
    "credits": (429, lambda m, now: credits_exhausted_body(m)),
    "no_capacity_503": (503, lambda m, now: no_capacity_503_body(m)),
    "invalid_argument": (400, lambda m, now: invalid_argument_body("Request contains an invalid argument.")),
}


# --------------------------------------------------------------------------------------
# Replies: small pure builders. A Reply is a list of frames, each a list of parts.
# --------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What the model says. ``frames[i]`` are the parts of SSE event i; ``[]`` = no content.

    ``finish_reason`` goes on the last frame. ``usage`` overrides the computed
    ``usageMetadata`` (the final, cumulative one). Parts may use ``thoughtSignature: SIGN``
    to have the double issue and remember a fresh signature when the reply is sent.
    """

    kind: str
    frames: list[list[dict[str, Any]]]
    finish_reason: str | None = "STOP"
    usage: dict[str, int] | None = None
    response_id: str | None = None


def text_part(text: str, *, thought: bool = False, signature: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"text": text}
    if thought:
        part["thought"] = True
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def function_call_part(
    name: str, args: dict[str, Any], *, call_id: str | None = None, signature: str | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"name": name, "args": args}
    if call_id is not None:
        call = {"id": call_id, **call}
    part: dict[str, Any] = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def text_reply(chunks: tuple[str, ...] | list[str] = GEMINI_CHUNKS, finish: str = "STOP", kind: str = "text"):
    return Reply(kind, [[text_part(c)] for c in chunks], finish)


def whitespace_reply() -> Reply:
    return text_reply(("Hello", " ", " ", "\n", "world", " ", "!"), kind="ws")


def max_tokens_reply(chunks: tuple[str, ...] = ("The answer is", " long and")) -> Reply:
    return text_reply(chunks, finish="MAX_TOKENS", kind="length")


def safety_reply() -> Reply:
    return Reply("safety", [[text_part("I can")], []], "SAFETY")


def empty_reply() -> Reply:
    return Reply("empty", [], None)


def version_notice_reply() -> Reply:
    return Reply("version", [[text_part(VERSION_NOTICE)]], "STOP", usage={})


def image_reply(data: str = TINY_PNG, mime: str = "image/png") -> Reply:
    return Reply(
        "image",
        [[text_part("Here is your image:")], [{"inlineData": {"mimeType": mime, "data": data}}]],
        "STOP",
    )


def gemini_thinking_reply(
    thoughts: tuple[str, ...] = GEMINI_THOUGHTS,
    chunks: tuple[str, ...] = GEMINI_CHUNKS,
    *,
    show_thoughts: bool = True,
) -> Reply:
    """Thought parts, then text; the signature rides on the last text part."""
    frames = [[text_part(t, thought=True)] for t in thoughts] if show_thoughts else []
    frames += [[text_part(c)] for c in chunks[:-1]]
    frames.append([text_part(chunks[-1], signature=SIGN)])
    return Reply("gemini-thinking", frames, "STOP")


def claude_thinking_reply(
    thoughts: tuple[str, ...] = CLAUDE_THOUGHTS,
    chunks: tuple[str, ...] = CLAUDE_CHUNKS,
    *,
    calls: list[dict[str, Any]] | None = None,
    separate_frames: bool = True,
) -> Reply:
    """A.2: thought deltas, ``{"text":"","thought":true,"thoughtSignature":…}``, then text or calls."""
    frames = [[text_part(t, thought=True)] for t in thoughts]
    frames.append([text_part("", thought=True, signature=SIGN)])
    if calls:
        parts = [
            function_call_part(c["name"], c["args"], call_id=c.get("id") or claude_tool_id()) for c in calls
        ]
        frames += [[p] for p in parts] if separate_frames else [parts]
        return Reply("claude-thinking-tool", frames, "OTHER")
    frames += [[text_part(c)] for c in chunks]
    return Reply("claude-thinking", frames, "STOP")


def tool_call_reply(
    calls: list[dict[str, Any]],
    *,
    family: str = "gemini",
    separate_frames: bool = False,
    signed: bool = True,
    thoughts: tuple[str, ...] = (),
) -> Reply:
    """Function calls. Gemini: no ``id``, signature on the first call, ``STOP``.
    Claude: ``toolu_vrtx_`` ids, no signature on calls, ``OTHER``."""
    parts = []
    for i, c in enumerate(calls):
        if family == "claude":
            parts.append(function_call_part(c["name"], c["args"], call_id=c.get("id") or claude_tool_id()))
        else:
            sig = SIGN if signed and i == 0 else None
            parts.append(function_call_part(c["name"], c["args"], call_id=c.get("id"), signature=sig))
    frames = [[text_part(t, thought=True)] for t in thoughts]
    frames += [[p] for p in parts] if separate_frames else [parts]
    return Reply("parallel" if len(calls) > 1 else "tool", frames, "OTHER" if family == "claude" else "STOP")


def long_reply(n: int = 200) -> Reply:
    return text_reply([f"word{i} " for i in range(n)], kind="long")


def sample_args(schema: dict[str, Any] | None, k: int = 1) -> dict[str, Any]:
    """Deterministic arguments satisfying a (simple) object schema."""
    props = (schema or {}).get("properties") or {}
    wanted = (schema or {}).get("required") or list(props)
    out: dict[str, Any] = {}
    for name in wanted:
        spec = props.get(name) or {}
        if spec.get("enum"):
            out[name] = spec["enum"][0]
            continue
        typ = str(spec.get("type", "string")).lower()
        out[name] = {
            "integer": k,
            "number": k + 0.5,
            "boolean": True,
            "array": [],
            "object": {},
        }.get(typ, f"{name}-{k}")
    return out


# --------------------------------------------------------------------------------------
# Request validation (pure; raises UpstreamError)
# --------------------------------------------------------------------------------------

STRUCT = "<struct>"  # free-form JSON object (proto Struct)
SCHEMA = "<schema>"  # OpenAPI subset; checked for forbidden keywords
ANY = "<any>"  # free-form value

# message name -> {camelCase field: child message | None (scalar) | STRUCT | SCHEMA | ANY}
MESSAGES: dict[str, dict[str, str | None]] = {
    "envelope": {
        "project": None,
        "requestId": None,
        "request": "request",
        "model": None,
        "userAgent": None,
        "requestType": None,
        "userPromptId": None,
        "enabledCreditTypes": None,
    },
    "request": {
        "contents": "content",
        "systemInstruction": "content",
        "tools": "tool",
        "toolConfig": "toolConfig",
        "generationConfig": "generationConfig",
        "safetySettings": "safetySetting",
        "sessionId": None,
        "labels": STRUCT,
        "cachedContent": None,
    },
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
    },
    "blob": {"mimeType": None, "data": None},
    "fileData": {"mimeType": None, "fileUri": None},
    "functionCall": {"id": None, "name": None, "args": STRUCT},
    "functionResponse": {
        "id": None,
        "name": None,
        "response": STRUCT,
        "willContinue": None,
        "scheduling": None,
    },
    "tool": {
        "functionDeclarations": "functionDeclaration",
        "googleSearch": STRUCT,
        "googleSearchRetrieval": STRUCT,
        "codeExecution": STRUCT,
        "urlContext": STRUCT,
    },
    "functionDeclaration": {
        "name": None,
        "description": None,
        "parameters": SCHEMA,
        "parametersJsonSchema": SCHEMA,
        "response": SCHEMA,
        "responseJsonSchema": SCHEMA,
        "behavior": None,
    },
    "toolConfig": {"functionCallingConfig": "functionCallingConfig", "retrievalConfig": STRUCT},
    "functionCallingConfig": {"mode": None, "allowedFunctionNames": None},
    "generationConfig": {
        "temperature": None,
        "topP": None,
        "topK": None,
        "candidateCount": None,
        "maxOutputTokens": None,
        "stopSequences": None,
        "presencePenalty": None,
        "frequencyPenalty": None,
        "seed": None,
        "responseMimeType": None,
        "responseSchema": SCHEMA,
        "responseJsonSchema": ANY,
        "responseModalities": None,
        "responseLogprobs": None,
        "logprobs": None,
        "mediaResolution": None,
        "speechConfig": STRUCT,
        "thinkingConfig": "thinkingConfig",
        "imageConfig": "imageConfig",
    },
    "thinkingConfig": {"includeThoughts": None, "thinkingBudget": None, "thinkingLevel": None},
    "imageConfig": {"aspectRatio": None, "imageSize": None},
    "safetySetting": {"category": None, "threshold": None, "method": None},
}
_PROTO_TYPE = "type.googleapis.com/google.internal.cloud.code.v1internal"
REPEATED = frozenset({"contents", "parts", "tools", "functionDeclarations", "safetySettings"})


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def get(d: dict[str, Any] | None, name: str, default: Any = None) -> Any:
    """Read a proto3-JSON field under its camelCase or snake_case name."""
    if not isinstance(d, dict):
        return default
    if name in d:
        return d[name]
    return d.get(snake(name), default)


def _where(path: str) -> str:
    return f" at '{path}'" if path else ""


def check_fields(value: Any, message: str, path: str = "") -> None:
    """Reject unknown field names (either casing accepted) and non-object messages."""
    spec = MESSAGES[message]
    if not isinstance(value, dict):
        raise _bad(
            f"Invalid value{_where(path)} ({_PROTO_TYPE}.{message[0].upper() + message[1:]}), "
            f"{json.dumps(value)[:80]}",
            path,
        )
    for key, child_value in value.items():
        name = camel(key) if "_" in key else key
        if name not in spec:
            raise _bad(
                f'Invalid JSON payload received. Unknown name "{key}"{_where(path)}: Cannot find field.', path
            )
        child = spec[name]
        child_path = f"{path}.{snake(name)}" if path else snake(name)
        if child is None or child is ANY or child_value is None:
            continue
        if child is STRUCT:
            if not isinstance(child_value, dict):
                raise _bad(
                    f"Invalid value at '{child_path}' (type.googleapis.com/google.protobuf.Struct), "
                    f"{json.dumps(child_value)[:80]}",
                    child_path,
                )
        elif child is SCHEMA:
            check_schema(child_value, child_path)
        elif name in REPEATED:
            if not isinstance(child_value, list):
                raise _bad(
                    f"Invalid value at '{child_path}', {json.dumps(child_value)[:80]}: "
                    "Starting an object on a repeated field.",
                    child_path,
                )
            for i, item in enumerate(child_value):
                check_fields(item, child, f"{child_path}[{i}]")
        elif isinstance(child_value, list):
            raise _bad(
                f'Invalid JSON payload received. Unknown name "{key}"{_where(path)}: '
                "Proto field is not repeating, cannot start list.",
                path,
            )
        else:
            check_fields(child_value, child, child_path)


def check_schema(schema: Any, path: str) -> None:
    """Reject JSON-schema keywords the upstream does not know (PROTOCOL §2.3)."""
    if not isinstance(schema, dict):
        return
    for key in schema:
        if key in FORBIDDEN_SCHEMA_KEYS:
            raise _bad(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field.", path
            )
    props = schema.get("properties")
    if isinstance(props, dict):
        for i, (name, sub) in enumerate(props.items()):
            check_schema(sub, f"{path}.properties[{i}].value")
            del name
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            check_schema(schema[key], f"{path}.{snake(key)}")
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list):
            for i, sub in enumerate(schema[key]):
                check_schema(sub, f"{path}.{snake(key)}[{i}]")


def parts_of(content: dict[str, Any]) -> list[dict[str, Any]]:
    parts = get(content, "parts") or []
    return [p for p in parts if isinstance(p, dict)]


def calls_of(content: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(j, p) for j, p in enumerate(parts_of(content)) if get(p, "functionCall") is not None]


def responses_of(content: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(j, p) for j, p in enumerate(parts_of(content)) if get(p, "functionResponse") is not None]


def thinking_settings(gen: dict[str, Any]) -> tuple[int | None, bool | None]:
    tc = get(gen, "thinkingConfig") or {}
    return get(tc, "thinkingBudget"), get(tc, "includeThoughts")


@dataclass
class IssuedSignature:
    family: str  # "gemini" | "claude"
    text: str  # the thinking text it signs (Claude); informational for Gemini


@dataclass
class ChatContext:
    """A parsed chat request, handed to ``responder`` callables and reply selection."""

    rpc: str
    account: Account
    body: dict[str, Any]
    model: str
    family: str
    request: dict[str, Any]
    contents: list[dict[str, Any]]
    generation_config: dict[str, Any]
    thinking: bool  # the model thinks for this request
    include_thoughts: bool
    functions: list[dict[str, Any]]
    last_user_text: str | None  # None when the conversation does not end with a user text turn
    prompt_tokens: int
    user_agent: str


def _function_declarations(request: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for tool in get(request, "tools") or []:
        out.extend(get(tool, "functionDeclarations") or [])
    return out


def _all_text(value: Any) -> int:
    """Characters of text (and call arguments/results) in a request, for a token estimate."""
    if isinstance(value, dict):
        n = len(value["text"]) if isinstance(value.get("text"), str) else 0
        for key in ("functionCall", "function_call", "functionResponse", "function_response"):
            if isinstance(value.get(key), dict):
                n += len(json.dumps(value[key]))
        return n + sum(_all_text(v) for k, v in value.items() if isinstance(v, (dict, list)) and k != "text")
    if isinstance(value, list):
        return sum(_all_text(v) for v in value)
    return 0


def estimate_tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def build_context(rpc: str, account: Account, body: dict[str, Any], ua: str) -> ChatContext:
    request = get(body, "request") or {}
    model = get(body, "model") or ""
    family = model_family(model)
    gen = get(request, "generationConfig") or {}
    budget, include = thinking_settings(gen)
    version = gemini_version(model)
    if family == "claude":
        thinking = (budget is not None and budget != 0) or (budget is None and bool(include))
    else:
        # Gemini >= 3 thinks at its own default depth without a thinkingConfig (PROTOCOL §13.5).
        thinking = thinking_only(model) or model.endswith("-thinking")
        thinking = thinking or (version is not None and version >= (3, 0) and not is_image_model(model))
        thinking = thinking or (budget is not None and budget != 0)
    contents = [c for c in (get(request, "contents") or []) if isinstance(c, dict)]
    last_user_text = None
    if contents and get(contents[-1], "role") == "user" and not responses_of(contents[-1]):
        last_user_text = "".join(get(p, "text") or "" for p in parts_of(contents[-1]))
    return ChatContext(
        rpc=rpc,
        account=account,
        body=body,
        model=model,
        family=family,
        request=request,
        contents=contents,
        generation_config=gen,
        thinking=bool(thinking),
        include_thoughts=bool(include),
        functions=_function_declarations(request),
        last_user_text=last_user_text,
        prompt_tokens=estimate_tokens(
            _all_text(get(request, "contents")) + _all_text(get(request, "systemInstruction"))
        ),
        user_agent=ua,
    )


def validate_request_shape(body: dict[str, Any]) -> None:
    """Field names, types, contents, roles, tools (model-independent)."""
    check_fields(body, "envelope")
    request = get(body, "request")
    if not isinstance(request, dict) or not get(request, "contents"):
        raise _bad("* GenerateContentRequest.contents: contents is not specified\n")
    for i, content in enumerate(get(request, "contents")):
        role = get(content, "role")
        if role not in ("user", "model"):
            raise _bad("Please use a valid role: user, model.")
        if not get(content, "parts"):
            raise _bad(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n")
    tools = get(request, "tools") or []
    has_search = any(get(t, "googleSearch") is not None for t in tools)
    has_functions = False
    for i, tool in enumerate(tools):
        for j, decl in enumerate(get(tool, "functionDeclarations") or []):
            has_functions = True
            name = get(decl, "name") or ""
            if not FUNCTION_NAME_RE.match(name):
                raise _bad(
                    f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].name: Invalid function "
                    "name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), "
                    "underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64.\n"
                )
    if has_search and has_functions:
        raise _bad("Multiple tools are supported only when they are all search tools.")


# PROTOCOL §13.5: thinkingLevel values; Pro models take no "minimal" (CPA-0822 registry).
THINKING_LEVELS = ("minimal", "low", "medium", "high")
_IMAGE_REQUEST_ID_RE = re.compile(r"^image_gen/\d+/[0-9a-fA-F-]{36}/12$")
_IMAGE_GENERATION_FIELDS = frozenset({"candidateCount", "imageConfig"})


def validate_image_request(body: dict[str, Any]) -> None:
    """Image models take the ``image_gen`` form only (PROTOCOL §13.3)."""
    model = get(body, "model")
    if get(body, "requestType") != "image_gen":
        raise _bad(f"Model {model} only supports requestType image_gen.")
    if not _IMAGE_REQUEST_ID_RE.match(str(get(body, "requestId") or "")):
        raise _bad("Invalid request_id for image generation: expected image_gen/<ms>/<uuid>/12.")
    request = get(body, "request") or {}
    for name in ("systemInstruction", "tools", "toolConfig"):
        if get(request, name) is not None:
            raise _bad(f"{snake(name)} is not supported for image generation.")
    for key in get(request, "generationConfig") or {}:
        name = camel(key) if "_" in key else key
        if name not in _IMAGE_GENERATION_FIELDS:
            raise _bad(f"generation_config.{snake(name)} is not supported for image generation.")


def validate_function_turns(contents: list[dict[str, Any]]) -> None:
    """Gemini rule: N calls answered by one user turn with N responses."""
    for i, content in enumerate(contents):
        responses = responses_of(content)
        if not responses:
            continue
        prev_calls = calls_of(contents[i - 1]) if i > 0 and get(contents[i - 1], "role") == "model" else []
        if not prev_calls:
            raise _bad(
                "Please ensure that function response turn comes immediately after a function call turn."
            )
        if len(responses) != len(prev_calls):
            raise _bad(
                "Please ensure that the number of function response parts is equal to the number of "
                "function call parts of the function call turn."
            )


def validate_gemini(ctx: ChatContext, signatures: dict[str, IssuedSignature], strict: bool) -> None:
    budget, _ = thinking_settings(ctx.generation_config)
    thinking_config = get(ctx.generation_config, "thinkingConfig") or {}
    if budget is not None and get(thinking_config, "thinkingLevel") is not None:
        raise _bad("You can only set only one of thinking budget and thinking level.")
    if budget == 0 and thinking_only(ctx.model):
        raise _bad("Budget 0 is invalid. This model only works in thinking mode.")
    level = get(thinking_config, "thinkingLevel")
    pro = "-pro" in ctx.model or ctx.model == "gemini-pro-agent"
    if level is not None and (level not in THINKING_LEVELS or (pro and level == "minimal")):
        raise _bad(f"Thinking level {str(level).upper()} is not supported for this model.")
    if rejects_prefill(ctx.model) and get(ctx.contents[-1], "role") == "model":
        raise _bad("Please ensure that multiturn requests end with a user turn or a function response turn.")
    validate_function_turns(ctx.contents)
    version = gemini_version(ctx.model)
    if version is None or version < (3, 0):
        return
    # Gemini 3 checks signatures of the current turn: everything after the last user turn
    # that is not made of function responses only.
    start = 0
    for i, content in enumerate(ctx.contents):
        parts = parts_of(content)
        if get(content, "role") == "user" and any(get(p, "functionResponse") is None for p in parts):
            start = i + 1
    position = 0
    for content in ctx.contents[start:]:
        for _, part in calls_of(content)[:1]:
            sig = get(part, "thoughtSignature")
            call = get(part, "functionCall")
            if not sig:
                raise _bad(
                    "Function call is missing a thought_signature in functionCall parts. This is required "
                    "for tools to work correctly, and missing thought_signature may lead to degraded model "
                    f"performance. Additional data, function call `default_api:{get(call, 'name')}` , "
                    f"position {position + 1}. Please refer to "
                    "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
                )
            issued = signatures.get(sig)
            if strict and sig != SKIP_SIGNATURE and (issued is None or issued.family != "gemini"):
                raise _bad("Corrupted thought signature.")
        position += len(parts_of(content))


_CLAUDE_THINKING_DOC = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


def validate_claude(ctx: ChatContext, signatures: dict[str, IssuedSignature], strict: bool) -> None:
    contents = ctx.contents
    gen = ctx.generation_config
    for i, decl in enumerate(ctx.functions):
        if not CLAUDE_TOOL_NAME_RE.match(get(decl, "name") or ""):
            raise _anthropic(f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
    if get(contents[-1], "role") == "model":
        raise _anthropic(
            "This model does not support assistant message prefill. The conversation must end with a user message."
        )
    prev_call_ids: set[str] = set()
    for i, content in enumerate(contents):
        for j, part in enumerate(parts_of(content)):
            if get(part, "thought"):
                sig = get(part, "thoughtSignature")
                if not sig:
                    raise _anthropic(f"messages.{i}.content.{j}.thinking.signature: Field required")
                issued = signatures.get(sig)
                if strict and (
                    issued is None or issued.family != "claude" or issued.text != (get(part, "text") or "")
                ):
                    raise _anthropic(f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block")
            elif get(part, "text") == "" and len(part) == 1:
                raise _anthropic("messages: text content blocks must be non-empty")
        if get(content, "role") == "user":
            for j, part in responses_of(content):
                rid = get(get(part, "functionResponse"), "id")
                if not rid:
                    raise _anthropic(f"messages.{i}.content.{j}.tool_result.tool_use_id: Field required")
                if rid not in prev_call_ids:
                    raise _anthropic(
                        f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{rid}. Each `tool_result` block must have a corresponding `tool_use` block in the "
                        "previous message."
                    )
            prev_call_ids = set()
        else:
            ids = []
            for j, part in calls_of(content):
                cid = get(get(part, "functionCall"), "id")
                if not cid:
                    raise _anthropic(f"messages.{i}.content.{j}.tool_use.id: Field required")
                ids.append(cid)
            if ids:
                answered = set()
                if i + 1 < len(contents):
                    answered = {
                        get(get(p, "functionResponse"), "id") for _, p in responses_of(contents[i + 1])
                    }
                missing = [c for c in ids if c not in answered]
                if missing:
                    raise _anthropic(
                        f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately "
                        f"after: {', '.join(missing)}. Each `tool_use` block must have a corresponding "
                        "`tool_result` block in the next message."
                    )
            prev_call_ids = set(ids)
    if not ctx.thinking:
        return
    budget, _ = thinking_settings(gen)
    max_out = get(gen, "maxOutputTokens")
    if budget is not None and 0 < budget < 1024:
        raise _anthropic("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if budget is not None and budget > 0 and max_out is not None and max_out <= budget:
        raise _anthropic(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at "
            f"{_CLAUDE_THINKING_DOC}#max-tokens-and-context-window-size"
        )
    top_p = get(gen, "topP")
    if top_p is not None and top_p < 0.95:
        raise _anthropic("`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled.")
    last_model = max((i for i, c in enumerate(contents) if get(c, "role") == "model"), default=None)
    if last_model is not None and calls_of(contents[last_model]):
        first = parts_of(contents[last_model])[0]
        if not get(first, "thought"):
            found = "tool_use" if get(first, "functionCall") is not None else "text"
            raise _anthropic(
                f"messages.{last_model}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
                f"`{found}`. When `thinking` is enabled, a final `assistant` message must start with a thinking "
                "block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you "
                "include thinking blocks from previous turns. To avoid this requirement, disable `thinking`. "
                f"Please consult our documentation at {_CLAUDE_THINKING_DOC}"
            )


def parse_version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def ua_version(user_agent: str) -> tuple[int, ...] | None:
    """The client version an ``antigravity/[hub/]<v> <os>/<arch>`` User-Agent reports."""
    m = UA_RE.match(user_agent)
    return parse_version(m.group(1)) if m else None


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


_AUTO = object()


@dataclass
class Account:
    email: str
    refresh_token: str
    access_token: str
    expires_in: int
    project: str | None
    tier: str
    paid_tier: str | None
    ineligible: str | None
    onboard_polls: int
    onboard_project: str
    onboard_calls: int = 0
    # The free-tier "starter" shape (PROTOCOL §13.6): no remainingFraction for Claude/GPT, even unused.
    starter: bool = False
    rotate_next_refresh: bool = False
    rotate_revokes_old: bool = True

    @property
    def paid(self) -> bool:
        return bool(self.paid_tier) and "free" not in str(self.paid_tier).lower()


@dataclass
class Transport:
    """How a streamed reply travels. Set ``double.transport`` (global) or queue per request."""

    crlf: bool = False  # "\r\n" line endings
    split: int = 1  # cut each write into this many pieces (byte-wise, may cut UTF-8 chars)
    split_pause: float = 0.005  # seconds between those pieces
    coalesce: int = 1  # SSE events per write
    usage: str | None = None  # "every" (cumulative) | "last" | "separate"; None: Gemini every, Claude last
    trailing_empty: bool = False  # finishReason on an extra frame with an empty text part
    gzip: bool = False  # gzip (flushed per write) when the request accepts it; unary too
    first_byte_delay: float = 0.0  # before the response headers
    first_frame_delay: float = 0.0  # after the headers, before the first event
    frame_delay: float = 0.0  # between writes
    break_after: int | None = None  # send N events and half of the next, then drop the connection
    pretty: bool = True  # pretty-print unary JSON
    snake_case: bool = False  # parts spelled thought_signature / inline_data{mime_type} (PROTOCOL §13.8)
    keepalive: float = 0.0  # send ": keep-alive" SSE comments this often while a delay runs


@dataclass
class Scripted:
    reply: Reply | Callable[[ChatContext], Reply] | None
    transport: Transport | None = None
    email: str | None = None
    model: str | None = None
    times: int = 1


@dataclass
class Injection:
    """An error answered instead of the real reply, ``times`` times."""

    status: int
    body: Any  # dict/list, or callable(model, now)
    times: int = 1
    rpcs: tuple[str, ...] = CHAT_RPCS
    email: str | None = None
    model: str | None = None
    array: bool = False
    event_stream: bool = False
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    fired: int = 0


@dataclass
class RecordedRequest:
    rpc: str  # streamGenerateContent, token, userinfo, ...
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: Any  # parsed JSON, form dict, or None
    raw: bytes
    time: float
    account: str | None = None  # email the bearer / refresh token / code belongs to
    status: int | None = None
    injected: bool = False
    reply_kind: str | None = None
    frames: list[dict[str, Any]] = field(default_factory=list)  # SSE events sent (or the unary body)
    usage: dict[str, Any] | None = None  # last usageMetadata sent
    completed: bool = False
    disconnected: bool = False

    @property
    def model(self) -> str | None:
        return get(self.body, "model") if isinstance(self.body, dict) else None

    @property
    def project(self) -> str | None:
        return get(self.body, "project") if isinstance(self.body, dict) else None

    @property
    def inner(self) -> dict[str, Any]:
        return (get(self.body, "request") or {}) if isinstance(self.body, dict) else {}

    @property
    def contents(self) -> list[dict[str, Any]]:
        return get(self.inner, "contents") or []

    @property
    def generation_config(self) -> dict[str, Any]:
        return get(self.inner, "generationConfig") or {}

    @property
    def bearer(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth[:7].lower() == "bearer " else None


class UpstreamDouble:
    """Google's side of antigv, in one process. All state is plain attributes; see module doc."""

    def __init__(
        self,
        *,
        client_id: str = ANTIGRAVITY_CLIENT_ID,
        client_secret: str = ANTIGRAVITY_CLIENT_SECRET,
        profile: str = "default",
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.accounts: dict[str, Account] = {}
        self.models: dict[str, dict[str, Any]] = default_models()
        # PROTOCOL §13.4: old id -> new id (listed by fetchAvailableModels) and retired id -> replacement
        # named in the retirement text a direct request for it gets.
        self.deprecated_ids: dict[str, str] = default_deprecated_ids()
        self.retired_models: dict[str, str] = default_retired_models()
        self.quota_groups: dict[str, tuple[str, ...]] = dict(QUOTA_GROUPS)
        self.requests: list[RecordedRequest] = []
        self.record = True
        # Steering knobs.
        self.transport = Transport()
        self.responder: Callable[[ChatContext], Reply | None] | None = None
        self.quota_cost = 0.01  # fraction each successful chat takes from its (account, group)
        self.quota_window = 5 * 3600.0  # seconds until a fresh bucket resets
        self.token_delay = 0.0  # seconds /token waits before answering
        self.check_user_agent = True
        # Client version gate (PROTOCOL §13.1, §13.12): below min_version the outdated-client text;
        # below new_model_min_version a 404 for the models in new_models.
        self.min_version: str | None = OUTDATED_BELOW
        self.new_models: set[str] = set(NEW_MODELS)
        self.new_model_min_version = NEW_MODEL_MIN_VERSION
        # The hub's auto-updater manifest: its version (None: 404), or a raw body / status instead.
        self.manifest_version: str | None = MANIFEST_VERSION
        self.manifest_body: str | None = None
        self.manifest_status = 200
        self.strict_signatures = True  # unknown (non-issued) signatures are rejected
        self.accept_any_token = False  # unknown bearers act as a paid bench account
        self.error_array = False  # wrap v1internal error bodies in [ ... ]
        self.stream_errors_as_event_stream = False  # Content-Type: text/event-stream on stream errors
        self.signatures: dict[str, IssuedSignature] = {}
        self.refresh_counts: Counter[str] = Counter()
        self._access: dict[str, tuple[str, float]] = {}  # access token -> (email, expires_at)
        self._refresh: dict[str, str] = {}  # refresh token -> email
        self._revoked: set[str] = set()
        self._codes: dict[str, str] = {}  # auth code -> email
        self._logins: list[str] = []  # emails for /o/oauth2/v2/auth redirects
        self._quota: dict[tuple[str, str], list[float]] = {}  # (email, group) -> [fraction, reset_ts]
        self._weekly: dict[tuple[str, str], list[float]] = {}  # the same, weekly windows (PROTOCOL §13.6)
        self._costs: dict[tuple[str | None, str | None], float] = {}
        self._script: list[Scripted] = []
        self._injections: list[Injection] = []
        self._skew = 0.0
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None
        self.app = self._make_app()
        if profile == "bench":
            self.apply_bench_profile()

    # ---------------------------------------------------------------- lifecycle

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1internal:{rpc}", self._v1internal)
        app.router.add_post("/token", self._token)
        app.router.add_get("/oauth2/v2/userinfo", self._userinfo)
        app.router.add_get("/oauth2/v1/userinfo", self._userinfo)
        app.router.add_get("/o/oauth2/v2/auth", self._authorize)
        app.router.add_get("/o/oauth2/auth", self._authorize)
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/manifest/{name}", self._manifest)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0]
        self.base_url = f"http://{host}:{bound[1]}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def apply_bench_profile(self) -> None:
        """~20 ms to first token, 20 chunks ~3 ms apart, usage on the last frame, no limits."""
        self.accept_any_token = True
        self.quota_cost = 0.0
        self.record = False
        self.check_user_agent = False
        self.min_version = None
        self.new_models = set()
        self.transport = Transport(first_byte_delay=0.02, frame_delay=0.003, usage="last")
        self.responder = lambda ctx: text_reply([f"tok{i} " for i in range(20)], kind="bench")

    # ---------------------------------------------------------------- clock

    def now(self) -> float:
        return time.time() + self._skew

    def advance(self, seconds: float) -> None:
        """Move the double's clock forward (expires tokens, passes quota resets)."""
        self._skew += seconds

    # ---------------------------------------------------------------- accounts & tokens

    def add_account(
        self,
        email: str,
        *,
        refresh_token: str | None = None,
        access_token: str | None = None,
        expires_in: int = 3599,
        project: Any = _AUTO,
        tier: str = "free-tier",
        paid_tier: str | None = None,
        ineligible: str | None = None,
        onboard_polls: int = 2,
        onboard_project: str | None = None,
        starter: bool = False,
    ) -> Account:
        """``project``: default a fresh ``adj-noun-xxxxx``; ``None`` = not onboarded yet.
        ``paid_tier`` e.g. ``"g1-pro-tier"``; ``ineligible`` e.g. ``"INELIGIBLE_ACCOUNT"``;
        ``onboard_project``: what onboarding assigns (default a fresh id; ``""``: none);
        ``starter``: the free-tier quota shape without Claude/GPT fractions (PROTOCOL §13.6)."""
        acc = Account(
            email=email,
            refresh_token=refresh_token or "1//double-" + secrets.token_urlsafe(32),
            access_token="",
            expires_in=expires_in,
            project=random_project_id() if project is _AUTO else project,
            tier=tier,
            paid_tier=paid_tier,
            ineligible=ineligible,
            onboard_polls=onboard_polls,
            onboard_project=random_project_id() if onboard_project is None else onboard_project,
            starter=starter,
        )
        self.accounts[email] = acc
        self._refresh[acc.refresh_token] = email
        self.issue_access_token(acc, access_token)
        return acc

    def account(self, who: str | Account) -> Account:
        """Look up by e-mail, refresh token or access token."""
        if isinstance(who, Account):
            return who
        if who in self.accounts:
            return self.accounts[who]
        email = self._refresh.get(who) or (self._access.get(who) or (None,))[0]
        if email is None:
            raise KeyError(who)
        return self.accounts[email]

    def issue_access_token(self, who: str | Account, token: str | None = None) -> str:
        acc = self.account(who)
        token = token or "ya29.double-" + secrets.token_urlsafe(32)
        self._access[token] = (acc.email, self.now() + acc.expires_in)
        acc.access_token = token
        return token

    def expire_access_token(self, token: str | None = None, *, account: str | Account | None = None) -> None:
        """Expire one access token (or an account's current one)."""
        if token is None:
            token = self.account(account).access_token  # type: ignore[arg-type]
        email, _ = self._access[token]
        self._access[token] = (email, self.now() - 1)

    def access_token_valid(self, token: str) -> bool:
        entry = self._access.get(token)
        return entry is not None and entry[1] > self.now()

    def add_auth_code(self, code: str, email: str) -> None:
        """``/token`` with ``grant_type=authorization_code&code=<code>`` returns ``email``'s tokens."""
        self._codes[code] = email

    def queue_login(self, email: str) -> None:
        """The next ``GET /o/oauth2/v2/auth`` redirects to ``redirect_uri`` with a code for ``email``."""
        self._logins.append(email)

    def revoke(self, refresh_token: str | Account, *, access_tokens: bool = False) -> None:
        if isinstance(refresh_token, Account):
            refresh_token = refresh_token.refresh_token
        self._revoked.add(refresh_token)
        if access_tokens:
            email = self._refresh.get(refresh_token)
            for tok, (e, _) in list(self._access.items()):
                if e == email:
                    self._access[tok] = (e, 0.0)

    def rotate_on_next_refresh(self, who: str | Account, *, revoke_old: bool = True) -> None:
        """The next refresh for this account also returns a new ``refresh_token``."""
        acc = self.account(who)
        acc.rotate_next_refresh = True
        acc.rotate_revokes_old = revoke_old

    def refresh_count(self, refresh_token: str | Account) -> int:
        if isinstance(refresh_token, Account):
            refresh_token = refresh_token.refresh_token
        return self.refresh_counts[refresh_token]

    # ---------------------------------------------------------------- quota

    def group_of(self, model: str) -> str:
        """A group's name, a model named in it, or one its patterns take ("!" leaves out)."""
        for group, entries in self.quota_groups.items():
            if model == group or model in entries:
                return group
        for group, entries in self.quota_groups.items():
            taken = [e for e in entries if not e.startswith("!")]
            left_out = [e[1:] for e in entries if e.startswith("!")]
            if any(fnmatch.fnmatchcase(model, e) for e in taken) and not any(
                fnmatch.fnmatchcase(model, e) for e in left_out
            ):
                return group
        return model

    def _bucket(self, email: str, group: str, window: str = FIVE_HOURS) -> list[float]:
        """[fraction, reset_ts] of one window; a window past its reset starts full again."""
        now = self.now()
        store = self._quota if window == FIVE_HOURS else self._weekly
        bucket = store.get((email, group))
        if bucket is None or bucket[1] <= now:
            length = self.quota_window if window == FIVE_HOURS else WINDOW_SECONDS[window]
            bucket = [1.0, now + length]
            store[(email, group)] = bucket
        return bucket

    def _windows(self, email: str, group: str) -> list[list[float]]:
        """The windows a chat of this group draws on: 5-hour, and weekly for a family bucket."""
        windows = [self._bucket(email, group)]
        if group in SUMMARY_BUCKETS:
            windows.append(self._bucket(email, group, WEEKLY))
        return windows

    def set_quota(
        self,
        who: str | Account,
        group_or_model: str,
        fraction: float,
        reset_time: float | str | datetime | None = None,
        *,
        window: str = FIVE_HOURS,
    ) -> None:
        """``reset_time``: seconds from now, RFC 3339 string or datetime (default: 4h30m away).
        ``window``: ``"5h"`` (also fetchAvailableModels' figure) or ``"weekly"`` (summary only)."""
        acc = self.account(who)
        reset = _as_timestamp(reset_time, self.now(), 4 * 3600 + 30 * 60 + 28.06)
        store = self._quota if window == FIVE_HOURS else self._weekly
        store[(acc.email, self.group_of(group_or_model))] = [max(0.0, float(fraction)), reset]

    def quota(self, who: str | Account, group_or_model: str, window: str = FIVE_HOURS) -> float:
        return self._bucket(self.account(who).email, self.group_of(group_or_model), window)[0]

    def set_quota_cost(self, cost: float, *, account: str | Account | None = None, model: str | None = None):
        """Per-request cost, optionally only for one account and/or group (``quota_cost`` is global)."""
        email = self.account(account).email if account is not None else None
        self._costs[(email, self.group_of(model) if model else None)] = cost

    def _cost(self, email: str, group: str) -> float:
        for key in ((email, group), (email, None), (None, group)):
            if key in self._costs:
                return self._costs[key]
        return self.quota_cost

    # ---------------------------------------------------------------- steering

    def script(
        self,
        *replies: Reply | Callable[[ChatContext], Reply] | None,
        transport: Transport | None = None,
        account: str | Account | None = None,
        model: str | None = None,
        times: int = 1,
    ) -> None:
        """Queue replies for the next matching chat requests (each used ``times`` times).
        ``None`` as reply = the normal choice, with ``transport`` applied."""
        email = self.account(account).email if account is not None else None
        for reply in replies or (None,):
            self._script.append(Scripted(reply, transport, email, model, times))

    def next_transport(self, times: int = 1, **changes: Any) -> None:
        """The next ``times`` chat requests use the global transport with ``changes``."""
        self.script(None, transport=replace(self.transport, **changes), times=times)

    def set_transport(self, **changes: Any) -> None:
        self.transport = replace(self.transport, **changes)

    def fail(
        self,
        kind: str | int,
        *,
        times: int = 1,
        rpc: str | tuple[str, ...] = "chat",
        account: str | Account | None = None,
        model: str | None = None,
        body: Any = None,
        array: bool = False,
        event_stream: bool = False,
        delay: float = 0.0,
        headers: dict[str, str] | None = None,
    ) -> Injection:
        """Answer the next ``times`` matching requests with an error instead.

        ``kind``: one of ``ERROR_KINDS`` (quota, rate_limit, capacity, capacity_503, internal,
        unauthenticated, permission_denied, validation_required, banned, project_invalid,
        not_found, credits, no_capacity_503, invalid_argument) or an HTTP status with ``body``.
        ``rpc``: ``"chat"`` (both chat methods), a v1internal method name, ``"token"``,
        ``"userinfo"``, or a tuple.
        """
        if isinstance(kind, str):
            status, builder = ERROR_KINDS[kind]
            body = body if body is not None else builder
        else:
            status = kind
            if body is None:
                body = google_error(status, "UNKNOWN", f"Injected error {status}")
        rpcs = (rpc,) if isinstance(rpc, str) else tuple(rpc)
        rpcs = tuple(r for name in rpcs for r in (CHAT_RPCS if name == "chat" else (name,)))
        inj = Injection(
            status=status,
            body=body,
            times=times,
            rpcs=rpcs,
            email=self.account(account).email if account is not None else None,
            model=model,
            array=array,
            event_stream=event_stream,
            delay=delay,
            headers=headers or {},
        )
        self._injections.append(inj)
        return inj

    def reset_steering(self) -> None:
        self._script.clear()
        self._injections.clear()
        self.transport = Transport()
        self.responder = None

    # ---------------------------------------------------------------- recorded requests

    def requests_for(self, rpc: str) -> list[RecordedRequest]:
        rpcs = CHAT_RPCS if rpc == "chat" else (rpc,)
        return [r for r in self.requests if r.rpc in rpcs]

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return self.requests_for("chat")

    @property
    def token_calls(self) -> list[RecordedRequest]:
        return self.requests_for("token")

    def last_chat(self) -> RecordedRequest:
        return self.chat_requests[-1]

    def last_chat_body(self) -> dict[str, Any]:
        return self.chat_requests[-1].body

    def clear_requests(self) -> None:
        self.requests.clear()

    # ================================================================ handlers

    async def _begin(self, request: web.Request, rpc: str) -> RecordedRequest:
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
        )
        if self.record:
            self.requests.append(rec)
        return rec

    def _error_response(self, rec: RecordedRequest, err: UpstreamError, *, array=False, event_stream=False):
        body = err.body
        google = rec.rpc in V1INTERNAL_RPCS
        if google and (array or self.error_array) and isinstance(body, dict):
            body = [body]
        ctype = "application/json; charset=UTF-8"
        if rec.rpc == "streamGenerateContent" and (event_stream or self.stream_errors_as_event_stream):
            ctype = "text/event-stream"
        rec.status = err.status
        text = json.dumps(body, indent=2) if google else json.dumps(body)
        return web.Response(
            status=err.status, body=text.encode(), headers={"Content-Type": ctype, **err.headers}
        )

    def _authenticate(self, rec: RecordedRequest) -> Account:
        token = rec.bearer
        if not token:
            raise UpstreamError(401, unauthenticated_body("CREDENTIALS_MISSING"), _www_auth())
        entry = self._access.get(token)
        if entry is None:
            if self.accept_any_token:
                return self._bench_account(rec)
            raise UpstreamError(401, unauthenticated_body("ACCESS_TOKEN_TYPE_UNSUPPORTED"), _www_auth())
        if entry[1] <= self.now():
            raise UpstreamError(401, unauthenticated_body("ACCESS_TOKEN_EXPIRED"), _www_auth())
        rec.account = entry[0]
        return self.accounts[entry[0]]

    def _bench_account(self, rec: RecordedRequest) -> Account:
        acc = self.accounts.get("bench@example.com") or self.add_account(
            "bench@example.com", paid_tier="g1-pro-tier", expires_in=10**9
        )
        rec.account = acc.email
        return acc

    async def _injected(
        self, rec: RecordedRequest, email: str | None, model: str | None
    ) -> web.Response | None:
        for inj in self._injections:
            if inj.times <= 0 or rec.rpc not in inj.rpcs:
                continue
            if inj.email is not None and inj.email != email:
                continue
            if inj.model is not None and inj.model != model:
                continue
            inj.times -= 1
            inj.fired += 1
            rec.injected = True
            if inj.delay:
                await asyncio.sleep(inj.delay)
            body = inj.body(model or "", self.now()) if callable(inj.body) else inj.body
            err = UpstreamError(inj.status, body, inj.headers)
            return self._error_response(rec, err, array=inj.array, event_stream=inj.event_stream)
        return None

    async def _manifest(self, request: web.Request) -> web.Response:
        """The hub's auto-updater manifest, an electron-builder YAML (PROTOCOL §13.1)."""
        rec = await self._begin(request, "manifest")
        if self.manifest_body is None and self.manifest_version is None:
            rec.status = 404
            return web.Response(status=404, text="Not Found")
        text = self.manifest_body
        if text is None:
            text = (
                f"version: {self.manifest_version}\n"
                "files:\n"
                f"  - url: Antigravity-{self.manifest_version}-arm64-mac.zip\n"
                "    sha512: c2hhNTEy\n"
                "    size: 1\n"
                f"path: Antigravity-{self.manifest_version}-arm64-mac.zip\n"
                "sha512: c2hhNTEy\n"
                "releaseDate: '2026-11-20T10:00:00.000Z'\n"
            )
        rec.status = self.manifest_status
        return web.Response(status=self.manifest_status, text=text, content_type="text/yaml")

    async def _unknown(self, request: web.Request) -> web.Response:
        rec = await self._begin(request, "unknown")
        rec.status = 404
        return web.Response(status=404, text="Not Found", content_type="text/html")

    # ---------------------------------------------------------------- OAuth

    async def _token(self, request: web.Request) -> web.Response:
        rec = await self._begin(request, "token")
        form = dict(await request.post())
        rec.body = form
        if self.token_delay:
            await asyncio.sleep(self.token_delay)
        rt = form.get("refresh_token")
        code = form.get("code")
        rec.account = self._refresh.get(rt or "") or self._codes.get(code or "")
        injected = await self._injected(rec, rec.account, None)
        if injected is not None:
            return injected
        try:
            payload = self._token_grant(form)
        except UpstreamError as err:
            return self._error_response(rec, err)
        rec.status = 200
        return web.json_response(payload, headers={"Cache-Control": "no-cache, no-store, max-age=0"})

    def _token_grant(self, form: dict[str, Any]) -> dict[str, Any]:
        def oauth_error(status: int, error: str, description: str) -> UpstreamError:
            return UpstreamError(status, {"error": error, "error_description": description})

        if form.get("client_id") != self.client_id:
            raise oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if form.get("client_secret") != self.client_secret:
            raise oauth_error(401, "invalid_client", "Unauthorized")
        grant = form.get("grant_type")
        if grant == "authorization_code":
            code = form.get("code") or ""
            email = self._codes.pop(code, None)
            if email is None:
                raise oauth_error(400, "invalid_grant", "Malformed auth code.")
            if not form.get("redirect_uri"):
                raise oauth_error(400, "invalid_request", "Missing required parameter: redirect_uri")
            acc = self.accounts[email]
            if not self.access_token_valid(acc.access_token):
                self.issue_access_token(acc)
            return self._token_payload(acc, with_refresh=True)
        if grant == "refresh_token":
            rt = form.get("refresh_token") or ""
            self.refresh_counts[rt] += 1
            email = self._refresh.get(rt)
            if email is None or rt in self._revoked:
                raise oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
            acc = self.accounts[email]
            self.issue_access_token(acc)
            payload = self._token_payload(acc, with_refresh=False)
            if acc.rotate_next_refresh:
                acc.rotate_next_refresh = False
                if acc.rotate_revokes_old:
                    self._revoked.add(rt)
                acc.refresh_token = "1//double-" + secrets.token_urlsafe(32)
                self._refresh[acc.refresh_token] = email
                payload["refresh_token"] = acc.refresh_token
            return payload
        raise oauth_error(400, "unsupported_grant_type", "Invalid grant_type: " + str(grant))

    def _token_payload(self, acc: Account, *, with_refresh: bool) -> dict[str, Any]:
        payload = {
            "access_token": acc.access_token,
            "expires_in": max(0, int(self._access[acc.access_token][1] - self.now())),
            "scope": SCOPES,
            "token_type": "Bearer",
            "id_token": _fake_id_token(acc.email, self.client_id, self.now()),
        }
        if with_refresh:
            payload["refresh_token"] = acc.refresh_token
        return payload

    async def _userinfo(self, request: web.Request) -> web.Response:
        rec = await self._begin(request, "userinfo")
        token = rec.bearer or request.query.get("access_token")
        if token and self.access_token_valid(token):
            rec.account = self._access[token][0]
        injected = await self._injected(rec, rec.account, None)
        if injected is not None:
            return injected
        if rec.account is None:
            rec.status = 401
            body = google_error(
                401,
                "UNAUTHENTICATED",
                "Request is missing required authentication credential. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
            )
            return web.json_response(body, status=401, headers=_www_auth())
        rec.status = 200
        email = rec.account
        return web.json_response(
            {
                "id": str(int.from_bytes(email.encode()[:8].ljust(8, b"\0"), "big")),
                "email": email,
                "verified_email": True,
                "name": email.split("@")[0],
                "picture": "https://lh3.googleusercontent.com/a/default-user",
            }
        )

    async def _authorize(self, request: web.Request) -> web.Response:
        rec = await self._begin(request, "authorize")
        redirect = request.query.get("redirect_uri")
        if not redirect or not self._logins or request.query.get("client_id") != self.client_id:
            rec.status = 400
            return web.Response(status=400, text="Error 400: invalid_request")
        email = self._logins.pop(0)
        rec.account = email
        code = "4/double-" + secrets.token_urlsafe(24)
        self.add_auth_code(code, email)
        state = request.query.get("state", "")
        sep = "&" if "?" in redirect else "?"
        rec.status = 302
        raise web.HTTPFound(f"{redirect}{sep}state={state}&code={code}&scope={SCOPES.replace(' ', '%20')}")

    # ---------------------------------------------------------------- v1internal

    async def _v1internal(self, request: web.Request) -> web.StreamResponse:
        rpc = request.match_info["rpc"]
        rec = await self._begin(request, rpc)
        try:
            if rpc not in V1INTERNAL_RPCS:
                raise UpstreamError(404, not_found_body())
            try:
                rec.body = json.loads(rec.raw or b"{}")
            except ValueError as exc:
                raise _bad(f"Invalid JSON payload received. Unexpected token.\n{exc}") from None
            if not isinstance(rec.body, dict):
                raise _bad("Invalid JSON payload received. Expected an object.")
            account = self._authenticate(rec)
            injected = await self._injected(rec, account.email, rec.model)
            if injected is not None:
                return injected
            handler = {
                "streamGenerateContent": self._chat,
                "generateContent": self._chat,
                "fetchAvailableModels": self._fetch_models,
                "retrieveUserQuotaSummary": self._quota_summary,
                "loadCodeAssist": self._load_code_assist,
                "onboardUser": self._onboard_user,
                "countTokens": self._count_tokens,
            }[rpc]
            return await handler(request, rec, account)
        except UpstreamError as err:
            return self._error_response(rec, err)

    def _json(self, rec: RecordedRequest, payload: Any, *, pretty: bool = False) -> web.Response:
        rec.status = 200
        text = json.dumps(payload, indent=2) if pretty else json.dumps(payload)
        return web.Response(body=text.encode(), headers={"Content-Type": "application/json; charset=UTF-8"})

    def _check_project(self, account: Account, project: str | None, *, required: bool) -> None:
        if project == "":
            raise UpstreamError(400, empty_project_body())
        if account.paid or self.accept_any_token:
            return
        if not project and not required:
            return
        if account.project is None or project != account.project:
            raise UpstreamError(403, permission_denied_body())

    async def _fetch_models(self, request, rec: RecordedRequest, account: Account) -> web.Response:
        self._check_project(account, get(rec.body, "project"), required=False)
        models = {}
        for name, info in self.models.items():
            entry = dict(info)
            if not name.startswith("tab_"):
                group = self.group_of(name)
                fraction, reset = self._bucket(account.email, group)
                quota: dict[str, Any] = {"resetTime": rfc3339(reset)}
                # Proto3 drops zero: exhausted = no remainingFraction. The free "starter" shape
                # drops it for Claude/GPT even when unused (PROTOCOL §13.6).
                starter = (
                    account.starter and not account.paid and SUMMARY_BUCKETS.get(group, ("",))[0] == "3p"
                )
                if fraction > 0 and not starter:
                    quota = {"remainingFraction": round(fraction, 6), **quota}
                entry["quotaInfo"] = quota
            models[name] = entry
        payload: dict[str, Any] = {"models": models}
        if self.deprecated_ids:
            payload["deprecatedModelIds"] = {
                old: {"newModelId": new} for old, new in self.deprecated_ids.items()
            }
        return self._json(rec, payload)

    async def _quota_summary(self, request, rec: RecordedRequest, account: Account) -> web.Response:
        """retrieveUserQuotaSummary (PROTOCOL §13.6): a 5-hour and a weekly window per family bucket."""
        self._check_project(account, get(rec.body, "project"), required=False)
        groups = []
        for group, (family, display) in SUMMARY_BUCKETS.items():
            buckets = []
            for window in (FIVE_HOURS, WEEKLY):
                fraction, reset = self._bucket(account.email, group, window)
                bucket: dict[str, Any] = {"bucketId": f"{family}-{window}", "window": window}
                if fraction > 0:  # proto3 drops zero here too
                    bucket["remainingFraction"] = round(fraction, 6)
                bucket["resetTime"] = rfc3339(reset)
                bucket["displayName"] = "5-hour limit" if window == FIVE_HOURS else "Weekly limit"
                buckets.append(bucket)
            groups.append(
                {"displayName": display, "description": f"Quota shared by {display}", "buckets": buckets}
            )
        return self._json(rec, {"groups": groups})

    async def _load_code_assist(self, request, rec: RecordedRequest, account: Account) -> web.Response:
        body: dict[str, Any] = {}
        if account.project is not None or account.paid:
            body["currentTier"] = _tier(account.tier if not account.paid else "standard-tier")
        allowed = [] if account.ineligible == "INELIGIBLE_ACCOUNT" else [_tier("free-tier", default=True)]
        allowed.append(_tier("standard-tier", default=not allowed, user_project=True))
        body["allowedTiers"] = allowed
        if account.ineligible:
            body["ineligibleTiers"] = [
                {
                    "reasonCode": account.ineligible,
                    "reasonMessage": _INELIGIBLE_MESSAGES.get(account.ineligible, "Not eligible."),
                    "tierId": "free-tier",
                    "tierName": "Antigravity",
                }
            ]
        if account.project is not None:
            body["cloudaicompanionProject"] = account.project
        if account.paid_tier:
            body["paidTier"] = {
                "id": account.paid_tier,
                "name": _PAID_NAMES.get(account.paid_tier, "Google AI"),
            }
        body["gcpManaged"] = False
        return self._json(rec, body)

    async def _onboard_user(self, request, rec: RecordedRequest, account: Account) -> web.Response:
        tier_id = get(rec.body, "tierId")
        if not tier_id:
            raise _bad("tier_id is required.")
        if tier_id == "free-tier" and get(rec.body, "cloudaicompanionProject"):
            raise UpstreamError(400, google_error(400, "FAILED_PRECONDITION", "Precondition Failed"))
        if account.ineligible == "INELIGIBLE_ACCOUNT" and tier_id == "free-tier" and not account.paid:
            raise UpstreamError(
                400, google_error(400, "FAILED_PRECONDITION", "User is not eligible for the requested tier.")
            )
        # A paid account onboards with its paid tier (PROTOCOL §13.7), anyone with an allowed tier.
        known_tiers = {"free-tier", "standard-tier", "legacy-tier", account.paid_tier}
        if tier_id not in known_tiers:
            raise _bad(f"Invalid tier id: {tier_id}.")
        account.onboard_calls += 1
        op = f"operations/onboard-{account.email.split('@')[0]}"
        if account.project is None and account.onboard_calls <= account.onboard_polls:
            return self._json(rec, {"name": op, "done": False})
        if account.project is None and not account.onboard_project:
            # Done, but no project assigned: the account is kept without one.
            return self._json(rec, {"name": op, "done": True, "response": {}})
        if account.project is None:
            account.project = account.onboard_project
            account.tier = tier_id
        number = str(int.from_bytes(account.project.encode()[:5], "big"))
        return self._json(
            rec,
            {
                "name": op,
                "done": True,
                "response": {
                    "@type": "type.googleapis.com/google.internal.cloud.code.v1internal.OnboardUserResponse",
                    "cloudaicompanionProject": {
                        "id": account.project,
                        "name": account.project,
                        "projectNumber": number,
                    },
                },
            },
        )

    async def _count_tokens(self, request, rec: RecordedRequest, account: Account) -> web.Response:
        inner = get(rec.body, "request") or rec.body
        chars = _all_text(get(inner, "contents")) + _all_text(get(inner, "systemInstruction"))
        return self._json(rec, {"totalTokens": estimate_tokens(chars)})

    # ---------------------------------------------------------------- chat

    def _validate_chat(self, rec: RecordedRequest, account: Account, ctx_ua: str) -> ChatContext:
        """Checks in upstream order: UA form, model, project, shape, family rules.

        400: unknown field (either casing), wrong message type, empty contents, bad role, empty
        parts, bad function name, googleSearch+functions, forbidden schema keyword
        (const/$ref/$defs/$schema/default/examples), response/call count mismatch, Gemini-3 missing
        or foreign signature in the current turn, thinkingBudget 0 on thinking-only models (Gemini >= 3
        Pro, Flash >= 3.6), both thinkingBudget and thinkingLevel, a trailing model turn on Gemini >= 3.6,
        image models not in the ``image_gen`` form (PROTOCOL §13.3), maxOutputTokens above the model's
        limit (§13.5), Claude: prefill, unsigned/foreign/mismatched thought, empty text, missing/unmatched tool
        ids, budget < 1024, maxOutputTokens <= budget, topP < 0.95 with thinking, final model
        turn with calls not starting with a signed thought. 403 project. 404 model.
        """
        body = rec.body
        if self.check_user_agent and not UA_RE.match(ctx_ua):
            raise _bad(
                f"Unsupported client: User-Agent must look like antigravity/<version> <os>/<arch>, got {ctx_ua!r}"
            )
        model = get(body, "model")
        retired = isinstance(model, str) and model in self.retired_models and model not in self.models
        known = isinstance(model, str) and model in self.models and not is_internal_model(model)
        if not (known or retired):
            raise UpstreamError(404, not_found_body())
        version = ua_version(ctx_ua)
        if (
            model in self.new_models
            and version is not None
            and version < parse_version(self.new_model_min_version)
        ):
            raise UpstreamError(404, not_found_body())  # the version gate of PROTOCOL §13.1
        self._check_project(account, get(body, "project"), required=True)
        validate_request_shape(body)
        if is_image_model(model):
            validate_image_request(body)
        limit = (self.models.get(model) or {}).get("maxOutputTokens")
        requested = get(get(get(body, "request"), "generationConfig"), "maxOutputTokens")
        if isinstance(limit, int) and isinstance(requested, int) and requested > limit:
            # PROTOCOL §13.5: more than the model's limit is a 400.
            raise _bad(
                f"Unable to submit request because it has a maxOutputTokens value of {requested} but the "
                f"supported range is from 1 (inclusive) to {limit + 1} (exclusive). Update the value and try again."
            )
        ctx = build_context(rec.rpc, account, body, ctx_ua)
        if retired:  # answered with the retirement text (see _choose_reply)
            return ctx
        input_limit = (self.models.get(model) or {}).get("maxTokens")
        if isinstance(input_limit, int) and ctx.prompt_tokens > input_limit:
            # Longer than the model takes: Claude says so in Anthropic's words (PROTOCOL §8.2),
            # Gemini in Vertex's.
            if ctx.family == "claude":
                raise _anthropic(f"prompt is too long: {ctx.prompt_tokens} tokens > {input_limit} maximum")
            raise _bad(
                f"The input token count ({ctx.prompt_tokens}) exceeds the maximum number of tokens "
                f"allowed ({input_limit})."
            )
        if ctx.family == "claude":
            validate_claude(ctx, self.signatures, self.strict_signatures)
        else:
            validate_gemini(ctx, self.signatures, self.strict_signatures)
        return ctx

    async def _chat(self, request: web.Request, rec: RecordedRequest, account: Account) -> web.StreamResponse:
        stream = rec.rpc == "streamGenerateContent"
        if stream and request.query.get("alt") != "sse":
            raise _bad("streamGenerateContent needs ?alt=sse (the double only speaks SSE).")
        ua = request.headers.get("User-Agent", "")
        ctx = self._validate_chat(rec, account, ua)
        # Quota.
        group = self.group_of(ctx.model)
        windows = self._windows(account.email, group)
        exhausted = [w for w in windows if w[0] <= 0]
        if exhausted:  # usable only while every window is open; back at the later reset (§13.6)
            reset = max(w[1] for w in exhausted)
            raise UpstreamError(429, quota_exhausted_body(ctx.model, reset - self.now(), self.now()))
        reply, transport = self._choose_reply(ctx)
        if reply.kind not in ("version", "retired"):
            for window in windows:
                window[0] = max(0.0, round(window[0] - self._cost(account.email, group), 9))
        frames = self._render(reply, ctx, transport)
        rec.reply_kind = reply.kind
        if stream:
            return await self._send_stream(request, rec, frames, transport)
        return await self._send_unary(request, rec, frames, transport)

    def _choose_reply(self, ctx: ChatContext) -> tuple[Reply, Transport]:
        transport = self.transport
        if ctx.model in self.retired_models and ctx.model not in self.models:
            text = retirement_text(ctx.model, self.retired_models[ctx.model])
            return Reply("retired", [[text_part(text)]], "STOP", usage={}), transport
        if self.min_version:
            version = ua_version(ctx.user_agent)
            if version is not None and version < parse_version(self.min_version):
                return version_notice_reply(), transport
        for entry in self._script:
            if entry.email not in (None, ctx.account.email) or entry.model not in (None, ctx.model):
                continue
            entry.times -= 1
            if entry.times <= 0:
                self._script.remove(entry)
            transport = entry.transport or transport
            if entry.reply is not None:
                reply = entry.reply(ctx) if callable(entry.reply) else entry.reply
                return reply, transport
            break
        if self.responder is not None:
            reply = self.responder(ctx)
            if reply is not None:
                return reply, transport
        return self._reply_for(ctx), transport

    def _reply_for(self, ctx: ChatContext) -> Reply:
        """Markers, then the per-family default (see module doc)."""
        claude_thinking = ctx.family == "claude" and ctx.thinking
        markers = {m.group(1): m.group(2) for m in MARKER_RE.finditer(ctx.last_user_text or "")}
        if "tool" in markers or "parallel" in markers or "parallel-frames" in markers:
            count = 1 if "tool" in markers else 2
            wanted = markers.get("tool") or markers.get("parallel") or markers.get("parallel-frames")
            calls = self._pick_calls(ctx, wanted, count)
            if claude_thinking:
                return claude_thinking_reply(calls=calls, separate_frames="parallel" not in markers)
            thoughts = GEMINI_THOUGHTS if "think" in markers and ctx.include_thoughts else ()
            return tool_call_reply(
                calls,
                family=ctx.family,
                separate_frames="parallel-frames" in markers,
                signed=ctx.family == "gemini" and ctx.thinking,
                thoughts=thoughts if ctx.family != "claude" else (),
            )
        simple = {
            "image": image_reply,
            "length": max_tokens_reply,
            "safety": safety_reply,
            "empty": empty_reply,
            "version": version_notice_reply,
            "ws": whitespace_reply,
            "long": long_reply,
        }
        for name, builder in simple.items():
            if name in markers:
                reply = builder()
                if claude_thinking and name in ("ws", "length", "long"):
                    return _with_claude_thinking(reply)
                return reply
        if "utf8" in markers or "echo" in markers:
            if "echo" in markers:
                text = MARKER_RE.sub("", ctx.last_user_text or "").strip() or "(empty)"
                chunks = tuple(re.findall(r"\S+\s*|\s+", text))
            else:
                chunks = UTF8_CHUNKS
            if claude_thinking:
                return claude_thinking_reply(chunks=chunks)
            return text_reply(chunks, kind="echo" if "echo" in markers else "utf8")
        if "think" in markers:
            if ctx.family == "claude":
                return claude_thinking_reply() if ctx.thinking else text_reply(CLAUDE_CHUNKS)
            return gemini_thinking_reply(show_thoughts=ctx.include_thoughts)
        if ctx.model.endswith("-image"):
            return image_reply()
        if claude_thinking:
            return claude_thinking_reply()
        return text_reply(CLAUDE_CHUNKS if ctx.family == "claude" else GEMINI_CHUNKS)

    def _pick_calls(self, ctx: ChatContext, wanted: str | None, count: int) -> list[dict[str, Any]]:
        decls = {get(d, "name"): d for d in ctx.functions}
        if wanted:
            names = [n.strip() for n in wanted.split(",") if n.strip()]
        else:
            names = list(decls)[:count] or ["get_weather"]
        while len(names) < count:
            names.append(names[-1])
        calls = []
        for k, name in enumerate(names[:count] if not wanted else names, start=1):
            decl = decls.get(name) or {}
            schema = get(decl, "parameters") or get(decl, "parametersJsonSchema")
            calls.append({"name": name, "args": sample_args(schema, k)})
        return calls

    # ---------------------------------------------------------------- rendering

    def _render(self, reply: Reply, ctx: ChatContext, transport: Transport) -> list[dict[str, Any]]:
        """Reply -> list of frame dicts (``{"response": …, "traceId": …}``); issues signatures."""
        trace = trace_id()
        response_id = reply.response_id or (
            "msg_vrtx_" + _rand(24)
            if ctx.family == "claude"
            else _rand(22, string.ascii_letters + string.digits + "-_")
        )
        created = _create_time(self.now())
        usage_mode = transport.usage or ("last" if ctx.family == "claude" else "every")
        thinking_text = ""
        issued_parts: list[list[dict[str, Any]]] = []
        cand_chars = thought_chars = calls = images = 0
        cumulative: list[tuple[int, int]] = []
        for parts in reply.frames:
            out = []
            for part in parts:
                part = dict(part)
                if part.get("thought"):
                    thinking_text += part.get("text", "")
                    thought_chars += len(part.get("text", ""))
                elif "text" in part:
                    cand_chars += len(part["text"])
                if "functionCall" in part:
                    calls += 1
                if "inlineData" in part:
                    images += 1
                if part.get("thoughtSignature") == SIGN:
                    sig = new_signature()
                    family = "claude" if ctx.family == "claude" else "gemini"
                    self.signatures[sig] = IssuedSignature(family, thinking_text)
                    part["thoughtSignature"] = sig
                    thinking_text = ""
                out.append(part)
            issued_parts.append(out)
            cand = (math.ceil(cand_chars / 4) if cand_chars else 0) + 12 * calls + 258 * images
            cumulative.append((cand, math.ceil(thought_chars / 4) if thought_chars else 0))

        def usage(i: int) -> dict[str, Any]:
            if reply.usage is not None:
                return dict(reply.usage)
            cand, thoughts = cumulative[i]
            return usage_metadata(ctx.prompt_tokens, cand, thoughts, ctx.family)

        def make(parts, finish=None, use=None, candidates=True) -> dict[str, Any]:
            resp: dict[str, Any] = {}
            if candidates:
                cand: dict[str, Any] = {}
                if parts:
                    cand["content"] = {"role": "model", "parts": parts}
                if finish:
                    cand["finishReason"] = finish
                resp["candidates"] = [cand]
            if use is not None:
                resp["usageMetadata"] = use
            resp["modelVersion"] = ctx.model
            if ctx.family != "claude":
                resp["createTime"] = created
            resp["responseId"] = response_id
            return {"response": resp, "traceId": trace}

        frames = []
        n = len(issued_parts)
        for i, parts in enumerate(issued_parts):
            last = i == n - 1
            finish = reply.finish_reason if last and not transport.trailing_empty else None
            use = None
            if usage_mode == "every" or (usage_mode == "last" and last and not transport.trailing_empty):
                use = usage(i)
            frames.append(make(parts, finish, use))
        if n and transport.trailing_empty:
            use = usage(n - 1) if usage_mode in ("every", "last") else None
            frames.append(make([{"text": ""}], reply.finish_reason, use))
        if n and usage_mode == "separate":
            frames.append(make(None, use=usage(n - 1), candidates=False))
        if transport.snake_case:
            for frame in frames:
                for cand in frame["response"].get("candidates", ()):
                    for part in cand.get("content", {}).get("parts", ()):
                        _snake_case_part(part)
        return frames

    async def _send_stream(
        self, request: web.Request, rec: RecordedRequest, frames: list[dict], tr: Transport
    ) -> web.StreamResponse:
        if tr.first_byte_delay:
            await asyncio.sleep(tr.first_byte_delay)
        headers = {
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "x-cloudaicompanion-trace-id": frames[0]["traceId"] if frames else trace_id(),
            "server-timing": "gfet4t7; dur=42",
        }
        compressor = None
        if tr.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        resp = web.StreamResponse(status=200, headers=headers)
        rec.status = 200
        eol = b"\r\n" if tr.crlf else b"\n"
        events = [b"data: " + orjson.dumps(f) + eol + eol for f in frames]
        broken = tr.break_after is not None and tr.break_after < len(events)
        if broken:
            cut = events[tr.break_after]
            events = [*events[: tr.break_after], cut[: len(cut) // 2]]
        step = max(1, tr.coalesce)
        writes = [(b"".join(events[i : i + step]), frames[i : i + step]) for i in range(0, len(events), step)]
        if broken:  # the half event is not a frame the client can see
            writes[-1] = (writes[-1][0], writes[-1][1][:-1])

        async def send(data: bytes) -> None:
            if compressor is not None:
                data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
            await resp.write(data)

        try:
            await resp.prepare(request)
            for i, (data, sent) in enumerate(writes):
                delay = tr.first_frame_delay if i == 0 else tr.frame_delay
                while delay > 0 and tr.keepalive > 0:  # comments only: not progress (issue 11 item 23)
                    await asyncio.sleep(min(delay, tr.keepalive))
                    delay -= tr.keepalive
                    await send(b": keep-alive" + eol + eol)
                if delay > 0:
                    await asyncio.sleep(delay)
                for j, piece in enumerate(_split_bytes(data, tr.split)):
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
        rec.usage = next(
            (f["response"]["usageMetadata"] for f in reversed(frames) if "usageMetadata" in f["response"]),
            None,
        )
        return resp

    async def _send_unary(
        self, request: web.Request, rec: RecordedRequest, frames: list[dict], tr: Transport
    ) -> web.Response:
        if tr.first_byte_delay:
            await asyncio.sleep(tr.first_byte_delay)
        payload = merge_unary(frames)
        rec.frames = [payload]
        rec.usage = payload.get("response", {}).get("usageMetadata")
        rec.completed = True
        rec.status = 200
        text = (json.dumps(payload, indent=2) if tr.pretty else json.dumps(payload)).encode()
        headers = {"Content-Type": "application/json; charset=UTF-8"}
        if tr.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
            text = gzip.compress(text)
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=text, headers=headers)


# --------------------------------------------------------------------------------------
# Helpers used by the handlers
# --------------------------------------------------------------------------------------

_INELIGIBLE_MESSAGES = {
    "INELIGIBLE_ACCOUNT": "Your account is not eligible for this service.",
    "UNSUPPORTED_LOCATION": "This service is not available in your location.",
    "RESTRICTED_AGE": "You must be 18 or older to use this service.",
}
_PAID_NAMES = {"g1-pro-tier": "Google AI Pro", "g1-ultra-tier": "Google AI Ultra"}


def _tier(tier_id: str, *, default: bool = False, user_project: bool = False) -> dict[str, Any]:
    names = {"free-tier": "Antigravity", "standard-tier": "Gemini Code Assist", "legacy-tier": "Legacy"}
    d: dict[str, Any] = {"id": tier_id, "name": names.get(tier_id, tier_id)}
    if default:
        d["isDefault"] = True
    d["userDefinedCloudaicompanionProject"] = user_project
    return d


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _www_auth() -> dict[str, str]:
    return {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'}


def _fake_id_token(email: str, client_id: str, now: float) -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    claims = {
        "iss": "https://accounts.google.com",
        "aud": client_id,
        "email": email,
        "email_verified": True,
        "iat": int(now),
        "exp": int(now) + 3600,
        "sub": str(abs(hash(email))),
    }
    return f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}.{_rand(43)}"


def usage_metadata(prompt: int, candidates: int, thoughts: int, family: str) -> dict[str, Any]:
    """Cumulative usage; proto3 omits zero counts."""
    use: dict[str, Any] = {}
    if prompt:
        use["promptTokenCount"] = prompt
    if candidates:
        use["candidatesTokenCount"] = candidates
    if thoughts:
        use["thoughtsTokenCount"] = thoughts
    if prompt + candidates + thoughts:
        use["totalTokenCount"] = prompt + candidates + thoughts
    if family != "claude" and use:
        use["trafficType"] = "PROVISIONED_THROUGHPUT"
    return use


def _with_claude_thinking(reply: Reply) -> Reply:
    head = claude_thinking_reply(chunks=("x",))
    return Reply(
        reply.kind, head.frames[:-1] + reply.frames, reply.finish_reason, reply.usage, reply.response_id
    )


def _snake_case_part(part: dict[str, Any]) -> None:
    """The proto field names of a response part, as some replies spell them (PROTOCOL §13.8)."""
    if "thoughtSignature" in part:
        part["thought_signature"] = part.pop("thoughtSignature")
    if "inlineData" in part:
        inline = part.pop("inlineData")
        part["inline_data"] = {("mime_type" if k == "mimeType" else k): v for k, v in inline.items()}


def _split_bytes(data: bytes, pieces: int) -> list[bytes]:
    if pieces <= 1 or len(data) < 2:
        return [data]
    pieces = min(pieces, len(data))
    step = len(data) / pieces
    cuts = [round(step * i) for i in range(pieces + 1)]
    return [data[cuts[i] : cuts[i + 1]] for i in range(pieces) if cuts[i] < cuts[i + 1]]


def merge_unary(frames: list[dict[str, Any]]) -> dict[str, Any]:
    """Stream frames -> the unary ``generateContent`` body (no thought parts, texts merged)."""
    parts: list[dict[str, Any]] = []
    finish = None
    usage = None
    head: dict[str, Any] = {}
    for frame in frames:
        resp = frame["response"]
        head = {k: v for k, v in resp.items() if k in ("modelVersion", "createTime", "responseId")}
        usage = resp.get("usageMetadata", usage)
        for cand in resp.get("candidates", []):
            finish = cand.get("finishReason", finish)
            for part in cand.get("content", {}).get("parts", []):
                if part.get("thought"):
                    continue
                if (
                    "text" in part
                    and parts
                    and set(parts[-1]) <= {"text", "thoughtSignature"}
                    and "text" in parts[-1]
                ):
                    parts[-1] = {**parts[-1], "text": parts[-1]["text"] + part["text"]}
                    if "thoughtSignature" in part:
                        parts[-1]["thoughtSignature"] = part["thoughtSignature"]
                elif part.get("text") == "" and len(part) == 1:
                    continue
                else:
                    parts.append(dict(part))
    resp: dict[str, Any] = {}
    if parts or finish:
        cand = {"content": {"role": "model", "parts": parts}} if parts else {}
        if finish:
            cand["finishReason"] = finish
        resp["candidates"] = [cand]
    if usage is not None:
        resp["usageMetadata"] = usage
    resp.update(head)
    return {"response": resp, "traceId": frames[0]["traceId"] if frames else trace_id()}


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Spec-correct SSE parsing for tests: events split on blank lines, ``data:`` lines joined."""
    events = []
    for block in re.split(r"\r?\n\r?\n", text):
        data = [line[5:].lstrip(" ") for line in re.split(r"\r?\n", block) if line.startswith("data:")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


# --------------------------------------------------------------------------------------
# Standalone
# --------------------------------------------------------------------------------------


async def _serve(host: str, port: int, profile: str) -> None:
    double = UpstreamDouble(profile=profile)
    url = await double.start(host, port)
    print(f"upstream double ({profile}) listening on {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await double.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.upstream_double", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--profile", choices=("default", "bench"), default="default")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.profile))


if __name__ == "__main__":
    main()
