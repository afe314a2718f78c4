"""Shared test fixtures: the real data folder, and an isolated StockPilot home for every test."""

import os
import shutil
from contextlib import contextmanager
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


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> str:
    """One converted copy of the bundled language model for the whole session
    (STOCKPILOT_TEST_MODEL_DIR keeps one across sessions)."""
    return os.environ.get("STOCKPILOT_TEST_MODEL_DIR") or str(tmp_path_factory.mktemp("models"))


@contextmanager
def home_env(home: Path, model_dir: str, **env: str):
    """STOCKPILOT_HOME (and the shared model folder, one thread, no preset API key) for a block."""
    from api.config import get_api_settings
    from llm.config import get_llm_settings

    caches = (get_settings, get_api_settings, get_llm_settings)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STOCKPILOT_HOME", str(home))
        mp.setenv("STOCKPILOT_MODEL_DIR", model_dir)
        mp.setenv("STOCKPILOT_THREADS", "1")  # the tests share 2 busy cores
        mp.delenv("STOCKPILOT_API_KEY", raising=False)
        mp.setenv("STOCKPILOT_API_WARM_UP", "false")  # models load when a test asks (one test checks warm-up)
        for key, value in env.items():
            mp.setenv(key, value)
        for cache in caches:
            cache.cache_clear()
        yield home
    for cache in caches:
        cache.cache_clear()


@pytest.fixture(scope="session")
def demo_run_home(tmp_path_factory, model_dir) -> Path:
    """A home holding one real pipeline run over the 25 best-selling demo SKUs (4 weeks ahead) and its
    knowledge index, built once; modules get copies (`pipeline_home`) so none disturbs another."""
    from forecasting.demo import demo_demand
    from forecasting.pipeline import run_pipeline
    from rag.knowledge import update_index

    home = tmp_path_factory.mktemp("demo-run") / ".stockpilot"
    with home_env(home, model_dir):
        demand, _, freq, descriptions = demo_demand()
        top = demand.groupby("unique_id")["y"].sum().nlargest(25).index
        sliced = demand[demand["unique_id"].isin(top)]
        run_pipeline(sliced, freq, 4, descriptions=descriptions, dataset="demo-test", baselines=("snaive",))
        update_index()
    return home


@pytest.fixture(scope="module")
def pipeline_home(demo_run_home, tmp_path_factory, model_dir):
    """This module's own copy of `demo_run_home`, set as STOCKPILOT_HOME while the module runs."""
    home = tmp_path_factory.mktemp("home") / ".stockpilot"
    shutil.copytree(demo_run_home, home)
    with home_env(home, model_dir):
        yield home


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (`make test` installs it; never `playwright install`)."""
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
