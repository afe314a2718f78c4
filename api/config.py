"""HTTP API settings from `STOCKPILOT_*` environment variables: keys, request limits, rate limit, jobs."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from forecasting.settings import get_settings


class APISettings(BaseSettings):
    """What the API accepts and how fast.

    - `STOCKPILOT_API_KEY`: the accepted key(s), comma-separated. Unset: the key in `api_key_file`,
      generated on first start (32 random bytes, URL-safe, file mode 0600).
    - `STOCKPILOT_API_KEY_FILE`: where the generated key lives (default `<home>/api_key`).
    - `STOCKPILOT_API_RATE_LIMIT` / `STOCKPILOT_API_RATE_BURST`: requests per second per key (token bucket)
      and the burst it allows; beyond them the API answers 429 with `Retry-After`.
    - `STOCKPILOT_API_MAX_QUESTION_CHARS`, `_MAX_BATCH_ITEMS`, `_MAX_BODY_BYTES`, `_MAX_HISTORY_PERIODS`:
      request limits; a request over one gets 422 with a message naming the limit.
    - `STOCKPILOT_API_RETRAIN_MARGIN`: a retrained run is activated only when its `auto` RMSSE is at most
      (1 + margin) x the active run's and below seasonal naive's in the same backtest.
    - `STOCKPILOT_API_SCHEDULER=false`: do not start the weekly report job (api.scheduler) with the app.
    - `STOCKPILOT_API_WARM_UP=false`: do not build the assistant and load its models in the background at
      start-up; the first chat request then waits for them (about 10 s on 2 cores).
    """

    model_config = SettingsConfigDict(env_prefix="STOCKPILOT_", extra="ignore")

    api_key: str | None = None
    api_key_file: Path | None = None
    api_rate_limit: float = Field(100.0, gt=0)
    api_rate_burst: int = Field(200, ge=1)
    api_max_question_chars: int = Field(500, ge=1)
    api_max_batch_items: int = Field(100, ge=1)
    api_max_body_bytes: int = Field(64 * 1024, ge=1024)
    api_max_history_periods: int = Field(520, ge=1)
    api_retrain_margin: float = Field(0.05, ge=0)
    api_scheduler: bool = True
    api_warm_up: bool = True

    @property
    def key_file(self) -> Path:
        return self.api_key_file or get_settings().home / "api_key"


@lru_cache
def get_api_settings() -> APISettings:
    return APISettings()
