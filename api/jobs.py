"""Background retraining: rerun the pipeline on the current data into a new run, and make it the active run
only when its backtest passes; the previous run stays in the store (and in the pointer) for a rollback.

The gate (`backtest_gate`): the new run's RMSSE for its model (auto) must be at most (1 + margin) x the
active run's, and below seasonal naive's in the same backtest (when snaive was backtested). Jobs run one at
a time on a single worker thread; their records live in memory and, once finished, in the store's
`api_jobs` table, so `GET /jobs/{id}` still answers after a restart.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from api.schemas import Job
from forecasting.factbook import FactBook
from forecasting.store import ResultsStore

log = logging.getLogger("stockpilot.api")
JOBS_TABLE = "api_jobs"


def _now() -> datetime:
    return datetime.now(UTC)


def _rmsse(metrics: pd.DataFrame, model: str) -> float | None:
    if metrics.empty or "model" not in metrics.columns:
        return None
    row = metrics[metrics["model"] == model]
    return float(row["rmsse"].iloc[0]) if len(row) and pd.notna(row["rmsse"].iloc[0]) else None


def backtest_gate(new: pd.DataFrame, active: pd.DataFrame, model: str, margin: float) -> dict[str, Any]:
    """Whether the new run's backtest passes: its `model` RMSSE not worse than the active run's by more than
    `margin` (a fraction) and better than seasonal naive's. Returns the figures and `passed`."""
    new_rmsse, active_rmsse, snaive = _rmsse(new, model), _rmsse(active, model), _rmsse(new, "snaive")
    reasons = []
    if new_rmsse is None:
        reasons.append(f"the new run has no backtest RMSSE for {model}")
    else:
        if active_rmsse is not None and new_rmsse > active_rmsse * (1 + margin):
            reasons.append(
                f"RMSSE {new_rmsse:.4f} is worse than the active run's {active_rmsse:.4f} "
                f"by more than {margin:.0%}"
            )
        if snaive is not None and new_rmsse >= snaive:
            reasons.append(f"RMSSE {new_rmsse:.4f} does not beat seasonal naive ({snaive:.4f})")
    return {
        "model": model,
        "rmsse_new": new_rmsse,
        "rmsse_active": active_rmsse,
        "rmsse_snaive": snaive,
        "margin": margin,
        "passed": not reasons,
        "reasons": reasons,
    }


def current_data(book: FactBook) -> dict[str, Any]:
    """The data to retrain on: the embedded demo data for the demo dataset (with its price column),
    otherwise the demand history the active run stored (plus its descriptions and attributes)."""
    from forecasting.demo import DEMO_DATASET, demo_demand

    if book.dataset == DEMO_DATASET:
        demand, _, freq, descriptions = demo_demand()
        return {"long_df": demand, "freq": freq, "descriptions": descriptions}
    demand = book.table("demand")[["unique_id", "ds", "y"]]
    desc = book.table("sku_descriptions")
    attrs = book.table("sku_attributes")
    wide = None
    if len(attrs):
        wide = attrs.pivot(index="unique_id", columns="attribute", values="value").reset_index()
    return {
        "long_df": demand,
        "freq": book.freq,
        "descriptions": desc.set_index("unique_id")["description"] if len(desc) else None,
        "attributes": wide,
    }


def retrain(
    store: ResultsStore, margin: float, activate: bool = True, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Retrain on the current data, gate on the backtest, activate when it passes; returns the job fields."""
    from forecasting.pipeline import activate_run, active_run_id, run_pipeline

    base = active_run_id(store)
    if base is None:
        raise RuntimeError("no pipeline run to retrain: run `stockpilot demo` first")
    book = FactBook(store, base)
    params = book.params
    model = params.get("model", "auto")
    result = run_pipeline(
        **current_data(book),
        horizon=book.horizon,
        dataset=book.dataset,
        model=model,
        windows=int(params.get("windows", 1)),
        baselines=tuple(params.get("baselines") or ()),
        store=store,
        progress=progress,
        activate=False,
    )
    checks = backtest_gate(result.metrics, book.metrics(), model, margin)
    out: dict[str, Any] = {"base_run_id": base, "new_run_id": result.run_id, "checks": checks}
    if checks["passed"] and activate:
        pointer = activate_run(result.run_id, store)
        out.update(activated=True, active_run_id=pointer["run_id"], previous_run_id=pointer["previous"])
        out["message"] = f"run {result.run_id} passed its backtest and is now active (previous: {base})"
    else:
        out.update(activated=False, active_run_id=active_run_id(store), previous_run_id=None)
        why = "; ".join(checks["reasons"]) or "activation not requested"
        out["message"] = f"run {result.run_id} kept inactive: {why}"
    return out


class JobRunner:
    """Runs retraining jobs one at a time in a worker thread and keeps their status."""

    def __init__(
        self, store: ResultsStore, margin: float, on_activate: Callable[[], None] | None = None
    ) -> None:
        self.store = store
        self.margin = margin
        self.on_activate = on_activate
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stockpilot-job")

    def submit_retrain(self, activate: bool = True) -> Job:
        """Queue a retraining job; while one is queued or running, that job is returned instead."""
        with self._lock:
            for job in self._jobs.values():
                if job.kind == "retrain" and job.status in ("queued", "running"):
                    return job
            job = Job(id=uuid.uuid4().hex[:12], kind="retrain", status="queued", created_at=_now())
            self._jobs[job.id] = job
        self._executor.submit(self._run, job.id, activate)
        log.info("retrain job %s queued", job.id)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None:
            return job
        stored = self.store.load(JOBS_TABLE)
        if stored.empty:
            return None
        rows = stored[stored["id"] == job_id]
        return Job.model_validate(json.loads(rows["record"].iloc[-1])) if len(rows) else None

    def _update(self, job_id: str, **fields: Any) -> Job:
        with self._lock:
            job = self._jobs[job_id].model_copy(update=fields)
            self._jobs[job_id] = job
        return job

    def _run(self, job_id: str, activate: bool) -> None:
        self._update(job_id, status="running", started_at=_now())
        try:
            say = lambda message: log.info("retrain %s: %s", job_id, message)  # noqa: E731
            out = retrain(self.store, self.margin, activate, progress=say)
            status = "succeeded" if out["activated"] else "rejected"
            job = self._update(job_id, status=status, finished_at=_now(), **out)
            if out["activated"] and self.on_activate is not None:
                self.on_activate()
            log.info("retrain job %s %s: %s", job_id, status, out["message"])
        except Exception as exc:
            log.exception("retrain job %s failed", job_id)
            message = f"{type(exc).__name__}: {exc}"
            job = self._update(job_id, status="failed", finished_at=_now(), message=message)
        record = pd.DataFrame({"id": [job.id], "status": [job.status], "record": [job.model_dump_json()]})
        self.store.save(JOBS_TABLE, record, run_id=job.base_run_id or "none")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
