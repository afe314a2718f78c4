"""Read tables from CSV, CSV.GZ, Parquet files or a SQL query, and write files atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from forecasting.errors import InputError

SQL_PREFIXES = ("sqlite:", "postgresql:", "postgresql+", "mysql:", "mysql+", "mssql", "oracle", "duckdb:")


def read_table(source: str | Path, query: str | None = None) -> pd.DataFrame:
    """Load a table: a `.csv`, `.csv.gz`, `.parquet` path, or a SQLAlchemy URL with `query`.

    A SQL source may also be written `URL::SELECT ...` so one string carries both.
    """
    text = str(source)
    if text.startswith(SQL_PREFIXES):
        if query is None and "::" in text:
            text, query = text.split("::", 1)
        if not query:
            raise InputError("a database URL needs a SQL query (--query or URL::SELECT ...)")
        return _read_sql(text, query)
    path = Path(text)
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if path.is_dir():
        raise InputError(f"input is a directory, not a file: {path}")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz", ".txt", ".tsv", ".csv.zip", ".csv.bz2", ".csv.xz")):
            sep = "\t" if name.endswith(".tsv") else ","
            df = pd.read_csv(path, sep=sep, low_memory=False)
        else:
            raise InputError(f"unsupported file type: {path.name} (use .csv, .csv.gz or .parquet)")
    except InputError:
        raise
    except pd.errors.EmptyDataError:
        raise InputError(f"input file is empty: {path}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"could not parse {path.name}: {first}") from None
    if df.empty:
        raise InputError(f"input has no rows: {path}")
    return df


def _read_sql(url: str, query: str) -> pd.DataFrame:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            df = pd.read_sql_query(text(query), conn)
    except SQLAlchemyError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InputError(f"SQL query failed: {first}") from None
    if df.empty:
        raise InputError("SQL query returned no rows")
    return df


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file in the same folder, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as CSV or Parquet (by extension), atomically."""
    path = Path(path)
    if path.name.lower().endswith((".parquet", ".pq")):
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return atomic_write_bytes(path, buf.getvalue())
    compression = "gzip" if path.name.lower().endswith(".gz") else None
    if compression:
        import gzip

        return atomic_write_bytes(path, gzip.compress(df.to_csv(index=False).encode("utf-8")))
    return atomic_write_text(path, df.to_csv(index=False))
