"""Where dialout reaches inside h2: the one place, for both halves, checked against the series written for.

h2 4.x moves its connection state machine to CLOSED as soon as a GOAWAY is sent or received, and from then on
refuses every frame, in and out. RFC 9113 section 6.8 says otherwise: the streams up to the GOAWAY's last-stream-id
may still be answered, and a PING may follow it (Go's server sends one). So after a GOAWAY:

- the controller that sent it (``controller/server/h2_actions.py``: a trial's GOAWAY with streams in flight) opens
  its state machine again to answer those streams (``reopen_after_sending_goaway``);
- the switch that read it (``sim_switch/wire/connection.py``) opens its own again to read their answers
  (``reopen_after_reading_goaway``), keeping the connection unusable for new streams by its own bookkeeping.

Both write h2's ``state_machine.state``, which h2 does not document: ``tests/test_seams.py`` pins it.

And h2 finds the streams that have closed by walking every stream it holds, at every new stream, to count the
open ones against the limit: 100 streams in flight, 100 steps a request, ~50-100 us. Both ends forget each stream
as they are done with it (``PromptH2Connection.forget``: the switch as it closes a stream, the controller as a
stream's answer has gone, ``controller/server/hypercorn_seam.py``), so that what h2 holds is what is open, and
its count is ``len``. ``forget`` writes h2's ``_closed_streams`` as its walk does; ``tests/test_seams.py`` pins that
too.

And h2 makes every frame it reads into text (``repr``: its flags, its body in hex) to hand to its logger, which
drops it unless one was configured (neither end does): ~3% of a ping's CPU at either end, in a profile of the
switch. ``PromptH2Connection._receive_frame`` is h2's own less that line; ``tests/test_seams.py`` holds the two
side by side, so an h2 that changes its own fails there.

And the switch sends the same request again and again, and HPACK encodes each header of it again each time (a
search of the tables, an integer, a log call apiece) to the same bytes: once the table holds them, encoding them
changes nothing. ``RepeatingEncoder`` (the switch's connections') gives the last block again for the same headers
while its table is as it was; ``RepeatingDecoder`` (both ends') gives the last header list again for the same
block. ``tests/test_seams.py`` runs each beside hpack's own and compares what they give.

And h2 remembers how each of the last 65,536 closed streams closed (``MAX_CLOSED_STREAMS``, in an OrderedDict: ~93
bytes each), to answer a frame that crossed our close on the wire: 6 MB a connection once it has carried that many,
at both ends; a day of a thousand switches each pinging every few seconds, some gigabytes. What that memory is for
spans a round trip of the peer's frames, a few streams' closes on any real link: each connection keeps the last
``CLOSED_STREAMS_KEPT`` (``PromptH2Connection.keep_fewer_closed``). A frame on a stream closed before those is
treated as one on a stream closed by END_STREAM (a connection error), as h2 does beyond its own 65,536.

And h2's connection refers to itself (its frame dispatch table holds its own bound methods), so a finished one
waits for the garbage collector, with its HPACK tables: ``release`` empties the table of a connection that is over.

And h2 checks every header block it reads against RFC 9113 section 8.2 (names, pseudo-headers, connection-specific
fields, ``te``, authority and path) through a chain of generators, ten steps a header: a third of the ~25 us h2
takes here to read a request. The check is a function of the block and of how it was read (request, response,
trailers), and a switch sends the same request again and again, a controller the same answer but for its date and
length: a block found good is good again. Both ends' streams (``CheckedOnceStream``) keep the last
``CHECKED_KEPT`` good blocks of the process and give a kept one back as h2 gave it; a block not kept is h2's to
check, and one h2 refuses is never kept. ``tests/test_seams.py`` holds both side by side.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any, Self, TypeVar

from h2.config import H2Configuration
from h2.connection import AllowedStreamIDs, ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import Event
from h2.exceptions import StreamClosedError, StreamIDTooLowError
from h2.stream import H2Stream
from h2.utilities import HeaderValidationFlags
from hpack import Decoder, Encoder, HeaderTuple
from hpack.table import HeaderTable
from hyperframe.frame import Frame, RstStreamFrame

from dialout.errors import DialoutError

WRITTEN_FOR = "4."  # h2's series whose state machine this was written against
# Closed streams whose closing a connection remembers (h2: 2**16). A reset stream's late frames come within a round
# trip: at 2,000 closes a second on one connection, a round trip of half a second.
CLOSED_STREAMS_KEPT = 1_024
# Header blocks found good that a process keeps, the oldest let go first: a handful in use at once (a request a
# ping interval; an answer a date and length), and a bound on what a peer's many blocks can hold (each at most
# the connection's max_header_list_size).
CHECKED_KEPT = 64


class H2SeamError(DialoutError):
    """An installed h2 that dialout was not written for (exit 2: fix the install)."""


def check_h2_version(installed_version: Callable[[str], str] = importlib.metadata.version) -> None:
    """One line naming both versions when the installed h2 is not of the series written for."""
    installed = installed_version("h2")
    if not installed.startswith(WRITTEN_FOR):
        raise H2SeamError(
            f"h2 {installed} is installed; dialout was written for h2 {WRITTEN_FOR}x (dialout/h2_seam.py): "
            "`pip install -e .` installs the series it pins"
        )


def gone_away(connection: H2Connection) -> bool:
    """h2 has closed its state machine (a GOAWAY sent or read, or the connection ended)."""
    return connection.state_machine.state is ConnectionState.CLOSED


def reopen_after_sending_goaway(connection: H2Connection) -> None:
    """A server's GOAWAY is sent: answer the streams it let finish."""
    connection.state_machine.state = ConnectionState.SERVER_OPEN


def reopen_after_reading_goaway(connection: H2Connection) -> None:
    """A client read a GOAWAY: read the answers to the streams it let finish (and a PING behind it)."""
    if gone_away(connection):
        connection.state_machine.state = ConnectionState.CLIENT_OPEN


class _CountedTable(HeaderTable):
    """hpack's table, which counts what is added to it: with its size, what says it has not changed."""

    def __init__(self) -> None:
        super().__init__()
        self.added = 0

    def add(self, name: bytes, value: bytes) -> None:
        self.added += 1
        super().add(name, value)


class RepeatingEncoder(Encoder):
    """hpack's encoder, which gives its last block again for the same headers (each of the same kind: a
    ``NeverIndexedHeaderTuple`` is not a ``HeaderTuple``) while its table is as it was before that block and that
    block left it so: the same input to the same state, the same bytes, and the same state after."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _CountedTable()
        self._last: tuple[list[Any], tuple[type, ...], tuple[int, int, bool, int], bool, bytes] | None = None

    def _state(self) -> tuple[int, int, bool, int]:
        table = self.header_table
        assert isinstance(table, _CountedTable)
        return table.added, table.maxsize, table.resized, len(self.table_size_changes)

    def encode(self, headers: Any, huffman: bool = True) -> bytes:  # noqa: ANN401 - hpack's own signature
        if isinstance(headers, dict):
            return super().encode(headers, huffman)
        listed = list(headers)
        kinds = tuple(map(type, listed))
        state = self._state()
        if self._last is not None:
            last_listed, last_kinds, last_state, last_huffman, block = self._last
            if last_state == state and last_huffman is huffman and last_listed == listed and last_kinds == kinds:
                return block
        block = super().encode(listed, huffman)
        self._last = (listed, kinds, state, huffman, block) if self._state() == state else None
        return block


class RepeatingDecoder(Decoder):
    """hpack's decoder, which gives its last header list again (a copy) for the same block while its table is as it
    was before that block and that block left it so: a switch sends one request again and again, and with
    ``RepeatingEncoder`` as the same bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.header_table = _CountedTable()
        self._last: tuple[bytes, tuple[object, ...], list[HeaderTuple]] | None = None

    @classmethod
    def replacing(cls, decoder: Decoder) -> Self:
        """In place of a connection's decoder that has decoded nothing yet, with its limits."""
        assert not decoder.header_table.dynamic_entries, "replaced before the first header block"
        repeating = cls()
        repeating.max_header_list_size = decoder.max_header_list_size
        repeating.max_allowed_table_size = decoder.max_allowed_table_size
        repeating.header_table_size = decoder.header_table_size
        return repeating

    def _state(self, raw: bool) -> tuple[object, ...]:
        table = self.header_table
        assert isinstance(table, _CountedTable)
        return table.added, table.maxsize, self.max_allowed_table_size, self.max_header_list_size, raw

    def decode(self, data: bytes, raw: bool = False) -> list[HeaderTuple]:
        block = bytes(data)
        state = self._state(raw)
        if self._last is not None and self._last[0] == block and self._last[1] == state:
            return list(self._last[2])
        headers = list(super().decode(block, raw))
        self._last = (block, state, headers) if self._state(raw) == state else None
        return list(headers)


Header = tuple[bytes | str, bytes | str]  # as h2 gives them (bytes, unless a header_encoding is configured)
_checked: dict[tuple[tuple[Header, ...], HeaderValidationFlags, object, bool, bool], tuple[Header, ...]] = {}


class CheckedOnceStream(H2Stream):
    """h2's stream, which checks a header block it has found good before (``CHECKED_KEPT`` of them) no more."""

    def _process_received_headers(
        self,
        headers: Any,  # noqa: ANN401 - h2's own: an iterable of its header tuples
        header_validation_flags: HeaderValidationFlags,
        header_encoding: bool | str | None,
    ) -> list[Any]:
        config = self.config
        block = tuple(headers)
        key = (
            block,
            header_validation_flags,
            header_encoding,
            config.validate_inbound_headers,
            config.normalize_inbound_headers,
        )
        checked = _checked.get(key)
        if checked is None:
            checked = tuple(super()._process_received_headers(block, header_validation_flags, header_encoding))
            if len(_checked) >= CHECKED_KEPT:
                del _checked[next(iter(_checked))]
            _checked[key] = checked
        return list(checked)


class PromptH2Connection(H2Connection):
    """h2's connection for an owner that ``forget``s each stream it is done with, as h2's own walk would: its count
    of open streams (h2 checks it against the limit at every new stream: outbound for a client, inbound for a
    server) is then ``len`` of what it holds, an upper bound, and exact by h2's walk only where the bound reaches
    the limit. ``exact_open_inbound_streams`` is h2's walk, for a figure that must be exact."""

    def __init__(self, config: H2Configuration | None = None) -> None:
        super().__init__(config)
        self.encoder = RepeatingEncoder()
        self.decoder = RepeatingDecoder.replacing(self.decoder)
        self.keep_fewer_closed()

    def keep_fewer_closed(self) -> None:
        """Remember the closing of the last ``CLOSED_STREAMS_KEPT`` streams, not h2's 65,536 (h2 trims its
        ``SizeLimitDict`` to its ``_size_limit`` as each stream is added)."""
        self._closed_streams._size_limit = CLOSED_STREAMS_KEPT  # type: ignore[attr-defined]

    @property
    def open_outbound_streams(self) -> int:
        held = len(self.streams)
        if held < self.remote_settings.max_concurrent_streams:
            return held  # no more open than held: below the limit, whatever the exact figure
        return super().open_outbound_streams  # h2's walk, which forgets the closed streams it finds

    @property
    def open_inbound_streams(self) -> int:
        held = len(self.streams)
        if held < self.local_settings.max_concurrent_streams:
            return held
        return super().open_inbound_streams

    def exact_open_inbound_streams(self) -> int:
        return super().open_inbound_streams

    def _receive_frame(self, frame: Frame) -> list[Event]:
        """h2 4.x's own, but for its first line (``logger.trace("Received frame: %s", repr(frame))``)."""
        events: list[Event]
        try:
            frames, events = self._frame_dispatch_table[frame.__class__](frame)
        except StreamClosedError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = e.error_code
                self._prepare_for_sending([f])
                events = e._events
            else:
                raise
        except StreamIDTooLowError as e:
            if self._stream_is_closed_by_reset(e.stream_id):
                f = RstStreamFrame(e.stream_id)
                f.error_code = ErrorCodes.STREAM_CLOSED
                self._prepare_for_sending([f])
                events = []
            elif self._stream_is_closed_by_end(e.stream_id):
                raise StreamClosedError(e.stream_id) from e
            else:
                raise
        else:
            self._prepare_for_sending(frames)
        return events

    def _begin_new_stream(self, stream_id: int, allowed_ids: AllowedStreamIDs) -> H2Stream:
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        stream.__class__ = CheckedOnceStream  # the same stream, whose class only changes how it checks headers
        return stream

    def forget(self, stream_id: int) -> None:
        """A stream its owner is done with: dropped as h2 drops a closed stream it finds (its closing kept, for
        frames that still come on it), and left for h2's walk if it has not closed yet."""
        stream = self.streams.get(stream_id)
        if stream is not None and stream.closed:
            del self.streams[stream_id]
            self._closed_streams[stream_id] = stream.closed_by


Prompt = TypeVar("Prompt", bound=PromptH2Connection)


def made_prompt(connection: H2Connection, kind: type[Prompt]) -> Prompt:
    """An h2 connection someone else made (Hypercorn makes its own) as a ``kind`` of ``PromptH2Connection``: the
    same object, whose class only adds methods."""
    connection.__class__ = kind
    assert isinstance(connection, kind)
    connection.keep_fewer_closed()
    return connection


def release(connection: H2Connection) -> None:
    """A connection that is over (no frame will be read on it again): its cycle broken, so that reference counting
    frees it, and what it holds, as its owner lets go, rather than the next garbage collection, all at once."""
    connection._frame_dispatch_table = {}
