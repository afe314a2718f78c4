"""Ingestion and validation on real files, and every validation rule on a real malformed file."""

import pandas as pd
import pytest
from typer.testing import CliRunner

from api.cli import app
from forecasting.data import to_long
from forecasting.errors import InputError
from forecasting.io import read_table
from forecasting.transactions import transactions_to_demand

runner = CliRunner()
M5_ARGS = ["--id-cols", "item_id,store_id", "--date-col", "date", "--target-col", "value", "--freq", "D"]


def run_cli(*args: str):
    return runner.invoke(app, list(args))


def write(df: pd.DataFrame, path) -> str:
    df.to_csv(path, index=False)
    return str(path)


def test_reads_csv_gz_parquet_and_sql(tmp_path, m5_small):
    gz = tmp_path / "m5.csv.gz"
    m5_small.to_csv(gz, index=False)
    pq = tmp_path / "m5.parquet"
    m5_small.to_parquet(pq)
    url = f"sqlite:///{tmp_path / 'm5.db'}"
    from sqlalchemy import create_engine

    m5_small.to_sql("sales", create_engine(url), index=False)
    frames = [read_table(gz), read_table(pq), read_table(url, "SELECT * FROM sales")]
    for frame in frames:
        long, report, freq = to_long(frame, ["item_id", "store_id"], "date", "value", ["sell_price"], "D")
        assert freq == "D"
        assert report.n_series == 12
        assert long["unique_id"].str.contains("/").all()
        assert list(long.columns[:3]) == ["unique_id", "ds", "y"]
    assert len(frames[0]) == len(frames[1]) == len(frames[2]) == len(m5_small)


def test_missing_dates_are_filled_with_zero_and_reported(m5_small):
    gappy = m5_small.drop(index=m5_small.index[10:15])
    long, report, _ = to_long(gappy, ["item_id", "store_id"], "date", "value", [], "D")
    assert report.filled_missing_dates == 5
    assert len(long) == len(m5_small)
    assert any("filled 5 missing dates" in line for line in report.lines())


def test_weekly_aggregation_keeps_total(m5_small):
    long, _, freq = to_long(m5_small, ["item_id", "store_id"], "date", "value", [], "W")
    assert freq.startswith("W-")
    assert long["y"].sum() == pytest.approx(m5_small["value"].sum())
    assert long["ds"].dt.weekday.nunique() == 1


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda d: d.drop(columns=["value"]), "missing column(s): value"),
        (lambda d: d.assign(date=d["date"].where(d.index != 3, "2015-13-45")), "unparseable dates"),
        (lambda d: pd.concat([d, d.iloc[[7]]]), "duplicate rows"),
        (lambda d: d.assign(value=d["value"].astype(object).where(d.index != 5, "ten")), "must be numeric"),
        (lambda d: d.iloc[:0], "no rows"),
    ],
)
def test_malformed_files_exit_2_with_one_line(tmp_path, m5_small, break_it, message):
    path = write(break_it(m5_small), tmp_path / "bad.csv")
    result = run_cli("forecast", path, *M5_ARGS, "--horizon", "7", "--output", str(tmp_path / "o.csv"))
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in result.output


def test_series_too_short_for_horizon(tmp_path, m5_small):
    short = m5_small.groupby(["item_id", "store_id"]).head(5)
    path = write(short, tmp_path / "short.csv")
    result = run_cli("forecast", path, *M5_ARGS, "--horizon", "28", "--output", str(tmp_path / "o.csv"))
    assert result.exit_code == 2
    assert "too short" in result.stderr


def test_unknown_file_type_and_missing_file(tmp_path):
    (tmp_path / "x.xlsx").write_text("not a table")
    for path, message in (
        (tmp_path / "x.xlsx", "unsupported file type"),
        (tmp_path / "nope.csv", "not found"),
    ):
        with pytest.raises(InputError, match=message):
            read_table(path)


def test_transactions_rule_on_real_invoices(data_dir):
    raw = pd.read_parquet(data_dir / "online_retail" / "online_retail.parquet")
    raw = raw[raw["InvoiceDate"] < "2011-03-01"]
    demand, report, freq = transactions_to_demand(raw, "W")
    sold = raw[
        ~raw["InvoiceNo"].astype(str).str.startswith("C")
        & (raw["Quantity"] > 0)
        & (raw["UnitPrice"] > 0)
        & raw["StockCode"].astype(str).str.contains(r"\d")
    ]
    assert demand["y"].sum() == pytest.approx(sold["Quantity"].sum())
    assert report["cancelled_lines"] == int(raw["InvoiceNo"].astype(str).str.startswith("C").sum())
    assert report["kept_lines"] == len(sold)
    assert "POST" not in set(demand["unique_id"])
    # every SKU runs to the end of the data, zero-filled
    assert (demand.groupby("unique_id")["ds"].max() == demand["ds"].max()).all()
    assert (demand["y"] >= 0).all()
