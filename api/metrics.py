"""Prometheus metrics of the API: requests and latency by route, chat answers by guard outcome.

Each app has its own registry (several apps in one process, as in tests, do not clash); `GET /metrics`
exposes it in the Prometheus text format.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class APIMetrics:
    """The collectors, registered in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "stockpilot_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "stockpilot_http_request_seconds",
            "Time to the end of the response",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.answers = Counter(
            "stockpilot_chat_answers",
            "Chat answers by intent and guard outcome",
            ["intent", "guard"],
            registry=self.registry,
        )
        self.active_run = Gauge(
            "stockpilot_active_run_info", "The pipeline run being served", ["run_id"], registry=self.registry
        )

    def observe_answer(self, answer: dict[str, Any]) -> None:
        self.answers.labels(str(answer.get("intent") or "unknown"), guard_outcome(answer)).inc()

    def set_active_run(self, run_id: str | None) -> None:
        self.active_run.clear()
        if run_id:
            self.active_run.labels(run_id).set(1)


def guard_outcome(answer: dict[str, Any]) -> str:
    """One word for the number guard's verdict: template (no model), fallback, or passed."""
    guard = answer.get("guard") or {}
    if not isinstance(guard, dict):
        return str(guard)
    if guard.get("model_used") is False:
        return "template"
    return "fallback" if guard.get("fallback_used") else "passed"


class MetricsMiddleware:
    """Counts requests and times them, labelled by the matched route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: APIMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
