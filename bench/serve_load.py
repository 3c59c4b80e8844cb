"""Load test of ``mnistlab serve``: latency and throughput of /api/predict on loopback.

Starts the real server (``python -m mnistlab serve RUN``) in a subprocess on a free port of
127.0.0.1, sends a fixed number of requests from a fixed number of concurrent clients, stops the
server and writes the figures to ``bench/results/serve_load-<time>.json``. It never touches
anything but loopback and stops by itself.

Each request is JSON ``{"pixels": 28x28}`` of one of the run's own test digits
(``predictions.npz``), so the server does the real work: parse and validate 784 numbers,
predict, answer 10 probabilities.

The default client is deliberately cheap - asyncio streams, keep-alive connections, requests
encoded once - because both run on the same 2 cores and a heavy client would measure itself.
``--client httpx`` runs ``httpx.Client`` in a thread pool instead, for comparison.

Usage:
    python bench/serve_load.py RUN [--requests 5000] [--concurrency 10] [--client raw|httpx]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


# The server ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, timeout: float = 180.0) -> subprocess.Popen:
    """Start ``mnistlab serve`` and wait until /readyz answers 200."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnistlab", "serve", str(run), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            pass
        time.sleep(0.25)
    stop_server(proc)
    raise SystemExit(f"the server did not become ready within {timeout:.0f} s")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# The requests -------------------------------------------------------------------------------------


def request_bodies(run: Path, n: int = 200) -> list[bytes]:
    with np.load(run / "predictions.npz", allow_pickle=False) as f:
        images = f["images"][:n]
    return [json.dumps({"pixels": im.tolist()}, separators=(",", ":")).encode() for im in images]


def raw_request(port: int, body: bytes) -> bytes:
    head = (f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _raw_worker(port, requests, jobs, latencies, statuses):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            try:
                i = jobs.pop()
            except IndexError:
                return
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            status = int(head[9:12])
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200 and b'"status":"ok"' not in body and b'"status":"blank"' not in body:
                statuses["bad body"] = statuses.get("bad body", 0) + 1
    finally:
        writer.close()


def run_raw(port: int, bodies: list[bytes], total: int, concurrency: int):
    requests = [raw_request(port, b) for b in bodies]
    jobs = list(range(total))
    latencies: list[float] = []
    statuses: dict = {}

    async def main():
        workers = [_raw_worker(port, requests, jobs, latencies, statuses)
                   for _ in range(concurrency)]
        results = await asyncio.gather(*workers, return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    t0 = time.perf_counter()
    failures = asyncio.run(main())
    elapsed = time.perf_counter() - t0
    return latencies, statuses, elapsed, [repr(f) for f in failures]


def run_httpx(port: int, bodies: list[bytes], total: int, concurrency: int):
    import httpx

    url = f"http://127.0.0.1:{port}/api/predict"
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    statuses: dict = {}
    failures: list[str] = []
    clients = [httpx.Client(timeout=30) for _ in range(concurrency)]

    def one(i: int):
        client = clients[i % concurrency]
        t0 = time.perf_counter()
        try:
            r = client.post(url, content=bodies[i % len(bodies)], headers=headers)
        except httpx.HTTPError as e:
            failures.append(repr(e))
            return
        latencies.append(time.perf_counter() - t0)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    t0 = time.perf_counter()
    # One thread per client; each thread's requests go through its own keep-alive connection.
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda k: [one(i) for i in range(k, total, concurrency)],
                      range(concurrency)))
    elapsed = time.perf_counter() - t0
    for c in clients:
        c.close()
    return latencies, statuses, elapsed, failures


# Main ---------------------------------------------------------------------------------------------


def newest_run(root: Path) -> Path | None:
    runs = sorted(p.parent for p in root.glob("*/manifest.json")
                  if json.loads(p.read_text()).get("status") == "complete")
    return runs[-1] if runs else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", nargs="?", type=Path, help="run directory (default: newest in runs/)")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    run = args.run or newest_run(Path("runs"))
    if run is None or not (run / "predictions.npz").is_file():
        parser.error("give a complete run directory (made by `mnistlab train`)")

    bodies = request_bodies(run)
    port = free_port()
    client = run_raw if args.client == "raw" else run_httpx
    print(f"Starting the server on 127.0.0.1:{port} for {run.name} ...", flush=True)
    proc = start_server(run, port)
    try:
        client(port, bodies, args.warmup, args.concurrency)
        load0 = os.getloadavg()
        cpu0, server0 = os.times(), process_cpu_seconds(proc.pid)
        latencies, statuses, elapsed, failures = client(port, bodies, args.requests,
                                                        args.concurrency)
        cpu1, server1 = os.times(), process_cpu_seconds(proc.pid)
        load1 = os.getloadavg()
    finally:
        stop_server(proc)

    ms = np.array(latencies) * 1000.0
    ok = statuses.get(200, 0) - statuses.get("bad body", 0)
    errors = args.requests - ok
    result = {
        "benchmark": "serve_load",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "run": run.name,
        "client": args.client,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 3),
        "throughput_rps": round(len(ms) / elapsed, 1),
        "latency_ms": {k: round(float(np.percentile(ms, q)), 3) if len(ms) else None
                       for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "errors": errors,
        "statuses": {str(k): v for k, v in statuses.items()},
        "failures": failures[:5],
        "client_cpu_s": round((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), 3),
        # Server CPU per request barely depends on what else runs on the machine; throughput
        # and latency do (see load_average).
        "server_cpu_ms_per_request": (round((server1 - server0) * 1000 / args.requests, 3)
                                      if server0 is not None else None),
        "load_average_before_after": [round(load0[0], 2), round(load1[0], 2)],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"serve_load-{dt.datetime.now():%Y%m%d-%H%M%S}-{args.client}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency_ms"]
    print(f"{args.requests} requests, {args.concurrency} clients ({args.client}): "
          f"{result['throughput_rps']} req/s, p50 {lat['p50']} ms, p90 {lat['p90']} ms, "
          f"p99 {lat['p99']} ms, max {lat['max']} ms, errors {errors}; "
          f"server CPU {result['server_cpu_ms_per_request']} ms/request; "
          f"client CPU {result['client_cpu_s']} s of {result['seconds']} s; "
          f"load average {result['load_average_before_after']}")
    print(f"Wrote {path}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
