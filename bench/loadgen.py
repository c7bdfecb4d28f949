"""HTTP load generator for the benchmarks: wrk when installed, else a Python one.

    python -m bench.loadgen URL [--method POST] [--body JSON] [-H "name: value"]...
                                [-c 32] [-d 5] [--warmup 1] [--tool auto|wrk|python]

Both run in a separate process (never in the caller's), keep ``connections`` keep-alive
connections busy for ``warmup_s`` (not measured) then ``duration_s``, read every response
body in full (streams included) and report requests/s, p50 and p99 latency, and errors:
any non-2xx/3xx status, timeout or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

WRK_TIMEOUT_S = 10


@dataclass(frozen=True)
class Result:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    total: int
    tool: str = ""
    # Error counts by kind: "status" (non-2xx/3xx; the Python generator also gives
    # "status:<code>"), "connect", "read", "write", "timeout".
    error_detail: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def run_load(url: str, *, method: str = "POST", body: bytes | None = None,
             headers: Mapping[str, str] | None = None, connections: int = 1,
             duration_s: float = 5.0, warmup_s: float = 1.0, tool: str = "auto") -> Result:
    """Load ``url`` and measure. ``tool``: ``auto`` (wrk if on PATH), ``wrk`` or ``python``."""
    headers = dict(headers or {})
    if body is not None and not any(name.lower() == "content-type" for name in headers):
        headers["content-type"] = "application/json"
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    if tool == "wrk":
        return _run_wrk(url, method, body, headers, connections, duration_s, warmup_s)
    if tool == "python":
        return _run_python(url, method, body, headers, connections, duration_s, warmup_s)
    raise ValueError(f"unknown load generator {tool!r}")


# --- wrk -------------------------------------------------------------------------------

def _lua_string(value: bytes | str) -> str:
    data = value.encode() if isinstance(value, str) else value
    out = []
    for byte in data:
        char = chr(byte)
        out.append(char if char.isalnum() or char in " _-.,:/" else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def wrk_script(method: str, body: bytes | None, headers: Mapping[str, str]) -> str:
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body)}")
    lines += [f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}"
              for name, value in headers.items()]
    lines.append("""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK-RESULT %d %d %d %d %d %d %d %.3f %.3f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
""")
    return "\n".join(lines)


def _wrk(url: str, script: str, connections: int, seconds: int) -> str:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={WRK_TIMEOUT_S}s",
               "-s", script, url]
    completed = subprocess.run(command, capture_output=True, text=True, check=False,
                               timeout=seconds + WRK_TIMEOUT_S + 30)
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return completed.stdout


def _run_wrk(url: str, method: str, body: bytes | None, headers: Mapping[str, str],
             connections: int, duration_s: float, warmup_s: float) -> Result:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(wrk_script(method, body, headers))
        script = handle.name
    try:
        if warmup_s > 0:
            _wrk(url, script, connections, max(1, math.ceil(warmup_s)))
        output = _wrk(url, script, connections, max(1, math.ceil(duration_s)))
    finally:
        os.unlink(script)
    match = re.search(r"^WRK-RESULT (.+)$", output, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    numbers = match.group(1).split()
    requests, duration_us, connect, read, write, status, timeout = (int(n) for n in numbers[:7])
    p50_us, p99_us = float(numbers[7]), float(numbers[8])
    detail = {name: count for name, count in (("connect", connect), ("read", read),
                                              ("write", write), ("status", status),
                                              ("timeout", timeout)) if count}
    seconds = duration_us / 1e6 if duration_us else 1.0
    return Result(requests_per_s=requests / seconds, p50_ms=p50_us / 1000, p99_ms=p99_us / 1000,
                  errors=connect + read + write + status + timeout, total=requests, tool="wrk",
                  error_detail=detail)


# --- the Python generator ----------------------------------------------------------------

def _run_python(url: str, method: str, body: bytes | None, headers: Mapping[str, str],
                connections: int, duration_s: float, warmup_s: float) -> Result:
    config = {"url": url, "method": method, "headers": dict(headers),
              "body": body.decode("latin-1") if body is not None else None,
              "connections": connections, "duration_s": duration_s, "warmup_s": warmup_s}
    completed = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--worker"], input=json.dumps(config),
        capture_output=True, text=True, check=False, timeout=duration_s + warmup_s + 60,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    if completed.returncode != 0:
        raise RuntimeError(f"load generator failed: {completed.stderr.strip()}")
    return Result(**json.loads(completed.stdout.strip().splitlines()[-1]))


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def _worker(config: dict[str, Any]) -> Result:
    import aiohttp

    url, method = config["url"], config["method"]
    headers = config["headers"]
    body = config["body"].encode("latin-1") if config["body"] is not None else None
    connections = config["connections"]
    clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution
    start = clock()
    measure_from = start + config["warmup_s"]
    end = measure_from + config["duration_s"]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    timeout = aiohttp.ClientTimeout(total=WRK_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     auto_decompress=False) as session:
        async def connection() -> None:
            while True:
                begin = clock()
                if begin >= end:
                    return
                measured = begin >= measure_from
                try:
                    async with session.request(method, url, data=body, headers=headers) as resp:
                        async for _ in resp.content.iter_any():
                            pass
                        status = resp.status
                except TimeoutError:
                    if measured:
                        error("timeout")
                    continue
                except aiohttp.ClientConnectorError:
                    if measured:
                        error("connect")
                    await asyncio.sleep(0.01)
                    continue
                except (aiohttp.ClientError, OSError):
                    if measured:
                        error("read")
                    continue
                finished = clock()
                if not measured or finished > end:
                    continue
                latencies.append(finished - begin)
                if status >= 400:
                    error("status")
                    error(f"status:{status}")

        await asyncio.gather(*(connection() for _ in range(connections)))
    latencies.sort()
    total = len(latencies)
    failed = sum(count for kind, count in errors.items() if ":" not in kind)
    return Result(
        requests_per_s=total / config["duration_s"],
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        errors=failed, total=total, tool="python", error_detail=errors,
    )


def _worker_main() -> None:
    config = json.loads(sys.stdin.read())
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(_worker(config))
    print(result.to_json(), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--method", default="POST")
    parser.add_argument("--body", default=None)
    parser.add_argument("-H", "--header", action="append", default=[])
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker_main()
        return
    if not args.url:
        parser.error("the URL is required")
    headers = dict(item.split(":", 1) for item in args.header)
    result = run_load(args.url, method=args.method,
                      body=args.body.encode() if args.body is not None else None,
                      headers={name.strip(): value.strip() for name, value in headers.items()},
                      connections=args.connections, duration_s=args.duration,
                      warmup_s=args.warmup, tool=args.tool)
    print(f"{result.tool}: {result.requests_per_s:.0f} req/s, p50 {result.p50_ms:.3f} ms, "
          f"p99 {result.p99_ms:.3f} ms, {result.total} requests, {result.errors} errors "
          f"{result.error_detail or ''}")


if __name__ == "__main__":
    main()
