"""Alembic migrations, shipped inside the package and run by ``Store.open(migrate=True)``."""
