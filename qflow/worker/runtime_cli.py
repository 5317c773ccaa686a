"""The ``docker`` or ``podman`` program that runs container tasks, one code path for both,
and what the sweeper asks of it: the containers qflow labelled, and stopping one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from qflow.errors import Fail

LABELS = ("qflow.run", "qflow.node", "qflow.attempt")


class ContainerUnavailable(Fail):
    """The container could not be created or the runtime not reached: never retried."""


@dataclass(frozen=True)
class Runtime:
    """The ``docker`` or ``podman`` program, pointed at ``container_host`` if set."""

    program: str
    host: str = ""

    @classmethod
    def from_config(cls, config: Any) -> "Runtime":
        """``container_runtime`` if set; else Docker when a Docker engine is configured
        or its socket exists, else whichever of podman and docker is installed."""
        name = config.container_runtime or _default_runtime(config.container_host)
        return cls(name, config.container_host)

    def argv(self, *args: str) -> list[str]:
        if not self.host:
            return [self.program, *args]
        flag = "--url" if self.program == "podman" else "--host"
        return [self.program, flag, self.host, *args]

    def call(self, *args: str, env: dict | None = None, timeout: float = 120.0
             ) -> subprocess.CompletedProcess:
        """Run one CLI command to its end; ContainerUnavailable if the CLI is missing."""
        try:
            return subprocess.run(self.argv(*args), capture_output=True, text=True,
                                   env=env, timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ContainerUnavailable(f"container runtime {self.program!r} not found: "
                                       "install podman or docker, or set "
                                       "container_runtime") from None
        except subprocess.TimeoutExpired:
            raise ContainerUnavailable(f"container runtime {self.program!r} did not answer "
                                       f"{args[0]!r} within {timeout:g}s") from None


def _default_runtime(host: str) -> str:
    docker = shutil.which("docker")
    podman = shutil.which("podman")
    if docker and (host or os.environ.get("DOCKER_HOST")
                   or os.path.exists("/var/run/docker.sock")):
        return "docker"
    return "podman" if podman or not docker else "docker"


# -- what the sweeper uses -------------------------------------------------------------------
def labelled(runtime: Runtime) -> list[tuple[str, str, str, int]]:
    """Every container with qflow labels: (id, run_id, node, attempt)."""
    listed = runtime.call("ps", "-a", "-q", "--no-trunc", "--filter", "label=qflow.run")
    ids = listed.stdout.split() if listed.returncode == 0 else []
    if not ids:
        return []
    fmt = "{{.Id}}\t" + "\t".join('{{index .Config.Labels "%s"}}' % k for k in LABELS)
    found = runtime.call("inspect", "--format", fmt, *ids)
    out = []
    for line in found.stdout.splitlines():   # a container gone since `ps` is left out
        parts = line.split("\t")
        if len(parts) == 4 and parts[3].isdigit():
            out.append((parts[0], parts[1], parts[2], int(parts[3])))
    return out


def stop(runtime: Runtime, cid: str, grace: float = 3.0) -> None:
    """Stop a container (SIGTERM, then SIGKILL after ``grace`` seconds) and remove it;
    quiet if it is gone already."""
    runtime.call("stop", "-t", str(int(max(grace, 0))), cid, timeout=grace + 30)
    runtime.call("rm", "-f", cid, timeout=30)
