"""The HTTP API (FastAPI): ``create_app()``; run with ``polycert serve``."""
