"""API keys, per-key rate limiting and the request body limit.

Keys come from `STOCKPILOT_API_KEY` (comma-separated) or, when unset, from a key file generated on first
start with owner-only permissions (0600). A missing or wrong key gets a bare 401; a key over its rate
gets 429 with `Retry-After`; a body over the size limit gets 422 with a message naming the limit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import threading
import time
from pathlib import Path

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.config import APISettings
from forecasting.io import atomic_write_text

log = logging.getLogger("stockpilot.api")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The StockPilot API key.")


def ensure_key_file(path: Path) -> str:
    """The key stored in `path`; generate one (mode 0600, folder 0700 when created) if there is none."""
    if path.exists():
        key = path.read_text(encoding="utf-8").strip()
        if key:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            return key
    created = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    if created:
        os.chmod(path.parent, 0o700)
    key = secrets.token_urlsafe(32)
    atomic_write_text(path, key + "\n")
    os.chmod(path, 0o600)
    log.info("generated an API key in %s", path)
    return key


def load_keys(settings: APISettings) -> tuple[list[str], Path | None]:
    """The accepted keys and the file they came from (None when they come from the environment)."""
    if settings.api_key:
        keys = [k.strip() for k in settings.api_key.split(",") if k.strip()]
        if keys:
            return keys, None
    return [ensure_key_file(settings.key_file)], settings.key_file


class RateLimiter:
    """Token bucket per key: `rate` requests per second, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


def key_id(key: str) -> str:
    """A short, non-reversible label for a key (for logs and metrics, never the key itself)."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


async def require_api_key(request: Request, key: str | None = Security(api_key_header)) -> str:
    """Dependency: the caller's key id when `X-API-Key` is valid and within its rate, else 401 / 429."""
    keys: list[str] = request.app.state.api_keys
    if not key or not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, headers={"WWW-Authenticate": "API-Key"})
    wait = request.app.state.rate_limiter.acquire(key)
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail="rate limit exceeded for this API key; retry later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return key_id(key)


class BodyLimitMiddleware:
    """Reject bodies over `max_bytes` with 422 (by Content-Length, or while reading a chunked body)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._reject(send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send: Send) -> None:
        message = f"request body is larger than the limit of {self.max_bytes} bytes"
        body = json.dumps({"detail": [{"type": "too_large", "loc": ["body"], "msg": message}]})
        await send(
            {
                "type": "http.response.start",
                "status": 422,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


class _TooLarge(Exception):
    """Raised inside the app when a chunked body passes the limit."""
