"""Delivery's repositories on SQLAlchemy's AsyncSession, grouped by the unit of work."""
