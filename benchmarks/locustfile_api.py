"""Locust users for `benchmarks/bench_api.py` (run by the locust command line, never imported by it).

Environment: STOCKPILOT_BENCH_KEY (API key), STOCKPILOT_BENCH_SKUS (comma-separated SKUs of the run).
- ForecastUser: `GET /forecast/item/{sku}` once per second per user (constant throughput), so 50 users
  make 50 requests/s.
- ChatUser: `POST /chat` with a question about a random SKU, one after another (think time 1-2 s).
"""

import os
import random

from locust import FastHttpUser, HttpUser, between, constant_throughput, task

KEY = os.environ.get("STOCKPILOT_BENCH_KEY", "")
SKUS = [s for s in os.environ.get("STOCKPILOT_BENCH_SKUS", "").split(",") if s]
QUESTIONS = (
    "How many {sku} will we sell next week?",
    "Should I reorder {sku}?",
    "What is the stockout risk of {sku}?",
    "What is the reorder point of {sku}?",
)


class ForecastUser(FastHttpUser):
    wait_time = constant_throughput(1)

    @task
    def forecast_item(self) -> None:
        sku = random.choice(SKUS)
        self.client.get(f"/forecast/item/{sku}", headers={"X-API-Key": KEY}, name="/forecast/item/{sku}")


class ChatUser(HttpUser):
    wait_time = between(1, 2)

    @task
    def chat(self) -> None:
        question = random.choice(QUESTIONS).format(sku=random.choice(SKUS))
        with self.client.post(
            "/chat", json={"question": question}, headers={"X-API-Key": KEY}, timeout=600, catch_response=True
        ) as r:
            if r.status_code == 200 and not r.json().get("answer"):
                r.failure("empty answer")
