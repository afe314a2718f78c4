"""The assistant over HTTP: `POST /chat` (one JSON answer) and `POST /chat/stream` (server-sent events:
`token` events with text as it is written, then one `answer` event with the whole answer object)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from api.cli_common import to_jsonable
from api.config import APISettings
from api.deps import get_assistant, get_settings_dep, invalid
from api.schemas import ChatAnswer, ChatRequest
from forecasting.errors import InputError

log = logging.getLogger("stockpilot.api")
router = APIRouter(prefix="/chat", tags=["chat"])


def valid_question(body: ChatRequest, settings: APISettings = Depends(get_settings_dep)) -> ChatRequest:
    """Dependency: the request with its question trimmed; 422 naming the limit when it is too long (checked
    before a stream starts, so the client gets a status code rather than an error event)."""
    question = body.question.strip()
    if not question:
        raise invalid(("body", "question"), "the question is empty", body.question)
    if len(question) > settings.api_max_question_chars:
        limit = settings.api_max_question_chars
        raise invalid(
            ("body", "question"), f"the question is limited to {limit} characters (got {len(question)})"
        )
    return body.model_copy(update={"question": question})


@router.post("", response_model=ChatAnswer)
def chat(
    request: Request,
    body: ChatRequest = Depends(valid_question),
    assistant: Any = Depends(get_assistant),
) -> dict[str, Any]:
    """Ask the assistant; the answer lists the facts it used, its sources and the number guard's verdict."""
    try:
        answer = to_jsonable(assistant.ask(body.question, session_id=body.session_id))
    except InputError as exc:
        raise invalid(("body", "question"), str(exc), body.question) from exc
    request.app.state.metrics.observe_answer(answer)
    return answer


@router.post(
    "/stream",
    response_class=EventSourceResponse,
    responses={200: {"description": "`token` events ({text}), then one `answer` event (the answer object)."}},
)
def chat_stream(
    request: Request,
    body: ChatRequest = Depends(valid_question),
    assistant: Any = Depends(get_assistant),
) -> Iterator[ServerSentEvent]:
    """The same answer streamed as server-sent events; an `error` event ends a failed answer."""
    events = assistant.stream(body.question, session_id=body.session_id)
    try:
        for event in events:
            kind = event.get("type")
            if kind == "token":
                yield ServerSentEvent(event="token", data={"text": event.get("text", "")})
            elif kind == "answer":
                answer = to_jsonable(event["answer"])
                request.app.state.metrics.observe_answer(answer)
                yield ServerSentEvent(event="answer", data=answer)
    except InputError as exc:
        yield ServerSentEvent(event="error", data={"detail": str(exc)})
    except Exception:
        log.exception("chat stream failed")
        yield ServerSentEvent(event="error", data={"detail": "the assistant failed; see the server log"})
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # stops generation when the client went away
