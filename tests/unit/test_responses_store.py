"""The Responses API's sealed reasoning (server/responses_seal.py) and its store
(server/responses_store.py): seal / open / tamper / foreign key / rotation, and
put / get / delete / retention / ownership by API key."""
from __future__ import annotations

import base64

import pytest

from server.responses_seal import seal, unseal
from server.responses_store import SqliteStore, StoredResponse, owner_of
from server.secret_key import SecretKeys

KEYS = SecretKeys((b"k" * 32,))
TEXT = "Six times seven is forty-two. ünïcode ✓"


def test_sealed_reasoning_opens_to_its_text() -> None:
    token = seal(KEYS, TEXT)
    assert TEXT not in token and "forty" not in base64.urlsafe_b64decode(token + "==").decode("latin-1")
    assert unseal(KEYS, token) == TEXT
    assert seal(KEYS, TEXT) != token, "a fresh nonce every time"


def _flip(token: str, at: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[at] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("at", [0, 1, 12, 13, -1], ids=["version", "nonce", "nonce-end", "ciphertext", "tag"])
def test_a_tampered_byte_does_not_open(at: int) -> None:
    assert unseal(KEYS, _flip(seal(KEYS, TEXT), at)) is None


@pytest.mark.parametrize("token", ["", "not base64 !", "AQ", "A" * 40, seal(KEYS, TEXT)[:-4]],
                         ids=["empty", "garbage", "short", "zeros", "truncated"])
def test_malformed_content_does_not_open(token: str) -> None:
    assert unseal(KEYS, token) is None


def test_a_foreign_key_does_not_open_and_rotation_does() -> None:
    other = SecretKeys((b"o" * 32,))
    assert unseal(other, seal(KEYS, TEXT)) is None
    rotated = SecretKeys((b"n" * 32, *KEYS.keys))
    assert unseal(rotated, seal(KEYS, TEXT)) == TEXT, "an older key still opens"
    assert unseal(KEYS, seal(rotated, TEXT)) is None, "the newest key seals"


def test_a_signature_of_another_purpose_is_no_sealed_text() -> None:
    assert unseal(KEYS, KEYS.sign("openai-responses/reasoning", TEXT.encode())) is None


# -- the store -------------------------------------------------------------------------


def record(rid: str, owner: str = "", created: float | None = None) -> StoredResponse:
    import time
    return StoredResponse(rid, owner, created or time.time(), [{"type": "message", "role": "user", "content": "q"}],
                          [{"type": "message", "role": "assistant", "content": []}], {"id": rid})


@pytest.fixture
def store(tmp_path) -> SqliteStore:
    return SqliteStore(str(tmp_path / "sub" / "r.sqlite3"), max_stored=100, max_age_hours=1)


def test_put_get_delete(store: SqliteStore) -> None:
    store.put(record("resp_1"))
    got = store.get("resp_1", "")
    assert got is not None and got.items[0]["content"] == "q" and got.body == {"id": "resp_1"}
    assert store.get("resp_2", "") is None
    assert store.delete("resp_1", "") and not store.delete("resp_1", "")
    assert store.get("resp_1", "") is None


def test_a_record_belongs_to_the_key_that_made_it(store: SqliteStore) -> None:
    alice, bob = owner_of("alice-key"), owner_of("bob-key")
    assert alice != bob and "alice-key" not in alice and len(alice) == 64
    store.put(record("resp_a", alice))
    assert store.get("resp_a", bob) is None and not store.delete("resp_a", bob)
    assert store.get("resp_a", alice) is not None and store.delete("resp_a", alice)


def test_retention_keeps_the_newest(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "r.sqlite3"), max_stored=3, max_age_hours=1)
    for i in range(5):
        store.put(record(f"resp_{i}", created=1e9 + i + 1e9))
    assert [store.get(f"resp_{i}", "") is not None for i in range(5)] == [False, False, True, True, True]


def test_retention_drops_the_old(tmp_path) -> None:
    import time
    store = SqliteStore(str(tmp_path / "r.sqlite3"), max_stored=10, max_age_hours=1)
    store.put(record("resp_old", created=time.time() - 7200))
    assert store.get("resp_old", "") is None, "expired records are not read"
    store.put(record("resp_new"))
    assert store._db.execute("SELECT count(*) FROM responses").fetchone()[0] == 1, "and pruned on write"


def test_records_survive_a_reopen(tmp_path) -> None:
    path = str(tmp_path / "r.sqlite3")
    first = SqliteStore(path, 10, 1)
    first.put(record("resp_1"))
    first.close()
    assert SqliteStore(path, 10, 1).get("resp_1", "") is not None


def test_retention_counts_replacements_deletes_and_a_reopen(tmp_path) -> None:
    path = str(tmp_path / "r.sqlite3")
    store = SqliteStore(path, max_stored=3, max_age_hours=1)
    for rid in ("resp_0", "resp_1", "resp_1", "resp_2"):  # a replaced record is one record
        store.put(record(rid, created=2e9 + int(rid[-1])))
    assert store.delete("resp_2", "")
    store.close()
    store = SqliteStore(path, max_stored=3, max_age_hours=1)  # two records on disk
    store.put(record("resp_3", created=2e9 + 3))
    assert all(store.get(f"resp_{i}", "") is not None for i in (0, 1, 3)), "three fit"
    store.put(record("resp_4", created=2e9 + 4))
    assert [store.get(f"resp_{i}", "") is not None for i in (0, 1, 3, 4)] == [False, True, True, True]


def test_a_write_does_not_scan_the_table(tmp_path) -> None:
    """At capacity a put runs as many SQLite steps as on a near-empty store (the prunes
    walk the created_at index); the earlier NOT IN (... ORDER BY ... LIMIT) scanned
    the table on every write: 24 ms a write at 10 000 records. Counted in virtual
    machine steps (a progress handler), not in time, so the check does not flake."""
    store = SqliteStore(str(tmp_path / "r.sqlite3"), max_stored=2000, max_age_hours=1)
    steps = [0]
    store._db.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1) or 0, 100)

    def steps_of_a_put(rid: str) -> int:
        before = steps[0]
        store.put(record(rid))
        return steps[0] - before

    for i in range(10):
        store.put(record(f"resp_{i}"))
    small = steps_of_a_put("resp_small")
    for i in range(10, 2100):
        store.put(record(f"resp_{i}"))
    full = steps_of_a_put("resp_full")
    assert store._db.execute("SELECT count(*) FROM responses").fetchone()[0] == 2000
    assert full <= 2 * small + 2, (small, full)
