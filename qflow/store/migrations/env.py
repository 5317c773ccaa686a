"""Alembic environment: qflow passes its own connection in ``config.attributes``."""
from alembic import context

from qflow.store.models import with_partial_indexes

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=with_partial_indexes(),
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
