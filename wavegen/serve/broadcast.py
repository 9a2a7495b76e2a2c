"""The broadcast: encoded pages put on air at real time and fanned out to every listener.

Pages arrive from the station's thread (:meth:`Broadcast.add_pages`, through the event loop)
into ``pending``. :meth:`Broadcast.pace` puts each on air when the live edge reaches its
start, so the live edge moves at exactly real time; the pages on air in the last
``lag_seconds`` stay in ``ring``. A listener (:meth:`Broadcast.feed`) gets the header pages
and the last ``burst_seconds`` at once (its player starts without waiting), then every page
as it goes on air. All listeners share the same bytes: nothing is encoded per listener.

Back-pressure: each listener writes on its own, so a slow one never holds up the station or
the others. A listener is sent at most ``QUEUE_BYTES`` at a time, and waited for while more
than that is still queued on its connection (not yet taken by its client): a slow one falls
behind, and once it is ``lag_seconds`` behind the live edge it skips ahead to it, however
slowly it reads. One that takes no data at all (nothing leaves its queue) is dropped after
``stall_seconds``, but not before it would have been skipped (``lag_seconds``), nor before
twice the longest silence it already came back from: TCP shows a client that reads slowly
taking data only in steps (half its receive buffer, ~60 KB with Linux's defaults: 12 s at
5 KB/s; longer where the kernel's retransmissions back off), and such a listener is slow, not
stalled.

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
QUEUE_BYTES = 32 * 1024  # queued for a listener beyond this (~4 s at 64 kb/s), it is waited for
POLL_SECONDS = 0.25  # how often a listener that is waited for is looked at


class _Silence:
    """How long a listener's connection has taken no data (its queue did not shrink)."""

    def __init__(self):
        self.low: int | None = None  # the least seen queued since the current send began
        self.since = time.monotonic()  # when it last took data (or had room)
        self.longest = 0.0  # the longest silence it came back from

    def look(self, left: int | None) -> float:
        """``left``: bytes queued now (None: unknown) → seconds of silence."""
        now = time.monotonic()
        if left is not None and (self.low is None or left < self.low):
            if self.low is not None:
                self.longest = max(self.longest, now - self.since)
            self.low, self.since = left, now
        return now - self.since


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
        self.refused_total = 0  # at the cap or the per-client limit
        self.refused_per_client_total = 0
        self._by_client: dict[str, int] = {}  # listeners now, by client (see app.client_key)
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
            logger.info("a listener fell over %g s behind the live edge: skipped ahead to it", self.lag_seconds)
            return self._join_pages()
        return self.ring[seq + 1 - first:]

    def refusal(self, max_listeners: int, client: str | None = None, max_per_client: int = 0) -> str | None:
        """Why a new listener from ``client`` would be refused now: "full" (``max_listeners`` in all),
        "client" (``max_per_client`` from that client already; 0: no such limit), or None (room)."""
        if self.listeners >= max_listeners:
            return "full"
        if max_per_client and client is not None and self._by_client.get(client, 0) >= max_per_client:
            return "client"
        return None

    def admit(self, max_listeners: int, client: str | None = None, max_per_client: int = 0) -> str | None:
        """Count a new listener from ``client`` in (→ None), or refuse it (→ why, as :meth:`refusal`
        says). An admitted one calls :meth:`leave` with the same ``client``."""
        why = self.refusal(max_listeners, client, max_per_client)
        if why is not None:
            self.refused_total += 1
            self.refused_per_client_total += why == "client"
            return why
        self.listeners += 1
        self.listeners_total += 1
        self.listeners_peak = max(self.listeners_peak, self.listeners)
        if client is not None:
            self._by_client[client] = self._by_client.get(client, 0) + 1
        return None

    def leave(self, client: str | None = None) -> None:
        self.listeners -= 1
        if client is not None:
            left = self._by_client.pop(client, 1) - 1  # no entry kept for a client with none left
            if left > 0:
                self._by_client[client] = left

    async def feed(self, write, queued=None) -> bool:
        """Send the broadcast through ``write(bytes)`` (a coroutine) until closed or the client goes.

        ``queued()``: bytes sent to this listener that its client has not taken yet (its
        connection's buffers), or None where unknown (then only a ``write`` that does not return
        counts as a stall). → True when the broadcast ended, False when the listener was dropped
        as stalled (its connection should be aborted). Raises ConnectionError when the client
        disconnects.
        """
        while not self.ring and not self.closed:  # nothing on air yet: no header either
            await self._on_air.wait()
        pages = self._join_pages()
        data = self.header + b"".join(p.data for p in pages)
        seq = pages[-1].seq if pages else self.next_seq - 1
        silence = _Silence()
        while not self.closed:
            if data and not await self._send(write, data, queued, silence):
                self.dropped_total += 1
                logger.info("a listener took no data for %.0f s: dropped", silence.look(None))
                return False
            pages = self._pages_after(seq)
            if not pages:
                await self._on_air.wait()
                pages = self._pages_after(seq)
            # as many pages as there is room for (one at least): how far behind it is, is looked at after each send
            room = QUEUE_BYTES - (queued() if queued is not None else 0)
            n, size = 1, len(pages[0].data) if pages else 0
            while n < len(pages) and size + len(pages[n].data) <= room:
                n, size = n + 1, size + len(pages[n].data)
            data = b"".join(p.data for p in pages[:n])
            seq = pages[n - 1].seq if pages else seq
        return True

    async def _send(self, write, data: bytes, queued, silence: _Silence) -> bool:
        """``write(data)``, then wait while more than QUEUE_BYTES are queued for the listener.

        → False when the listener took no data for too long meanwhile (see the module's doc;
        without ``queued``: the write did not return for ``stall_seconds``).
        """
        task = asyncio.ensure_future(write(data))
        silence.low = None  # these bytes are queued on top: the queue is looked at afresh
        if queued is None:
            silence.since = time.monotonic()
        try:
            while not self.closed:
                if task.done():
                    task.result()  # ConnectionError when the client went
                    if queued is None or queued() <= QUEUE_BYTES:
                        self.bytes_sent_total += len(data)
                        return True
                    await asyncio.sleep(POLL_SECONDS)
                else:
                    await asyncio.wait({task}, timeout=POLL_SECONDS)
                if queued is None:
                    if time.monotonic() - silence.since >= self.stall_seconds:
                        return False
                elif silence.look(queued()) >= max(self.stall_seconds, self.lag_seconds, 2 * silence.longest):
                    return False
            return True
        finally:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved (raised above, or moot once dropped or closed)
