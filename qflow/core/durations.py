"""Lengths of time as users write them: ``45s``, ``90m``, ``12h``, ``30d``, ``2w`` or a
number of seconds (pure)."""
from __future__ import annotations

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``; ValueError (one line) for anything else or a negative."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        number, unit = text[:-1], text[-1:].lower()
        if unit not in UNITS or not number.replace(".", "", 1).isdigit():
            raise ValueError(f"{value!r} is not a duration like 45s, 90m, 12h, 30d or 2w")
        seconds = float(number) * UNITS[unit]
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{value!r} is not a duration (must be 0 or more)")
    return seconds
