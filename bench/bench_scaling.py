"""Throughput against the number of inference workers (TRIAGE_WORKERS), over HTTP and in-process.

    python bench/bench_scaling.py [--workers 1 2] [--seconds 20] [--concurrency 32] [--tickets 1024]

Method (one run, side by side): for each worker count W, with TRIAGE_WORKERS=W (so each worker's ONNX Runtime
gets its share of the usable cores, `encoders.ort_threads()`, unless TRIAGE_ORT_THREADS is set)
- the reference: W processes, each loads the pipeline, then all at once score the same tickets (the texts of
  data/eval.csv and data/train.csv, cycled) with one `model.run_batch` call, twice; tickets/s is W x tickets over
  the slowest process's second call: what W workers can do with no HTTP in front;
- the server: `python app/main.py --no-ui` on a free 127.0.0.1 port, warmed up, then loaded by wrk
  (bench/wrk_predict.lua, `--concurrency` connections, `--seconds`) as in bench/bench_api.py.
Also, once: one process with every core (`run_batch` as bench_api.py measures it). On a bigger machine pass the
worker counts to try (say `--workers 1 2 4 8 16`) and give wrk a core or two of its own if it can (`taskset`).
Prints one JSON object and the Markdown rows of bench/RESULTS.md's section 5.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_api import free_port, launch, stage, stop, tickets, wrk  # noqa: E402

from building import builder, encoders  # noqa: E402

SCORE = """
import json, sys, time, pandas as pd, model
from building import builder
builder.ready()
texts = json.loads(sys.stdin.readline())
model.run_batch(texts[:64])
print("ready", flush=True)
sys.stdin.readline()  # go
seconds = []
for _ in range(2):
    start = time.perf_counter(); model.run_batch(texts); seconds.append(time.perf_counter() - start)
print(json.dumps(seconds[-1]), flush=True)
"""


def in_process(texts: list[str], processes: int, env: dict) -> float:
    """Tickets/s of `processes` processes scoring `texts` at once with run_batch (started together once all have loaded)."""
    children = [
        subprocess.Popen([sys.executable, "-c", SCORE], cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    for child in children:
        child.stdin.write(json.dumps(texts) + "\n")
        child.stdin.flush()
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    slowest = max(json.loads(child.stdout.readline()) for child in children)
    for child in children:
        child.wait()
    return processes * len(texts) / slowest


def served(texts: list[str], workers: int, seconds: int, concurrency: int) -> dict:
    port = free_port()
    env = {**os.environ, "TRIAGE_WORKERS": str(workers)}
    server, startup = launch([sys.executable, "app/main.py", "--no-ui", "--host", "127.0.0.1", "--port", str(port)], port, env)
    try:
        with httpx.Client(timeout=60) as http:
            for text in texts[: 16 * workers]:  # every worker warmed up
                http.post(f"http://127.0.0.1:{port}/predict", json={"text": text}).raise_for_status()
        return {**wrk(f"http://127.0.0.1:{port}", texts, seconds, concurrency), "startup_s": round(startup, 2)}
    finally:
        stop(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=int, default=20, help="how long wrk loads each server")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tickets", type=int, default=1024)
    args = parser.parse_args()
    texts = tickets(args.tickets)
    cores = len(os.sched_getaffinity(0))
    base = {k: v for k, v in os.environ.items() if k != "TRIAGE_WORKERS"}
    rows = []
    for workers in args.workers:
        env = {**base, "TRIAGE_WORKERS": str(workers)}
        os.environ["TRIAGE_WORKERS"] = str(workers)
        threads = encoders.ort_threads()
        stage(f"{workers} workers: in process, then the server under wrk for {args.seconds} s")
        reference = in_process(texts, workers, env)
        http = served(texts, workers, args.seconds, args.concurrency)
        rows.append(
            {
                "workers": workers,
                "ort_threads_per_worker": threads,
                "in_process_per_s": round(reference, 1),
                "api_per_s": round(http["per_s"], 1),
                "api_vs_in_process": round(http["per_s"] / reference, 3),
                "api_p50_ms": http["p50_ms"],
                "startup_s": http["startup_s"],
            }
        )
    stage("one process with every core")
    one_process = in_process(texts, 1, {**base, "TRIAGE_WORKERS": "1"})
    result = {"cores": cores, "encoder": builder.encoder_name(), "tickets": args.tickets, "wrk_seconds": args.seconds}
    result.update(concurrency=args.concurrency, in_process_one_process_all_cores_per_s=round(one_process, 1), rows=rows)
    print(json.dumps(result, indent=2))
    for r in rows:
        print(
            f"| {r['workers']} | {r['ort_threads_per_worker']} | {r['in_process_per_s']} | {r['api_per_s']} | "
            f"**{r['api_vs_in_process']:.2f}** | {r['api_p50_ms']} |"
        )


if __name__ == "__main__":
    main()
