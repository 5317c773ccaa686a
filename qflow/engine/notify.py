"""Delivering alert events to the notifiers (webhook, e-mail) from the outbox.

Each event is leased by one process at a time, sent, and marked delivered; a failure makes
it due again after a backoff (5 s, 10 s, 20 s … at most an hour) until it is
``alert_retry_hours`` old, when it is given up (and `qflow doctor` lists it). Every
delivery of one event carries the same key (``key`` in the webhook's JSON, the mail's
Message-ID), so a receiver can drop the rare duplicate (a process that dies between
sending and marking it delivered).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import smtplib
import ssl
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from qflow.config import Config
from qflow.store import Store, outbox
from qflow.store.transitions import utcnow

log = logging.getLogger("qflow.alerts")

LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Event:
    """Something worth telling a person: what happened, to which run and node."""

    kind: str
    run_id: str
    workflow: str
    node: str | None = None
    state: str | None = None
    attempt: int | None = None
    error: str | None = None
    params: dict = field(default_factory=dict)
    logical_time: str | None = None
    failed: list[dict] = field(default_factory=list)    # run events: [{node, error}]
    key: str | None = None        # the same for every delivery of one event (idempotency)

    def summary(self) -> str:
        where = f"{self.workflow} run {self.run_id}"
        what = self.kind.replace("_", " ")
        node = f" at {self.node}" if self.node else ""
        error = f": {self.error}" if self.error else ""
        return f"qflow: {what} — {where}{node}{error}"

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.summary(), **dataclasses.asdict(self)}


def wanted_kinds(config: Config) -> frozenset[str]:
    """The event kinds the configured notifiers want (none without a notifier)."""
    if not config.notify_webhook_url and not (config.notify_email_to and config.smtp_host):
        return frozenset()
    return frozenset(_listed(config.notify_events))


def deliver_due(config: Config, store: Store, run_id: str | None = None) -> int:
    """Deliver what is due (of ``run_id`` only, if given); returns how many were sent."""
    sent = 0
    for alert_id, tries, payload in store.transact(outbox.lease_due, run_id, LEASE_SECONDS):
        fields = {f.name for f in dataclasses.fields(Event)}
        event = Event(**{k: v for k, v in payload.items() if k in fields})
        try:
            for notifier in (_webhook, _email):
                notifier(config, event)
        except Exception as exc:  # noqa: BLE001 - any failure: try again later
            retry_in = _backoff(config, tries, payload)
            log.error("alert %s of run %s not delivered (try %d%s): %s", event.kind,
                      event.run_id, tries, "" if retry_in is not None else ", giving up", exc)
            store.transact(outbox.failed, alert_id, f"{type(exc).__name__}: {exc}", retry_in)
            continue
        store.transact(outbox.delivered, alert_id)
        sent += 1
    return sent


def _backoff(config: Config, tries: int, payload: dict) -> float | None:
    """Seconds until the next try, or None once the event is too old to be worth it."""
    created = dt.datetime.fromisoformat(payload["created_at"])
    age = utcnow() - created
    if age > dt.timedelta(hours=config.alert_retry_hours):
        return None
    return min(5.0 * 2 ** (tries - 1), 3600.0)


def _listed(value: str) -> set[str]:
    return {v.strip() for v in value.split(",") if v.strip()}


def _webhook(config: Config, event: Event) -> None:
    """POST the event as JSON (a ``text`` field makes it a Slack-style message)."""
    if not config.notify_webhook_url:
        return
    body = json.dumps(event.as_dict(), default=str).encode()
    request = urllib.request.Request(config.notify_webhook_url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _email(config: Config, event: Event) -> None:
    """Send the event by SMTP to ``notify_email_to``."""
    recipients = sorted(_listed(config.notify_email_to))
    if not recipients or not config.smtp_host:
        return
    message = EmailMessage()
    message["Subject"] = event.summary()[:200]
    message["From"] = config.smtp_from
    message["To"] = ", ".join(recipients)
    if event.key:                 # the same for every try: a receiver can drop a repeat
        domain = "".join(c if c.isalnum() or c in ".-" else "-" for c in event.key)
        message["Message-ID"] = make_msgid(idstring="qflow", domain=domain[:200])
    message.set_content(json.dumps(dataclasses.asdict(event), indent=2, default=str))
    with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=10) as smtp:
        _secure(smtp, config)
        if config.smtp_user:
            smtp.login(config.smtp_user, config.smtp_password)
        smtp.send_message(message)


def _secure(smtp: smtplib.SMTP, config: Config) -> None:
    """STARTTLS (verifying the server's certificate) when the server offers it, unless
    ``smtp_starttls`` is off; never a password over a connection left in clear."""
    smtp.ehlo()
    if config.smtp_starttls and smtp.has_extn("starttls"):
        smtp.starttls(context=ssl.create_default_context())
        smtp.ehlo()
    elif config.smtp_starttls and config.smtp_user:
        raise smtplib.SMTPException(f"{config.smtp_host} does not offer STARTTLS: the "
                                    "password is not sent in clear (smtp_starttls = false "
                                    "allows it)")


