"""Process-wide speed-ups for a fake running as its own process (the CLI installs them).

The fake shares the machine's cores with the client in benchmarks, so every
microsecond it spends per request lowers the figures measured against it.
Two costs dominate in ``hpack``, the HTTP/2 header codec, and neither changes
what is decoded:

- aioapns sends its JWT in ``authorization``, which h2 marks never-indexed, so
  the ~150-byte Huffman-coded token arrives in full on every request and
  ``hpack`` decodes it bit by bit in Python (about half the fake's CPU).  The
  token only changes every 30 minutes, so long Huffman strings are memoised
  (a pure function of their bytes; bounded cache).
- Other Huffman strings (device tokens in the path, apns-ids) are unique:
  they go through a decoder that takes one table step per byte instead of two
  per byte (the same automaton, folded).
- hpack's ``Decoder`` copies the rest of the header block for every literal
  and makes several calls per header; :class:`LeanDecoder` walks the block
  once (same results and errors) and replaces it in ``h2.connection``.
- ``hpack`` calls ``log.debug`` for every header; a no-op logger skips the
  logging machinery.

Together they halve the fake's own CPU per request (measured in isolation
by feeding recorded client bytes to the HTTP/2 handler: ~270 -> ~160 us).

Not installed for in-process servers (tests), whose process belongs to the
caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h2.connection
import hpack.hpack
from hpack import huffman_table
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndex,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.struct import NeverIndexedHeaderTuple
from hpack.table import HeaderTable

_MIN_CACHED = 48
_VARINT_MAX_LENGTH = 5
_CACHE_LIMIT = 4096
_installed = False


class _QuietLog:
    """Stands in for hpack's module logger: drops debug records without building them."""

    def debug(self, *args: Any, **kwargs: Any) -> None:
        """Ignore a debug record."""

    def __getattr__(self, name: str) -> Any:
        import logging

        return getattr(logging.getLogger("hpack.hpack"), name)


def _byte_table() -> list[tuple[int, bytes, bool] | None]:
    """hpack's nibble automaton folded into one step per input byte.

    Entry ``state * 256 + byte``: the state after both nibbles, the symbols
    they emit and whether the string may end there; None when invalid.
    """
    nibbles = huffman_table.HUFFMAN_TABLE
    emit, fail, done = (
        huffman_table.HUFFMAN_EMIT_SYMBOL,
        huffman_table.HUFFMAN_FAIL,
        huffman_table.HUFFMAN_COMPLETE,
    )
    table: list[tuple[int, bytes, bool] | None] = []
    for state in range(len(nibbles) // 16):
        for byte in range(256):
            high_state, high_flags, high_out = nibbles[state * 16 + (byte >> 4)]
            low_state, low_flags, low_out = nibbles[high_state * 16 + (byte & 0x0F)]
            if (high_flags | low_flags) & fail:
                table.append(None)
                continue
            out = bytes([high_out] * bool(high_flags & emit) + [low_out] * bool(low_flags & emit))
            table.append((low_state, out, bool(low_flags & done)))
    return table


def fast_decode_huffman(table: list[tuple[int, bytes, bool] | None]) -> Callable[[Any], bytes]:
    """A Huffman decoder equivalent to hpack's, one table step per byte."""

    def decode_huffman(data: Any) -> bytes:
        if not data:
            return b""
        state = 0
        complete = False
        out: list[bytes] = []
        for byte in bytes(data):
            entry = table[(state << 8) | byte]
            if entry is None:
                raise HPACKDecodingError("Invalid Huffman string")
            state, emitted, complete = entry
            if emitted:
                out.append(emitted)
        if not complete:
            raise HPACKDecodingError("Incomplete Huffman string")
        return b"".join(out)

    return decode_huffman


def _memoised(decode: Callable[[bytes], bytes]) -> Callable[[Any], bytes]:
    cache: dict[bytes, bytes] = {}

    def decode_huffman(data: Any) -> bytes:
        if len(data) < _MIN_CACHED:
            return decode(data)
        key = bytes(data)
        out = cache.get(key)
        if out is None:
            out = decode(key)
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[key] = out
        return out

    return decode_huffman


def _integer(data: bytes, i: int, mask: int) -> tuple[int, int]:
    """The HPACK integer with a ``mask``-bit prefix at ``data[i]``, and the offset after it."""
    value = data[i] & mask
    i += 1
    if value < mask:
        return value, i
    shift = 0
    start = i
    while True:
        if i >= len(data) or i - start >= _VARINT_MAX_LENGTH:
            raise HPACKDecodingError("Bad HPACK integer")
        byte = data[i]
        i += 1
        value += (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


class LeanDecoder(hpack.hpack.Decoder):
    """hpack's ``Decoder`` with a one-pass ``decode`` (same results and errors).

    hpack's decoder copies the rest of the block for every literal and goes
    through several calls (and debug logs) per header; this walks the block
    once.  Huffman strings go through the memoised one-step-per-byte decoder.
    """

    huffman: Callable[[Any], bytes] = staticmethod(huffman_table.decode_huffman)

    def decode(self, data: bytes, raw: bool = False) -> Any:
        """Decode one header block (see ``hpack.Decoder.decode``)."""
        data = bytes(data)
        table = self.header_table
        static = HeaderTable.STATIC_TABLE
        n_static = len(static)
        dynamic = table.dynamic_entries
        limit = self.max_header_list_size
        headers: list[tuple[bytes, bytes]] = []
        inflated = 0
        end = len(data)
        i = 0
        try:
            while i < end:
                first = data[i]
                if first & 0x80:
                    index, i = _integer(data, i, 0x7F)
                    header = self._entry(index, static, n_static, dynamic)
                elif first & 0x20 and not first & 0x40:
                    if headers:
                        raise HPACKDecodingError("Table size update not at the start of the block")
                    size, i = _integer(data, i, 0x1F)
                    if size > self.max_allowed_table_size:
                        raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                    self.header_table_size = size
                    continue
                else:
                    indexing = bool(first & 0x40)
                    index, i = _integer(data, i, 0x3F if indexing else 0x0F)
                    if index:
                        name = self._entry(index, static, n_static, dynamic)[0]
                    else:
                        name, i = self._string(data, i, end)
                    value, i = self._string(data, i, end)
                    if indexing:
                        table.add(name, value)
                        header = (name, value)
                    elif first & 0x10:
                        header = NeverIndexedHeaderTuple(name, value)
                    else:
                        header = (name, value)
                headers.append(header)
                inflated += len(header[0]) + len(header[1]) + 32
                if inflated > limit:
                    raise OversizedHeaderListError(
                        f"A header list larger than {limit} has been received"
                    )
        except IndexError as exc:
            raise HPACKDecodingError("Truncated header block") from exc
        self._assert_valid_table_size()
        if raw:
            return headers
        try:
            return [(n.decode("utf-8"), v.decode("utf-8")) for n, v in headers]
        except UnicodeDecodeError as exc:
            raise HPACKDecodingError("Unable to decode headers as UTF-8") from exc

    @staticmethod
    def _entry(index: int, static: Any, n_static: int, dynamic: Any) -> tuple[bytes, bytes]:
        if 0 < index <= n_static:
            entry: tuple[bytes, bytes] = static[index - 1]
            return entry
        offset = index - n_static - 1
        if 0 <= offset < len(dynamic):
            entry = dynamic[offset]
            return entry
        raise InvalidTableIndex(f"Invalid table index {index}")

    def _string(self, data: bytes, i: int, end: int) -> tuple[bytes, int]:
        huffman = data[i] & 0x80
        length, i = _integer(data, i, 0x7F)
        stop = i + length
        if stop > end:
            raise HPACKDecodingError("Truncated header block")
        raw = data[i:stop]
        return (self.huffman(raw) if huffman else raw), stop


def install() -> None:
    """Install the speed-ups in this process (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    module: Any = hpack.hpack
    fast = _memoised(fast_decode_huffman(_byte_table()))
    module.decode_huffman = fast
    LeanDecoder.huffman = staticmethod(fast)
    connection: Any = h2.connection
    connection.Decoder = LeanDecoder
    module.log = _QuietLog()
