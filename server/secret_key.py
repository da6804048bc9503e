"""The server's secret keys: signatures on what a client carries from one request to the next.

The Messages API signs every thinking block it returns, so that a block a
client sends back can be checked to be ponder's own thinking, unmodified,
before it is rendered into the prompt as that turn's reasoning (a client
could otherwise put words in the model's mouth that look like its own
thought). The Responses API's encrypted reasoning derives its key from the
same keys (:meth:`SecretKeys.derive`).

Where the keys come from, the first that is set wins:

1. ``PONDER_SECRET_KEY``: one key, or several separated by commas;
2. ``[server] secret_key_file``: a file with one key per line (blank lines
   and lines starting with ``#`` are skipped);
3. neither: a random key for this process, with a log line saying so, since
   its signatures do not survive a restart (nor reach another replica).

Rotation: the first key signs, every key verifies. To rotate, put the new key
first and keep the old one after it until no client holds its signatures.

Each use signs under a purpose of its own (HMAC-SHA256 over "sign", the
purpose, then the data, NUL between them), so a signature made for one surface
is never valid for another, nor equal to a derived key.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("ponder.secret_key")
ENV = "PONDER_SECRET_KEY"
# A key shorter than this is refused at start: HMAC is only as strong as its key.
MIN_KEY_CHARS = 32


@dataclass(frozen=True)
class SecretKeys:
    # The signing key first, then previous keys still accepted; never printed.
    keys: tuple[bytes, ...] = field(repr=False)
    # True: generated for this process (no configured key).
    ephemeral: bool = False

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("at least one secret key is needed")

    def sign(self, purpose: str, data: bytes) -> str:
        """The signature of ``data`` for ``purpose`` under the signing key (URL-safe base64)."""
        return _mac(self.keys[0], purpose, data)

    def verify(self, purpose: str, data: bytes, signature: str) -> bool:
        """Whether ``signature`` is ``data``'s for ``purpose`` under any of the keys.

        The strings are compared, not decoded, so no other spelling of the same
        bytes passes; every key is tried in constant time, with no early exit.
        """
        given = signature.encode("utf-8", "surrogatepass")
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(_mac(key, purpose, data).encode(), given)
        return ok

    def derive(self, purpose: str) -> tuple[bytes, ...]:
        """32-byte keys for ``purpose``, one per key and in the same order (the first
        encrypts, all decrypt), for primitives other than a signature."""
        return tuple(hmac.new(key, _label(b"derive", purpose), hashlib.sha256).digest() for key in self.keys)


def _label(use: bytes, purpose: str) -> bytes:
    """What a MAC is over starts with its use (a signature, a derived key) and purpose,
    each ended by NUL, so no signature can equal a derived key or another purpose's."""
    if "\0" in purpose:  # the separator: a purpose holding one could pose as another's data
        raise ValueError("a purpose must not contain NUL")
    return use + b"\0" + purpose.encode() + b"\0"


def _mac(key: bytes, purpose: str, data: bytes) -> str:
    digest = hmac.new(key, _label(b"sign", purpose) + data, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _checked(keys: list[str], where: str) -> tuple[bytes, ...]:
    if not keys:
        raise ValueError(f"{where} holds no key")
    for i, key in enumerate(keys):
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"{where}: key {i + 1} is shorter than {MIN_KEY_CHARS} characters")
    return tuple(k.encode() for k in keys)


def load(key_file: str, environ: Mapping[str, str] = os.environ) -> SecretKeys:
    """The keys as configured (see the module's docstring); a ValueError says what is wrong."""
    value = environ.get(ENV, "")
    if value.strip():
        return SecretKeys(_checked([k.strip() for k in value.split(",") if k.strip()], ENV))
    if key_file:
        path = Path(key_file).expanduser()
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"[server] secret_key_file {str(path)!r} cannot be read: {exc}") from None
        keys = [k.strip() for k in lines if k.strip() and not k.strip().startswith("#")]
        return SecretKeys(_checked(keys, f"[server] secret_key_file {str(path)!r}"))
    log.warning("no secret key configured (%s or [server] secret_key_file): a random key signs this process's "
                "thinking blocks, and their signatures will not survive a restart", ENV)
    return SecretKeys((secrets.token_urlsafe(32).encode(),), ephemeral=True)
