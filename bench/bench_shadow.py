"""The API with a candidate in shadow (app/shadow.py) against without: throughput and latency percentiles, side by side.

    python bench/bench_shadow.py [--requests 1024] [--concurrency 32] [--rounds 2]

Method (one run, one machine): a candidate version made of the served artifacts (a copy, sealed as a version) is put in
shadow in a versions folder of this run's own; the server (`python app/main.py --no-ui`) is started three ways: no
shadow, shadow at the default TRIAGE_SHADOW_RATE, and at rate 1.0; each is loaded by `--concurrency` clients sending
`--requests` tickets (httpx, bench_api.load), the ways alternating for `--rounds` rounds; the best throughput of each,
its latency percentiles, and what the shadow kept and dropped (/metrics). The load generator shares the 2 cores. Prints
one JSON object; the target (issue 36): at the default rate, at least 0.9 of the throughput without shadow.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_api import free_port, launch, load, stage, stop, tickets  # noqa: E402

from app import shadow  # noqa: E402
from building import builder  # noqa: E402


def candidate(versions: Path) -> str:
    """The served artifacts copied as a version (same files: the pairs agree; the cost is what is measured)."""
    name = time.strftime("%Y%m%d-%H%M%S") + "-be0c40"
    shutil.copytree(builder.ARTIFACTS_DIR, versions / name, ignore=shutil.ignore_patterns(".*"))
    manifest = json.loads((versions / name / "manifest.json").read_text())
    (versions / name / "manifest.json").write_text(json.dumps({**manifest, "version": name}, indent=2))
    return name


def percentiles(latencies: list[float]) -> dict:
    cut = statistics.quantiles(latencies, n=100)
    return {"p50_ms": round(cut[49] * 1000, 1), "p90_ms": round(cut[89] * 1000, 1), "p99_ms": round(cut[98] * 1000, 1)}


def metric(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    stage("loading the pipeline, making the candidate")
    builder.ready()
    folder = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    name = candidate(folder / "versions")
    (folder / "versions" / "shadow.json").write_text(json.dumps({"shadow": name}))
    ways = {"off": None, f"rate {shadow.settings()[0]:g} (default)": None, "rate 1": "1"}
    texts, best = tickets(args.requests), {}
    try:
        for round_ in range(args.rounds):
            for way, rate in ways.items():
                stage(f"round {round_ + 1}: shadow {way}, {args.requests} requests at {args.concurrency} connections")
                env = {**os.environ, "TRIAGE_DATABASE_URL": f"sqlite:///{folder / 'review.sqlite3'}", "GRADIO_ANALYTICS_ENABLED": "False"}
                env["TRIAGE_VERSIONS_DIR"] = str(folder / ("none" if way == "off" else "versions"))
                env.pop("TRIAGE_SHADOW_RATE", None)
                if rate:
                    env["TRIAGE_SHADOW_RATE"] = rate
                port = free_port()
                server, _ = launch([sys.executable, "app/main.py", "--no-ui", "--host", "127.0.0.1", "--port", str(port)], port, env)
                try:
                    asyncio.run(load(f"http://127.0.0.1:{port}/predict", texts[:64], 4))  # warm up
                    per_s, latencies = asyncio.run(load(f"http://127.0.0.1:{port}/predict", texts, args.concurrency))
                    time.sleep(2)  # what the shadow has in hand
                    kept = {"shadowed": metric(port, "triage_shadowed_total"), "dropped": metric(port, "triage_shadow_dropped_total")}
                finally:
                    stop(server)
                if way not in best or per_s > best[way]["per_s"]:
                    best[way] = {"per_s": round(per_s, 1), **percentiles(latencies), **kept}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    off = best["off"]["per_s"]
    print(json.dumps({"ways": best, "ratio_to_off": {way: round(b["per_s"] / off, 3) for way, b in best.items()}, **vars(args)}))


if __name__ == "__main__":
    main()
