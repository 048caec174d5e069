"""The HTTP side: ``create_app(services)`` builds the FastAPI app.

What it talks to: HTTP clients (the API, authenticated with bearer API keys) and the
services it is given (``kakitome.services``). What it trusts: nothing in a request until
the key is checked. Limits: request bodies larger than ``body_limit(settings)`` are refused
with 413 before they are read; messages larger than ``delivery.max_message_size`` with 413
after.
"""

from kakitome.web.app import create_app

__all__ = ["create_app"]
