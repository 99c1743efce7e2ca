"""What uvicorn lacks for an endpoint facing clients it does not trust: a header read deadline,
and a clean exit (0) after a drain on SIGTERM.

uvicorn closes idle keep-alive connections but waits for ever on a connection that sends part of
its request line or headers (a "slowloris"): :class:`HeaderTimeoutH11` answers it 408 and closes
it ``header_timeout_s`` after its first byte (or its opening). The body has its own deadline in
the app (:mod:`bincount.serving.server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Generator

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("bincount.serving")

TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def header_timeout_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol whose connections must send their headers in ``header_timeout_s``."""

    class HeaderTimeoutH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE:
                if self._header_timer is None:  # the first bytes of the next request
                    self._arm()
            else:  # the request line and headers are in
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
                return
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            log.info("408 %s sent no complete request headers in %g s: connection closed",
                     client, header_timeout_s)
            body = (b'{"error": "Request Timeout", "message": "no complete request headers in '
                    b'%g s", "status": 408}' % header_timeout_s)
            self.transport.write(TIMEOUT_408 % (len(body), body))
            self.transport.close()

    return HeaderTimeoutH11


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` that returns after SIGTERM/SIGINT once in-flight requests are answered
    (so the process exits 0), instead of re-raising the signal (exit 143 even when idle)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's own version records the signal and raises it again after the shutdown; here
        # the public handle_exit starts the drain, and the drain is the answer to the signal.
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set in the main thread
            return
        previous = {sig: signal.signal(sig, self.handle_exit)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
