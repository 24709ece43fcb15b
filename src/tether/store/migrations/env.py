"""Alembic environment: online migrations only, against the URL Tether passes in."""

from alembic import context

from tether.store.db import null_pool_engine
from tether.store.schema import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "tether.store.migrate passes the database URL"

engine = null_pool_engine(url)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
