"""The segmentation repositories and unit of work (SQLAlchemy on SQLite and PostgreSQL)."""
