"""Content-Encoding undone (gzip, deflate) within a byte limit, so a decompression bomb is a reject, not a crash."""
from __future__ import annotations

import zlib

from .outcomes import FetchFailure


def decode_body(raw: bytes, content_encoding: str | None, limit: int, cut: bool = False) -> bytes:
    """The body with its Content-Encoding (gzip, deflate, identity) undone, refusing more than `limit` bytes
    (or, with `cut`, keeping the first `limit` bytes).

    One compression layer at most: real servers never stack them, and each layer would multiply a bomb."""
    encodings = [e.strip().lower() for e in (content_encoding or "").split(",") if e.strip()]
    layers = [e for e in encodings if e not in ("identity", "none")]
    if len(layers) > 1:
        raise FetchFailure("bad-encoding", f"more than one Content-Encoding: {', '.join(layers)[:200]}")
    data = raw
    for encoding in layers:
        if encoding in ("gzip", "x-gzip"):
            data = _inflate(data, zlib.MAX_WBITS | 16, limit, cut)
        elif encoding == "deflate":
            try:
                data = _inflate(data, zlib.MAX_WBITS, limit, cut)
            except FetchFailure as failure:
                if failure.reason != "bad-encoding":
                    raise
                data = _inflate(data, -zlib.MAX_WBITS, limit, cut)  # raw deflate without the zlib header, as IIS sends
        else:
            raise FetchFailure("bad-encoding", f"unsupported Content-Encoding {encoding!r}")
    if len(data) > limit and cut:
        return data[:limit]
    if len(data) > limit:
        raise FetchFailure("too-large", f"body of {len(data):,} bytes is over {limit:,}")
    return data


MAX_GZIP_MEMBERS = 100
_INFLATE_SLICE = 64 * 1024


def _inflate(data: bytes, wbits: int, limit: int, cut: bool = False) -> bytes:
    """Decompresses in slices (no copies of the rest of the body per member), at most MAX_GZIP_MEMBERS members."""
    output = bytearray()
    view = memoryview(data)
    position, members = 0, 0
    try:
        while position < len(data):
            members += 1
            if members > MAX_GZIP_MEMBERS:
                raise FetchFailure("bad-encoding", f"more than {MAX_GZIP_MEMBERS} gzip members")
            inflater = zlib.decompressobj(wbits)
            while not inflater.eof and position < len(data):
                piece = view[position:position + _INFLATE_SLICE]
                position += len(piece)
                output += inflater.decompress(piece, limit - len(output) + 1)
                if len(output) > limit and cut:
                    return bytes(output[:limit])
                if len(output) > limit:
                    raise FetchFailure("decompression-bomb", f"decompresses to more than {limit:,} bytes "
                                       f"from {len(data):,}")
            if not inflater.eof:
                break  # a truncated stream: keep what decompressed
            position -= len(inflater.unused_data)
            if not wbits & 16:
                break  # gzip may have several members, zlib and raw deflate streams one
    except zlib.error as error:
        raise FetchFailure("bad-encoding", f"corrupt compressed body: {error}") from None
    return bytes(output)
