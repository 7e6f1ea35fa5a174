"""The LitServe API against in-process run_batch, in-process run, and a plain FastAPI wrapper of run.

    python bench/bench_api.py [--requests 1024] [--concurrency 32] [--latency-requests 100]

Method (one run, one machine, side by side): the same tickets (texts of data/eval.csv and
data/train.csv, cycled) are
- scored in-process by one `model.run_batch` call (tickets/s), and one by one by `model.run`
  (p50 latency);
- sent to `python app/main.py` (LitServe, batching on, the UI mounted) by an asyncio/httpx load
  generator with `--concurrency` clients for `--requests` requests (requests/s), then one at a time
  (p50 latency); its start-up time is from launch to the first 200 from /health;
- sent the same way to `bench/plain_fastapi.py` (FastAPI calling model.run once per request).
The load generator runs in this process on the same 2 cores. Prints one JSON object.
"""

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import model  # noqa: E402


def tickets(n: int) -> list[str]:
    texts = pd.concat([pd.read_csv(model.DATA_DIR / f"{name}.csv").text for name in ("eval", "train")])
    return list(itertools.islice(itertools.cycle(texts), n))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], port: int) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process, time.perf_counter() - started
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.perf_counter() - started > 300:
            raise RuntimeError(f"{command} did not start")
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


async def load(url: str, texts: list[str], concurrency: int) -> tuple[float, list[float]]:
    queue = iter(texts)
    latencies: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        for text in queue:
            start = time.perf_counter()
            response = await http.post(url, json={"text": text})
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        await http.post(url, json={"text": "warm up"})
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        return len(texts) / (time.perf_counter() - start), latencies


def p50_ms(latencies: list[float]) -> float:
    return round(statistics.median(latencies) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-requests", type=int, default=100)
    args = parser.parse_args()
    texts, few = tickets(args.requests), tickets(args.latency_requests)

    model.run_batch(texts[:64])
    start = time.perf_counter()
    model.run_batch(texts)
    in_process = args.requests / (time.perf_counter() - start)
    run_latencies = []
    for text in few:
        start = time.perf_counter()
        model.run(text)
        run_latencies.append(time.perf_counter() - start)

    port = free_port()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    litserve, startup = start([sys.executable, "app/main.py", "--host", "127.0.0.1", "--port", str(port)], port)
    try:
        url = f"http://127.0.0.1:{port}/predict"
        lit_rps, _ = asyncio.run(load(url, texts, args.concurrency))
        _, lit_single = asyncio.run(load(url, few, 1))
    finally:
        stop(litserve)

    port = free_port()
    plain, plain_startup = start([sys.executable, "bench/plain_fastapi.py", str(port)], port)
    try:
        plain_rps, _ = asyncio.run(load(f"http://127.0.0.1:{port}/predict", texts, args.concurrency))
    finally:
        stop(plain)

    print(
        json.dumps(
            {
                "requests": args.requests,
                "concurrency": args.concurrency,
                "in_process_run_batch_per_s": round(in_process, 1),
                "litserve_per_s": round(lit_rps, 1),
                "plain_fastapi_per_s": round(plain_rps, 1),
                "litserve_vs_run_batch": round(lit_rps / in_process, 3),
                "litserve_vs_plain_fastapi": round(lit_rps / plain_rps, 3),
                "p50_ms_in_process_run": p50_ms(run_latencies),
                "p50_ms_litserve_concurrency_1": p50_ms(lit_single),
                "p50_overhead_ms": round(p50_ms(lit_single) - p50_ms(run_latencies), 2),
                "startup_s_litserve_to_health": round(startup, 2),
                "startup_s_plain_fastapi_to_health": round(plain_startup, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
