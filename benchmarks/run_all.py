"""`make bench`: every benchmark in turn, each in its own process, with its default settings.

    .venv/bin/python benchmarks/run_all.py                    # all of them (about an hour on 2 cores)
    .venv/bin/python benchmarks/run_all.py foundation rag     # only these (file names without bench_)

Each benchmark prints its own figures and PASS/FAIL lines for its issue's targets; this runner prints
how long each took and exits non-zero when one of them failed to run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ("foundation", "lstm", "inventory", "customers", "rag", "llm", "assistant", "report", "api")


def main() -> int:
    names = sys.argv[1:] or list(ORDER)
    unknown = [n for n in names if not (HERE / f"bench_{n}.py").exists()]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ORDER)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n######## bench_{name}.py", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / f"bench_{name}.py")])
        print(f"######## bench_{name}.py: exit {code}, {time.perf_counter() - start:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed to run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
