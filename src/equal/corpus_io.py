"""Byte-level reading for :mod:`equal.corpus`: compressed JSONL streams that say when they are damaged, and
the text encoding of a JSONL file told from its first bytes.

* :func:`iter_lines` yields the lines of a ``.jsonl.gz`` / ``.jsonl.zst`` file and raises
  :class:`StreamDamage` where the stream stops being readable: ``truncated`` (it ends inside a gzip member
  or a zstd frame: a copy cut off mid-stream) or ``unreadable`` (a bad header, a CRC or checksum mismatch,
  corrupt data). Lines read before the damage are kept by the caller. zstd files are read frame by frame
  (files of several frames, as ``pzstd`` writes them, are read whole), and a frame the file ends inside
  is reported, which zstandard's stream reader would pass over in silence.
* :func:`sniff_encoding` names the encoding that a byte-order mark (or the NUL pattern of BOM-less
  UTF-16/32 JSON) shows: equal reads UTF-8, so a UTF-16 or UTF-32 file is a one-line error with the
  command that converts it, instead of thousands of ``malformed_json`` lines. A UTF-8 byte-order mark is
  harmless and stripped by the reader.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

CHUNK = 1 << 16  # decompressed bytes asked for at a time (gzip)
ZST_PIECE = 1 << 16  # compressed bytes given to the zstd decompressor at a time


class StreamDamage(Exception):
    """A compressed stream that cannot be read to its end: ``kind`` is ``truncated`` or ``unreadable``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines (each with its ``\\n``, the last one maybe without) from a stream of byte chunks."""
    rest = b""
    for chunk in chunks:
        if not chunk:
            continue
        data = rest + chunk
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            yield data[start: end + 1]
            start = end + 1
        rest = data[start:]
    if rest:
        yield rest


def _gz_chunks(f: BinaryIO) -> Iterator[bytes]:
    import gzip

    try:
        with gzip.open(f, "rb") as g:
            while True:
                chunk = g.read1(CHUNK)  # what one decompression step gives: nothing decoded is lost at a cut
                if not chunk:
                    return
                yield chunk
    except EOFError as e:  # "Compressed file ended before the end-of-stream marker was reached"
        raise StreamDamage("truncated", str(e)) from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise StreamDamage("unreadable", str(e)) from None


def _zst_chunks(f: BinaryIO) -> Iterator[bytes]:
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    in_frame = False  # bytes of a frame were given to ``dobj`` and its end was not reached yet
    try:
        while True:
            data = f.read(ZST_PIECE)  # small pieces bound the output of one call (no max_length in zstandard)
            if not data:
                break
            while data:
                out = dobj.decompress(data)
                in_frame = True
                if out:
                    yield out
                if not dobj.eof:
                    break
                data, dobj, in_frame = dobj.unused_data, dctx.decompressobj(), False  # the next frame, if any
    except zstandard.ZstdError as e:
        raise StreamDamage("unreadable", str(e)) from None
    if in_frame:
        raise StreamDamage("truncated", "the file ends inside a zstd frame")


def iter_lines(path: Path, kind: str) -> Iterator[bytes]:
    """The lines of the ``gz`` or ``zst`` file ``path``; :class:`StreamDamage` where it breaks (after the
    lines read before it). An error of the file system (``OSError`` with an errno) is raised as it is."""
    with open(path, "rb") as f:
        yield from _lines(_gz_chunks(f) if kind == "gz" else _zst_chunks(f))


_BOMS = ((b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\xfe\xff", "utf-16-be"),
         (b"\xff\xfe", "utf-16-le"))
_NULS = {(False, True, True, True): "utf-32-le", (True, True, True, False): "utf-32-be",
         (False, True, False, True): "utf-16-le", (True, False, True, False): "utf-16-be"}
_OBJECT = re.compile(r"\s*\{")
_OBJECT_KEY = re.compile(r"\s*\{\s*\"")


def _name(codec: str) -> str:
    family, order = codec[:-3].upper(), "little-endian" if codec.endswith("le") else "big-endian"
    return f"{family} ({order})"


def sniff_encoding(head: bytes) -> tuple[str, str] | None:
    """``(encoding, how it was told)`` for JSONL text that is not UTF-8, from its first bytes (64 are
    plenty); None for UTF-8, with or without a byte-order mark.

    UTF-16/32 is told by a byte-order mark, or without one by the NUL bytes of ASCII text in it; either way
    only when the text, decoded so, opens a JSON object (``{`` after a mark, ``{"`` without one), so that a
    line of binary junk that happens to start like a mark stays a ``malformed_json`` line.
    """
    for bom, codec in _BOMS:
        if head.startswith(bom):
            if _OBJECT.match(head[len(bom):].decode(codec, errors="ignore")):
                return _name(codec), f"byte-order mark {bom.hex(' ').upper()}"
            return None
    codec = _NULS.get(tuple(b == 0 for b in head[:4]))
    if codec and len(head) >= 8 and _OBJECT_KEY.match(head.decode(codec, errors="ignore")):
        return _name(codec), "NUL bytes around its ASCII characters, no byte-order mark"
    return None


def encoding_message(path: Path, kind: str, found: tuple[str, str]) -> str:
    """The one-line error for a corpus file in UTF-16/32: what it is, and the command that converts it."""
    enc, how = found
    family = enc.split()[0]
    if kind == "jsonl":
        fix = f"iconv -f {family} -t UTF-8 {path} > {path.with_suffix('')}.utf8{path.suffix}"
    else:
        tool = "gzip" if kind == "gz" else "zstd"
        fix = f"{tool} -dc {path} | iconv -f {family} -t UTF-8 | {tool} > converted{''.join(path.suffixes)}"
    return (f"corpus file {path} is {enc} text ({how}); equal reads UTF-8 JSONL: convert it first, e.g. "
            f"{fix}")
