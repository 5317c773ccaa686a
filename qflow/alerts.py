"""Alerts: user callbacks and built-in notifiers (webhook, e-mail), run after commit.

A failing callback or notifier is logged and never changes the run.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import smtplib
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Callable

from .config import Config

log = logging.getLogger("qflow.alerts")

TASK_FAILED, TASK_RETRY, TASK_SUCCEEDED = "task_failed", "task_retry", "task_succeeded"
RUN_FAILED, RUN_SUCCEEDED = "run_failed", "run_succeeded"
EVENTS = (TASK_FAILED, TASK_RETRY, TASK_SUCCEEDED, RUN_FAILED, RUN_SUCCEEDED)


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

    def summary(self) -> str:
        where = f"{self.workflow} run {self.run_id}"
        what = self.kind.replace("_", " ")
        node = f" at {self.node}" if self.node else ""
        error = f": {self.error}" if self.error else ""
        return f"qflow: {what} — {where}{node}{error}"

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.summary(), **dataclasses.asdict(self)}


def emit(config: Config, event: Event, callbacks: list[Callable | None]) -> None:
    """Call the user's callbacks, then the configured notifiers; log, never raise."""
    for callback in callbacks:
        if callback is None:
            continue
        try:
            callback(event)
        except Exception:  # noqa: BLE001 - an alert must not fail the run
            log.exception("alert callback %r failed for %s", callback, event.kind)
    if event.kind not in _listed(config.notify_events):
        return
    for notifier in (_webhook, _email):
        try:
            notifier(config, event)
        except Exception as exc:  # noqa: BLE001
            log.error("%s notifier failed for %s of run %s: %s", notifier.__name__.strip("_"),
                      event.kind, event.run_id, exc)


def _listed(value: str) -> set[str]:
    return {v.strip() for v in value.split(",") if v.strip()}


def _webhook(config: Config, event: Event) -> None:
    """POST the event as JSON (a ``text`` field makes it a Slack-style message)."""
    if not config.notify_webhook_url:
        return
    body = json.dumps(event.as_dict()).encode()
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
    message.set_content(json.dumps(dataclasses.asdict(event), indent=2, default=str))
    with smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=10) as smtp:
        if config.smtp_starttls:
            smtp.starttls()
        if config.smtp_user:
            smtp.login(config.smtp_user, config.smtp_password)
        smtp.send_message(message)
