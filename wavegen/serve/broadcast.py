"""The broadcast: encoded pages put on air at real time and fanned out to every listener.

Pages arrive from the station's thread (:meth:`Broadcast.add_pages`, through the event loop)
into ``pending``. :meth:`Broadcast.pace` puts each on air when the live edge reaches its
start, so the live edge moves at exactly real time; the pages on air in the last
``lag_seconds`` stay in ``ring``. A listener (:meth:`Broadcast.feed`) gets the header pages
and the last ``burst_seconds`` at once (its player starts without waiting), then every page
as it goes on air. All listeners share the same bytes: nothing is encoded per listener.

Back-pressure: each listener writes on its own, so a slow one never holds up the station or
the others. One that falls ``lag_seconds`` behind the live edge skips ahead to it; one whose
socket accepts nothing for ``stall_seconds`` is dropped.

A station slower than real time (``--allow-slow``): when a page reaches the pacer after its
time, the live edge waits for it and ``delay_seconds`` grows by the wait.
"""

from __future__ import annotations

import asyncio
import logging
import time

from wavegen.serve.encoder import Page

logger = logging.getLogger(__name__)

LATE_SECONDS = 0.05  # a page ready this much after its time means the station fell behind


class Broadcast:
    def __init__(self, header: bytes, start_seconds: float, burst_seconds: float, lag_seconds: float,
                 stall_seconds: float):
        self.header = header
        self.burst_seconds, self.lag_seconds, self.stall_seconds = burst_seconds, lag_seconds, stall_seconds
        self.pending: list[tuple[Page, float]] = []  # (page, when it was ready)
        self.ring: list[Page] = []  # on air, oldest first
        self.next_seq = 0
        self._anchor = (None, float(start_seconds))  # (monotonic time, broadcast seconds) of the live edge
        self.delay_seconds = 0.0
        self.started = time.monotonic()
        self.closed = False
        self._on_air = asyncio.Event()  # set and cleared at every page put on air
        self._arrived = asyncio.Event()
        # listener statistics
        self.listeners = 0
        self.listeners_peak = 0
        self.listeners_total = 0
        self.refused_total = 0
        self.dropped_total = 0
        self.skips_total = 0
        self.bytes_sent_total = 0

    # ----- the live edge -----

    def live_seconds(self, now: float | None = None) -> float:
        """Where the broadcast is now, in seconds (thread-safe: the anchor is one tuple)."""
        wall, seconds = self._anchor
        if wall is None:
            return seconds
        return seconds + (time.monotonic() if now is None else now) - wall

    def add_pages(self, header: bytes, pages: list[Page] | None) -> None:
        """From the station (on the loop): the stream's header pages and new pages, or None when
        the station stopped."""
        self.header = header
        if pages is not None:
            now = time.monotonic()
            self.pending.extend((p, now) for p in pages)
            self._arrived.set()

    async def pace(self) -> None:
        """Put pending pages on air at their time, until closed."""
        while not self.closed:
            if not self.pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            page, ready = self.pending[0]
            wall, seconds = self._anchor
            if wall is None:
                self._anchor = (ready, page.start_seconds)
                continue
            due = wall + page.start_seconds - seconds
            if ready - due > LATE_SECONDS:  # the station could not keep up: the live edge waited
                self.delay_seconds += ready - due
                self._anchor = (ready, page.start_seconds)
                continue
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
                continue
            self.pending.pop(0)
            self._put_on_air(page)

    def _put_on_air(self, page: Page) -> None:
        page.seq = self.next_seq
        self.next_seq += 1
        self.ring.append(page)
        oldest = page.end_seconds - self.lag_seconds
        while len(self.ring) > 1 and self.ring[0].end_seconds < oldest:
            self.ring.pop(0)
        self._on_air.set()
        self._on_air.clear()

    def close(self) -> None:
        """End every listener's stream and the pacer."""
        self.closed = True
        self._on_air.set()
        self._arrived.set()

    # ----- listeners -----

    def _join_pages(self) -> list[Page]:
        """The pages a listener starts with: the last burst_seconds on air, from a joinable page."""
        edge = self.live_seconds() - self.burst_seconds
        start = len(self.ring)
        for i in range(len(self.ring) - 1, -1, -1):
            if self.ring[i].end_seconds <= edge:
                break
            if self.ring[i].joinable:
                start = i
        return self.ring[start:]

    def _pages_after(self, seq: int) -> list[Page]:
        if not self.ring or seq >= self.ring[-1].seq:
            return []
        first = self.ring[0].seq
        if seq + 1 < first:
            self.skips_total += 1  # fell behind: on to the live edge (a gap in this listener's audio)
            return self._join_pages()
        return self.ring[seq + 1 - first:]

    def admit(self, max_listeners: int) -> bool:
        """Count a new listener in, or refuse one past the cap."""
        if self.listeners >= max_listeners:
            self.refused_total += 1
            return False
        self.listeners += 1
        self.listeners_total += 1
        self.listeners_peak = max(self.listeners_peak, self.listeners)
        return True

    def leave(self) -> None:
        self.listeners -= 1

    async def feed(self, write) -> bool:
        """Send the broadcast through ``write(bytes)`` (a coroutine) until closed or the client goes.

        → True when the broadcast ended, False when the listener was dropped as stalled (its
        connection should be aborted). Raises ConnectionError when the client disconnects.
        """
        while not self.ring and not self.closed:  # nothing on air yet: no header either
            await self._on_air.wait()
        pages = self._join_pages()
        data = self.header + b"".join(p.data for p in pages)
        seq = pages[-1].seq if pages else self.next_seq - 1
        while not self.closed:
            if data:
                try:
                    await asyncio.wait_for(write(data), self.stall_seconds)
                except asyncio.TimeoutError:
                    self.dropped_total += 1
                    logger.info("a listener took no data for %.0f s: dropped", self.stall_seconds)
                    return False
                self.bytes_sent_total += len(data)
            pages = self._pages_after(seq)
            if not pages:
                await self._on_air.wait()
                pages = self._pages_after(seq)
            data = b"".join(p.data for p in pages)
            if pages:
                seq = pages[-1].seq
        return True
