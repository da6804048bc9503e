"""Encrypted reasoning for the Responses API: ``encrypted_content``.

A ``store: false`` client keeps the conversation itself, reasoning included,
and sends it back on the next turn. The reasoning goes out sealed with
authenticated encryption (AES-256-GCM, from ``cryptography``) under a key
derived from the server's secret keys (server/secret_key.py, purpose
``openai-responses/reasoning``), so that what comes back can be trusted as
this server's own thinking, unmodified, before it is rendered into the prompt
as that turn's reasoning; a client could otherwise put words in the model's
mouth that read as its own thought. Encryption rather than the signature the
Messages API uses, because OpenAI's clients treat the field as opaque and the
thinking need not travel in the clear beside it.

The format is URL-safe base64 (no padding) of: version byte ``1``, a random
12-byte nonce, then the GCM ciphertext and its 16-byte tag. The associated data
is the purpose, so a sealed text is valid for nothing else. Rotation follows
the secret keys: the first key seals, every key opens.
"""
from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .secret_key import SecretKeys

PURPOSE = "openai-responses/reasoning"
VERSION = b"\x01"
NONCE_BYTES = 12


def seal(keys: SecretKeys, text: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(keys.derive(PURPOSE)[0]).encrypt(nonce, text.encode(), PURPOSE.encode())
    return base64.urlsafe_b64encode(VERSION + nonce + sealed).rstrip(b"=").decode()


def unseal(keys: SecretKeys, token: str) -> str | None:
    """The text ``token`` seals, or None when no key opens it (tampered, foreign, malformed)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) < 1 + NONCE_BYTES + 16 or raw[:1] != VERSION:
        return None
    nonce, sealed = raw[1:1 + NONCE_BYTES], raw[1 + NONCE_BYTES:]
    for key in keys.derive(PURPOSE):
        try:
            plain = AESGCM(key).decrypt(nonce, sealed, PURPOSE.encode())
        except InvalidTag:
            continue
        try:
            return plain.decode()
        except UnicodeDecodeError:
            return None
    return None
