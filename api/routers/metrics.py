"""`GET /metrics`: the API's Prometheus metrics (text exposition format)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Requests and latency by route, chat answers by guard outcome, the active run."""
    state = request.app.state
    book = state.active_run.get()
    state.metrics.set_active_run(book.run_id if book else None)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
