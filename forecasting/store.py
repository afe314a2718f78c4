"""The results store: runs and their result tables in SQL (SQLite by default, any SQLAlchemy URL).

Each result kind (forecasts, metrics, kpis, segments, ...) is one table with a `run_id` column;
`runs` records what produced it. Tables are created on first write, so new result kinds need no
migration; readers ask for the latest run of a kind.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Column, DateTime, MetaData, String, Table, Text, cast, create_engine, inspect, select
from sqlalchemy.engine import Engine

from forecasting.settings import get_settings

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_metadata = MetaData()
runs_table = Table(
    "runs",
    _metadata,
    Column("run_id", String(36), primary_key=True),
    Column("kind", String(64), nullable=False, index=True),
    Column("created_at", DateTime, nullable=False),
    Column("params", Text, nullable=False),
)


class ResultsStore:
    """Save and read result tables by run. Table names are fixed identifiers, never user input."""

    def __init__(self, url: str | None = None):
        self.url = url or get_settings().db_url
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.url, future=True)
            _metadata.create_all(self._engine)
        return self._engine

    def new_run(self, kind: str, params: dict[str, Any] | None = None) -> str:
        run_id = uuid.uuid4().hex[:12]
        with self.engine.begin() as conn:
            conn.execute(
                runs_table.insert().values(
                    run_id=run_id,
                    kind=kind,
                    created_at=datetime.now(UTC).replace(tzinfo=None),
                    params=json.dumps(params or {}, default=str),
                )
            )
        return run_id

    def save(self, table: str, df: pd.DataFrame, run_id: str) -> None:
        """Append `df` to `table`, tagged with `run_id`, in one transaction."""
        if not _NAME.match(table):
            raise ValueError(f"invalid table name {table!r}")
        frame = df.copy()
        frame.insert(0, "run_id", run_id)
        with self.engine.begin() as conn:
            frame.to_sql(table, conn, if_exists="append", index=False, chunksize=5000)

    def latest_run(self, kind: str) -> str | None:
        stmt = (
            select(runs_table.c.run_id)
            .where(runs_table.c.kind == kind)
            .order_by(runs_table.c.created_at.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(stmt).scalar_one_or_none()

    def runs(self, kind: str | None = None) -> pd.DataFrame:
        stmt = select(runs_table).order_by(runs_table.c.created_at.desc())
        if kind:
            stmt = stmt.where(runs_table.c.kind == kind)
        with self.engine.connect() as conn:  # the columns are there when there are no runs yet
            return pd.DataFrame(conn.execute(stmt).mappings().all(), columns=list(runs_table.c.keys()))

    def load(self, table: str, run_id: str | None = None, kind: str | None = None) -> pd.DataFrame:
        """Rows of `table` for `run_id` (or the latest run of `kind`); empty frame if none."""
        if not _NAME.match(table):
            raise ValueError(f"invalid table name {table!r}")
        if run_id is None and kind is not None:
            run_id = self.latest_run(kind)
        if not inspect(self.engine).has_table(table):
            return pd.DataFrame()
        tbl = Table(table, MetaData(), autoload_with=self.engine)
        # Timestamps come back as text and are parsed by pandas in one go: SQLAlchemy's per-row datetime
        # conversion dominated reading the demand history.
        stamps = [c.name for c in tbl.columns if isinstance(c.type, DateTime)]
        stmt = select(*(cast(c, String).label(c.name) if c.name in stamps else c for c in tbl.columns))
        if run_id is not None:
            stmt = stmt.where(tbl.c.run_id == run_id)
        with self.engine.connect() as conn:
            frame = pd.read_sql(stmt, conn)
        for name in stamps:
            frame[name] = pd.to_datetime(frame[name], format="ISO8601")
        return frame
