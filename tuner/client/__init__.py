"""The Python client of the REST API and its resumable downloads.

`from tuner.client import Client`: it needs only this package, `tuner.public` (the API's models)
and `tuner.domain` (errors), never the server.
"""

from tuner.client.rest import ApiError, Client, Event

__all__ = ["ApiError", "Client", "Event"]
