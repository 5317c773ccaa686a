"""The results DB: models, sessions, migrations and the state-changing queries."""
from qflow.store.db import Store

__all__ = ["Store"]
