"""Shared state behind the routers: the active run's FactBook (reloaded when the active run changes), the
assistant, and the dependencies that hand them to requests."""

from __future__ import annotations

import bisect
import gc
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from api.config import APISettings
from forecasting.errors import InputError
from forecasting.factbook import FactBook
from forecasting.settings import get_settings
from forecasting.store import ResultsStore

log = logging.getLogger("stockpilot.api")
WARM_TABLES = ("forecasts", "demand", "inventory_kpis", "order_advice", "sku_descriptions", "demand_classes")


@dataclass(frozen=True)
class ItemJSON:
    """One SKU's forecast response, pre-encoded: `head` (sku, description, model, run_id), one JSON text per
    history point, and the forecast array; `render(n)` joins them with the last n history points. Strings
    keep the per-run cache out of the garbage collector's way (no pauses scanning 100k small dicts)."""

    head: str
    history: tuple[str, ...]
    forecast: str

    def render(self, periods: int) -> bytes:
        points = self.history[-periods:] if periods > 0 else ()
        return f'{{{self.head},"history":[{",".join(points)}],"forecast":{self.forecast}}}'.encode()


def item_series(book: FactBook) -> dict[str, ItemJSON]:
    """Per SKU of the run, the `GET /forecast/item` response ready to serve (built once per run)."""

    def points(frame: pd.DataFrame, cols: list[str]) -> dict[str, list[str]]:
        frame = frame.sort_values(["unique_id", "ds"]).assign(ds=frame["ds"].dt.strftime("%Y-%m-%d"))
        return {
            uid: [json.dumps(r, allow_nan=False) for r in g[cols].to_dict("records")]
            for uid, g in frame.groupby("unique_id", sort=False)
        }

    fc = book.table("forecasts")
    forecast = points(fc, ["ds", "yhat", "yhat_lower", "yhat_upper"])
    history = points(book.table("demand"), ["ds", "y"])
    models = fc.groupby("unique_id", sort=False)["model"].first().to_dict() if "model" in fc.columns else {}
    items = {}
    for sku in book.skus:
        head = json.dumps(
            {
                "sku": sku,
                "description": book.description(sku),
                "model": models.get(sku),
                "run_id": book.run_id,
            }
        )[1:-1]
        items[sku] = ItemJSON(head, tuple(history.get(sku, [])), f"[{','.join(forecast.get(sku, []))}]")
    return items


class ActiveRun:
    """The FactBook of the active pipeline run, cached; checks the active-run pointer every `check_seconds`
    so a retrain (or `stockpilot` activating another run) is picked up without a restart. `items` holds
    the run's per-SKU series ready to serve (see `item_series`)."""

    def __init__(self, store: ResultsStore, check_seconds: float = 2.0) -> None:
        self.store = store
        self.check_seconds = check_seconds
        self._book: FactBook | None = None
        self.items: dict[str, ItemJSON] = {}
        self._pointer: int | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether the next `get` asks the store for the active run (maybe reloading): when the active-run
        pointer file changed (one stat call), or every `check_seconds` when there is no pointer file."""
        if self._book is None:
            return True
        pointer = _pointer_mtime()
        if pointer is not None:
            return pointer != self._pointer
        return time.monotonic() - self._checked >= self.check_seconds

    def get(self) -> FactBook | None:
        if not self.due():
            return self._book
        with self._lock:
            if self.due():
                self._refresh()
        return self._book

    def reload(self) -> FactBook | None:
        """Re-read the active run now (after an activation)."""
        with self._lock:
            self._refresh()
        return self._book

    def _refresh(self) -> None:
        from forecasting.pipeline import active_run_id

        self._pointer, self._checked = _pointer_mtime(), time.monotonic()
        run_id = active_run_id(self.store)
        if run_id is None:
            self._book, self.items = None, {}
            return
        if self._book is not None and self._book.run_id == run_id:
            return
        book = FactBook(self.store, run_id)
        for name in WARM_TABLES:  # load (and split by SKU) once here, not inside the first requests
            book.table(name)
        if book.skus:
            book.forecast(book.skus[0])
            book.history(book.skus[0])
        items = item_series(book)
        log.info("serving pipeline run %s (%s, as of %s)", run_id, book.dataset, book.as_of)
        self._book, self.items = book, items
        gc.collect()
        gc.freeze()  # the loaded run stays for the process's life: keep it out of every later collection


def _pointer_mtime() -> int | None:
    """Modification time of the active-run pointer file (`<home>/active_run.json`), None when absent."""
    try:
        return os.stat(get_settings().home / "active_run.json").st_mtime_ns
    except OSError:
        return None


def invalid(loc: tuple[str, ...], message: str, value: Any = None) -> RequestValidationError:
    """A 422 in FastAPI's validation-error shape (`detail: [{loc, msg, type}]`), so every 422 the API
    sends has one documented form; `message` says which limit was crossed."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": value}])


async def get_settings_dep(request: Request) -> APISettings:
    return request.app.state.settings


async def get_book(request: Request) -> FactBook:
    """Dependency: the active run's FactBook, or 503 when no pipeline has run yet (the periodic check of
    the active run, and a reload, run in the thread pool, off the event loop)."""
    active: ActiveRun = request.app.state.active_run
    book = await run_in_threadpool(active.get) if active.due() else active.get()
    if book is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "no pipeline results yet: run `stockpilot demo` first"
        )
    return book


def check_sku(book: FactBook, sku: str) -> str:
    """`sku` when the active run has it, else 404 naming close matches."""
    skus = book.skus  # sorted
    i = bisect.bisect_left(skus, sku)
    if i < len(skus) and skus[i] == sku:
        return sku
    close = [s for s, _ in book.match_skus(sku) if s.upper() != sku.strip().upper()]
    raise HTTPException(
        status.HTTP_404_NOT_FOUND,
        detail={"message": book.unknown_sku_message(sku), "sku": sku, "close_matches": close},
    )


def get_assistant(request: Request, book: FactBook = Depends(get_book)) -> Any:
    """Dependency: the assistant over the active run (see `assistant_for`)."""
    return assistant_for(request.app.state, book)


def assistant_for(state: Any, book: FactBook) -> Any:
    """The app's assistant over `book`. Built on first use (the intent model trains and the index loads)
    or at start-up by the warm-up, rebuilt when the active run changes, keeping the loaded language model."""
    from llm.assistant import Assistant

    with state.assistant_lock:
        current = state.assistant
        if current is None or current.factbook.run_id != book.run_id:
            writer = current._writer if current is not None else None
            try:
                state.assistant = Assistant(factbook=book, writer=writer)
            except InputError as exc:
                raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
        return state.assistant
