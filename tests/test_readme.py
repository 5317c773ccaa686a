"""The README's snippets work as written: its first command runs the example, every
Python block loads as a workflow file, and the Client example runs."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", README, re.S)]
WORKFLOW_FILES = [b for b in PYTHON_BLOCKS if "Client(" not in b]


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QFLOW_")}
    return {**env, **more}


def test_the_first_command_runs_the_example_on_the_embedded_default(tmp_path):
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    line = next(x for x in first.splitlines() if "qflow -A" in x)
    command = shlex.split(line.split("&&", 1)[1])          # after the pip install
    command = [str(ROOT / a) if a.startswith("examples/") else a for a in command]
    done = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded" in done.stdout


@pytest.mark.parametrize("index", range(len(WORKFLOW_FILES)))
def test_each_python_block_loads_as_a_workflow_file(tmp_path, index):
    (tmp_path / "snippet.py").write_text(WORKFLOW_FILES[index])
    done = subprocess.run(["qflow", "-A", "snippet.py", "workflows", "--json"], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_client_example_runs(tmp_path):
    block = next(b for b in PYTHON_BLOCKS if "Client(" in b)
    (tmp_path / "client_example.py").write_text(block)
    done = subprocess.run([sys.executable, "client_example.py"], cwd=tmp_path,
                          env=_env(QFLOW_APP=str(ROOT / "examples" / "daily_report.py")),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
