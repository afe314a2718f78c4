"""Shared pieces of the `stockpilot` command line: error handling, output, input options."""

from __future__ import annotations

import functools
import inspect
import json
import math
import sys
import typing
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from forecasting.errors import InputError

console = Console(stderr=True)
out_console = Console()


def fail(message: str, code: int = 2) -> None:
    """Print a one-line reason on stderr and exit (2 = bad input)."""
    line = " ".join(str(message).split())
    sys.stderr.write(f"error: {line}\n")
    raise typer.Exit(code)


def guarded(fn: Callable) -> Callable:
    """Turn InputError (and other expected user errors) into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            fail(str(exc))
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            fail(f"{exc.strerror or type(exc).__name__}: {exc.filename}")
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper


def option_group(
    name: str, options: dict[str, tuple[Any, Any]], build: Callable[..., Any] = dict
) -> Callable:
    """Decorator that shares a block of Typer options between commands instead of repeating it.

    On the command line, the command's parameter `name` is replaced by `options` ({parameter: (type,
    typer.Option/Argument)}, in order); the command receives `build(**their values)` as `name` (by
    default the dict of values).
    """

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        params = []
        for p in sig.parameters.values():
            if p.name == name:
                kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
                params += [
                    inspect.Parameter(k, kind, default=d, annotation=t) for k, (t, d) in options.items()
                ]
            else:
                params.append(p.replace(annotation=hints.get(p.name, p.annotation)))

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            group = build(**{k: kwargs.pop(k) for k in options})
            return fn(**{name: group}, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params, return_annotation=hints.get("return"))
        wrapper.__annotations__ = {p.name: p.annotation for p in params} | {"return": hints.get("return")}
        return wrapper

    return decorate


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/pandas values into plain JSON types (NaN becomes null)."""
    if isinstance(obj, pd.DataFrame):
        return [to_jsonable(r) for r in obj.to_dict(orient="records")]
    if isinstance(obj, pd.Series):
        return to_jsonable(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        value = float(obj)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, pd.Timestamp | datetime | date):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if obj is pd.NaT:
        return None
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2) + "\n")


def print_table(df: pd.DataFrame, title: str | None = None, max_rows: int = 30, digits: int = 3) -> None:
    """Show a frame as a Rich table on stdout (first `max_rows` rows)."""
    table = Table(title=title, show_lines=False)
    for col in df.columns:
        table.add_column(str(col), justify="right" if pd.api.types.is_numeric_dtype(df[col]) else "left")
    for row in df.head(max_rows).itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float | np.floating):
                cells.append("" if pd.isna(v) else f"{v:,.{digits}f}")
            else:
                cells.append(str(v))
        table.add_row(*cells)
    out_console.print(table)
    if len(df) > max_rows:
        out_console.print(f"... {len(df) - max_rows} more rows")


def split_cols(value: str | None) -> list[str]:
    """Parse a comma-separated option ("A,B") into column names."""
    if not value:
        return []
    return [c.strip() for c in value.split(",") if c.strip()]


def read_long(
    input: str,
    query: str | None,
    id_cols: str,
    date_col: str,
    target_col: str,
    exog_cols: str | None,
    freq: str,
):
    """Read INPUT and map it to long format: (raw table, long frame, report, pandas freq, exog columns)."""
    from forecasting.data import to_long
    from forecasting.io import read_table

    exog = split_cols(exog_cols)
    raw = read_table(input, query)
    long, report, pfreq = to_long(raw, split_cols(id_cols), date_col, target_col, exog, freq)
    return raw, long, report, pfreq, exog


# Input options shared by every command that reads a demand table (DESIGN.md contract).
InputArg = typer.Argument(..., help="CSV, CSV.GZ or Parquet file, or a SQLAlchemy URL (with --query).")
IdColsOpt = typer.Option(..., "--id-cols", help="Comma-separated id columns; unique_id joins them with '/'.")
DateColOpt = typer.Option(..., "--date-col", help="Date column.")
TargetColOpt = typer.Option(..., "--target-col", help="Target (demand) column.")
ExogColsOpt = typer.Option(None, "--exog-cols", help="Comma-separated exogenous columns.")
FutureOpt = typer.Option(None, "--future", help="File with known future values of the exogenous columns.")
FreqOpt = typer.Option(..., "--freq", help="Frequency: D, W or MS.")
HorizonOpt = typer.Option(..., "--horizon", min=1, help="Forecast horizon in periods.")
QueryOpt = typer.Option(None, "--query", help="SQL query when INPUT is a database URL.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON.")
