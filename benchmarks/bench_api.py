"""Load test of the HTTP API with a real load generator (locust, headless) against a local server.

    .venv/bin/python benchmarks/bench_api.py                 # 60 s forecast load + 60 s chat load
    .venv/bin/python benchmarks/bench_api.py --seconds 20 --json api.json

Targets (issue 6): `GET /forecast/item/{id}` at 50 requests/s for 60 s with p99 under 100 ms and no
errors; `POST /chat` with 4 concurrent users with no errors. The server is `stockpilot serve` in its own
process over the pipeline run in STOCKPILOT_HOME (the demo is run first when there is none); locust runs
in another process. The machine's load average is printed: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
LOCUSTFILE = ROOT / "benchmarks" / "locustfile_api.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_run() -> list[str]:
    """SKUs of the active pipeline run (running the demo first when there is none)."""
    from forecasting.factbook import FactBook
    from forecasting.pipeline import active_run_id

    if active_run_id() is None:
        print("no pipeline run: running `stockpilot demo` first", flush=True)
        subprocess.run([str(BIN / "stockpilot"), "demo"], check=True)
    return FactBook.from_store().skus


def start_server(port: int, key: str) -> subprocess.Popen:
    env = dict(
        os.environ, STOCKPILOT_API_KEY=key, STOCKPILOT_API_RATE_LIMIT="1000", STOCKPILOT_API_RATE_BURST="1000"
    )
    env["STOCKPILOT_API_SCHEDULER"] = "false"
    proc = subprocess.Popen(
        [str(BIN / "stockpilot"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("server did not start in 180 s")


def run_locust(user: str, users: int, seconds: int, url: str, env: dict, prefix: Path) -> dict:
    """Run locust headless; return the aggregated figures from its stats CSV."""
    cmd = [
        str(BIN / "locust"), "-f", str(LOCUSTFILE), user, "--headless", "-u", str(users), "-r", str(users),
        "-t", f"{seconds}s", "--host", url, "--csv", str(prefix), "--only-summary", "--stop-timeout", "120",
    ]  # fmt: skip
    subprocess.run(cmd, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(f"{prefix}_stats.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["Name"] == "Aggregated")
    n = int(row["Request Count"])
    return {
        "users": users,
        "seconds": seconds,
        "requests": n,
        "failures": int(row["Failure Count"]),
        "requests_per_s": round(float(row["Requests/s"]), 2),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
        "p99_ms": float(row["99%"]),
        "max_ms": round(float(row["Max Response Time"]), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=60, help="length of each load phase")
    ap.add_argument("--rate", type=int, default=50, help="forecast requests per second (users at 1/s)")
    ap.add_argument("--chat-users", type=int, default=4)
    ap.add_argument("--no-chat", action="store_true", help="skip the chat phase")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()

    skus = ensure_run()
    key = "bench-" + os.urandom(8).hex()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    random.seed(0)
    env = dict(
        os.environ,
        STOCKPILOT_BENCH_KEY=key,
        STOCKPILOT_BENCH_SKUS=",".join(random.sample(skus, min(500, len(skus)))),
    )
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"stockpilot-bench-api-{port}"
    out.mkdir(parents=True, exist_ok=True)
    server = start_server(port, key)
    figures: dict = {"skus": len(skus), "load_average_before": os.getloadavg()}
    try:
        headers = {"X-API-Key": key}
        for sku in skus[:20]:  # warm the run's tables in the server
            httpx.get(f"{url}/forecast/item/{sku}", headers=headers, timeout=60)
        print(f"forecast: {args.rate} users x 1 request/s for {args.seconds} s ...", flush=True)
        figures["forecast"] = run_locust("ForecastUser", args.rate, args.seconds, url, env, out / "forecast")
        print(json.dumps(figures["forecast"]), flush=True)
        if not args.no_chat:
            httpx.post(
                f"{url}/chat", headers=headers, json={"question": f"Should I reorder {skus[0]}?"}, timeout=600
            )
            print(f"chat: {args.chat_users} users for {args.seconds} s ...", flush=True)
            figures["chat"] = run_locust("ChatUser", args.chat_users, args.seconds, url, env, out / "chat")
            print(json.dumps(figures["chat"]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    figures["load_average_after"] = os.getloadavg()
    fc = figures["forecast"]
    figures["forecast_target_met"] = (
        fc["failures"] == 0 and fc["p99_ms"] < 100 and fc["requests_per_s"] >= 0.95 * args.rate
    )
    if "chat" in figures:
        figures["chat_target_met"] = figures["chat"]["failures"] == 0 and figures["chat"]["requests"] > 0
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
