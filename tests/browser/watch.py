"""What a page did, observed from the test's side (the pages carry no test hooks).

* ``SocketWatch``: the WebSockets a page opened (their URLs, in order) and the frames each received,
  through Playwright's ``websocket`` events.
* ``FrameWatch``: the longest gap between animation frames and the longest task, recorded by a script
  added before the page's own (Playwright adds it outside the page's Content-Security-Policy).

Playwright delivers events only while the test waits on the page, so poll with ``page.wait_for_timeout``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class SocketWatch:
    """Every WebSocket opened by ``page`` whose URL contains ``path``, and what each received."""

    path: str
    urls: list[str] = field(default_factory=list)
    frames: list[list[str]] = field(default_factory=list)
    closed: int = 0

    @classmethod
    def on(cls, page, path: str) -> SocketWatch:
        watch = cls(path)

        def opened(socket):
            if path not in socket.url:
                return
            received: list[str] = []
            watch.urls.append(socket.url)
            watch.frames.append(received)
            socket.on("framereceived", lambda payload: received.append(payload))
            socket.on("close", lambda _: setattr(watch, "closed", watch.closed + 1))

        page.on("websocket", opened)
        return watch

    def latest_received(self) -> bool:
        """The socket opened last has received a message.

        Not "any socket": Playwright may deliver the event of a socket the previous page opened only
        after the watch is installed, and that socket is gone once the page navigates.
        """
        return bool(self.frames and self.frames[-1])


def poll(page, predicate, timeout_s: float = 30, what: str = "the page") -> None:
    """Wait (letting Playwright deliver events) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        page.wait_for_timeout(50)


# A page that "does not freeze" never runs one task this long. Measured for 100 000 lines: longest
# task 0.65 s on an idle machine, 2.0 s with the parallel suite running beside it; a page that added
# one element per line never finished drawing at all.
FREEZE_MS = 5000
STARVED_MS = 30_000

# Records, from the first script of every document, the longest gap between two animation frames
# and the longest task (PerformanceObserver "longtask": main-thread work over 50 ms).
FRAME_RECORDER = """
(() => {
  const record = { frames: 0, maxGapMs: 0, maxTaskMs: 0, last: 0 };
  window.__frameWatch = record;
  const tick = (now) => {
    if (record.last) record.maxGapMs = Math.max(record.maxGapMs, now - record.last);
    record.last = now;
    record.frames++;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) record.maxTaskMs = Math.max(record.maxTaskMs, entry.duration);
  }).observe({ type: "longtask", buffered: true });
})();
"""


class FrameWatch:
    """Install with ``FrameWatch.on(context)`` before the page loads; ``read(page)`` gives the record."""

    @staticmethod
    def on(context) -> None:
        context.add_init_script(FRAME_RECORDER)

    @staticmethod
    def reset(page) -> None:
        page.evaluate("(() => { const r = window.__frameWatch; r.frames = 0; r.maxGapMs = 0; r.maxTaskMs = 0; })()")

    @staticmethod
    def read(page) -> dict:
        return page.evaluate("(() => ({ ...window.__frameWatch }))()")

    @staticmethod
    def assert_did_not_freeze(frames: dict) -> None:
        """The page never ran one main-thread task for ``FREEZE_MS``, and frames kept coming.

        The task is what the page's own code controls. A gap between frames with no long task is the
        browser's compositor and raster threads starved of CPU (CI's two cores at load 10 gave an 8 s
        gap whose longest task was 0.25 s), so frame gaps get the looser ``STARVED_MS``.
        """
        assert frames["maxTaskMs"] < FREEZE_MS, f"one task ran {frames['maxTaskMs']} ms: {frames}"
        assert frames["maxGapMs"] < STARVED_MS, f"no frame for {frames['maxGapMs']} ms: {frames}"
