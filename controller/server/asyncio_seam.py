"""Where dialout reaches inside asyncio: its TLS is made to send the fatal alert when a handshake fails, so a
refused switch learns why, and to tell the controller who it refused; and its loop's turns are counted.

asyncio's ``SSLProtocol`` force-closes the transport on a failed handshake without flushing what OpenSSL queued
for the peer: the fatal alert (``certificate required``, ``unknown ca``, ``bad certificate``). A switch that dials
without a certificate, or with one from another CA, then sees only "EOF occurred in violation of protocol" or a
broken pipe, and cannot tell a refused certificate from a crashed controller. Blocking ``ssl`` sockets, nginx and
Go all send the alert. CPython gh-98078 (fixed by PR #153620, July 2026) does what this module does; Python 3.11,
which we run on, does not have it.

The backport wraps ``SSLProtocol._do_handshake``: when the handshake raises ``ssl.SSLError``, flush the outgoing
buffer, then let asyncio fail the connection as before. Flushing twice is harmless, so it stays correct on a Python
that has the fix. Delete this module once the oldest supported Python has gh-98078;
``tests/test_tls.py::test_controller_sends_the_alert_for_a_refused_certificate`` fails loudly if the backport stops
taking effect.

The same wrapper tells whoever asked (``report_failed_handshakes``, per server ``SSLContext``) of each failed
handshake with the peer's address: OpenSSL knows why, only the protocol knows from where, and asyncio logs neither
outside debug mode.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from asyncio import sslproto
from collections.abc import Callable
from typing import Any

_PATCHED_MARK = "_dialout_sends_handshake_alerts"
# Who hears of a failed handshake, by the SSLContext it was made with (a server's; clients' are not listed).
FailedHandshake = Callable[[Any, ssl.SSLError], None]  # (the peer's socket address, OpenSSL's error)
_reporters: weakref.WeakKeyDictionary[ssl.SSLContext, FailedHandshake] = weakref.WeakKeyDictionary()


def report_failed_handshakes(context: ssl.SSLContext, reporter: FailedHandshake) -> None:
    """Call ``reporter`` for every handshake that fails on a connection made with ``context``."""
    _reporters[context] = reporter


def send_handshake_alerts() -> None:
    """Install the backport (once per process; later calls do nothing)."""
    original: Callable[[Any], None] = sslproto.SSLProtocol._do_handshake  # type: ignore[attr-defined]
    if getattr(original, _PATCHED_MARK, False):
        return

    def _do_handshake(self: Any) -> None:  # noqa: ANN401 - asyncio's private SSLProtocol has no type stubs
        try:
            self._sslobj.do_handshake()
        except sslproto.SSLAgainErrors:
            self._process_outgoing()
        except ssl.SSLError as exc:
            self._process_outgoing()  # the fix: send the alert OpenSSL has queued before the transport is dropped
            reporter = _reporters.get(self._sslobj.context)
            if reporter is not None:
                reporter(self._transport.get_extra_info("peername"), exc)
            self._on_handshake_complete(exc)
        else:
            self._on_handshake_complete(None)

    setattr(_do_handshake, _PATCHED_MARK, True)
    sslproto.SSLProtocol._do_handshake = _do_handshake  # type: ignore[attr-defined]


# --- the loop's turns ---------------------------------------------------------------------------------------------
# Two events read in different turns of the loop (selector.select() calls) arrived in that order, however late the
# loop ran; two read in one turn could have arrived either way round. The diagnosis tells a dial race from a dial
# just after a handshake by this, where times alone, on a lagging loop, cannot (issue 28). asyncio counts no turns:
# the running loop's selector (its private ``_selector``) is given a select() that counts them.
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[int]] = weakref.WeakKeyDictionary()


def count_loop_turns() -> None:
    """Count the running loop's turns from now on (once per loop; a loop without a selector is not counted)."""
    loop = asyncio.get_running_loop()
    selector = getattr(loop, "_selector", None)
    if selector is None or loop in _turns:
        return
    counted = _turns[loop] = [0]
    original: Callable[[float | None], Any] = selector.select

    def select(timeout: float | None = None) -> Any:  # noqa: ANN401 - the selector's own list of events
        counted[0] += 1
        return original(timeout)

    selector.select = select


def loop_turn() -> int | None:
    """The running loop's turn now (None: not counted, or no loop running)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    counted = _turns.get(loop)
    return None if counted is None else counted[0]
