"""The server's secret keys (server/secret_key.py): signatures verify, a tampered
text or signature does not, purposes do not mix, rotation keeps old signatures
valid, and the keys load from the environment or a file, or are generated."""
from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from server.secret_key import ENV, MIN_KEY_CHARS, SecretKeys, load

A = b"a" * MIN_KEY_CHARS
B = b"b" * MIN_KEY_CHARS
PURPOSE = "test/purpose"


def test_a_signature_verifies_under_its_key_and_purpose() -> None:
    keys = SecretKeys((A,))
    sig = keys.sign(PURPOSE, b"thinking")
    assert keys.verify(PURPOSE, b"thinking", sig)
    assert sig == SecretKeys((A,)).sign(PURPOSE, b"thinking"), "deterministic: the same key signs the same"
    assert len(sig) == 43 and "=" not in sig  # 32 bytes, URL-safe base64 without padding


def _flip(sig: str, i: int) -> str:
    return sig[:i] + ("A" if sig[i] != "A" else "B") + sig[i + 1:]


TAMPERED = {
    "text-changed": (b"thinking!", None),
    "text-truncated": (b"thinkin", None),
    "first-char": (b"thinking", lambda s: _flip(s, 0)),
    "last-char": (b"thinking", lambda s: _flip(s, len(s) - 1)),
    "appended-char": (b"thinking", lambda s: s + "A"),
    "padding-added": (b"thinking", lambda s: s + "="),  # the same bytes spelled otherwise
    "standard-alphabet": (b"thinking", lambda s: s.replace("-", "+").replace("_", "/") + "x"),
    "empty": (b"thinking", lambda s: ""),
    "non-ascii": (b"thinking", lambda s: s[:-1] + "\u00e9"),
}


@pytest.mark.parametrize("name", list(TAMPERED))
def test_a_tampered_text_or_signature_does_not_verify(name: str) -> None:
    keys = SecretKeys((A,))
    sig = keys.sign(PURPOSE, b"thinking")
    data, change = TAMPERED[name]
    assert not keys.verify(PURPOSE, data, change(sig) if change else sig)


def test_purposes_and_keys_do_not_mix() -> None:
    sig = SecretKeys((A,)).sign(PURPOSE, b"x")
    assert not SecretKeys((A,)).verify("other/purpose", b"x", sig)
    assert not SecretKeys((B,)).verify(PURPOSE, b"x", sig)
    # NUL separates purpose and data, so a purpose may not hold one (it could pose as data).
    with pytest.raises(ValueError):
        SecretKeys((A,)).sign("p\0q", b"r")


def test_rotation_the_first_key_signs_every_key_verifies() -> None:
    old = SecretKeys((A,)).sign(PURPOSE, b"x")
    rotated = SecretKeys((B, A))
    assert rotated.verify(PURPOSE, b"x", old), "a previous key still verifies"
    new = rotated.sign(PURPOSE, b"x")
    assert new == SecretKeys((B,)).sign(PURPOSE, b"x") != old, "the first key signs"
    assert not SecretKeys((A,)).verify(PURPOSE, b"x", new)
    assert not SecretKeys((B,)).verify(PURPOSE, b"x", old), "a retired key's signatures stop verifying"


def test_derived_keys_follow_the_keys_and_differ_by_purpose() -> None:
    keys = SecretKeys((B, A))
    derived = keys.derive("responses/reasoning")
    assert len(derived) == 2 and all(len(k) == 32 for k in derived)
    assert derived[1] == SecretKeys((A,)).derive("responses/reasoning")[0]
    assert keys.derive("other")[0] != derived[0]
    assert derived[0] not in (A, B)
    # A derived key is never a signature the server hands out (their MACs are labelled apart).
    sig = keys.sign("derive", b"responses/reasoning")
    assert all(sig != base64.urlsafe_b64encode(k).rstrip(b"=").decode() for k in derived)


def test_the_keys_are_never_printed() -> None:
    keys = SecretKeys((A,))
    assert "aaaa" not in repr(keys) and "aaaa" not in str(keys)


def test_no_keys_is_an_error() -> None:
    with pytest.raises(ValueError):
        SecretKeys(())


def test_keys_from_the_environment_first_signs() -> None:
    keys = load("", {ENV: f" {B.decode()} , {A.decode()},"})
    assert keys.keys == (B, A) and not keys.ephemeral


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(A.decode() + "\n")
    assert load(str(path), {ENV: B.decode()}).keys == (B,)


def test_keys_from_a_file_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# the signing key first\n{B.decode()}\n\n  {A.decode()}  \n")
    keys = load(str(path), {})
    assert keys.keys == (B, A) and not keys.ephemeral


@pytest.mark.parametrize("content,says", [("short\n", "shorter"), ("# only a comment\n\n", "no key")],
                         ids=["short-key", "empty"])
def test_a_bad_key_file_is_refused(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(ValueError, match=says):
        load(str(path), {})


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        load(str(tmp_path / "absent"), {})


def test_a_short_key_in_the_environment_is_refused() -> None:
    with pytest.raises(ValueError, match=ENV):
        load("", {ENV: "short"})


def test_without_keys_a_random_one_per_process_and_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ponder.secret_key"):
        first, second = load("", {}), load("", {ENV: "  "})
    assert first.ephemeral and second.ephemeral
    assert first.keys != second.keys and len(first.keys[0]) >= MIN_KEY_CHARS
    assert any("will not survive a restart" in r.message for r in caplog.records)
