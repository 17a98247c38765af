"""Cron schedules as PingSource reads them. Pure: no clock of its own, no I/O.

Accepted (reference §10.1): five fields `minute hour day-of-month month day-of-week`, or six
with a leading seconds field; `*`, lists `a,b`, ranges `a-b`, steps `*/n` and `a-b/n` and `a/n`;
month and weekday names (JAN, MON); `?` as `*` in the day fields; weekday 7 = Sunday; and the
descriptors @yearly @annually @monthly @weekly @daily @midnight @hourly. `@every` is refused, as
Knative's webhook refuses it. When both day fields are restricted a day matching either runs
(classic cron). Times are computed in the schedule's time zone (IANA name, PingSource's
`timezone`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Schedule", "parse_schedule", "parse_timezone"]

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {name: i for i, name in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)}
_DAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, {}), ("minute", 0, 59, {}), ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}), ("month", 1, 12, _MONTHS), ("day-of-week", 0, 7, _DAYS))
_HORIZON_DAYS = 366 * 5


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: the allowed values of each field."""

    text: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool

    def _day_matches(self, when: datetime) -> bool:
        day_ok = when.day in self.days
        weekday_ok = (when.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return day_ok or weekday_ok
        return day_ok and weekday_ok

    def next_after(self, when: datetime, zone: tzinfo = timezone.utc) -> datetime:
        """The first firing time strictly after `when` (aware), as an aware datetime in `zone`."""
        if when.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        local = when.astimezone(zone).replace(tzinfo=None, microsecond=0) + timedelta(seconds=1)
        limit = local + timedelta(days=_HORIZON_DAYS)
        while local < limit:
            if local.month not in self.months:
                year, month = (local.year + 1, 1) if local.month == 12 else (local.year,
                                                                              local.month + 1)
                local = datetime(year, month, 1)
            elif not self._day_matches(local):
                local = datetime(local.year, local.month, local.day) + timedelta(days=1)
            elif local.hour not in self.hours:
                local = local.replace(minute=0, second=0) + timedelta(hours=1)
            elif local.minute not in self.minutes:
                local = local.replace(second=0) + timedelta(minutes=1)
            elif local.second not in self.seconds:
                local += timedelta(seconds=1)
            else:
                return local.replace(tzinfo=zone)
        raise ValueError(f"schedule {self.text!r} never fires within {_HORIZON_DAYS} days")


def parse_schedule(text: str) -> Schedule:
    """Parse a cron string; ValueError says which field is wrong and why."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("schedule must be a non-empty cron string such as '*/2 * * * *'")
    spec = text.strip()
    if spec.startswith("@"):
        if spec.lower().startswith("@every"):
            raise ValueError(f"{spec!r}: @every is not supported by PingSource; "
                             "write a cron expression such as '*/5 * * * *'")
        if spec.lower() not in _DESCRIPTORS:
            raise ValueError(f"unknown descriptor {spec!r}; use one of "
                             + ", ".join(sorted(_DESCRIPTORS)))
        spec = _DESCRIPTORS[spec.lower()]
    fields = spec.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise ValueError(f"{text!r} has {len(fields)} fields; expected 5 (minute hour "
                         "day-of-month month day-of-week) or 6 (with leading seconds)")
    values = [_field(raw, *meta) for raw, meta in zip(fields, _FIELDS)]
    seconds, minutes, hours, days, months = (frozenset(v) for v in values[:5])
    return Schedule(text, seconds, minutes, hours, days, months,
                    weekdays=frozenset(d % 7 for d in values[5]),
                    days_restricted=fields[3] not in ("*", "?"),
                    weekdays_restricted=fields[5] not in ("*", "?"))


def _field(raw: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    result: set[int] = set()
    for part in raw.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name} field {raw!r}: step {step_text!r} must be a "
                                 "positive integer")
            step = int(step_text)
        if body in ("*", "?"):
            if body == "?" and name not in ("day-of-month", "day-of-week"):
                raise ValueError(f"{name} field {raw!r}: '?' is allowed only in the day fields")
            start, end = low, high
        elif "-" in body:
            first, last = body.split("-", 1)
            start, end = _value(first, name, low, high, names), _value(last, name, low, high,
                                                                         names)
            if start > end:
                raise ValueError(f"{name} field {raw!r}: range {body!r} runs backwards")
        else:
            start = _value(body, name, low, high, names)
            end = high if step_text else start
        result.update(range(start, end + 1, step))
    return result


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise ValueError(f"{name} field: {text!r} is not a number"
                         + (f" or a name ({', '.join(names)})" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name} field: {value} is outside {low}-{high}")
    return value


def parse_timezone(name: str | None) -> tzinfo:
    """An IANA zone (e.g. Europe/Madrid); None means UTC. ValueError for unknown names."""
    if name is None or name == "":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as "
                         "'Europe/Madrid' or 'America/New_York'") from None
