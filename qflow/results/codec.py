"""How a task's return value is kept and read back: in the results DB (JSON, capped, and
encrypted when a key is set) or, with ``result_store``, as one object per attempt that the
DB only references (URL, size, sha256, serializer).

Writing streams the serializer's bytes through the HMAC (pickle), the encryption (with a
key) and the sha256 into the object; reading streams them back, checks sha256 and HMAC
before anything is deserialized, then decodes. Neither holds more than the value and one
copy of its bytes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import pickle
from dataclasses import dataclass
from typing import Any

from qflow.core.records import Outcome
from qflow.errors import Fail, UserError
from qflow.results import crypto
from qflow.results.store import ObjectStore, object_key, open_object, open_store

SERIALIZERS = ("json", "pickle")
_SLICE = 1 << 20


class ResultError(UserError, Fail):
    """A stored value cannot be read back (changed, missing, or a key is wrong): the task
    that needs it fails at once, without retrying; a command says so in one line."""


class OutputError(ValueError):
    """A return value cannot be kept (not serialisable, too large for the DB)."""


@dataclass(frozen=True)
class Stored:
    """A value as the results DB holds it: ``text`` in the row (JSON, or sealed JSON), or
    ``ref``, a reference to an object (or, for a map's collected list, its items)."""

    text: str | None = None
    ref: dict | None = None

    @classmethod
    def of(cls, text: str | None, ref: str | None) -> "Stored":
        return cls(text, json.loads(ref) if ref else None)

    def ref_text(self) -> str | None:
        return json.dumps(self.ref, separators=(",", ":")) if self.ref is not None else None

    @property
    def plain(self) -> bool:
        """Clear JSON in the row (no store, no key): a map may collect it as it is."""
        return self.ref is None and not crypto.is_sealed(self.text)


class Results:
    """Keeping and reading values for one configuration (see :func:`for_config`)."""

    def __init__(self, store: ObjectStore | None, keyring: crypto.Keyring | None,
                 signing_key: str = "", logs_in_store: bool = False):
        self.store = store
        self.keyring = keyring
        # log_store = "results": captured output is an object too (qflow.results.logs).
        self.logs_in_store = logs_in_store and store is not None
        self._hmac_keys = ([hashlib.sha256(b"qflow result hmac" + signing_key.encode()
                                           ).digest()] if signing_key else [])
        if keyring is not None:
            self._hmac_keys += keyring.hmac_keys

    def check(self) -> None:
        """Fail at worker start, not per task, when the store cannot be used."""
        if self.store is not None:
            self.store.check()

    # -- writing -----------------------------------------------------------------------
    def keep(self, value: Any, serializer: str, limit: int, run_id: str, node: str,
             attempt: int) -> Stored:
        """``value`` as the DB should hold it; OutputError says why it cannot be kept."""
        if serializer not in SERIALIZERS:
            raise OutputError(f"unknown serializer {serializer!r} (json or pickle)")
        if self.store is None:
            if serializer == "pickle":
                raise OutputError("serializer='pickle' needs a result_store (pickled values "
                                  "are never kept in the results DB)")
            text = _json_text(value)
            size = len(text.encode())
            if size > limit:
                raise OutputError(f"return value is {size} bytes, larger than "
                                  f"result_max_bytes ({limit}); set result_store to keep "
                                  "values of any size")
            return Stored(self.keyring.seal(text) if self.keyring else text)
        return Stored(ref=self._write(value, serializer, object_key(run_id, node, attempt)))

    def _write(self, value: Any, serializer: str, key: str) -> dict:
        if serializer == "pickle" and not self._hmac_keys:
            raise OutputError("serializer='pickle' needs encryption_key or "
                              "result_signing_key, to authenticate what it unpickles")
        text = _json_text(value) if serializer == "json" else None
        out = _Sink(self.store.writer(key), self.keyring,
                    self._hmac_keys[0] if serializer == "pickle" else None)
        try:
            if text is not None:
                for start in range(0, len(text), _SLICE):
                    out.write(text[start:start + _SLICE].encode())
            else:
                pickle.dump(value, out, protocol=5)
            return out.commit(serializer)
        except BaseException:
            out.abort()
            raise

    def seal_item(self, value: Any) -> Any:
        """A map element's input as its call holds it (sealed with a key)."""
        if self.keyring is None:
            return value
        return {SEALED_KEY: self.keyring.seal(json.dumps(value))}

    def forget_run(self, run_id: str) -> None:
        """Delete every object the run's attempts wrote, recorded or not: the retention
        hook (``qflow db prune`` calls it for each run it deletes). Objects live under
        their run's prefix, so one an attempt wrote before a crash kept its outcome from
        being recorded goes with the rest."""
        if self.store is not None:
            self.store.delete_run(run_id)

    # -- reading -----------------------------------------------------------------------
    def load(self, stored: Stored | None, node: str = "") -> Any:
        """The value :meth:`keep` kept; ResultError if it cannot be read back intact."""
        if stored is None:
            return None
        try:
            if stored.ref is None:
                return None if stored.text is None else json.loads(self.reveal(stored.text))
            if stored.ref.get("serializer") == "map":
                return [self.load(Stored(i.get("text"), i.get("ref")), node) if i else None
                        for i in stored.ref["items"]]
            return self._read(stored.ref)
        except UserError as exc:
            raise ResultError(f"cannot read the result of {node!r}: {exc}") from None

    def _read(self, ref: dict) -> Any:
        digest = hashlib.sha256()
        macs = [hmac.new(k, digestmod="sha256") for k in self._hmac_keys] \
            if "hmac" in ref else []
        plain = bytearray()
        with open_object(ref["url"]) as fh:
            chunks = _hashed(crypto.read_chunks(fh), digest)
            if ref.get("encrypted"):
                chunks = self._keys(ref["url"]).decrypt(chunks)
            for chunk in chunks:
                plain += chunk
                for mac in macs:
                    mac.update(chunk)
        if digest.hexdigest() != ref["sha256"]:
            raise UserError(f"stored object {ref['url']} was changed (sha256 mismatch)")
        if macs and not any(hmac.compare_digest(m.hexdigest(), ref["hmac"]) for m in macs):
            raise UserError(f"stored object {ref['url']} does not authenticate (HMAC "
                            "mismatch: changed, or signed with another key)")
        if ref["serializer"] == "pickle":
            return pickle.loads(plain)
        text = str(plain, "utf-8")
        del plain
        return json.loads(text)

    def _keys(self, what: str) -> crypto.Keyring:
        if self.keyring is None:
            raise UserError(f"{what} is encrypted and no encryption_key is set")
        return self.keyring

    # -- short texts: errors, tracebacks, logs -----------------------------------------
    def seal(self, text: str | None) -> str | None:
        if text is None or self.keyring is None or crypto.is_sealed(text):
            return text
        return self.keyring.seal(text)

    def seal_outcome(self, outcome: Outcome) -> Outcome:
        """The outcome as it leaves the worker: error, traceback and captured output
        sealed when a key is set."""
        if self.keyring is None:
            return outcome
        return dataclasses.replace(outcome, error=self.seal(outcome.error),
                                   error_summary=self.seal(outcome.error_summary),
                                   traceback=self.seal(outcome.traceback),
                                   log=self.seal(outcome.log))

    def reveal(self, text: str | None) -> str | None:
        """Clear text as it is; sealed text decrypted (DecryptError without the key)."""
        if not crypto.is_sealed(text):
            return text
        return self._keys("this text").open(text)

    def shown(self, text: str | None) -> str | None:
        """:meth:`reveal` for display: what no key opens shows as a note, never fails."""
        try:
            return self.reveal(text)
        except UserError:
            return UNOPENED


SEALED_KEY = "__qflow_sealed__"
UNOPENED = "(encrypted: this process has no key that opens it)"    # shown instead


def _json_text(value: Any) -> str:
    try:
        # NaN and Infinity are not JSON: readers in other languages could not parse them.
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise OutputError(f"return value is not JSON-serialisable: {exc} (or use "
                          "@task(serializer='pickle') with a result_store)") from None


def _hashed(chunks, digest):
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


class _Sink:
    """The writing end: plaintext in, HMAC'd, encrypted, hashed and written out."""

    def __init__(self, writer, keyring: crypto.Keyring | None, hmac_key: bytes | None):
        self.writer = writer
        self.encryptor = keyring.encryptor() if keyring is not None else None
        self.mac = hmac.new(hmac_key, digestmod="sha256") if hmac_key else None
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        if self.mac is not None:
            self.mac.update(data)
        self._out(self.encryptor.update(data) if self.encryptor else bytes(data))
        return len(data)

    def _out(self, data: bytes) -> None:
        if data:
            self.digest.update(data)
            self.size += len(data)
            self.writer.write(data)

    def commit(self, serializer: str) -> dict:
        if self.encryptor is not None:
            self._out(self.encryptor.finish())
        self.writer.commit()
        ref = {"url": self.writer.url, "size": self.size, "sha256": self.digest.hexdigest(),
               "serializer": serializer, "encrypted": self.encryptor is not None}
        if self.mac is not None:
            ref["hmac"] = self.mac.hexdigest()
        return ref

    def abort(self) -> None:
        self.writer.abort()


_BUILT: dict[tuple, Results] = {}
_INSTALLED: list[Results] = []


def for_config(config) -> Results:
    """The Results of a configuration, built once per process (the key is parsed and
    its derived keys computed once)."""
    key = (config.result_store, config.encryption_key, config.result_signing_key,
           config.log_store)
    found = _BUILT.get(key)
    if found is None:
        store = open_store(config.result_store) if config.result_store else None
        found = _BUILT[key] = Results(store, crypto.Keyring.from_setting(
            config.encryption_key), config.result_signing_key,
            config.log_store == "results")
    return found


def install(results: Results) -> Results:
    """Make ``results`` this process's: the readers of the store layer (a map's input,
    the texts shown by status and logs) decode with it."""
    _INSTALLED[:] = [results]
    return results


def installed() -> Results:
    """This process's Results (plain, without store or key, until one is installed)."""
    return _INSTALLED[0] if _INSTALLED else _PLAIN


_PLAIN = Results(None, None)
