"""Chat history per session in the results store (table `chat_history`), for follow-up questions.

One row per answered question: session id, turn number, question, answer, intent and the resolved
entities (JSON). Follow-ups ("and for the next month?", "what about its safety stock?") read the last turn.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, Text, select

from forecasting.store import ResultsStore

MAX_TURNS = 6
_metadata = MetaData()
chat_history = Table(
    "chat_history",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session_id", String(64), nullable=False, index=True),
    Column("turn", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("question", Text, nullable=False),
    Column("answer", Text, nullable=False),
    Column("intent", String(32), nullable=False),
    Column("entities", Text, nullable=False),
    Column("run_id", String(36)),
)


@dataclass
class Turn:
    """One stored question and answer."""

    session_id: str
    turn: int
    question: str
    answer: str
    intent: str
    entities: dict[str, Any]


def new_session_id() -> str:
    return uuid.uuid4().hex[:16]


class SessionStore:
    """Read and append turns; the table is created on first use in the results store's database."""

    def __init__(self, store: ResultsStore | None = None) -> None:
        self.store = store or ResultsStore()
        self._ready = False

    @property
    def engine(self) -> Any:
        engine = self.store.engine
        if not self._ready:
            _metadata.create_all(engine)
            self._ready = True
        return engine

    def history(self, session_id: str, limit: int = MAX_TURNS) -> list[Turn]:
        """The last `limit` turns of a session, oldest first."""
        stmt = (
            select(chat_history)
            .where(chat_history.c.session_id == session_id)
            .order_by(chat_history.c.turn.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [
            Turn(
                r["session_id"], r["turn"], r["question"], r["answer"], r["intent"], json.loads(r["entities"])
            )
            for r in reversed(rows)
        ]

    def last(self, session_id: str | None) -> Turn | None:
        if not session_id:
            return None
        turns = self.history(session_id, limit=1)
        return turns[-1] if turns else None

    def append(
        self,
        session_id: str,
        question: str,
        answer: str,
        intent: str,
        entities: dict[str, Any],
        run_id: str | None,
    ) -> int:
        """Store one turn; returns its turn number (1 for the first)."""
        with self.engine.begin() as conn:
            last = conn.execute(
                select(chat_history.c.turn)
                .where(chat_history.c.session_id == session_id)
                .order_by(chat_history.c.turn.desc())
                .limit(1)
            ).scalar_one_or_none()
            turn = (last or 0) + 1
            conn.execute(
                chat_history.insert().values(
                    session_id=session_id,
                    turn=turn,
                    created_at=datetime.now(UTC).replace(tzinfo=None),
                    question=question,
                    answer=answer,
                    intent=intent,
                    entities=json.dumps(entities, default=str),
                    run_id=run_id,
                )
            )
        return turn
