"""How long the checks take: the fast check (`python -m pytest -m quick`, README's inner loop) and, with --suite, the
whole suite (README's test command, CI's). Each runs in a fresh process as README writes it; prints one JSON line.

    .venv/bin/python bench/bench_checks.py [--suite]

The figures go to bench/RESULTS.md (section 7) and README quotes them (tests/test_readme.py checks they match)."""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(name: str, *arguments: str) -> dict:
    """One run of pytest with `arguments`; its output in bench/out/checks-NAME.log (the failures, the slowest tests)."""
    log = ROOT / "bench" / "out" / f"checks-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"running: python -m pytest {' '.join(arguments)} (its output: {log.relative_to(ROOT)})", file=sys.stderr, flush=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-m", "pytest", *arguments], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    last = log.read_text().strip().splitlines()[-1:] or [""]
    last = last[0]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", last)}
    return {"seconds": round(seconds, 1), "minutes": round(seconds / 60, 1), "exit": done.returncode, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="store_true", help="the whole suite too (about 30 minutes on 2 cores)")
    args = parser.parse_args()
    results = {"quick": timed("quick", "-m", "quick", "-q")}
    if args.suite:
        results["suite"] = timed("suite", "-q")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
