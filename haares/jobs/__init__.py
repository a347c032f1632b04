"""The job queue: SQLAlchemy schema, enqueue, claim / lease / heartbeat / finish on SQLite and PostgreSQL."""
