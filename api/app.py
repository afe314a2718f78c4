"""The FastAPI application: JSON API, streaming chat, the chat page, metrics, background retraining.

    uvicorn "api.app:create_app" --factory      # or: stockpilot serve

Every route except `/health`, the page (`/`) and its static files needs the `X-API-Key` header.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from api.config import APISettings, get_api_settings
from api.deps import ActiveRun, assistant_for
from api.jobs import JobRunner
from api.metrics import APIMetrics, MetricsMiddleware
from api.routers import chat, forecast, health, jobs, kpis, metrics, recommendations, reports
from api.routers.health import package_version
from api.security import BodyLimitMiddleware, RateLimiter, load_keys, require_api_key
from forecasting.errors import InputError
from forecasting.store import ResultsStore

log = logging.getLogger("stockpilot.api")
STATIC = Path(__file__).parent / "static"
DESCRIPTION = """Forecasts, inventory figures, order recommendations and a guarded assistant over the active
pipeline run. Send the API key in the `X-API-Key` header (every route except `/health` and the chat page)."""


def _index_after_activation(active_run: ActiveRun) -> None:
    """After a retrain activates a run: serve it, and bring the knowledge index up to date."""
    active_run.reload()
    try:
        from rag.knowledge import update_index

        stats = update_index(active_run.store)
        log.info("knowledge index updated for run %s: %s documents", stats["run_id"], stats["documents"])
    except Exception:  # the new run is live either way; the index catches up on the next `stockpilot index`
        log.exception("updating the knowledge index failed")


def _warm_up(state: Any) -> None:
    """Build the assistant over the active run and load its models, so the first chat does not wait."""
    try:
        book = state.active_run.get()
        if book is None:
            return
        started = time.perf_counter()
        assistant_for(state, book).warm_up()
        log.info("assistant ready in %.1f s", time.perf_counter() - started)
    except Exception:  # the first chat request loads them instead, and reports what fails
        log.exception("warming up the assistant failed")


def _start_scheduler(app: FastAPI):
    """The weekly report job (api.scheduler) unless STOCKPILOT_API_SCHEDULER=false."""
    if not app.state.settings.api_scheduler:
        return None
    from api.scheduler import start_scheduler

    return start_scheduler()


@asynccontextmanager
async def lifespan(app: FastAPI):
    state = app.state
    try:
        book = state.active_run.get()
        log.info("active run: %s", book.run_id if book else "none (run `stockpilot demo`)")
    except Exception:
        log.exception("loading the active run failed")
    state.scheduler = _start_scheduler(app)
    if state.settings.api_warm_up:
        state.warm_up = threading.Thread(target=_warm_up, args=(state,), name="stockpilot-warm-up")
        state.warm_up.start()
    yield
    if state.warm_up is not None:
        state.warm_up.join()  # never leave a model half-loaded behind a stopped app
    if state.scheduler is not None:
        state.scheduler.shutdown(wait=False)
    state.jobs.shutdown()


def create_app(settings: APISettings | None = None, store: ResultsStore | None = None) -> FastAPI:
    """The app for `settings` (default: the environment) over `store` (default: the configured store)."""
    settings = settings or get_api_settings()
    store = store or ResultsStore()
    app = FastAPI(
        title="StockPilot API",
        version=package_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    state = app.state
    state.settings = settings
    state.store = store
    state.api_keys, state.api_key_file = load_keys(settings)
    state.rate_limiter = RateLimiter(settings.api_rate_limit, settings.api_rate_burst)
    state.metrics = APIMetrics()
    state.active_run = ActiveRun(store)
    state.assistant = None
    state.assistant_lock = threading.Lock()
    state.warm_up = None
    state.jobs = JobRunner(
        store, settings.api_retrain_margin, on_activate=lambda: _index_after_activation(state.active_run)
    )

    secured = [Depends(require_api_key)]
    for module in (forecast, kpis, recommendations, chat, reports, jobs, metrics):
        app.include_router(module.router, dependencies=secured)
    app.include_router(health.router)

    @app.exception_handler(InputError)
    async def input_error(_request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    return app
