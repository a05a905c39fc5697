"""The FastAPI application, assembled from routers and middleware."""

from __future__ import annotations

from fastapi import FastAPI

from jjhub import __version__
from jjhub.api import errors
from jjhub.api.middleware import JsonBody, RateLimit, RequestLog
from jjhub.api.routes import ROUTERS
from jjhub.services import Services


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="jjhub workspaces",
        version=__version__,
        description="Cloud workspaces compatible with JJHub's workspace API.",
    )
    app.state.services = services
    for router in ROUTERS:
        app.include_router(router)
    errors.install(app)
    # Added last runs first: the request log sees every response, 429s included.
    app.add_middleware(JsonBody)
    app.add_middleware(RateLimit, per_minute=services.settings.rate_limit_per_minute)
    app.add_middleware(RequestLog)

    @app.get("/healthz", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok", "runtime": services.workspaces.runtime.name}

    return app
