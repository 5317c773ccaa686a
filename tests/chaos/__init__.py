"""The chaos soak: a workflow of thousands of tasks on real worker processes, Redis and
PostgreSQL while a seeded random schedule kills workers and restarts the servers, then an
audit of what ran against what qflow recorded.

``tests/test_chaos.py`` runs the short form; ``python -m tests.chaos --minutes 10 --seed N``
the long one.
"""
from __future__ import annotations

import sys
from pathlib import Path

# The soak reuses the test helpers (servers.py, conftest.start_cluster), which import
# each other as top-level modules, as pytest puts tests/ on sys.path.
TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
