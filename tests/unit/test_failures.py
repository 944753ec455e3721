from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from antigv.backends.google.failures import (
    MIN_THROTTLE_DELAY,
    classify_error,
    context_overflow,
    parse_go_duration,
)
from antigv.config import FailoverConfig
from antigv.core.errors import (
    ContextTooLong,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from antigv.core.failures import ContextOverflow, FailureKind, UpstreamFailure, client_error
from antigv.gateway.failover import Attempts, Next, decide
from antigv.protocols.anthropic.errors import anthropic_error
from antigv.protocols.openai.errors import error_status, openai_error

NOW = datetime(2025, 11, 30, 1, 38, 22, tzinfo=UTC)
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"

# PROTOCOL Appendix A.4.
A4_QUOTA_EXHAUSTED = {
    "error": {
        "code": 429,
        "message": "You have exhausted your capacity on this model. Your quota will reset after 13h19m1s.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": ERROR_INFO,
                "reason": "QUOTA_EXHAUSTED",
                "domain": "cloudcode-pa.googleapis.com",
                "metadata": {
                    "model": "claude-sonnet-4-5-thinking",
                    "uiMessage": "true",
                    "quotaResetDelay": "13h19m1.20964964s",
                    "quotaResetTimeStamp": "2025-11-30T14:57:24Z",
                },
            },
            {"@type": RETRY_INFO, "retryDelay": "47941.209649640s"},
        ],
    }
}


def is_retryable_elsewhere(failure: UpstreamFailure) -> bool:
    """What the failover policy does with ``failure`` when no time is left to wait it out."""
    decision = decide(failure, 1, Attempts(deadline=0.0), FailoverConfig(), now=NOW, remaining=0.0)
    return decision.next is Next.OTHER_ACCOUNT


def google_error(
    code: int, status: str, message: str, reason: str | None = None, **extra: Any
) -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    if reason:
        details.append({"@type": ERROR_INFO, "reason": reason, "domain": "cloudcode-pa.googleapis.com"})
    if "metadata" in extra:
        details[0]["metadata"] = extra["metadata"]
    if "retry_delay" in extra:
        details.append({"@type": RETRY_INFO, "retryDelay": extra["retry_delay"]})
    return {"error": {"code": code, "message": message, "status": status, "details": details}}


def classify(status: int, body: Any, headers: dict[str, str] | None = None) -> UpstreamFailure:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return classify_error(status, raw, headers, now=NOW)


@pytest.mark.parametrize(
    "body",
    [A4_QUOTA_EXHAUSTED, [A4_QUOTA_EXHAUSTED]],
    ids=["object", "array"],
)
@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=UTF-8", "text/event-stream"],
)
def test_a4_quota_exhausted(body: Any, content_type: str) -> None:
    failure = classify(429, body, {"Content-Type": content_type})
    assert failure.kind is FailureKind.QUOTA_EXHAUSTED
    assert failure.status == 429
    assert failure.reason == "QUOTA_EXHAUSTED"
    assert failure.retry_after == pytest.approx(47941.20964964)
    assert failure.reset_at == datetime(2025, 11, 30, 14, 57, 24, tzinfo=UTC)
    assert failure.message.startswith("You have exhausted your capacity on this model.")
    assert is_retryable_elsewhere(failure)


def test_quota_reset_delay_is_used_without_retry_info() -> None:
    body = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You have exhausted your capacity on this model.",
        "QUOTA_EXHAUSTED",
        metadata={"quotaResetDelay": "13h19m1.20964964s", "quotaResetTimeStamp": "2025-11-30T14:57:24Z"},
    )
    failure = classify(429, body)
    assert failure.retry_after == pytest.approx(13 * 3600 + 19 * 60 + 1.20964964)
    assert failure.reset_at == datetime(2025, 11, 30, 14, 57, 24, tzinfo=UTC)


def test_quota_reset_timestamp_alone_gives_the_remaining_time() -> None:
    body = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "quota",
        "QUOTA_EXHAUSTED",
        metadata={"quotaResetTimeStamp": "2025-11-30T14:57:24Z"},
    )
    failure = classify(429, body)
    assert failure.retry_after == (datetime(2025, 11, 30, 14, 57, 24, tzinfo=UTC) - NOW).total_seconds()


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("You have exhausted your capacity on this model. Your quota will reset after 4h30m28s.", 16228),
        (
            "Individual quota reached. Please upgrade your subscription to increase your limits. "
            "Resets in 2h26m55s.",
            8815,
        ),
    ],
)
def test_delay_from_the_message_text(message: str, seconds: float) -> None:
    failure = classify(429, google_error(429, "RESOURCE_EXHAUSTED", message, "QUOTA_EXHAUSTED"))
    assert failure.retry_after == seconds
    assert failure.reset_at == NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [("120", 120.0), ("Sun, 30 Nov 2025 01:40:22 GMT", 120.0)],
    ids=["seconds", "http-date"],
)
def test_retry_after_header_is_the_last_resort(retry_after: str, seconds: float) -> None:
    failure = classify(429, b"Too Many Requests", {"retry-after": retry_after})
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after == seconds


def test_retry_info_wins_over_every_other_source() -> None:
    body = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Your quota will reset after 1h.",
        "QUOTA_EXHAUSTED",
        metadata={"quotaResetDelay": "45s"},
        retry_delay="25s",
    )
    assert classify(429, body, {"Retry-After": "99"}).retry_after == 25.0


def test_rate_limit_exceeded_has_its_sub_second_delay_floored() -> None:
    body = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You have exhausted your capacity on this model. Your quota will reset after 0s.",
        "RATE_LIMIT_EXCEEDED",
        metadata={"quotaResetDelay": "976.066617ms"},
        retry_delay="0.976066617s",
    )
    failure = classify(429, body)
    assert failure.kind is FailureKind.RATE_LIMITED
    assert failure.retry_after == MIN_THROTTLE_DELAY
    assert failure.reset_at == NOW + timedelta(seconds=MIN_THROTTLE_DELAY)
    assert is_retryable_elsewhere(failure)


def test_unknown_429_is_a_rate_limit_without_delay() -> None:
    failure = classify(429, google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"))
    assert failure.kind is FailureKind.RATE_LIMITED
    assert (failure.reason, failure.retry_after, failure.reset_at) == (None, None, None)


@pytest.mark.parametrize(("status", "status_text"), [(429, "RESOURCE_EXHAUSTED"), (503, "UNAVAILABLE")])
def test_model_capacity_exhausted(status: int, status_text: str) -> None:
    body = google_error(
        status,
        status_text,
        "No capacity available for model gemini-2.5-pro on the server",
        "MODEL_CAPACITY_EXHAUSTED",
        retry_delay="25s",
    )
    failure = classify(status, body)
    assert failure.kind is FailureKind.CAPACITY
    assert failure.retry_after == 25.0
    assert not is_retryable_elsewhere(failure)


def test_claude_error_embedded_as_json_string() -> None:
    anthropic = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 212000 tokens > 200000 maximum",
        },
        "request_id": "req_vrtx_011CV",
    }
    body = google_error(400, "INVALID_ARGUMENT", orjson.dumps(anthropic).decode())
    failure = classify(400, body, {"Content-Type": "text/event-stream"})
    assert failure.kind is FailureKind.INVALID_REQUEST
    assert failure.message == "prompt is too long: 212000 tokens > 200000 maximum"
    assert not is_retryable_elsewhere(failure)
    assert failure.context_overflow == ContextOverflow(prompt_tokens=212000, limit=200000)
    error = client_error(failure)
    assert isinstance(error, ContextTooLong)
    assert (error_status(error), error.code, error.prompt_tokens, error.limit) == (
        400,
        "context_length_exceeded",
        212000,
        200000,
    )
    # Both surfaces word it as their own API does, for the clients that act on it.
    assert openai_error(error)[1]["error"]["message"] == (
        "This model's maximum context length is 200000 tokens. However, your messages resulted in "
        "212000 tokens. Please reduce the length of the messages."
    )
    assert anthropic_error(error)[1]["error"] == {
        "type": "invalid_request_error",
        "message": "prompt is too long: 212000 tokens > 200000 maximum",
    }


def test_another_request_error_is_relayed_as_the_upstream_words_it() -> None:
    failure = classify(400, google_error(400, "INVALID_ARGUMENT", 'Unknown name "foo": Cannot find field.'))
    assert failure.context_overflow is None
    error = client_error(failure)
    assert (type(error), error.code, error.message) == (
        InvalidRequest,
        "upstream_invalid_request",
        'Unknown name "foo": Cannot find field.',
    )


@given(
    tokens=st.integers(min_value=0, max_value=10**12),
    limit=st.integers(min_value=0, max_value=10**12),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
)
def test_an_input_overflow_is_read_from_either_wording(
    tokens: int, limit: int, before: str, after: str
) -> None:
    for message in (
        f"{before}The input token count ({tokens}) exceeds the maximum number of tokens allowed ({limit}).{after}",
        f"{before}prompt is too long: {tokens} tokens > {limit} maximum{after}",
    ):
        assert context_overflow(message) == ContextOverflow(prompt_tokens=tokens, limit=limit)


@given(st.text(max_size=200))
def test_no_overflow_is_read_from_other_words(message: str) -> None:
    if "token" not in message.lower():
        assert context_overflow(message) is None


def test_an_overflow_counts_only_as_a_request_error() -> None:
    # Words that quote an overflow in a 5xx (a prompt echoed back) change nothing about it.
    failure = classify(500, google_error(500, "INTERNAL", "prompt is too long: 5 tokens > 1 maximum"))
    assert failure.kind is FailureKind.SERVER_ERROR and failure.context_overflow is None


def test_message_that_only_looks_like_json_is_kept() -> None:
    failure = classify(400, google_error(400, "INVALID_ARGUMENT", "{not json"))
    assert failure.message == "{not json"


def test_invalid_argument_keeps_the_upstream_message() -> None:
    message = 'Invalid JSON payload received. Unknown name "messages": Cannot find field.'
    failure = classify(400, google_error(400, "INVALID_ARGUMENT", message))
    assert failure.kind is FailureKind.INVALID_REQUEST
    assert client_error(failure).message == message


@pytest.mark.parametrize(
    "body",
    [
        google_error(400, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
        b"RESOURCE_EXHAUSTED",
    ],
)
def test_400_about_quota_counts_as_quota(body: Any) -> None:
    assert classify(400, body).kind is FailureKind.QUOTA_EXHAUSTED


def test_400_whose_text_mentions_quota_stays_the_clients_error() -> None:
    # The message may quote the user's own schema or prompt; only status and reason count.
    body = google_error(400, "INVALID_ARGUMENT", "Unknown name 'quota' at 'tools[0]': Cannot find field.")
    assert classify(400, body).kind is FailureKind.INVALID_REQUEST


def test_project_invalid() -> None:
    body = google_error(
        400, "INVALID_ARGUMENT", "Invalid resource field value in the request.", "RESOURCE_PROJECT_INVALID"
    )
    failure = classify(400, body)
    assert failure.kind is FailureKind.PROJECT_INVALID
    assert is_retryable_elsewhere(failure)


# Issue 11 item 15: error text may quote the prompt; only status and reason affect accounts.
PROMPT_ECHO = (
    "RESOURCE_PROJECT_INVALID: this service has been disabled in this account for violation of "
    "Terms of Service. VALIDATION_REQUIRED QUOTA_EXHAUSTED No capacity available"
)


@pytest.mark.parametrize(
    ("status", "status_text"),
    [(400, "INVALID_ARGUMENT"), (400, ""), (404, "NOT_FOUND"), (413, ""), (500, "INTERNAL")],
)
def test_text_that_quotes_every_marker_decides_nothing_about_the_account(
    status: int, status_text: str
) -> None:
    failure = classify(status, google_error(status, status_text, PROMPT_ECHO))
    assert failure.kind in (FailureKind.INVALID_REQUEST, FailureKind.NOT_FOUND, FailureKind.SERVER_ERROR)
    assert failure.validation_url is None


def test_project_invalid_only_in_the_message_is_the_requests_own_error() -> None:
    body = google_error(400, "INVALID_ARGUMENT", "RESOURCE_PROJECT_INVALID: project not usable")
    assert classify(400, body).kind is FailureKind.INVALID_REQUEST


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            "This service has been disabled in this account for violation of Terms of Service.",
            FailureKind.ACCOUNT_BLOCKED,
        ),
        # PROTOCOL §13.9: one phrase alone is not a ban.
        ("Cloud Code API has been disabled in project 123.", FailureKind.PERMISSION_DENIED),
        ("Possible violation of Terms of Service detected.", FailureKind.PERMISSION_DENIED),
    ],
)
def test_ban_needs_a_403_and_both_phrases(message: str, kind: FailureKind) -> None:
    assert classify(403, google_error(403, "PERMISSION_DENIED", message)).kind is kind
    assert classify(400, google_error(400, "INVALID_ARGUMENT", message)).kind is FailureKind.INVALID_REQUEST


def test_validation_required_carries_its_url() -> None:
    url = "https://accounts.google.com/signin/continue?sarp=1&scc=1"
    body = google_error(
        403,
        "PERMISSION_DENIED",
        "Verify your account to continue.",
        "VALIDATION_REQUIRED",
        metadata={"validation_url": url},
    )
    failure = classify(403, body)
    assert (failure.kind, failure.validation_url) == (FailureKind.VALIDATION_REQUIRED, url)
    assert is_retryable_elsewhere(failure)
    error = client_error(failure)
    assert type(error) is UpstreamError and "google.com" not in error.message


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", "http://example.com/", "https://x/\nSet-Cookie: a", "https://" + "a" * 3000, 7],
)
def test_a_validation_url_that_is_not_a_plain_https_url_is_dropped(url: Any) -> None:
    body = google_error(
        403, "PERMISSION_DENIED", "Verify", "VALIDATION_REQUIRED", metadata={"validation_url": url}
    )
    failure = classify(403, body)
    assert (failure.kind, failure.validation_url) == (FailureKind.VALIDATION_REQUIRED, None)


def test_spent_credits_are_quota_exhaustion_of_the_account() -> None:
    body = google_error(
        429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", "INSUFFICIENT_G1_CREDITS_BALANCE"
    )
    failure = classify(429, body)
    assert (failure.kind, failure.reason) == (FailureKind.QUOTA_EXHAUSTED, "INSUFFICIENT_G1_CREDITS_BALANCE")
    assert client_error(failure).code == "quota_exhausted"


def test_503_saying_no_capacity_is_a_capacity_shortage() -> None:
    body = google_error(503, "UNAVAILABLE", "No capacity available for model gemini-3-flash on the server")
    failure = classify(503, body)
    assert failure.kind is FailureKind.CAPACITY
    assert not is_retryable_elsewhere(failure)
    assert classify(503, google_error(503, "UNAVAILABLE", "The service is unavailable.")).kind is (
        FailureKind.SERVER_ERROR
    )


def test_404_is_not_worth_another_account_or_host() -> None:
    failure = classify(404, google_error(404, "NOT_FOUND", "Requested entity was not found."))
    assert failure.kind is FailureKind.NOT_FOUND
    assert not is_retryable_elsewhere(failure)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (
            401,
            google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
                "or other valid authentication credential.",
            ),
            FailureKind.UNAUTHENTICATED,
        ),
        (
            403,
            google_error(403, "PERMISSION_DENIED", "The caller does not have permission"),
            FailureKind.PERMISSION_DENIED,
        ),
        (
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                "Verify your account to continue.",
                "VALIDATION_REQUIRED",
                metadata={"validation_url": "https://accounts.google.com/signin/continue?x=1"},
            ),
            FailureKind.VALIDATION_REQUIRED,
        ),
        (
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                "This service has been disabled in this account for violation of Terms of Service.",
            ),
            FailureKind.ACCOUNT_BLOCKED,
        ),
        (404, google_error(404, "NOT_FOUND", "Requested entity was not found."), FailureKind.NOT_FOUND),
        (500, google_error(500, "INTERNAL", "Internal error encountered."), FailureKind.SERVER_ERROR),
        (502, b"<html><body>Bad Gateway</body></html>", FailureKind.SERVER_ERROR),
        (408, b"", FailureKind.SERVER_ERROR),
        (413, b"Request Entity Too Large", FailureKind.INVALID_REQUEST),
    ],
)
def test_classification_by_status_and_reason(status: int, body: Any, kind: FailureKind) -> None:
    assert classify(status, body).kind is kind


def test_body_that_is_not_json_becomes_the_message_cut_short() -> None:
    assert (
        classify(502, b"\n<html><body>Bad Gateway</body></html>\n").message
        == "<html><body>Bad Gateway</body></html>"
    )
    assert classify(502, b"x" * 100_000).message == "x" * 500


def test_oauth_style_error_body() -> None:
    body = {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    failure = classify(400, body)
    assert (failure.kind, failure.message) == (
        FailureKind.INVALID_REQUEST,
        "Token has been expired or revoked.",
    )


def test_error_frame_inside_a_200_stream_uses_its_own_code() -> None:
    failure = classify(200, A4_QUOTA_EXHAUSTED)
    assert (failure.kind, failure.status) == (FailureKind.QUOTA_EXHAUSTED, 429)


def test_upstream_failure_is_an_exception_with_a_readable_str() -> None:
    failure = classify(404, google_error(404, "NOT_FOUND", "Requested entity was not found."))
    with pytest.raises(UpstreamFailure) as raised:
        raise failure
    assert str(raised.value) == "NOT_FOUND (HTTP 404): Requested entity was not found."


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("4h30m28.060903746s", 16228.060903746),
        ("13h19m1.20964964s", 47941.20964964),
        ("976.066617ms", 0.976066617),
        ("0.976066617s", 0.976066617),
        ("47941.209649640s", 47941.20964964),
        ("25s", 25.0),
        ("45m", 2700.0),
        ("1h", 3600.0),
        ("0", 0.0),
        ("0s", 0.0),
        (".5s", 0.5),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("250μs", 0.00025),
        ("1500ns", 0.0000015),
        ("1m0.5s", 60.5),
        ("-2s", -2.0),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("junk", ["", "s", "12", "1x", "1h 2m", "h1", "1..5s", "--1s", "1s!", "PT5S"])
def test_parse_go_duration_rejects_junk(junk: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(junk)


def test_unparsable_delays_fall_through_to_the_next_source() -> None:
    body = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Your quota will reset after 45m.",
        "QUOTA_EXHAUSTED",
        metadata={"quotaResetDelay": "soon", "quotaResetTimeStamp": "tomorrow"},
        retry_delay=5,
    )
    failure = classify(429, body)
    assert failure.retry_after == 2700.0


def test_kinds_worth_another_account_or_host() -> None:
    retryable = {kind for kind in FailureKind if is_retryable_elsewhere(UpstreamFailure(kind, 0, "")) is True}
    assert retryable == set(FailureKind) - {
        FailureKind.INVALID_REQUEST,
        FailureKind.NOT_FOUND,
        FailureKind.CAPACITY,
        FailureKind.TIMEOUT,
    }


def test_client_errors_for_throttling_carry_retry_after() -> None:
    quota = client_error(classify(429, A4_QUOTA_EXHAUSTED))
    assert isinstance(quota, RateLimited)
    assert (quota.code, quota.retry_after) == ("quota_exhausted", pytest.approx(47941.20964964))
    rate = client_error(UpstreamFailure(FailureKind.RATE_LIMITED, 429, "", retry_after=2.0))
    assert isinstance(rate, RateLimited)
    assert (rate.code, rate.retry_after) == ("rate_limit_exceeded", 2.0)


@pytest.mark.parametrize(("status", "error_class"), [(429, RateLimited), (503, ServiceUnavailable)])
def test_client_error_for_capacity_follows_the_upstream_status(status: int, error_class: type) -> None:
    error = client_error(UpstreamFailure(FailureKind.CAPACITY, status, "No capacity", retry_after=25.0))
    assert type(error) is error_class
    assert (error.code, error.retry_after) == ("model_capacity_exhausted", 25.0)


def test_client_error_for_not_found_and_timeout() -> None:
    not_found = client_error(UpstreamFailure(FailureKind.NOT_FOUND, 404, "Requested entity was not found."))
    assert isinstance(not_found, NotFound)
    assert not_found.code == "model_not_found"
    assert isinstance(client_error(UpstreamFailure(FailureKind.TIMEOUT, 0, "first byte")), UpstreamTimeout)


@pytest.mark.parametrize(
    "kind",
    [
        FailureKind.UNAUTHENTICATED,
        FailureKind.PERMISSION_DENIED,
        FailureKind.ACCOUNT_BLOCKED,
        FailureKind.VALIDATION_REQUIRED,
        FailureKind.PROJECT_INVALID,
        FailureKind.SERVER_ERROR,
        FailureKind.NETWORK,
    ],
)
def test_other_failures_become_a_502_that_reveals_nothing_of_the_account(kind: FailureKind) -> None:
    secret = "Permission denied on project cogent-snow-4mnnp for user@example.com token ya29.a0AfB_secret"
    error = client_error(UpstreamFailure(kind, 403, secret))
    assert type(error) is UpstreamError
    assert error_status(error) == 502
    assert error.message
    for leaked in ("cogent-snow", "example.com", "ya29"):
        assert leaked not in error.message


@given(
    st.sampled_from([400, 401, 404, 408, 409, 413, 429, 500, 502, 503]),
    st.sampled_from(["INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND", "UNAVAILABLE", ""]),
    st.text(max_size=40).map(lambda t: t + PROMPT_ECHO),
)
def test_no_text_makes_a_non_403_disable_an_account(status: int, status_text: str, message: str) -> None:
    kind = classify(status, google_error(status, status_text, message)).kind
    assert kind not in (
        FailureKind.ACCOUNT_BLOCKED,
        FailureKind.PROJECT_INVALID,
        FailureKind.VALIDATION_REQUIRED,
    )
