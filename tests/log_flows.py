"""Workflows of tests/test_log_store.py: a Python task that prints and logs and fails
its first try, and (from container_flows) a container task that prints as it runs."""
from __future__ import annotations

import logging

from container_flows import box_ticking  # noqa: F401 - registers the container workflow

from qflow import context, task, workflow

log = logging.getLogger("log_flows")


@task(retries=1, retry_delay=0)
def chatty(word: str, lines: int) -> int:
    attempt = context().attempt
    for i in range(lines):
        print(f"{word} line {i} of attempt {attempt}")
    log.warning("%s logged by attempt %s", word, attempt)
    if attempt == 1:
        raise RuntimeError(f"{word} failed on purpose")
    return lines


@workflow
def log_chatter(word: str = "marker", lines: int = 3):
    chatty(word, lines)
