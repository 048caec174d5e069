"""FastAPI dependencies: how a route gets the process's ``Services``.

``create_app`` puts the one ``Services`` on ``app.state.services``; a route declares
``services: ServicesDep`` (or calls ``get_services(request)``) and uses what it needs from
it. Routes are module-level functions, so they cannot close over anything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

if TYPE_CHECKING:
    from kakitome.services import Services


def get_services(request: Request) -> Services:
    """The ``Services`` of the app that received ``request``."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated["Services", Depends(get_services)]

__all__ = ["ServicesDep", "get_services"]
