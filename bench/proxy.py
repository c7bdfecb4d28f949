"""Proxy benchmark: the gateway against the practical limit of its stack, in one run.

    python -m bench.proxy [--duration 5] [--warmup 1] [--connections 32] [--quick]

Starts, each in its own process, the mock upstream, (b) a bare aiohttp pass-through proxy
under uvicorn, (c) the gateway (``manage.py migrate``, ``bench.seed``, ``manage.py serve``;
embedded mode in a temporary state directory, no Redis) with full governance on (a key in a
team in a customer, two key budgets, a rate limit, a provider budget, 20 routing rules, a
pricing override), and (d) the LiteLLM proxy when ``litellm`` is importable here. Then
measures with one load generator (wrk if installed, else ``bench.loadgen``'s Python one)
chat completions against (a) the mock directly, (b), (c) and (d): non-streaming at one
connection and at N, streaming at N. Prints requests/s, p50 and p99 latency, errors, the
ratio of requests/s to (b) and the p50 latency added over (b).

Goals, per worker process (every server here runs one): (c) reaches at least 60% of (b)'s
requests/s, and adds under 0.5 ms of p50 latency over (b) at one connection.

``--production`` adds (c2): the same gateway in production mode, on a scratch PostgreSQL
database (``--postgres``: a server where one may be created; it is dropped afterwards) and a
Redis database (``--redis``, emptied before and after), with no Celery worker (usage events
stay in the stream), to measure the Redis ledger and sink on the request path.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.loadgen import Result, run_load

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write one sentence about load testing an LLM gateway."},
]
GOAL_RATIO = 0.60
GOAL_ADDED_P50_MS = 0.5


@dataclass
class Target:
    label: str
    base_url: str
    model: str
    api_key: str
    error: str = ""  # why it could not start

    def body(self, stream: bool) -> bytes:
        payload: dict[str, Any] = {"model": self.model, "messages": MESSAGES, "max_tokens": 64}
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return json.dumps(payload).encode()

    @property
    def url(self) -> str:
        return f"{self.base_url}/v1/chat/completions"

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}", "content-type": "application/json"}


@dataclass
class Row:
    target: Target
    mode: str
    connections: int
    result: Result | None
    note: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Children of this run; every one is stopped (by its pid) when the run ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the child
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env=env, start_new_session=True)
        log.close()
        self.children.append((name, process))
        return process

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, name: str, process: subprocess.Popen[bytes], port: int,
                   timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode}:\n"
                                   f"{self.log_tail(name)}")
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f} s:\n"
                           f"{self.log_tail(name)}")

    def stop_all(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.terminate()
        for _, process in reversed(self.children):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.children.clear()


def _gateway_env(state_dir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if name not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update({"GATEWAY_STATE_DIR": str(state_dir), "DJANGO_SETTINGS_MODULE": "gateway.settings",
                "DEBUG": "false", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)})
    return env


def start_gateway(processes: Processes, mock_url: str, state_dir: Path, server: str, *,
                  label: str = "(c) gateway", services: dict[str, str] | None = None
                  ) -> Target:
    """``services``: ``DATABASE_URL`` and ``REDIS_URL`` for the production mode."""
    env = _gateway_env(state_dir)
    env.update(services or {})
    port = free_port()
    target = Target(label, f"http://127.0.0.1:{port}", "mock/gpt-4o-mini", "")
    for step, command in (("migrate", [PY, "manage.py", "migrate", "--noinput"]),
                          ("seed", [PY, "-m", "bench.seed", "--mock-url", mock_url])):
        completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                                   check=False, timeout=300)
        if completed.returncode != 0:
            target.error = f"{step} failed: {completed.stderr.strip()[-2000:]}"
            return target
        if step == "seed":
            seeded = json.loads(completed.stdout.strip().splitlines()[-1])
            target.api_key = seeded["virtual_key"]
            target.model = seeded["model"]
    if server == "uvicorn":
        # What ``serve`` runs, with the access log off like the pass-through.
        # (django.setup() first: gateway.asgi may import models before setting Django up.)
        command = [PY, "-c", "import django, uvicorn; django.setup(); uvicorn.run("
                   f"'gateway.asgi:application', host='127.0.0.1', port={port}, loop='uvloop', "
                   "http='httptools', lifespan='on', access_log=False, log_level='warning', "
                   "timeout_graceful_shutdown=30)"]
    else:
        command = [PY, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", "1"]
    name = "gateway-production" if services else "gateway"
    process = processes.spawn(name, command, env)
    try:
        processes.wait_ready(name, process, port, timeout=90)
    except RuntimeError as exc:
        target.error = str(exc)
    return target


@contextlib.contextmanager
def scratch_services(postgres_url: str, redis_url: str) -> Iterator[dict[str, str]]:
    """A new PostgreSQL database on ``postgres_url``'s server (dropped afterwards) and the
    Redis database of ``redis_url``, emptied before and after: the production mode's
    services for one run."""
    import psycopg
    import redis

    name = f"gateway_bench_{os.urandom(4).hex()}"
    parts = urlsplit(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
        yield {"DATABASE_URL": urlunsplit(parts._replace(path=f"/{name}")),
               "REDIS_URL": redis_url}
    finally:
        with contextlib.suppress(Exception):
            client.flushdb()
        client.close()
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_litellm(processes: Processes, mock_url: str, state_dir: Path) -> Target | None:
    """LiteLLM's proxy: from this interpreter, or the ``litellm`` executable named by
    ``LITELLM_BIN`` (a separate venv: ``pip install 'litellm[proxy]'``)."""
    external = os.environ.get("LITELLM_BIN", "")
    if external and not Path(external).exists():
        print(f"(d) skipped: LITELLM_BIN={external} does not exist")
        return None
    if not external and importlib.util.find_spec("litellm") is None:
        print("(d) skipped: litellm not installed (or set LITELLM_BIN)")
        return None
    port = free_port()
    config = state_dir / "litellm.yaml"
    master_key = "sk-bench-" + os.urandom(16).hex()
    config.write_text(
        "general_settings:\n"
        f"  master_key: {master_key}\n"
        "model_list:\n"
        "  - model_name: mock/gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: {mock_url}/v1\n"
        "      api_key: mock-ok\n"
    )
    executable = Path(external) if external else Path(PY).parent / "litellm"
    command = ([str(executable)] if executable.exists()
               else [PY, "-m", "litellm.proxy.proxy_cli"])
    command += ["--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                "--num_workers", "1"]
    target = Target("(d) litellm", f"http://127.0.0.1:{port}", "mock/gpt-4o-mini", master_key)
    process = processes.spawn("litellm", command)
    try:
        processes.wait_ready("litellm", process, port, timeout=120)
    except RuntimeError as exc:
        target.error = str(exc)
    return target


def probe(target: Target, stream: bool) -> str:
    """One request before the load: '' when it succeeds, else what went wrong."""
    request = urllib.request.Request(target.url, data=target.body(stream),
                                     headers=target.headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
    except (OSError, urllib.error.URLError) as exc:
        return f"request failed: {exc}"
    if stream and b"[DONE]" not in payload:
        return f"HTTP {status} but the stream did not end with [DONE]: {payload[-200:]!r}"
    if not stream and b'"usage"' not in payload:
        return f"HTTP {status} without usage: {payload[:300]!r}"
    return ""


def self_reported_overhead(target: Target, samples: int = 50) -> float | None:
    """Median ``x-gateway-overhead-ms`` of sequential non-streaming requests, if sent."""
    parts = urlsplit(target.base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port,
                                            timeout=10)
    values = []
    try:
        for _ in range(samples):
            connection.request("POST", "/v1/chat/completions", body=target.body(False),
                               headers=target.headers)
            response = connection.getresponse()
            response.read()
            value = response.getheader("x-gateway-overhead-ms")
            if response.status == 200 and value:
                values.append(float(value))
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        connection.close()
    return statistics.median(values) if values else None


def measure(targets: list[Target], *, connections: int, duration: float, warmup: float,
            tool: str) -> list[Row]:
    rows: list[Row] = []
    modes = [("non-stream", 1), ("non-stream", connections), ("stream", connections)]
    for mode, conns in modes:
        for target in targets:
            if target.error:
                rows.append(Row(target, mode, conns, None, "not started"))
                continue
            stream = mode == "stream"
            problem = probe(target, stream)
            if problem:
                print(f"  {target.label} {mode}: probe: {problem}")
            print(f"  measuring {target.label:<16} {mode:<10} {conns:>3} connection(s)...",
                  flush=True)
            try:
                result = run_load(target.url, method="POST", body=target.body(stream),
                                  headers=target.headers, connections=conns,
                                  duration_s=duration, warmup_s=warmup, tool=tool)
            except (RuntimeError, subprocess.SubprocessError) as exc:
                rows.append(Row(target, mode, conns, None, f"load failed: {exc}"))
                continue
            note = problem
            if result.errors:
                detail = ", ".join(f"{kind} {count}" for kind, count
                                   in sorted(result.error_detail.items()))
                note = f"{result.errors} errors ({detail})" + (f"; {problem}" if problem else "")
            rows.append(Row(target, mode, conns, result, note))
    return rows


def combine_rounds(rounds: list[list[Row]]) -> list[Row]:
    """One row per (target, mode, connections): the round with the median requests/s (its
    latencies with it), the spread of all rounds in the note. Two cores shared by the load
    generator, the mock and the proxy move single runs by a fifth or more."""
    combined: list[Row] = []
    for position, first in enumerate(rounds[0]):
        same = [round_rows[position] for round_rows in rounds]
        measured = sorted((row for row in same if row.result is not None),
                          key=lambda row: row.result.requests_per_s)  # type: ignore[union-attr]
        if not measured:
            combined.append(first)
            continue
        median = measured[(len(measured) - 1) // 2]
        note = median.note
        if len(measured) > 1:
            low = measured[0].result.requests_per_s  # type: ignore[union-attr]
            high = measured[-1].result.requests_per_s  # type: ignore[union-attr]
            spread = f"rounds {len(measured)}: {low:.0f}-{high:.0f} req/s"
            note = f"{spread}; {note}" if note else spread
        combined.append(Row(median.target, median.mode, median.connections, median.result,
                            note))
    return combined


def report(rows: list[Row], tool: str) -> None:
    baseline = {(row.mode, row.connections): row.result for row in rows
                if row.target.label.startswith("(b)") and row.result is not None}
    print()
    print(f"load generator: {tool}; {os.cpu_count()} CPUs shared by the load generator, the "
          "mock and the proxy; one worker process per server")
    header = (f"{'scenario':<18} {'mode':<10} {'conns':>5} {'req/s':>9} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'errors':>7} {'vs (b)':>7} {'+p50 vs (b)':>12}")
    print(header)
    print("-" * len(header))
    notes: list[str] = []
    for row in rows:
        result = row.result
        if result is None:
            print(f"{row.target.label:<18} {row.mode:<10} {row.connections:>5} "
                  f"{'-':>9} {'-':>8} {'-':>8} {'-':>7} {'-':>7} {'-':>12}")
        else:
            base = baseline.get((row.mode, row.connections))
            ratio = f"{result.requests_per_s / base.requests_per_s:.0%}" \
                if base and base.requests_per_s else "-"
            added = f"{result.p50_ms - base.p50_ms:+.3f}" if base else "-"
            print(f"{row.target.label:<18} {row.mode:<10} {row.connections:>5} "
                  f"{result.requests_per_s:>9.0f} {result.p50_ms:>8.3f} {result.p99_ms:>8.3f} "
                  f"{result.errors:>7} {ratio:>7} {added:>12}")
        if row.note:
            notes.append(f"  {row.target.label} {row.mode} x{row.connections}: {row.note}")
    if notes:
        print("\nnotes:")
        print("\n".join(notes))
    _goals(rows, baseline)


def _goals(rows: list[Row], baseline: dict[tuple[str, int], Result | None]) -> None:
    gateway = {(row.mode, row.connections): row.result for row in rows
               if row.target.label.startswith("(c)")}
    print("\ngoals (per worker process):")
    if not gateway:
        print("  (c) not measured")
        return
    many = max((conns for mode, conns in gateway if mode == "non-stream"), default=0)
    for key, text in ((("non-stream", many), f"req/s vs (b) at {many} connections"),
                      (("non-stream", 1), "p50 added over (b) at 1 connection")):
        ours, base = gateway.get(key), baseline.get(key)
        if ours is None or base is None:
            print(f"  (c) {text}: not measured")
            continue
        if ours.errors:
            print(f"  (c) {text}: not evaluated, (c) answered {ours.errors} errors")
            continue
        if key[1] == 1:
            added = ours.p50_ms - base.p50_ms
            verdict = "PASS" if added < GOAL_ADDED_P50_MS else "FAIL"
            print(f"  (c) {text}: {added:.3f} ms (goal < {GOAL_ADDED_P50_MS} ms) {verdict}")
        else:
            ratio = ours.requests_per_s / base.requests_per_s if base.requests_per_s else 0.0
            verdict = "PASS" if ratio >= GOAL_RATIO else "FAIL"
            print(f"  (c) {text}: {ratio:.0%} (goal >= {GOAL_RATIO:.0%}) {verdict}")


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gateway vs pass-through proxy benchmark.")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="2 s runs, 1 s warm-up")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator (auto: wrk when installed)")
    parser.add_argument("--gateway-server", choices=("serve", "uvicorn"), default="serve",
                        help="serve: manage.py serve (uvicorn access log on); uvicorn: the "
                        "same ASGI app under uvicorn with the access log off")
    parser.add_argument("--skip-gateway", action="store_true")
    parser.add_argument("--production", action="store_true",
                        help="also measure the gateway in production mode, as (c2): "
                        "PostgreSQL and Redis (a scratch database; no Celery worker)")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/postgres",
                        help="--production: a server where a scratch database may be created")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14",
                        help="--production: a Redis database to use; it is EMPTIED")
    parser.add_argument("--rounds", type=int, default=None,
                        help="measure every scenario this many times, interleaved, and report "
                        "the median (default 3, 1 with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 2.0, 1.0
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    tool = args.tool if args.tool != "auto" else ("wrk" if shutil.which("wrk") else "python")

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-proxy-"))
        stack.enter_context(_terminate_on_sigterm())
        services = (stack.enter_context(scratch_services(args.postgres, args.redis))
                    if args.production else None)
        return _run(args, Path(tmp), tool, rounds, services)


def _run(args: argparse.Namespace, state_dir: Path, tool: str, rounds: int,
         services: dict[str, str] | None) -> int:
    processes = Processes(state_dir)
    try:
        mock_port, passthrough_port = free_port(), free_port()
        mock_url = f"http://127.0.0.1:{mock_port}"
        print(f"starting the mock upstream on {mock_url}", flush=True)
        mock = processes.spawn("mock", [PY, "-m", "bench.mock_upstream", "--port",
                                        str(mock_port)])
        processes.wait_ready("mock", mock, mock_port)
        print("starting the pass-through proxy", flush=True)
        passthrough = processes.spawn("passthrough", [
            PY, "-m", "bench.passthrough", "--upstream", mock_url,
            "--port", str(passthrough_port)])
        processes.wait_ready("passthrough", passthrough, passthrough_port)
        targets = [
            Target("(a) mock direct", mock_url, "gpt-4o-mini", "mock-ok"),
            Target("(b) passthrough", f"http://127.0.0.1:{passthrough_port}",
                   "gpt-4o-mini", "mock-ok"),
        ]
        if not args.skip_gateway:
            print(f"starting the gateway ({args.gateway_server}): migrate, seed, serve",
                  flush=True)
            gateway = start_gateway(processes, mock_url, state_dir, args.gateway_server)
            if gateway.error:
                print(f"(c) gateway did not start: {gateway.error}")
            targets.append(gateway)
        if services is not None:
            print("starting the gateway in production mode (PostgreSQL, Redis)", flush=True)
            production_dir = state_dir / "production"
            production_dir.mkdir()
            production = start_gateway(processes, mock_url, production_dir,
                                       args.gateway_server, label="(c2) gw production",
                                       services=services)
            if production.error:
                print(f"(c2) gateway (production) did not start: {production.error}")
            targets.append(production)
        litellm = start_litellm(processes, mock_url, state_dir)
        if litellm is not None:
            if litellm.error:
                print(f"(d) litellm did not start: {litellm.error}")
            targets.append(litellm)
        measured = []
        for number in range(1, max(rounds, 1) + 1):
            if rounds > 1:
                print(f"round {number} of {rounds}", flush=True)
            measured.append(measure(targets, connections=args.connections,
                                    duration=args.duration, warmup=args.warmup, tool=tool))
        rows = combine_rounds(measured)
        report(rows, tool)
        gateways = {"(c)": "gateway", "(c2)": "gateway-production"}  # label: process
        for target in targets:
            tag = target.label.split()[0]
            if tag in gateways and not target.error:
                overhead = self_reported_overhead(target)
                if overhead is not None:
                    print(f"  {tag} x-gateway-overhead-ms, median of 50 sequential requests: "
                          f"{overhead:.3f} ms")
        for tag, process in gateways.items():
            if any(row.target.label.split()[0] == tag and row.note for row in rows):
                tail = processes.log_tail(process, 15)
                if tail.strip():
                    print(f"\nlast lines of the {process} log:\n{tail}")
    finally:
        processes.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
