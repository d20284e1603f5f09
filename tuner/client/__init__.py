"""The Python client of the REST API and its resumable downloads."""
