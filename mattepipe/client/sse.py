"""Server-Sent Events read off a line stream: just what the gateway's `/jobs/{id}/events`
sends (`event:` and `data:` fields, `:` comments as heartbeats), per the WHATWG format.

A parser and not a dependency: the client needs twenty lines of it, and the stream is read
with the same `httpx` client (and bearer key) as every other call."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["HEARTBEAT", "Event", "parse_events"]

HEARTBEAT = ""
"""The `name` of the pseudo-event yielded for a comment line (a heartbeat): it lets a reader
check its own deadline while the server has nothing to say."""


@dataclass(frozen=True)
class Event:
    name: str
    """The `event:` field ("message" when absent); HEARTBEAT for a comment."""
    data: str


def parse_events(lines: Iterable[str]) -> Iterator[Event]:
    """The events in `lines` (without their line ends, as `httpx.Response.iter_lines` gives
    them), each yielded when the blank line that ends it arrives; comments yield HEARTBEAT."""
    name, data = "", list[str]()
    for line in lines:
        if not line:
            if data:
                yield Event(name or "message", "\n".join(data))
            name, data = "", list[str]()
            continue
        if line.startswith(":"):
            yield Event(HEARTBEAT, "")
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
