"""The results DB: models, sessions, migrations and the state-changing queries."""
from .db import Store

__all__ = ["Store"]
