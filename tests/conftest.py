"""Shared test fixtures: the real data folder, and an isolated StockPilot home for every test."""

import os
from pathlib import Path

import pandas as pd
import pytest

from forecasting.settings import get_settings

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STOCKPILOT_SHARED_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data, the real datasets (never copied into the repo)."""
    return DATA


@pytest.fixture(autouse=True)
def stockpilot_home(tmp_path, monkeypatch):
    """Each test gets its own .stockpilot folder (results store, caches), never the user's."""
    home = tmp_path / ".stockpilot"
    monkeypatch.setenv("STOCKPILOT_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def m5_raw() -> pd.DataFrame:
    """The real M5 subset (280 item x store daily series) as published in shared/data."""
    return pd.read_csv(DATA / "m5" / "m5_sales_long.csv.gz")


@pytest.fixture(scope="session")
def m5_small(m5_raw) -> pd.DataFrame:
    """12 real M5 series (4 items x 3 stores), last 400 days."""
    items = sorted(m5_raw["item_id"].unique())[::7][:4]
    stores = ["CA_1", "TX_1", "WI_1"]
    d = m5_raw[m5_raw["item_id"].isin(items) & m5_raw["store_id"].isin(stores)]
    return d[d["date"] > "2015-02-20"].reset_index(drop=True)


@pytest.fixture(scope="session")
def carparts_small() -> pd.DataFrame:
    """60 real car-part series (monthly, intermittent)."""
    d = pd.read_csv(DATA / "carparts" / "carparts_long.csv.gz")
    parts = sorted(d["part_id"].unique())[:60]
    return d[d["part_id"].isin(parts)].reset_index(drop=True)
