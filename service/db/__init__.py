"""Database layer: models, engine/session factory, repositories (the only place with queries)."""
