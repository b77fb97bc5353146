"""The msgpack codec for every actorq wire message.

A frame is one msgpack array ``[version, kind, body]``. Decoding is strict and
bounded: lengths are capped, map keys must be strings or bytes
(msgpack's ``strict_map_key``), ext types are refused
(no object is ever built from the wire: there is no ``ext_hook``, no
``object_hook`` and no pickle), and anything else wrong raises `FrameError`,
which the receiving actor counts and drops.

The codec knows no protocol: a kind is any short string. Each receiver names
the kinds it accepts (``decode(frame, kinds=...)``) and checks each body's
shape itself: field by field where the protocol fixes it (the job wire, the
control socket), or, where a body is free-form user data (remote actors'
messages), with a depth bound (``decode(frame, max_depth=...)`` or
`check_depth`). The bound is opt-in because it visits every array and map of a
body, which the job wire, whose fields are all checked anyway, cannot afford.

Nothing taken from the wire is formatted with ``repr``: msgpack builds values
nested up to 1,024 deep, and ``repr`` of one of them overflows the stack.
Errors and log lines name a bad value with `describe` (its type and size, a
short prefix of a string).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgpack

from actorq.transports.constants import DEFAULT_MAX_FRAME_BYTES, MAX_KIND_LEN, WIRE_VERSION

__all__ = ["FrameError", "check_depth", "decode", "describe", "encode", "packb"]

_packer = msgpack.Packer(use_bin_type=True)


class FrameError(ValueError):
    """A frame could not be decoded or does not have the envelope's shape.

    `reason` is a short stable tag used as the key of the drop counter; `detail` says
    what was wrong, safe to print (bad values appear only through `describe`).
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _refuse_ext(code: int, data: bytes) -> Any:
    raise FrameError("ext_type", f"ext type {code} is not accepted")


_STR_PREFIX = 32  # characters of a bad string shown in an error; the rest is counted, not shown
_CONTAINERS = (list, dict, tuple)  # what nests: decoded arrays and maps, and tuples on the sending side
# A set lookup of the exact type: check_depth over a 256-job JOBS body took 63 us this way, 137 us
# with isinstance. (A subclass of list or dict passes the walk; msgpack sends it as an array or map,
# and a receiver's walk sees the plain list or dict it decodes.)
_NESTING = frozenset(_CONTAINERS)


def describe(value: Any) -> str:
    """A short description of an untrusted value, safe to put in an error or a log line.

    Containers and bytes are named by type and size, never by content (a value
    from the wire may be nested deeper than ``repr`` can go); a string shows at
    most its first 32 characters; numbers, booleans and None show as themselves.
    Never raises and never recurses.

    Args:
        value: any value, typically one decoded from a frame.

    Returns:
        At most about 80 characters, e.g. ``"list of 3 items"`` or ``"'hel'"``.
    """
    kind = type(value)
    if value is None or kind is bool or kind is float:
        return repr(value)
    if kind is int:
        return repr(value) if -(2**64) <= value < 2**64 else f"int of {value.bit_length()} bits"
    if kind is str:
        if len(value) <= _STR_PREFIX:
            return repr(value)
        return f"{value[:_STR_PREFIX]!r}... ({len(value)} characters)"
    if isinstance(value, (*_CONTAINERS, bytes, bytearray, str)):
        size = len(value)
        return f"{kind.__name__} of {size} {'item' if size == 1 else 'items'}"
    return kind.__name__


def check_depth(value: Any, max_depth: int) -> None:
    """Raise `FrameError` (reason ``too_deep``) if `value` nests deeper than `max_depth`.

    Depth counts arrays and maps (lists, tuples, dicts): a scalar is 0, ``[1]`` is 1,
    ``{"a": [1]}`` is 2. The walk is iterative, level by level, so it never hits
    the recursion limit, and it stops at the first level past the bound. It visits
    every container of `value`: use it where bodies are free-form, not on hot paths.

    Args:
        value: a decoded body, or a message about to be sent.
        max_depth: the deepest nesting accepted (0: scalars only).

    Raises:
        FrameError: ``too_deep``.
    """
    if not isinstance(value, _CONTAINERS):
        return
    level = [value]
    depth = 1
    while level:
        if depth > max_depth:
            raise FrameError("too_deep", f"nested deeper than {max_depth} levels")
        below: list[Any] = []
        keep = below.append
        for container in level:
            for item in container.values() if isinstance(container, dict) else container:
                if type(item) in _NESTING:
                    keep(item)
        level = below
        depth += 1


def packb(obj: Any) -> bytes:
    """Encode `obj` as msgpack (bin type for bytes). Raises TypeError if it can't be encoded."""
    return msgpack.packb(obj, use_bin_type=True)


def encode(kind: str, body: Any) -> bytes:
    """Encode one envelope of `kind` carrying `body`."""
    return _packer.pack([WIRE_VERSION, kind, body])


def decode(frame: bytes, max_len: int = DEFAULT_MAX_FRAME_BYTES, *,
           kinds: Collection[str] | None = None, max_depth: int | None = None,
           max_items: int | None = None) -> tuple[str, Any]:
    """Decode one envelope and return ``(kind, body)``.

    Args:
        frame: the raw bytes of one message part.
        max_len: upper bound for any string, binary, array or map length.
        kinds: the kinds the receiver accepts (a frozenset: it is tested once per
            frame); None accepts any kind that is a short string.
        max_depth: the deepest nesting accepted in the body (see `check_depth`), for
            receivers of free-form bodies; None (the default) does not walk the body.
        max_items: a tighter bound on array and map lengths, for protocols that fix
            them: msgpack allocates a declared array before it reads the items, 8 bytes
            an item, so a header declaring `max_len` items could cost 8 x `max_len`
            bytes. None (the default): `max_len`.

    Raises:
        FrameError: the frame is not valid msgpack, has trailing bytes, uses
            ext types, is nested too deep, or is not ``[version, kind, body]``
            with the known version and a kind that is a string of at most
            `MAX_KIND_LEN` characters and, when `kinds` is given, one of them
            (reason ``unknown_kind``), or the body is nested deeper than
            `max_depth` (reason ``too_deep``). msgpack itself refuses more than
            1,024 levels (reason ``not_msgpack``).
    """
    try:
        msg = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            ext_hook=_refuse_ext,
            max_str_len=max_len,
            max_bin_len=max_len,
            max_array_len=max_len if max_items is None else max_items,
            max_map_len=max_len if max_items is None else max_items,
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
        raise FrameError("bad_version", describe(version))
    if type(kind) is not str or len(kind) > MAX_KIND_LEN or (kinds is not None and kind not in kinds):
        raise FrameError("unknown_kind", describe(kind))
    if max_depth is not None:
        check_depth(body, max_depth)
    return kind, body
