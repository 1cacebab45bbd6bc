"""SQL, the source of truth: players, matches and the outbox, via `databases` + SQLAlchemy Core."""
