"""Webhooks: events posted as signed JSON to the endpoints people configure.

- ``events``     the event types, and how rows of the event sources become them
- ``signing``    the ``Kakitome-Signature`` header: make it, and check it (for receivers)
- ``dispatcher`` the worker-role task: read new events by id cursor, enqueue a delivery
  per subscribed endpoint, POST with bounded concurrency, retry with back-off, log attempts

Storage is ``kakitome.webhooks.store``; the UI is ``web/ui/areas/webhooks.py``.
"""
