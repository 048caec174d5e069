"""Alembic migrations, shipped inside the package and run by ``Database.open(migrate=True)``."""
