"""Benchmark the bundled language model: cold and cached load, tokens/s, time to first streamed token, RSS.

Each phase runs in its own Python process so its load time and peak memory are its own:
  cold   - empty models folder: GGUF de-quantization + atomic save of the plain checkpoint, then load.
  cached - the checkpoint from `cold`: load, greedy generate N tokens, then stream the same prompt
           (each `--repeat` times; medians reported, plus whether every run gave the same text).

    .venv/bin/python benchmarks/bench_llm.py                  # 64 new tokens, STOCKPILOT_LLM_THREADS or 1
    .venv/bin/python benchmarks/bench_llm.py --tokens 32 --threads 2 --json out.json

The prompt is a real assistant prompt (system rules + facts JSON + one retrieved snippet + question).
The machine's load average is printed with the figures: on a shared machine they vary with it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _messages() -> list[dict[str, str]]:
    from llm.facts import Fact
    from llm.prompts import build_messages

    facts = [
        Fact("reorder point of 85123A", 90, "units", "inventory run"),
        Fact("safety stock of 85123A", 304.05, "units", "inventory run"),
        Fact("service level target", 0.95, "ratio", "settings"),
        Fact("next order date of 85123A", "2011-12-05", "date", "order advice"),
    ]
    snippet = "85123A (WHITE HANGING HEART T-LIGHT HOLDER) sells steadily with a December peak."
    question = "Explain the reorder point and safety stock of SKU 85123A and when to order next."
    return build_messages(question, facts, [snippet])


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def phase(name: str, models_dir: Path, tokens: int, threads: int | None, repeat: int = 3) -> dict:
    """Run one phase in this process and return its figures."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from llm.config import LLMSettings
    from llm.generate import LocalWriter
    from llm.model import load_model

    started = time.perf_counter()
    loaded = load_model(LLMSettings(llm="bundled", llm_adapter="none"), models_path=models_dir)
    result: dict = {
        "phase": name,
        "load_seconds": round(time.perf_counter() - started, 2),
        "converted": loaded.converted,
        "precision": loaded.info["dtype"],
        "load_threads": torch.get_num_threads(),
    }
    if name == "cached":
        writer = LocalWriter(
            loaded, max_new_tokens=tokens, threads=threads or LLMSettings().generation_threads
        )
        result["generation_threads"] = writer.threads
        messages = _messages()
        writer.generate([{"role": "user", "content": "Hi"}], max_new_tokens=2)  # warm-up
        gens = [writer.complete(messages) for _ in range(repeat)]
        streams = []
        for _ in range(repeat):
            stream = writer.stream(messages)
            streams.append(("".join(stream), stream.stats))
        gen = gens[0]
        result.update(
            repeat=repeat,
            prompt_tokens=gen.stats.prompt_tokens,
            new_tokens=gen.stats.new_tokens,
            generate_seconds_median=round(_median([g.stats.seconds for g in gens]), 2),
            tokens_per_second_median=round(_median([g.stats.tokens_per_second or 0 for g in gens]), 2),
            tokens_per_second_all=[round(g.stats.tokens_per_second or 0, 2) for g in gens],
            stream_first_token_seconds_median=round(
                _median([s.first_token_seconds or 0 for _, s in streams]), 3
            ),
            stream_tokens_per_second_median=round(_median([s.tokens_per_second or 0 for _, s in streams]), 2),
            deterministic=len({g.text for g in gens} | {t for t, _ in streams}) == 1,
            text=gen.text,
        )
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens to generate (greedy)")
    parser.add_argument("--threads", type=int, default=None, help="generation threads (default: settings)")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: a fresh temporary folder")
    parser.add_argument("--repeat", type=int, default=3, help="generate and stream runs (medians reported)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--phase", choices=["cold", "cached"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.phase:
        print(json.dumps(phase(args.phase, args.models_dir, args.tokens, args.threads, args.repeat)))
        return

    with tempfile.TemporaryDirectory(prefix="stockpilot-bench-llm-") as tmp:
        models_dir = args.models_dir or Path(tmp)
        report: dict = {"load_average_start": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
        for name in ("cold", "cached"):
            cmd = [sys.executable, __file__, "--phase", name, "--models-dir", str(models_dir)]
            cmd += ["--tokens", str(args.tokens), "--repeat", str(args.repeat)]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            env = dict(os.environ, TQDM_DISABLE="1")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=ROOT)
            report[name] = json.loads(out.stdout.strip().splitlines()[-1])
        report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
