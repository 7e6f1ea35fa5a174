"""The LitServe API against in-process run_batch, in-process run, and a plain FastAPI wrapper of run.

    python bench/bench_api.py [--requests 1024] [--seconds 20] [--concurrency 32] [--latency-requests 100]

Method (one run, one machine, side by side): the same tickets (texts of data/eval.csv and
data/train.csv, cycled) are
- scored in-process by one `model.run_batch` call (tickets/s, best of 3), by `model.run_batch` on the
  same tickets shuffled, in chunks of `--concurrency` (the most one of the server's dynamic batches can
  hold with that many connections: the ceiling for the server, best of 3), and one by one by
  `model.run` (p50 latency);
- sent to `python app/main.py` (LitServe, batching on, the UI mounted) by wrk (Debian's `wrk`, a C
  load generator, with bench/wrk_predict.lua) with `--concurrency` connections for `--seconds`
  (requests/s: wrk runs for a fixed time, not a fixed count), then one at a time by httpx for
  `--latency-requests` requests (p50 latency); its start-up time is from launch to the first 200
  from /health (the API answers), and to the first answer from / other than 503 (the UI is loaded);
- sent the same way to `bench/plain_fastapi.py` (FastAPI calling model.run once per request).
Also: the server's memory (RSS of every process of its tree, after the load), and its start-up to a
ready /health: cold (an empty artifacts folder: export, quantization and build included), then warm
(the same folder), with the UI and with `--no-ui`. The load generator shares the machine's 2 cores
with the server. Prints one JSON object.
"""

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import gradio_client
import httpx
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))
import model  # noqa: E402
from building import builder  # noqa: E402

STARTED = time.perf_counter()


def stage(what: str) -> None:
    """A line as each stage starts, flushed at once (to stderr: stdout is the result), so minutes of work are not silent."""
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {what}", file=sys.stderr, flush=True)


def tickets(n: int) -> list[str]:
    texts = pd.concat([pd.read_csv(model.DATA_DIR / f"{name}.csv").text for name in ("eval", "train")])
    return list(itertools.islice(itertools.cycle(texts), n))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(command: list[str], port: int, env: dict | None = None) -> tuple[subprocess.Popen, float]:
    """The server, and the seconds from launch to the first 200 from /health."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process, time.perf_counter() - started
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.perf_counter() - started > 300:
            raise RuntimeError(f"{command} did not start")
        time.sleep(0.1)


def ui_loaded(port: int, started: float) -> float:
    """Seconds from `started` (perf_counter) until / answers other than 503 (the UI loads after the API)."""
    while httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 503:
        if time.perf_counter() - started > 300:
            raise RuntimeError("the UI did not load in 300 s")
        time.sleep(0.1)
    return time.perf_counter() - started


def tree_memory_mb(process: subprocess.Popen) -> dict:
    """Memory of the server's processes in MB: the sum of their PSS (pages shared between forked processes counted
    once, in shares) and of their RSS (shared pages counted in every process); the API process holds the UI's copy."""
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    info = {f"{p.pid} {' '.join(p.cmdline()[1:3])[:40]}": p.memory_full_info() for p in tree}
    return {
        "pss_total": round(sum(m.pss for m in info.values()) / 1e6),
        "rss_total": round(sum(m.rss for m in info.values()) / 1e6),
        "rss_each": {name: round(m.rss / 1e6) for name, m in info.items()},
    }


def start_up(extra: list[str], artifacts: Path) -> tuple[float, float | None]:
    """Seconds from launch to a ready /health, and to the UI's page (None with --no-ui)."""
    port = free_port()
    env = {**os.environ, "TRIAGE_ARTIFACTS_DIR": str(artifacts)}
    started = time.perf_counter()
    process, seconds = launch([sys.executable, "app/main.py", "--host", "127.0.0.1", "--port", str(port), *extra], port, env)
    page = None if "--no-ui" in extra else round(ui_loaded(port, started), 2)
    stop(process)
    return round(seconds, 2), page


def stop(process: subprocess.Popen) -> None:
    """SIGTERM (SIGINT is ignored by jobs started in the background), then kill what is left of the tree."""
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=30)
    for p in alive:
        p.kill()


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


def wrk(url: str, texts: list[str], seconds: int, concurrency: int) -> dict:
    """Requests per second from wrk with `concurrency` connections for `seconds` (wrk runs for a time, not a count)."""
    if shutil.which("wrk") is None:
        raise SystemExit("bench_api.py needs wrk: apt-get install -y wrk")
    bodies = OUT / "bodies.jsonl"
    bodies.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    command = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "60s", "-s", "bench/wrk_predict.lua", url, "--", str(bodies)]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["non_2xx"] or result["socket_errors"]:
        raise RuntimeError(f"wrk saw errors: {result}")
    return {**result, "per_s": result["requests"] / result["seconds"]}


def p50_ms(latencies: list[float]) -> float:
    return round(statistics.median(latencies) * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=20, help="how long wrk loads each server")
    parser.add_argument("--latency-requests", type=int, default=100)
    args = parser.parse_args()
    texts, few = tickets(args.requests), tickets(args.latency_requests)
    OUT.mkdir(parents=True, exist_ok=True)

    stage("loading the pipeline")
    builder.ready()
    model.run_batch(texts[:64])
    stage(f"in process: run_batch over {args.requests} tickets, then in chunks of {args.concurrency}, then run one at a time")
    rounds = []
    for _ in range(3):  # the best of three: the in-process figure at its fastest, so the ratio is not flattered
        start = time.perf_counter()
        model.run_batch(texts)
        rounds.append(time.perf_counter() - start)
    in_process = args.requests / min(rounds)
    shuffled, chunked = random.Random(0).sample(texts, len(texts)), []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(0, len(shuffled), args.concurrency):
            model.run_batch(shuffled[i : i + args.concurrency])
        chunked.append(time.perf_counter() - start)
    in_process_chunks = args.requests / min(chunked)
    run_latencies = []
    for text in few:
        start = time.perf_counter()
        model.run(text)
        run_latencies.append(time.perf_counter() - start)

    port = free_port()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    stage(f"the server (app/main.py): starting, then wrk for {args.seconds} s at {args.concurrency} connections")
    litserve, startup = launch([sys.executable, "app/main.py", "--host", "127.0.0.1", "--port", str(port)], port)
    try:
        asyncio.run(load(f"http://127.0.0.1:{port}/predict", few[:8], 1))  # warm up
        ui_loaded(port, time.perf_counter())
        ui = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)  # the UI's own copy of the pipeline loads now
        ui.predict(few[0], "email", "standard", *model.Flags().model_dump().values(), api_name="/run")
        lit = wrk(f"http://127.0.0.1:{port}", texts, args.seconds, args.concurrency)
        _, lit_single = asyncio.run(load(f"http://127.0.0.1:{port}/predict", few, 1))
        memory = tree_memory_mb(litserve)
    finally:
        stop(litserve)

    fresh = OUT / "cold-artifacts"
    stage("start-up: from no artifacts (a first build), warm, and the API alone")
    shutil.rmtree(fresh, ignore_errors=True)
    cold, cold_ui = start_up([], fresh)
    (warm, warm_ui), (warm_api_only, _) = start_up([], fresh), start_up(["--no-ui"], fresh)

    port = free_port()
    stage(f"plain FastAPI (bench/plain_fastapi.py): wrk for {args.seconds} s")
    fastapi_server, plain_startup = launch([sys.executable, "bench/plain_fastapi.py", str(port)], port)
    try:
        asyncio.run(load(f"http://127.0.0.1:{port}/predict", few[:8], 1))  # warm up
        plain = wrk(f"http://127.0.0.1:{port}", texts, args.seconds, args.concurrency)
    finally:
        stop(fastapi_server)

    print(
        json.dumps(
            {
                "in_process_tickets": args.requests,
                "wrk_seconds": args.seconds,
                "litserve_requests": lit["requests"],
                "plain_fastapi_requests": plain["requests"],
                "concurrency": args.concurrency,
                "in_process_run_batch_per_s": round(in_process, 1),
                "litserve_per_s": round(lit["per_s"], 1),
                "plain_fastapi_per_s": round(plain["per_s"], 1),
                "in_process_run_batch_in_chunks_per_s": round(in_process_chunks, 1),
                "litserve_vs_run_batch": round(lit["per_s"] / in_process, 3),
                "litserve_vs_run_batch_in_chunks": round(lit["per_s"] / in_process_chunks, 3),
                "run_batch_in_chunks_vs_whole": round(in_process_chunks / in_process, 3),
                "litserve_vs_plain_fastapi": round(lit["per_s"] / plain["per_s"], 3),
                "p50_ms_litserve_concurrency_32": lit["p50_ms"],
                "p50_ms_plain_fastapi_concurrency_32": plain["p50_ms"],
                "p50_ms_in_process_run": p50_ms(run_latencies),
                "p50_ms_litserve_concurrency_1": p50_ms(lit_single),
                "p50_overhead_ms": round(p50_ms(lit_single) - p50_ms(run_latencies), 2),
                "startup_s_litserve_to_health": round(startup, 2),
                "startup_s_plain_fastapi_to_health": round(plain_startup, 2),
                "startup_s_cold_empty_artifacts": cold,
                "startup_s_cold_to_ui": cold_ui,
                "startup_s_warm": warm,
                "startup_s_warm_to_ui": warm_ui,
                "startup_s_warm_api_only": warm_api_only,
                "encoder": builder.encoder_name(),
                "server_memory_mb_after_load": memory,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
