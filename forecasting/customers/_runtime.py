"""Thread limits for small numeric jobs.

K-means, NMF and similar steps on a few thousand customers are fastest single-threaded; OpenMP/BLAS
thread pools on a busy 2-core machine can make them 100x slower through spin-waiting.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from threadpoolctl import threadpool_limits

from forecasting.settings import get_settings


def small_job_threads() -> AbstractContextManager:
    """Limit OpenMP/BLAS pools to STOCKPILOT_THREADS (default 1) for the enclosed block."""
    return threadpool_limits(limits=get_settings().threads or 1)


def n_jobs() -> int:
    """Worker count for ensembles (random forests, isolation forests): STOCKPILOT_THREADS or 2."""
    return get_settings().threads or 2
