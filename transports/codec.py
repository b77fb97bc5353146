"""The msgpack codec for every actorq wire message.

A frame is one msgpack array ``[version, kind, body]``. Decoding is strict and
bounded: lengths are capped, map keys must be strings or bytes
(msgpack's ``strict_map_key``), ext types are refused
(no object is ever built from the wire: there is no ``ext_hook``, no
``object_hook`` and no pickle), and anything else wrong raises `FrameError`,
which the receiving actor counts and drops.

The codec knows no protocol: a kind is any short string. Each receiver names
the kinds it accepts (``decode(frame, kinds=...)``) and checks each body's
shape itself.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgpack

from actorq.transports.constants import DEFAULT_MAX_FRAME_BYTES, MAX_KIND_LEN, WIRE_VERSION

__all__ = ["FrameError", "decode", "encode", "packb"]

_packer = msgpack.Packer(use_bin_type=True)


class FrameError(ValueError):
    """A frame could not be decoded or does not have the envelope's shape.

    `reason` is a short stable tag used as the key of the drop counter.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _refuse_ext(code: int, data: bytes) -> Any:
    raise FrameError("ext_type", f"ext type {code} is not accepted")


def packb(obj: Any) -> bytes:
    """Encode `obj` as msgpack (bin type for bytes). Raises TypeError if it can't be encoded."""
    return msgpack.packb(obj, use_bin_type=True)


def encode(kind: str, body: Any) -> bytes:
    """Encode one envelope of `kind` carrying `body`."""
    return _packer.pack([WIRE_VERSION, kind, body])


def decode(frame: bytes, max_len: int = DEFAULT_MAX_FRAME_BYTES, *,
           kinds: Collection[str] | None = None) -> tuple[str, Any]:
    """Decode one envelope and return ``(kind, body)``.

    Args:
        frame: the raw bytes of one message part.
        max_len: upper bound for any string, binary, array or map length.
        kinds: the kinds the receiver accepts (a frozenset: it is tested once per
            frame); None accepts any kind that is a short string.

    Raises:
        FrameError: the frame is not valid msgpack, has trailing bytes, uses
            ext types, is nested too deep, or is not ``[version, kind, body]``
            with the known version and a kind that is a string of at most
            `MAX_KIND_LEN` characters and, when `kinds` is given, one of them
            (reason ``unknown_kind``).
    """
    try:
        msg = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_str_len=max_len,
            max_bin_len=max_len,
            max_array_len=max_len,
            max_map_len=max_len,
            max_ext_len=0,
        )
    except FrameError:
        raise
    except msgpack.ExtraData:
        raise FrameError("trailing_bytes") from None
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        # FormatError, StackError (deep nesting), OutOfData, UnicodeDecodeError, ...
        raise FrameError("not_msgpack", type(exc).__name__) from None
    if not isinstance(msg, list) or len(msg) != 3:
        raise FrameError("bad_envelope", "expected [version, kind, body]")
    version, kind, body = msg
    if type(version) is not int or version != WIRE_VERSION:  # not 1.0, not True
        raise FrameError("bad_version", repr(version)[:40])
    if type(kind) is not str or len(kind) > MAX_KIND_LEN or (kinds is not None and kind not in kinds):
        raise FrameError("unknown_kind", repr(kind)[:40])
    return kind, body
