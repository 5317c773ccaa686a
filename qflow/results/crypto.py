"""Encryption of what tasks produce: AES-256-GCM from the ``cryptography`` package.

Values of any size are encrypted as a stream of chunks so memory stays bounded: a header
(magic, key id, random nonce prefix) then frames, each one GCM-sealed chunk whose nonce
is the prefix plus the chunk's number and whose associated data binds the header, the
number and whether it is the last, so chunks cannot be dropped, reordered or cut off
unnoticed. Short texts (errors, logs, secret parameters) use the same format, as one
base64 string behind :data:`PREFIX`.

Keys (``encryption_key``) are 32 random bytes in URL-safe base64 (``qflow keygen``);
several, comma-separated, rotate: the first encrypts, all of them decrypt.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from qflow.errors import UserError

PREFIX = "qflow:enc:"             # never the start of JSON text, so clear text passes through
MAGIC = b"QFE1"
CHUNK = 1 << 20                   # plaintext bytes per frame
_FINAL = 0x8000_0000              # high bit of a frame's length: the last frame
_HEADER = struct.Struct(">4s4s8s")
_TAG = 16


class DecryptError(UserError):
    """Encrypted data that no configured key opens: a wrong key, or changed data."""


def new_key() -> str:
    """A fresh key for ``encryption_key``."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _cipher_module():
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError:
        raise UserError("encryption_key needs the cryptography package: "
                        "pip install 'qflow[encryption]'") from None
    return AESGCM, HKDF, hashes


def _derive(raw: bytes, purpose: bytes) -> bytes:
    _, hkdf, hashes = _cipher_module()
    return hkdf(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"qflow " + purpose).derive(raw)


class Keyring:
    """The configured keys: the first encrypts, any of them decrypts."""

    def __init__(self, keys: list[str]):
        if not keys:
            raise UserError("encryption_key is empty")
        aesgcm, _, _ = _cipher_module()
        self._ciphers: dict[bytes, object] = {}
        self._writer: tuple[bytes, object] | None = None
        self.hmac_keys: list[bytes] = []
        for text in keys:
            raw = _parse_key(text)
            key_id = hashlib.sha256(b"qflow key id" + raw).digest()[:4]
            cipher = aesgcm(_derive(raw, b"aes-gcm v1"))
            self._ciphers[key_id] = cipher
            self._writer = self._writer or (key_id, cipher)
            self.hmac_keys.append(_derive(raw, b"result hmac v1"))

    @classmethod
    def from_setting(cls, value: str) -> "Keyring | None":
        """The ``encryption_key`` setting (comma-separated keys), or None if unset."""
        keys = [k.strip() for k in value.split(",") if k.strip()]
        return cls(keys) if keys else None

    # -- streams -----------------------------------------------------------------------
    def encryptor(self) -> "Encryptor":
        key_id, cipher = self._writer
        return Encryptor(key_id, cipher)

    def decrypt(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The plaintext of an encrypted stream given as byte chunks of any sizes."""
        reader = _Frames(chunks)
        magic, key_id, prefix = _HEADER.unpack(reader.take(_HEADER.size, "header"))
        if magic != MAGIC:
            raise DecryptError("not data qflow encrypted (bad header)")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptError("encrypted with a key that is not in encryption_key "
                               "(a wrong or retired key)")
        header = _HEADER.pack(magic, key_id, prefix)
        number = 0
        while True:
            (word,) = struct.unpack(">I", reader.take(4, "frame"))
            final = bool(word & _FINAL)
            sealed = reader.take(word & ~_FINAL, "frame")
            try:
                yield cipher.decrypt(prefix + struct.pack(">I", number), sealed,
                                     _aad(header, number, final))
            except Exception:  # noqa: BLE001 - cryptography's InvalidTag, any variant
                raise DecryptError("encrypted data does not authenticate (changed, or "
                                   "encrypted with another key)") from None
            if final:
                reader.expect_end()
                return
            number += 1

    # -- short texts -------------------------------------------------------------------
    def seal(self, text: str) -> str:
        """``text`` encrypted, as ``qflow:enc:<base64>``."""
        enc = self.encryptor()
        data = enc.update(text.encode()) + enc.finish()
        return PREFIX + base64.urlsafe_b64encode(data).decode()

    def open(self, sealed: str) -> str:
        """The text :meth:`seal` encrypted; DecryptError if no key opens it."""
        try:
            data = base64.urlsafe_b64decode(sealed[len(PREFIX):])
        except (binascii.Error, ValueError):
            raise DecryptError("encrypted text is damaged (bad base64)") from None
        return b"".join(self.decrypt([data])).decode()


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def _parse_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.encode())
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise UserError("each encryption_key must be 32 bytes in URL-safe base64 "
                        "(`qflow keygen` prints one)")
    return raw


def _aad(header: bytes, number: int, final: bool) -> bytes:
    return header + struct.pack(">I?", number, final)


class Encryptor:
    """Encrypts a stream: feed :meth:`update`, end with :meth:`finish`; each returns the
    bytes to write. Holds at most one chunk of plaintext."""

    def __init__(self, key_id: bytes, cipher):
        self._cipher = cipher
        self._prefix = os.urandom(8)
        self._header = _HEADER.pack(MAGIC, key_id, self._prefix)
        self._pending = bytearray()
        self._number = 0
        self._started = False

    def update(self, data: bytes | memoryview) -> bytes:
        out = [self._start()]
        view = memoryview(data)
        while len(view):
            room = CHUNK - len(self._pending)
            if not room:               # a full chunk and more to come: it is not the last
                out.append(self._frame(False))
                continue
            self._pending += view[:room]
            view = view[room:]
        return b"".join(out)

    def finish(self) -> bytes:
        return self._start() + self._frame(True)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._header

    def _frame(self, final: bool) -> bytes:
        nonce = self._prefix + struct.pack(">I", self._number)
        sealed = self._cipher.encrypt(nonce, bytes(self._pending),
                                      _aad(self._header, self._number, final))
        self._pending.clear()
        self._number += 1
        return struct.pack(">I", len(sealed) | (_FINAL if final else 0)) + sealed


class _Frames:
    """Exact-size reads over an iterable of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._buffer = bytearray()

    def take(self, n: int, what: str) -> bytes:
        while len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise DecryptError(f"encrypted data is cut short (in a {what})")
            self._buffer += chunk
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def expect_end(self) -> None:
        if self._buffer or any(len(c) for c in self._chunks):
            raise DecryptError("encrypted data goes on after its last frame")


def read_chunks(fh: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    """A binary file's content in chunks."""
    while True:
        chunk = fh.read(size)
        if not chunk:
            return
        yield chunk
