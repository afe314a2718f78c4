"""Settings from `STOCKPILOT_*` environment variables, with defaults that work with nothing set."""

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where StockPilot keeps its state; everything lives under `home` unless set explicitly."""

    model_config = SettingsConfigDict(env_prefix="STOCKPILOT_")

    home: Path = Path(".stockpilot")
    database_url: str | None = None
    data_dir: Path | None = None
    model_dir: Path | None = None
    api_key: str | None = None
    threads: int | None = None

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.home / 'stockpilot.db').resolve()}"

    @property
    def data_path(self) -> Path:
        return self.data_dir or self.home / "data"

    @property
    def models_path(self) -> Path:
        return self.model_dir or self.home / "models"


@lru_cache
def get_settings() -> Settings:
    return Settings()
