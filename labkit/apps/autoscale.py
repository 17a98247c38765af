"""autoscale-go: Knative's autoscaling sample app, which spends what each request asks for.

Built-in image ``labkit/autoscale`` (run for ``ghcr.io/knative/autoscale-go``, see
labkit.core.images). As the sample (knative/docs docs/serving/autoscaling/autoscale-go,
https://knative.dev/docs/serving/autoscaling/autoscale-go/), a request's query says what to
spend, each part optional:

- ``bloat=MB`` — allocate (and touch) that many megabytes: "Allocated 5 Mb of memory."
- ``prime=N`` — find the largest prime below N by a sieve (CPU): "The largest prime less
  than 10000 is 9973."
- ``sleep=MS`` — wait that many milliseconds: "Slept for 100.13 milliseconds."

answered in that order, one line each, as the guide's `curl "...?sleep=100&prime=10000&bloat=5"`
shows. Each is capped (1 GB, 10^8, 60 s) so a typo cannot take the laptop down; a value that is
not a whole number is a 400.

Run it: PORT=8080 python -m labkit.apps.autoscale
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qs, urlsplit

from labkit import http1
from labkit.apps.serve import answering, serve_until_signalled

LIMITS = {"bloat": 1024, "prime": 100_000_000, "sleep": 60_000}
_TEXT = "text/plain; charset=utf-8"


def largest_prime_below(limit: int) -> int | None:
    """The largest prime < `limit` (sieve of Eratosthenes, as the sample's primes())."""
    if limit <= 2:
        return None
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\0\0"
    for n in range(2, int(limit ** 0.5) + 1):
        if sieve[n]:
            sieve[n * n::n] = bytes(len(range(n * n, limit, n)))
    return sieve.rindex(1)


def bloat(mb: int) -> str:
    memory = bytearray(mb * 1024 * 1024)
    if memory:  # touch both ends so the pages are really there, as the sample does
        memory[0] = memory[-1] = 1
    return f"Allocated {mb} Mb of memory.\n"


def prime(limit: int) -> str:
    found = largest_prime_below(limit)
    if found is None:
        return f"There are no primes smaller than {limit}.\n"
    return f"The largest prime less than {limit} is {found}.\n"


async def sleep(ms: int) -> str:
    start = time.perf_counter()
    await asyncio.sleep(ms / 1000)
    return f"Slept for {(time.perf_counter() - start) * 1000:.2f} milliseconds.\n"


async def answer(request: http1.Request) -> tuple[int, str, bytes]:
    query = parse_qs(urlsplit(request.target).query)
    asked: dict[str, int] = {}
    for name, limit in LIMITS.items():
        if name in query:
            raw = query[name][0]
            if not raw.isdigit() or int(raw) > limit:
                return 400, _TEXT, f"{name}: expected a whole number 0..{limit}, got {raw!r}\n".encode()
            asked[name] = int(raw)
    out = ""
    if "bloat" in asked:
        out += bloat(asked["bloat"])
    if "prime" in asked:
        out += prime(asked["prime"])
    if "sleep" in asked:
        out += await sleep(asked["sleep"])
    return 200, _TEXT, out.encode()


async def main() -> None:
    await serve_until_signalled(answering(answer))


if __name__ == "__main__":
    asyncio.run(main())
