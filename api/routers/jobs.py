"""`POST /retrain` (a background job) and `GET /jobs/{id}` (its status)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, Request, status

from api.schemas import Job, RetrainRequest

router = APIRouter(tags=["operations"])


@router.post("/retrain", response_model=Job, status_code=status.HTTP_202_ACCEPTED)
def post_retrain(request: Request, body: RetrainRequest | None = None) -> Job:
    """Retrain on the current data in the background; the new run becomes active only if its backtest
    passes (see `GET /jobs/{id}` for the checks). While a retrain runs, this returns that job."""
    if request.app.state.active_run.get() is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "no pipeline run to retrain: run `stockpilot demo`")
    return request.app.state.jobs.submit_retrain(activate=(body or RetrainRequest()).activate)


@router.get("/jobs/{job_id}", response_model=Job, responses={404: {"description": "Unknown job"}})
def get_job(request: Request, job_id: str = Path(..., pattern=r"^[0-9a-f]{12}$")) -> Job:
    """A job's status: queued, running, succeeded (activated), rejected (kept inactive) or failed."""
    job = request.app.state.jobs.get(job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return job
