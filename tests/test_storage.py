"""No table holds a plaintext API key (only its SHA-256 digest and a short display prefix)."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg2
from psycopg2 import sql

from tests.conftest import ADMIN_KEY, bearer, create_user

SCANNED_TYPES = ("text", "character varying", "character", "bytea", "json", "jsonb", "ARRAY")


def columns(conn: Any) -> list[tuple[str, str, str]]:
    with conn.cursor() as cur:
        cur.execute(
            """SELECT c.table_name, c.column_name, c.data_type
               FROM information_schema.columns c
               JOIN information_schema.tables t USING (table_schema, table_name)
               WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
                 AND c.data_type = ANY(%(types)s)
               ORDER BY 1, 2""",
            {"types": list(SCANNED_TYPES)},
        )
        return cur.fetchall()


def places_holding(conn: Any, needle: str) -> list[str]:
    """Every table.column whose value contains ``needle`` (as text, or as bytes in bytea)."""
    found = []
    with conn.cursor() as cur:
        for table, column, data_type in columns(conn):
            if data_type == "bytea":
                condition = sql.SQL("position(convert_to(%(needle)s, 'UTF8') in {}) > 0")
            else:
                condition = sql.SQL("strpos({}::text, %(needle)s) > 0")
            query = sql.SQL("SELECT count(*) FROM {} WHERE ").format(
                sql.Identifier(table)
            ) + condition.format(sql.Identifier(column))
            cur.execute(query, {"needle": needle})
            if cur.fetchone()[0]:
                found.append(f"{table}.{column}")
    return found


def digest_places(conn: Any, digest: bytes) -> list[str]:
    found = []
    with conn.cursor() as cur:
        for table, column, data_type in columns(conn):
            if data_type != "bytea":
                continue
            query = sql.SQL("SELECT count(*) FROM {} WHERE {} = %(d)s").format(
                sql.Identifier(table), sql.Identifier(column)
            )
            cur.execute(query, {"d": digest})
            if cur.fetchone()[0]:
                found.append(f"{table}.{column}")
    return found


async def test_no_table_holds_a_plaintext_key(client, admin, db_dsn):
    alice = await create_user(client, "alice")
    bob = await create_user(client, "bob", prefer_shared=1)
    carol = await create_user(client, "carol")
    response = await client.post(f"/api/users/{bob['user_id']}/regenerate-key", headers=admin)
    bob_new = (await response.json())["data"]
    # Use the keys (valid, regenerated, disabled) so any request-side storage gets a chance.
    await client.get("/api/user/me", headers=bearer(alice["api_key"]))
    await client.get("/api/user/me", headers=bearer(bob["api_key"]))
    await client.put(f"/api/users/{carol['user_id']}/status", json={"status": 0}, headers=admin)
    await client.get("/api/user/me", headers=bearer(carol["api_key"]))

    live = {"alice": alice, "bob": bob_new, "carol": carol}
    keys = {
        "alice": alice["api_key"],
        "bob (old)": bob["api_key"],
        "bob (new)": bob_new["api_key"],
        "carol": carol["api_key"],
        "admin": ADMIN_KEY,
    }
    conn = psycopg2.connect(db_dsn)
    try:
        scanned = columns(conn)
        assert ("api_keys", "key_hash", "bytea") in scanned
        assert ("api_keys", "key_prefix", "text") in scanned
        assert len({table for table, _, _ in scanned}) > 3, scanned

        # The scanner finds what is there: each display prefix, and each live digest.
        for name, user in live.items():
            assert "api_keys.key_prefix" in places_holding(conn, user["key_prefix"]), name
            digest = hashlib.sha256(user["api_key"].encode()).digest()
            assert digest_places(conn, digest) == ["api_keys.key_hash"], name

        for name, key in keys.items():
            assert places_holding(conn, key) == [], f"{name}'s full key is stored"
            # Nothing longer than the displayed prefix either, from either end.
            shown = len(alice["key_prefix"])
            assert places_holding(conn, key[: shown + 1]) == [], f"more than {name}'s prefix is stored"
            assert places_holding(conn, key[shown:]) == [], f"{name}'s secret part is stored"
            assert places_holding(conn, key[-16:]) == [], f"the tail of {name}'s key is stored"
        # The old digest is gone with the old key.
        old_digest = hashlib.sha256(bob["api_key"].encode()).digest()
        assert digest_places(conn, old_digest) == []

        # Control: a key planted in a text and in a bytea column is found (then rolled back).
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE api_keys SET name = 'x' || %(k)s, key_hash = convert_to('y' || %(k)s, 'UTF8')"
                " WHERE user_id = %(id)s",
                {"k": alice["api_key"], "id": alice["user_id"]},
            )
        assert places_holding(conn, alice["api_key"]) == ["api_keys.key_hash", "api_keys.name"]
        conn.rollback()
        assert places_holding(conn, alice["api_key"]) == []
    finally:
        conn.close()


async def test_key_prefix_is_short(client):
    user = await create_user(client)
    # A display prefix must leave nearly all of the 48 random characters secret.
    assert len(user["key_prefix"]) - len("sk-") <= 8
    assert user["api_key"].startswith(user["key_prefix"])
