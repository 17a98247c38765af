"""Run `hey` (https://github.com/rakyll/hey, Debian package `hey`), the Go HTTP load generator
the benchmarks share with their peers, and read its report. `make bench` installs it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def run(url: str, body: Path, concurrency: int, seconds: float, *,
        content_type: str = "application/json", host: str | None = None) -> str:
    """hey's report of `seconds` of POSTs of `body` from `concurrency` keep-alive clients;
    `host` sets the Host header (a service name through a sidecar)."""
    return subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST",
         "-T", content_type, "-D", str(body), *(["-host", host] if host else []), url],
        capture_output=True, text=True, check=True,
    ).stdout


def parse(out: str) -> dict[str, float]:
    """Requests per second, p50 / p99 in ms, and how many answers were 200 and not."""
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    try:
        return {
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50": float(re.search(r"50% in ([\d.]+) secs", out).group(1)) * 1000,  # type: ignore[union-attr]
            "p99": float(re.search(r"99% in ([\d.]+) secs", out).group(1)) * 1000,  # type: ignore[union-attr]
            "ok": codes.get(200, 0),
            "bad": sum(n for c, n in codes.items() if c != 200),
        }
    except AttributeError:
        raise RuntimeError(f"unexpected hey output:\n{out}") from None
