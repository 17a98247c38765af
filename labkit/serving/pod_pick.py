"""Which ready pod the activator sends a request to: Knative's load-balancing policy.

The activator's throttler picks a policy by the revision's ``containerConcurrency`` (CC):

- CC = 0 (unlimited): *random choice of 2*: two different pods at random, the one with fewer
  of the activator's requests in flight wins, a tie is a coin flip; one pod is no choice;
- CC <= 3: *first available*: the first pod, in order, with a free slot (fewer than CC of the
  activator's requests in flight);
- otherwise *round robin*: the first pod with a free slot starting after the last one picked
  (from the start again when the pod list has shrunk below the cursor).

With CC > 0 no pod may be found (every slot taken): the request waits in the activator.
The load of a pod is what the activator itself has in flight there (Knative's pod tracker),
given by the caller; the random draws come from the caller's seeded ``random.Random``.
The live activator and the simulator both use `PodPicker`; nothing here reads a clock.

Followed: knative/serving ``pkg/activator/net/lb_policy.go`` (``randomChoice2Policy``,
``firstAvailableLBPolicy``, ``newRoundRobinPolicy``) and the policy switch in
``newRevisionThrottler`` (``pkg/activator/net/throttler.go``). Own code.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["FIRST_AVAILABLE_MAX_CC", "PodPicker"]

FIRST_AVAILABLE_MAX_CC = 3
"""Up to this containerConcurrency the activator picks the first pod with room."""


class PodPicker:
    """The activator's pick for one revision: its policy, and the round-robin cursor."""

    def __init__(self, container_concurrency: int, rng: random.Random) -> None:
        if container_concurrency < 0:
            raise ValueError(f"containerConcurrency must be >= 0, got {container_concurrency!r}")
        self.container_concurrency = container_concurrency
        self._rng = rng
        self._next = 0

    @property
    def policy(self) -> str:
        """The policy's name, as Knative's throttler logs it."""
        cc = self.container_concurrency
        if cc == 0:
            return "random-choice-2"
        return "first-available" if cc <= FIRST_AVAILABLE_MAX_CC else "round-robin"

    def pick(self, count: int, load: Callable[[int], int]) -> int | None:
        """The index of the pod to use among `count` ready pods, or None if none has room.

        `load(i)` is the activator's in-flight requests on pod `i` (asked only as needed, so a
        pick costs O(1) with CC = 0).
        """
        if count <= 0:
            return None
        cc = self.container_concurrency
        if cc == 0:
            return self._choice_of_two(count, load)
        start = 0
        if cc > FIRST_AVAILABLE_MAX_CC:
            if self._next >= count:
                self._next = 0
            start = self._next
        for step in range(count):
            i = (start + step) % count
            if load(i) < cc:
                if cc > FIRST_AVAILABLE_MAX_CC:
                    self._next = i + 1
                return i
        return None

    def _choice_of_two(self, count: int, load: Callable[[int], int]) -> int:
        if count == 1:
            return 0
        rng = self._rng
        first, second = 0, 1  # two pods: both are contestants, no draw needed
        if count > 2:
            first = int(rng.random() * count)
            second = int(rng.random() * (count - 1))
            if second >= first:
                second += 1  # a different pod: draw from the others
        a, b = load(first), load(second)
        if a != b:
            return first if a < b else second
        return second if rng.random() < 0.5 else first
