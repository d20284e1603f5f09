"""The REST API's public models, shared by the server, the Python client and the CLI."""
