"""The tuner's REST API (FastAPI)."""
