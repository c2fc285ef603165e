"""Secrets the database keeps for the appservice, encrypted at rest.

Humans' Matrix access tokens (from ``ac login``) let the appservice act for them, so they are
not stored in plain text beside the hashed API tokens: each is sealed with AES-256-GCM under a
key derived from the appservice's config file (``Config.token_key``, from the as_token), never
stored in the database. A leaked database or backup of it alone gives no usable token. The
owner's user id is bound in as associated data: a sealed token copied to another row does not
open.

Stored form: ``ac1:`` + base64url(12-byte nonce + ciphertext + 16-byte tag).
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "ac1:"
NONCE_BYTES = 12


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key is 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    def seal(self, secret: str, owner: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode("utf-8"), owner.encode("utf-8"))
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def open(self, stored: str, owner: str) -> str:
        """The secret; ValueError when ``stored`` is not sealed, was sealed for someone else
        or with another key (the as_token changed), or was altered."""
        if not is_sealed(stored):
            raise ValueError("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(stored[len(PREFIX) :].encode("ascii"))
            opened = self._aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], owner.encode("utf-8")
            )
            return opened.decode("utf-8")
        except (InvalidTag, ValueError, UnicodeError) as e:
            raise ValueError("the sealed value does not open with this key") from e


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)
