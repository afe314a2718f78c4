"""Map user tables to the long format (`unique_id, ds, y` + exogenous columns) and validate them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from forecasting.errors import InputError

FREQ_ALIASES = {"D": "D", "W": "W", "MS": "MS", "M": "MS"}
WEEKDAYS = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]


@dataclass
class LoadReport:
    """What validation changed or noticed, to show the user."""

    n_series: int = 0
    n_rows: int = 0
    filled_missing_dates: int = 0
    filled_missing_target: int = 0
    aggregated_rows: int = 0
    dropped_short_series: list[str] = field(default_factory=list)
    freq: str = "D"
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    def lines(self) -> list[str]:
        out = [f"{self.n_series} series, {self.n_rows} rows, {self.start:%Y-%m-%d} .. {self.end:%Y-%m-%d}"]
        if self.aggregated_rows:
            out.append(f"aggregated {self.aggregated_rows} input rows to frequency {self.freq}")
        if self.filled_missing_dates:
            out.append(f"filled {self.filled_missing_dates} missing dates inside series spans with 0")
        if self.filled_missing_target:
            out.append(f"filled {self.filled_missing_target} empty target values with 0")
        if self.dropped_short_series:
            out.append(f"dropped {len(self.dropped_short_series)} series too short for the horizon")
        return out


def pandas_freq(freq: str, dates: pd.Series | None = None) -> str:
    """Resolve the user's D/W/MS into a pandas offset alias; weekly keeps the data's own weekday."""
    key = FREQ_ALIASES.get(freq.upper() if freq else "", None)
    if key is None:
        raise InputError(f"unsupported frequency {freq!r}: use D, W or MS")
    if key != "W":
        return key
    if dates is not None and len(dates):
        weekdays = pd.DatetimeIndex(dates.unique()).weekday
        if len(np.unique(weekdays)) == 1:
            return f"W-{WEEKDAYS[int(weekdays[0])]}"
    return "W-MON"


def _parse_dates(values: pd.Series, column: str) -> pd.Series:
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise InputError(f"column {column!r} has an empty date (first at row {row + 1})")
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        text = values.astype(str)
        parsed = pd.to_datetime(text, errors="coerce", format="mixed")
        bad = parsed.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"column {column!r} has unparseable dates, e.g. {text.iloc[row]!r} at row {row + 1}"
            )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    return parsed


def _parse_target(values: pd.Series, column: str) -> pd.Series:
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna() & (values.astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"column {column!r} must be numeric, found {str(values.iloc[row])!r} at row {row + 1}"
        )
    return numeric.astype(float)


def align_dates(ds: pd.Series, freq: str) -> pd.Series:
    """Snap timestamps to the start of their period for `freq` (a pandas alias from pandas_freq)."""
    if freq == "D":
        return ds.dt.normalize()
    if freq == "MS":
        return ds.dt.to_period("M").dt.start_time
    if freq.startswith("W-"):
        anchor = WEEKDAYS.index(freq[2:])
        days_back = (ds.dt.weekday - anchor) % 7
        return (ds - pd.to_timedelta(days_back, unit="D")).dt.normalize()
    raise InputError(f"unsupported frequency {freq!r}")


def to_long(
    df: pd.DataFrame,
    id_cols: list[str],
    date_col: str,
    target_col: str,
    exog_cols: list[str] | None = None,
    freq: str = "D",
    fill_missing: bool = True,
) -> tuple[pd.DataFrame, LoadReport, str]:
    """Validate a user table and return (long frame, report, pandas frequency alias).

    Rows are aggregated to the period of `freq` (target summed, exogenous values averaged or, for
    text columns, the first value kept), and dates missing inside a series' span are filled with 0.
    """
    exog_cols = list(exog_cols or [])
    if df is None or len(df) == 0:
        raise InputError("input has no rows")
    if not id_cols:
        raise InputError("at least one id column is needed (--id-cols)")
    needed = [*id_cols, date_col, target_col, *exog_cols]
    missing = [c for c in dict.fromkeys(needed) if c not in df.columns]
    if missing:
        raise InputError(
            f"missing column(s): {', '.join(missing)} (available: {', '.join(map(str, df.columns))})"
        )
    out = pd.DataFrame(
        {
            "unique_id": df[id_cols].astype(str).agg("/".join, axis=1)
            if len(id_cols) > 1
            else df[id_cols[0]].astype(str),
            "ds": _parse_dates(df[date_col], date_col),
            "y": _parse_target(df[target_col], target_col),
        }
    )
    for col in exog_cols:
        out[col] = df[col].to_numpy()
    dup = out.duplicated(["unique_id", "ds"], keep=False)
    if dup.any():
        first = out.loc[dup].iloc[0]
        raise InputError(
            f"duplicate rows for id {first.unique_id!r} and date {first.ds:%Y-%m-%d} "
            f"({int(dup.sum())} duplicated rows); aggregate them first"
        )
    report = LoadReport()
    pfreq = pandas_freq(freq, out["ds"])
    report.freq = pfreq
    out["ds"] = align_dates(out["ds"], pfreq)
    report.filled_missing_target = int(out["y"].isna().sum())
    out["y"] = out["y"].fillna(0.0)
    if out.duplicated(["unique_id", "ds"]).any():
        n_before = len(out)
        out = aggregate_to_period(out, exog_cols)
        report.aggregated_rows = n_before
    out = out.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
    if fill_missing:
        out, report.filled_missing_dates = fill_gaps(out, pfreq, exog_cols)
    report.n_series = int(out["unique_id"].nunique())
    report.n_rows = len(out)
    report.start, report.end = out["ds"].min(), out["ds"].max()
    return out, report, pfreq


def aggregate_to_period(df: pd.DataFrame, exog_cols: list[str]) -> pd.DataFrame:
    """Sum the target per (unique_id, ds); average numeric exogenous columns, keep text ones' first."""
    agg: dict[str, str] = {"y": "sum"}
    for col in exog_cols:
        agg[col] = "mean" if pd.api.types.is_numeric_dtype(df[col]) else "first"
    return df.groupby(["unique_id", "ds"], sort=False, as_index=False).agg(agg)


def fill_gaps(df: pd.DataFrame, freq: str, exog_cols: list[str]) -> tuple[pd.DataFrame, int]:
    """Insert missing dates inside each series' first..last span: y = 0, exogenous forward-filled."""
    spans = df.groupby("unique_id", sort=False)["ds"].agg(["min", "max", "size"])
    offset = pd.tseries.frequencies.to_offset(freq)
    expected = {uid: len(pd.date_range(r["min"], r["max"], freq=offset)) for uid, r in spans.iterrows()}
    n_missing = int(sum(expected.values()) - spans["size"].sum())
    if n_missing == 0:
        return df, 0
    full = pd.concat(
        [
            pd.DataFrame({"unique_id": uid, "ds": pd.date_range(r["min"], r["max"], freq=offset)})
            for uid, r in spans.iterrows()
        ],
        ignore_index=True,
    )
    merged = full.merge(df, on=["unique_id", "ds"], how="left")
    merged["y"] = merged["y"].fillna(0.0)
    if exog_cols:
        merged[exog_cols] = merged.groupby("unique_id", sort=False)[exog_cols].ffill()
    return merged, n_missing


def require_length(df: pd.DataFrame, min_length: int, report: LoadReport | None = None) -> pd.DataFrame:
    """Drop series with fewer than `min_length` points; fail if none is left."""
    sizes = df.groupby("unique_id", sort=False).size()
    short = sizes.index[sizes < min_length]
    if len(short) == len(sizes):
        raise InputError(
            f"every series is too short: the longest has {int(sizes.max())} periods, "
            f"{min_length} are needed for this horizon"
        )
    if len(short):
        df = df[~df["unique_id"].isin(short)].reset_index(drop=True)
        if report is not None:
            report.dropped_short_series = [str(s) for s in short]
            report.n_series = int(df["unique_id"].nunique())
            report.n_rows = len(df)
    return df


def future_frame(
    future: pd.DataFrame,
    id_cols: list[str],
    date_col: str,
    exog_cols: list[str],
    freq: str,
) -> pd.DataFrame:
    """Map a file of known future exogenous values to (unique_id, ds, exog...) at `freq`."""
    missing = [c for c in dict.fromkeys([*id_cols, date_col, *exog_cols]) if c not in future.columns]
    if missing:
        raise InputError(f"future file is missing column(s): {', '.join(missing)}")
    out = pd.DataFrame(
        {
            "unique_id": future[id_cols].astype(str).agg("/".join, axis=1)
            if len(id_cols) > 1
            else future[id_cols[0]].astype(str),
            "ds": _parse_dates(future[date_col], date_col),
        }
    )
    for col in exog_cols:
        out[col] = future[col].to_numpy()
    out["ds"] = align_dates(out["ds"], freq)
    if out.duplicated(["unique_id", "ds"]).any():
        agg = {c: ("mean" if pd.api.types.is_numeric_dtype(out[c]) else "first") for c in exog_cols}
        out = out.groupby(["unique_id", "ds"], as_index=False).agg(agg) if agg else out.drop_duplicates()
    return out.sort_values(["unique_id", "ds"]).reset_index(drop=True)
