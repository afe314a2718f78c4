"""Shared state behind the routers: the active run's FactBook (reloaded when the active run changes), the
assistant, and the dependencies that hand them to requests."""

from __future__ import annotations

import bisect
import logging
import threading
import time
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError

from api.config import APISettings
from forecasting.errors import InputError
from forecasting.factbook import FactBook
from forecasting.store import ResultsStore

log = logging.getLogger("stockpilot.api")
WARM_TABLES = ("forecasts", "demand", "inventory_kpis", "order_advice", "sku_descriptions", "demand_classes")


class ActiveRun:
    """The FactBook of the active pipeline run, cached; checks the active-run pointer every `check_seconds`
    so a retrain (or `stockpilot` activating another run) is picked up without a restart."""

    def __init__(self, store: ResultsStore, check_seconds: float = 2.0) -> None:
        self.store = store
        self.check_seconds = check_seconds
        self._book: FactBook | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def get(self) -> FactBook | None:
        now = time.monotonic()
        if self._book is not None and now - self._checked < self.check_seconds:
            return self._book
        with self._lock:
            if self._book is None or now - self._checked >= self.check_seconds:
                self._refresh()
                self._checked = time.monotonic()
        return self._book

    def reload(self) -> FactBook | None:
        """Re-read the active run now (after an activation)."""
        with self._lock:
            self._refresh()
            self._checked = time.monotonic()
        return self._book

    def _refresh(self) -> None:
        from forecasting.pipeline import active_run_id

        run_id = active_run_id(self.store)
        if run_id is None:
            self._book = None
            return
        if self._book is not None and self._book.run_id == run_id:
            return
        book = FactBook(self.store, run_id)
        for name in WARM_TABLES:  # load once here, not inside the first requests
            book.table(name)
        _ = book.skus
        log.info("serving pipeline run %s (%s, as of %s)", run_id, book.dataset, book.as_of)
        self._book = book


def invalid(loc: tuple[str, ...], message: str, value: Any = None) -> RequestValidationError:
    """A 422 in FastAPI's validation-error shape (`detail: [{loc, msg, type}]`), so every 422 the API
    sends has one documented form; `message` says which limit was crossed."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": value}])


def get_settings_dep(request: Request) -> APISettings:
    return request.app.state.settings


def get_book(request: Request) -> FactBook:
    """Dependency: the active run's FactBook, or 503 when no pipeline has run yet."""
    book = request.app.state.active_run.get()
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


def get_assistant(request: Request) -> Any:
    """Dependency: the assistant over the active run. Built on first use (the intent model trains and the
    index loads), rebuilt when the active run changes, keeping the loaded language model."""
    from llm.assistant import Assistant

    state = request.app.state
    book = get_book(request)
    with state.assistant_lock:
        current = state.assistant
        if current is None or current.factbook.run_id != book.run_id:
            writer = current._writer if current is not None else None
            try:
                state.assistant = Assistant(factbook=book, writer=writer)
            except InputError as exc:
                raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
        return state.assistant
