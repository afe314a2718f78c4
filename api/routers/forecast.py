"""Forecasts of the active run: one SKU (`GET /forecast/item/{sku}`) or a batch (`POST /forecast/items`).

Both serve the run's per-SKU series prepared once per run (`api.deps.item_series`), so a request is a
lookup plus JSON encoding: the hot path of the API (50 requests/s target, see benchmarks/bench_api.py).
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response

from api.config import APISettings
from api.deps import check_sku, get_book, get_settings_dep, invalid
from api.schemas import ForecastBatchRequest, ForecastBatchResponse, ItemForecast, NotFoundSku, UnknownSku
from forecasting.factbook import FactBook

router = APIRouter(prefix="/forecast", tags=["forecast"])
JSON = "application/json"
SkuPath = Path(..., max_length=64, description="SKU code (unique_id), e.g. 85123A or FOODS_1_001/CA_1.")


def item_forecast(request: Request, sku: str, history: int) -> bytes:
    """JSON of one known SKU of the active run: last `history` periods of history, and the forecast."""
    item = request.app.state.active_run.items.get(sku)
    if item is None:  # the active run changed during this request and no longer has the SKU
        raise HTTPException(404, f"SKU {sku!r} is not in the current results")
    return item.render(history)


def check_history(history: int, settings: APISettings) -> int:
    if history > settings.api_max_history_periods:
        limit = settings.api_max_history_periods
        raise invalid(("query", "history"), f"history is limited to {limit} periods (got {history})", history)
    return history


@router.get("/item/{sku:path}", response_model=ItemForecast, responses={404: {"model": UnknownSku}})
async def get_item(
    request: Request,
    sku: str = SkuPath,
    history: int = Query(26, ge=0, description="Periods of history to include."),
    book: FactBook = Depends(get_book),
    settings: APISettings = Depends(get_settings_dep),
) -> Response:
    """One SKU's forecast with its 90% interval and recent history; 404 with close matches if unknown."""
    sku = check_sku(book, sku)
    return Response(item_forecast(request, sku, check_history(history, settings)), media_type=JSON)


@router.post("/items", response_model=ForecastBatchResponse)
async def post_items(
    request: Request,
    body: ForecastBatchRequest,
    book: FactBook = Depends(get_book),
    settings: APISettings = Depends(get_settings_dep),
) -> Response:
    """Forecasts of several SKUs; unknown ones are listed in `not_found` with close matches."""
    if len(body.skus) > settings.api_max_batch_items:
        limit = settings.api_max_batch_items
        raise invalid(("body", "skus"), f"a batch is limited to {limit} SKUs (got {len(body.skus)})")
    history = check_history(body.history, settings)
    items, missing = [], []
    for sku in dict.fromkeys(body.skus):
        try:
            items.append(item_forecast(request, check_sku(book, sku), history))
        except HTTPException as exc:
            missing.append(NotFoundSku(sku=sku, close_matches=exc.detail["close_matches"]).model_dump())
    head = json.dumps({"run_id": book.run_id, "not_found": missing})[:-1]
    return Response(b'%s, "items": [%s]}' % (head.encode(), b",".join(items)), media_type=JSON)
