"""Alerts: user callbacks and built-in notifiers (webhook, e-mail), run after commit.

A failing callback or notifier is logged and never changes the run.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import smtplib
import ssl
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Callable

from qflow import authoring
from qflow.config import Config
from qflow.core.records import Outcome
from qflow.core.states import FAILED, RETRYING, SUCCEEDED
from qflow.store import Store, read

log = logging.getLogger("qflow.alerts")

TASK_FAILED, TASK_RETRY, TASK_SUCCEEDED = "task_failed", "task_retry", "task_succeeded"
RUN_FAILED, RUN_SUCCEEDED = "run_failed", "run_succeeded"


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


class Alerter:
    """Tells the user's callbacks and the notifiers what ended, after commit."""

    _TASK = {SUCCEEDED: (TASK_SUCCEEDED, "on_success"), FAILED: (TASK_FAILED, "on_failure"),
             RETRYING: (TASK_RETRY, "on_retry")}

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store

    def task_ended(self, run_id: str, workflow: str, node: str, attempt: int,
                   params: dict, tdef, outcome: Outcome) -> None:
        """An attempt's outcome is recorded: the task's own callback, then notifiers."""
        kind, hook = self._TASK[outcome.state]
        callback = tdef.options.get(hook) if tdef is not None else None
        emit(self.config, Event(kind, run_id, workflow, node, outcome.state, attempt,
                                outcome.error, params), [callback])

    def run_ended(self, run_id: str, workflow: str, state: str | None) -> None:
        """A run ended: the workflow's callback, then notifiers (not for a canceled run)."""
        if state not in (SUCCEEDED, FAILED):
            return
        with self.store.read() as conn:
            run = read.get_run(conn, run_id, with_tasks=False)
            failed = read.failed_tasks(conn, run_id)
        first = failed[0] if failed else {}
        event = Event(RUN_SUCCEEDED if state == SUCCEEDED else RUN_FAILED, run_id, workflow,
                      first.get("node"), state, None, first.get("error"), run["params"],
                      run.get("logical_time"), failed)
        wdef = authoring.WORKFLOWS.get(workflow)
        hook = "on_success" if state == SUCCEEDED else "on_failure"
        emit(self.config, event, [wdef.options.get(hook) if wdef is not None else None])
