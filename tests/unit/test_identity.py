"""The client identity (PROTOCOL §13.1): the manifest's version, the floor, the User-Agent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from antigv.backends.antigravity.identity import ClientIdentity, manifest_version, newest, parse_version
from antigv.config import ConfigError, UpstreamConfig, build_config
from tests.upstream_double import UpstreamDouble

MANIFEST = """version: 3.4.2
files:
  - url: Antigravity-3.4.2-arm64-mac.zip
    sha512: abc
    version: 9.9.9
path: Antigravity-3.4.2-arm64-mac.zip
releaseDate: '2026-11-20T10:00:00.000Z'
"""


@pytest.mark.parametrize(
    ("text", "version"),
    [
        (MANIFEST, "3.4.2"),
        ("version: '3.4.2'\n", "3.4.2"),
        ('version: "3.4.2"  # latest\n', "3.4.2"),
        ("path: x\r\nversion: 3.10.0\r\n", "3.10.0"),
        ("  version: 3.4.2\n", None),  # nested, not the document's key
        ("version: latest\n", None),
        ("version: 3\n", None),
        ("version: 3.4.2-beta\n", None),
        ("versions: 3.4.2\n", None),
        ("", None),
        ("<html>Not Found</html>", None),
    ],
)
def test_manifest_version(text: str, version: str | None) -> None:
    assert manifest_version(text) == version


@given(st.text(max_size=300))
def test_manifest_parser_takes_any_text(text: str) -> None:
    found = manifest_version(text)
    assert found is None or parse_version(found) is not None


@given(st.lists(st.integers(0, 99_999), min_size=2, max_size=4))
def test_manifest_version_round_trip(parts: list[int]) -> None:
    version = ".".join(map(str, parts))
    assert manifest_version(f"version: {version}\npath: x\n") == version


def test_versions_compare_as_numbers() -> None:
    assert newest("2.9.1", "2.10.0") == "2.10.0"
    assert newest("2.9.1", "2.9.0") == "2.9.1"
    assert parse_version("2.9.1") == (2, 9, 1)
    assert parse_version("2.9.x") is None


def test_automatic_user_agent_never_goes_below_the_floor() -> None:
    identity = ClientIdentity(UpstreamConfig())
    assert identity.user_agent == "antigravity/hub/2.9.1 darwin/arm64"
    assert identity.version == "2.9.1"
    seen: list[str] = []
    identity.listeners.append(seen.append)
    with structlog.testing.capture_logs() as logs:
        assert identity.update("3.0.2") is True
        assert identity.update("3.0.2") is False
        assert identity.update("2.0.0") is True  # back to the floor
    assert identity.user_agent == "antigravity/hub/2.9.1 darwin/arm64"
    assert seen == ["3.0.2", "2.9.1"]
    changes = [entry for entry in logs if entry["event"] == "client_version_changed"]
    assert [(e["previous"], e["version"]) for e in changes] == [("2.9.1", "3.0.2"), ("3.0.2", "2.9.1")]


def test_floor_and_platform_are_configuration() -> None:
    identity = ClientIdentity(UpstreamConfig(client_version_floor="3.1.0", platform="windows/amd64"))
    assert identity.user_agent == "antigravity/hub/3.1.0 windows/amd64"


def test_a_fixed_user_agent_is_sent_as_is_and_the_manifest_is_not_read() -> None:
    identity = ClientIdentity(UpstreamConfig(user_agent="antigravity/2.8.0 windows/amd64"))
    assert identity.user_agent == "antigravity/2.8.0 windows/amd64"
    assert identity.version == "2.8.0"
    assert identity.manifest_url == ""
    identity.update("9.0.0")
    assert identity.user_agent == "antigravity/2.8.0 windows/amd64"
    assert ClientIdentity(UpstreamConfig(user_agent="my-client/1")).version == "custom"


def test_upstream_defaults_are_todays_protocol() -> None:
    config = UpstreamConfig()
    # PROTOCOL §13.2
    assert config.base_urls == [
        "https://daily-cloudcode-pa.googleapis.com",
        "https://cloudcode-pa.googleapis.com",
    ]
    # PROTOCOL §13.1 (CPA-0822 internal/misc/antigravity_version.go)
    assert (config.user_agent, config.client_version_floor, config.platform) == ("", "2.9.1", "darwin/arm64")
    assert config.version_manifest_url == (
        "https://antigravity-hub-auto-updater-974169037036.us-central1.run.app/manifest/latest-arm64-mac.yml"
    )
    assert config.max_stream_seconds == 1800  # issue 11 item 23


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("client_version_floor", "latest"),
        ("client_version_floor", "3"),
        ("platform", "mac"),
        ("version_manifest_url", "ftp://example.com/latest.yml"),
        ("max_stream_seconds", 0),
    ],
)
def test_bad_identity_settings_are_refused(key: str, value: object) -> None:
    raw = {"security": {"admin_api_key": "x" * 16}, "upstream": {key: value}}
    with pytest.raises(ConfigError, match=f"upstream.{key}"):
        build_config(raw, env={})


# --- reading the manifest (the double serves it) ------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def identity_for(double: UpstreamDouble) -> ClientIdentity:
    url = f"{double.base_url}/manifest/latest-arm64-mac.yml"
    return ClientIdentity(UpstreamConfig(version_manifest_url=url))


async def test_refresh_takes_the_manifest_version(double: UpstreamDouble, session) -> None:
    double.manifest_version = "3.2.0"
    identity = identity_for(double)
    assert await identity.refresh(session) is True
    assert identity.user_agent == "antigravity/hub/3.2.0 darwin/arm64"
    assert len(double.requests_for("manifest")) == 1


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: setattr(d, "manifest_version", None),  # 404
        lambda d: setattr(d, "manifest_status", 500),
        lambda d: setattr(d, "manifest_body", "<html>sorry</html>"),
        lambda d: setattr(d, "manifest_body", "version: " + "9" * 20_000),
    ],
    ids=["404", "500", "not-yaml", "too-large"],
)
async def test_a_failed_read_keeps_the_last_good_version_and_warns_once(double, session, break_it) -> None:
    double.manifest_version = "3.2.0"
    identity = identity_for(double)
    await identity.refresh(session)
    break_it(double)
    with structlog.testing.capture_logs() as logs:
        assert await identity.refresh(session) is False
    assert identity.version == "3.2.0"
    assert [(e["event"], e["log_level"]) for e in logs] == [("client_version_manifest_failed", "warning")]


async def test_an_unreachable_manifest_keeps_the_floor(session) -> None:
    identity = ClientIdentity(UpstreamConfig(version_manifest_url="http://127.0.0.1:9/manifest.yml"))
    with structlog.testing.capture_logs() as logs:
        assert await identity.refresh(session) is False
    assert identity.version == "2.9.1"
    assert [e["event"] for e in logs] == ["client_version_manifest_failed"]


async def test_an_empty_manifest_url_reads_nothing(double: UpstreamDouble, session) -> None:
    identity = ClientIdentity(UpstreamConfig(version_manifest_url=""))
    assert await identity.refresh(session) is False
    assert double.requests_for("manifest") == []
