"""`GET /health` (no key needed): the run being served, data freshness, model versions, index size."""

from __future__ import annotations

import datetime as dt
import json
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Request

from api.schemas import Health

router = APIRouter(tags=["operations"])


def package_version() -> str:
    try:
        return version("stockpilot")
    except PackageNotFoundError:
        return "unknown"


def index_info() -> dict:
    """The saved knowledge index's manifest figures (documents, embedding model, when saved)."""
    from rag.index import HybridIndex

    path = HybridIndex.default_folder() / "manifest.json"
    if not path.is_file():
        return {"documents": 0, "built": False}
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"documents": 0, "built": False, "error": "unreadable manifest"}
    keys = ("count", "model", "dense_kind", "generation", "saved_at")
    info = {k: m.get(k) for k in keys}
    return {"documents": info.pop("count"), "built": True, **info}


def llm_info() -> dict:
    from llm.config import get_llm_settings

    settings = get_llm_settings()
    backend = settings.backend()
    return {"backend": backend.kind, "model": backend.model, "adapter": settings.llm_adapter or "auto"}


@router.get("/health", response_model=Health)
def health(request: Request) -> Health:
    """Liveness plus what is being served; never needs an API key."""
    book = request.app.state.active_run.get()
    models = {"llm": llm_info()}
    if book is None:
        return Health(status="no data", version=package_version(), models=models, index=index_info())
    fc = book.table("forecasts")
    per_sku = fc.drop_duplicates("unique_id")["model"].value_counts() if "model" in fc.columns else None
    metrics = book.metrics()
    model = book.params.get("model", "auto")
    row = metrics[metrics["model"] == model] if len(metrics) else metrics
    models["forecast"] = {
        "run_id": book.run_id,
        "model": model,
        "skus_by_model": {} if per_sku is None else {str(k): int(v) for k, v in per_sku.items()},
        "backtest_rmsse": float(row["rmsse"].iloc[0]) if len(row) else None,
    }
    as_of = dt.date.fromisoformat(book.as_of) if book.as_of else None
    return Health(
        status="ok",
        version=package_version(),
        run_id=book.run_id,
        run_created_at=book.created_at.replace(tzinfo=dt.UTC),  # the store keeps UTC without a zone
        data_as_of=as_of,
        data_age_days=(dt.date.today() - as_of).days if as_of else None,
        skus=len(book.skus),
        models=models,
        index=index_info(),
    )
