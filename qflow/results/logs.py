"""Captured output kept in the result store (``log_store = "results"``): one object per
attempt beside its return value, ``<run>/<node>/<attempt>.log``, encrypted with
``encryption_key`` when one is set. A log then costs the results DB nothing (the attempt's
row keeps no log at all: readers find the object by run, node and attempt), and it goes
with its run when the run is pruned, since the run's whole prefix is deleted.

A container task's live output is written to the same object about once a second, each
write replacing it whole (a rename on file://, so a reader never sees half of one); the
attempt's final output replaces it once more when it ends.
"""
from __future__ import annotations

import logging

from qflow.errors import UserError
from qflow.results import crypto
from qflow.results.codec import UNOPENED, Results
from qflow.results.store import log_key

log = logging.getLogger("qflow.results")


def keep(results: Results, text: str | None, run_id: str, node: str, attempt: int
         ) -> str | None:
    """``text`` as the attempt's row should hold it: None once it is in the result store
    (``log_store = "results"``), else itself. A store that refuses it leaves it to the
    row (sealed there as any log when a key is set) rather than losing it."""
    if text is None or not results.logs_in_store:
        return text
    try:
        write(results, text, run_id, node, attempt)
    except Exception:  # noqa: BLE001 - each filesystem raises its own
        log.warning("could not write the log of %s/%s attempt %s to the result store; "
                    "the results DB keeps it", run_id, node, attempt, exc_info=True)
        return text
    return None


def write(results: Results, text: str, run_id: str, node: str, attempt: int) -> None:
    """Write (or replace) the attempt's log object."""
    data = text.encode("utf-8", "replace")
    if results.keyring is not None:
        encryptor = results.keyring.encryptor()
        data = encryptor.update(data) + encryptor.finish()
    out = results.store.writer(log_key(run_id, node, attempt))
    try:
        out.write(data)
        out.commit()
    except BaseException:
        out.abort()
        raise


def shown(results: Results, text: str | None, run_id: str, node: str, attempt: int
          ) -> str | None:
    """An attempt's log for display: the row's ``text`` (opened with the key) or, when
    the row has none and logs go to the store, the attempt's object (None if it wrote
    none). What cannot be read shows as a note; it never fails the page or command."""
    if text is not None or not results.logs_in_store:
        return results.shown(text)
    try:
        with results.store.open(log_key(run_id, node, attempt)) as fh:
            data = b"".join(crypto.read_chunks(fh))
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - each filesystem raises its own
        return f"(the log in the result store cannot be read: {type(exc).__name__}: {exc})"
    # What qflow encrypted starts with its header; a clear log (written before a key
    # was set) is shown as it is, as a clear log in the DB is.
    if data.startswith(crypto.MAGIC):
        if results.keyring is None:
            return UNOPENED
        try:
            data = b"".join(results.keyring.decrypt([data]))
        except UserError:
            return UNOPENED
    return data.decode("utf-8", "replace")
