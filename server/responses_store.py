"""Stored responses (``store: true``): what ``previous_response_id``,
``GET /v1/responses/{id}`` and ``DELETE /v1/responses/{id}`` read.

:class:`ResponseStore` is the seam; :class:`SqliteStore` the single-node
choice, an embedded SQLite file (stdlib ``sqlite3``, ``[responses] store_path``).
Several ponder front ends behind one load balancer need one shared store
instead: a class with the same three methods over Postgres or Redis, chosen by
the settings where :func:`open_store` chooses this one; nothing else changes.

A record is owned by the API key that created it, kept as a SHA-256 hash (never
the key): another key reads it as missing (404), as OpenAI's projects do. With
API keys off the owner is ``""`` and every client shares the store. Retention:
at most ``max_stored`` records and none older than ``max_age_hours``; the oldest
go first, pruned on every write.
"""
from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson


@dataclass(frozen=True)
class StoredResponse:
    id: str
    owner: str  # owner_of(api key)
    created_at: float
    # The conversation this response answered (earlier turns included) and its output
    # items, in the Responses shape: what a continuation prepends.
    items: list[dict[str, Any]]
    output: list[dict[str, Any]]
    # The response object as returned, for GET.
    body: dict[str, Any]


def owner_of(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest() if api_key else ""


class ResponseStore(Protocol):
    def put(self, record: StoredResponse) -> None: ...

    def get(self, response_id: str, owner: str) -> StoredResponse | None:
        """The record, or None when it is missing, expired or another key's."""
        ...

    def delete(self, response_id: str, owner: str) -> bool: ...


_SCHEMA = """CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_at REAL NOT NULL,
    items BLOB NOT NULL, output BLOB NOT NULL, body BLOB NOT NULL)"""


class SqliteStore:
    """One SQLite file (or ``:memory:``). Calls are short and serialised by a
    lock; the WAL journal lets a reader in while a writer commits."""

    def __init__(self, path: str, max_stored: int, max_age_hours: float) -> None:
        if path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            path = str(Path(path).expanduser())
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL commits without an fsync per write (a power cut may lose the
        # newest records, never corrupt the file): a put is a fraction of a millisecond.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.execute("CREATE INDEX IF NOT EXISTS responses_age ON responses (created_at)")
        self._lock = threading.Lock()
        self.max_stored, self.max_age = max_stored, max_age_hours * 3600
        self._rows = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def put(self, record: StoredResponse) -> None:
        row = (record.id, record.owner, record.created_at, orjson.dumps(record.items), orjson.dumps(record.output),
               orjson.dumps(record.body))
        with self._lock:
            self._db.execute("BEGIN")
            replaced = self._db.execute("DELETE FROM responses WHERE id = ?", (record.id,)).rowcount
            self._db.execute("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?)", row)
            self._rows += 1 - replaced
            # Both prunes walk the created_at index from its old end: a write costs the
            # same with ten records or max_stored (no scan of the table per write).
            self._rows -= self._db.execute("DELETE FROM responses WHERE created_at < ?",
                                           (time.time() - self.max_age,)).rowcount
            if self._rows > self.max_stored:
                self._rows -= self._db.execute(
                    "DELETE FROM responses WHERE rowid IN (SELECT rowid FROM responses "
                    "ORDER BY created_at, rowid LIMIT ?)", (self._rows - self.max_stored,)).rowcount
            self._db.execute("COMMIT")

    def get(self, response_id: str, owner: str) -> StoredResponse | None:
        with self._lock:
            row = self._db.execute("SELECT id, owner, created_at, items, output, body FROM responses "
                                   "WHERE id = ? AND owner = ? AND created_at >= ?",
                                   (response_id, owner, time.time() - self.max_age)).fetchone()
        if row is None:
            return None
        return StoredResponse(row[0], row[1], row[2], orjson.loads(row[3]), orjson.loads(row[4]),
                              orjson.loads(row[5]))

    def delete(self, response_id: str, owner: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner))
            self._rows -= cur.rowcount
        return cur.rowcount > 0

    def close(self) -> None:
        self._db.close()


def open_store(path: str, max_stored: int, max_age_hours: float) -> ResponseStore:
    """The store the settings name (today: SQLite, the single-node choice)."""
    return SqliteStore(path, max_stored, max_age_hours)
