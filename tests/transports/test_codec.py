"""Bad input for the wire codec, `actorq.transports.codec.decode`.

ACCEPTANCE ids: G1 (malformed frames: wrong shape, non-msgpack, truncated, trailing
bytes, wrong types, bad version, unknown kind, invalid UTF-8), G2/G3 (huge headers
without a memory spike, deep nesting, non-string map keys, ext types), G5 (a
seeded mutation fuzzer) and G10 (a kind, version or body nested 1,000 deep; the opt-in
depth bound). Every bad frame must raise `FrameError` with a `reason`
(the key of the receiver's drop counter) and nothing else.

The codec knows no protocol: the kinds here are plain names with the bodies
actorq's protocols send under them, and a receiver's own set is a `kinds=`
argument.
"""

from __future__ import annotations

import math
import os
import random
import struct
import tracemalloc
from collections import Counter
from typing import Any

import msgpack
import pytest

from actorq.transports.codec import FrameError, check_depth, decode, describe, encode
from actorq.transports.constants import MAX_KIND_LEN, WIRE_VERSION

pytestmark = pytest.mark.timeout(60)

HELLO, ACK, BYE, JOBS = "hello", "ack", "bye", "jobs"

def envelope(*parts: bytes) -> bytes:
    """A 3-element array header followed by raw msgpack `parts`."""
    return b"\x93" + b"".join(parts)


def pk(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, strict_types=False)


VERSION = pk(WIRE_VERSION)
KIND_HELLO = pk(HELLO)


def reason_of(frame: bytes, **kwargs: Any) -> str:
    with pytest.raises(FrameError) as info:
        decode(frame, **kwargs)
    assert info.value.reason, "a FrameError must carry a reason"
    assert isinstance(info.value, ValueError)
    return info.value.reason


SAMPLE_BODIES: dict[str, Any] = {
    HELLO: {"owner": "node-a/1234/abcd", "credits": 16, "queues": ["default", "emails"], "pid": 1234},
    ACK: [["0190f3a1b2c3d4e5f60718293a4b5c6d", 4_611_686_018_427_387_904, "ok", None, None],
          ["0190f3a1b2c3d4e5f60718293a4b5c6e", 17, "error", "ValueError: bad", 2.5]],
    JOBS: [["0190f3a1b2c3d4e5f60718293a4b5c6d", 99, "emails.send", pk([["a@b.c"], {"retry": True}]), 1, 20]],
    BYE: None,
    "stop": None,
    "hb": None,
    "who": None,
    "reset": None,
    "ahello": None,
    "atell": {"resize": [640, 480]},
    "aask": [7, "ping"],
    "areply": [7, True, "pong"],
    "tree": {"id": "node", "type": "supervisor", "pid": 1234, "children": [{"id": "dispatcher", "restarts": 1}]},
}
KINDS = frozenset(SAMPLE_BODIES)  # one receiver's set, as a receiver passes it


# -- valid frames -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_valid_frames_round_trip(kind: str) -> None:
    body = SAMPLE_BODIES[kind]
    assert decode(encode(kind, body)) == (kind, body)
    assert decode(encode(kind, body), kinds=KINDS) == (kind, body)
    assert decode(encode(kind, body), kinds=[kind]) == (kind, body)  # any collection of str


@pytest.mark.parametrize("kind", ["", "x", "nope", "k" * MAX_KIND_LEN, "\u00e9\u6f22"], ids=repr)
def test_without_kinds_any_short_string_is_a_kind(kind: str) -> None:
    assert decode(encode(kind, [1])) == (kind, [1])


def test_huge_int_and_nan_in_a_body_are_plain_data() -> None:
    # G1: the codec checks the envelope; the receiver checks the body's shape and values.
    kind, body = decode(encode(ACK, [2**64 - 1, -(2**63), float("nan"), float("inf")]))
    assert kind == ACK
    assert body[:2] == [2**64 - 1, -(2**63)] and math.isnan(body[2]) and body[3] == math.inf
    with pytest.raises(OverflowError):  # too big for msgpack: refused at the sender
        encode(ACK, [2**64])


# -- G1: malformed frames -------------------------------------------------------------------


@pytest.mark.parametrize("message", [
    None, 1, "hello", b"hello", {"version": 1, "kind": "hello", "body": None},
    [], [WIRE_VERSION], [WIRE_VERSION, HELLO], [WIRE_VERSION, HELLO, None, None],
    [[WIRE_VERSION, HELLO, None]],
], ids=repr)
def test_g1_wrong_envelope_shape(message: Any) -> None:
    assert reason_of(pk(message)) == "bad_envelope"


@pytest.mark.parametrize("frame", [
    b"", b"\xc1", b"\xc1\x93\x01\xa5hello\xc0", b"GET / HTTP/1.1\r\n\r\n", b"\x00\x00\x00\x01ZMTP",
    bytes(range(256)),
], ids=["empty", "never-used-byte", "never-used-first", "http", "zmtp-ish", "all-bytes"])
def test_g1_non_msgpack_bytes(frame: bytes) -> None:
    reason_of(frame)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_g1_every_truncation_of_a_valid_frame(kind: str) -> None:
    frame = encode(kind, SAMPLE_BODIES[kind])
    for cut in range(len(frame)):
        reason = reason_of(frame[:cut])
        assert reason in {"not_msgpack", "bad_envelope"}, (cut, reason)


@pytest.mark.parametrize("extra", [b"\x00", b"\xc0", encode(BYE, None), b"\xc1"])
def test_g1_trailing_bytes(extra: bytes) -> None:
    assert reason_of(encode(HELLO, SAMPLE_BODIES[HELLO]) + extra) == "trailing_bytes"


@pytest.mark.parametrize("version", [0, 2, -1, 2**64 - 1, 1.0, True, "1", None, [1], b"\x01"], ids=repr)
def test_g1_bad_version(version: Any) -> None:
    assert reason_of(pk([version, HELLO, None])) == "bad_version"


@pytest.mark.parametrize("kind", ["nope", "", "HELLO", "hello ", "k" * MAX_KIND_LEN, b"hello", 1, None, ["hello"],
                                  1.5, {"hello": 1}], ids=lambda kind: repr(kind)[:20])
def test_g1_unknown_kind(kind: Any) -> None:
    assert reason_of(pk([WIRE_VERSION, kind, None]), kinds=KINDS) == "unknown_kind"
    assert reason_of(pk([WIRE_VERSION, kind, None]), kinds=()) == "unknown_kind"


@pytest.mark.parametrize("kind", ["k" * (MAX_KIND_LEN + 1), "k" * 100_000, b"hello", 1, None, ["hello"], 1.5, True,
                                  {"hello": 1}], ids=lambda kind: repr(kind)[:20])
def test_g1_a_kind_is_a_short_string_even_without_kinds(kind: Any) -> None:
    assert reason_of(pk([WIRE_VERSION, kind, None])) == "unknown_kind"


@pytest.mark.parametrize("bad_str", [
    b"\xa2\xff\xfe",            # fixstr with bytes that are never UTF-8
    b"\xa2\xc3\x28",            # invalid continuation byte
    b"\xd9\x03\xed\xa0\x80",    # a UTF-16 surrogate encoded as UTF-8
    b"\xa1\x80",                # lone continuation byte
], ids=["ff-fe", "bad-continuation", "surrogate", "lone-continuation"])
def test_g1_invalid_utf8_anywhere(bad_str: bytes) -> None:
    assert reason_of(envelope(VERSION, bad_str, b"\xc0")) == "not_msgpack"  # as the kind
    assert reason_of(envelope(VERSION, KIND_HELLO, b"\x91" + bad_str)) == "not_msgpack"  # in the body
    assert reason_of(envelope(VERSION, KIND_HELLO, b"\x81" + bad_str + b"\x01")) == "not_msgpack"  # a map key


# -- G3: ext types, nesting, headers, map keys ----------------------------------------------


@pytest.mark.parametrize("ext", [
    b"\xd4\x05\x00",                                   # fixext 1
    b"\xd5\x05\x00\x00",                               # fixext 2
    b"\xd6\xff\x00\x00\x00\x01",                       # fixext 4, type -1: a msgpack timestamp
    b"\xd7\xff" + b"\x00" * 8,                         # fixext 8 timestamp
    b"\xc7\x0c\xff" + b"\x00" * 12,                    # ext 8 timestamp (96-bit)
    b"\xd8\x05" + b"\x00" * 16,                        # fixext 16
    b"\xc7\x00\x05",                                   # ext 8, empty
    b"\xc7\x03\x7f\x01\x02\x03",                       # ext 8, type 127
    b"\xc8\x00\x02\x05\x01\x02",                       # ext 16
    b"\xc9\x00\x00\x00\x02\x05\x01\x02",               # ext 32
    b"\xc9\xff\xff\xff\xff\x05",                       # ext 32 claiming 4 GiB
], ids=lambda b: b.hex()[:12])
def test_g3_ext_types_are_refused(ext: bytes) -> None:
    # In the body, as a map value, and in the kind's place: never an object from the wire.
    for frame in (envelope(VERSION, KIND_HELLO, ext),
                  envelope(VERSION, KIND_HELLO, b"\x81\xa1k" + ext),
                  envelope(VERSION, ext, b"\xc0")):
        assert reason_of(frame) in {"ext_type", "not_msgpack"}


@pytest.mark.parametrize("nest", [b"\x91", b"\x81\xa1k", b"\xdc\x00\x01", b"\xde\x00\x01\xa1k"],
                         ids=["fixarray", "fixmap", "array16", "map16"])
def test_g3_deep_nesting_100k_levels(nest: bytes) -> None:
    depth = 100_000
    assert reason_of(envelope(VERSION, KIND_HELLO, nest * depth + b"\xc0")) == "not_msgpack"
    assert reason_of(nest * depth + b"\xc0") == "not_msgpack"


@pytest.mark.parametrize("header", [
    b"\xdd\xff\xff\xff\xff",    # array 32, 4 Gi elements
    b"\xdd\x00\xff\xff\xff",    # array 32, just under the default 16 Mi bound
    b"\xdc\xff\xff",            # array 16
    b"\xdf\xff\xff\xff\xff",    # map 32
    b"\xdf\x00\xff\xff\xff",    # map 32, under the bound
    b"\xdb\xff\xff\xff\xff",    # str 32
    b"\xdb\x00\xff\xff\xff",    # str 32, under the bound
    b"\xc6\xff\xff\xff\xff",    # bin 32
    b"\xc6\x00\xff\xff\xff",    # bin 32, under the bound
], ids=lambda b: b.hex())
def test_g3_huge_headers_are_refused_without_a_memory_spike(header: bytes) -> None:
    frames = [header, envelope(VERSION, KIND_HELLO, header), envelope(VERSION, KIND_HELLO, header + b"\xc0" * 64)]
    tracemalloc.start()
    try:
        for frame in frames:
            reason_of(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # G2: a 5-byte header must not make the receiver allocate for 16 Mi elements.
    assert peak < 4 * 1024 * 1024, f"decoding a bare header allocated {peak} bytes"


def test_g3_length_bound_is_enforced() -> None:
    frame = encode(HELLO, {"queues": ["q"] * 11, "owner": "x" * 11})
    assert decode(frame, max_len=11)[0] == HELLO
    assert reason_of(encode(HELLO, ["q"] * 12), max_len=11) == "not_msgpack"
    assert reason_of(encode(HELLO, "x" * 12), max_len=11) == "not_msgpack"
    assert reason_of(encode(HELLO, b"x" * 12), max_len=11) == "not_msgpack"
    assert reason_of(encode(HELLO, {str(n): n for n in range(12)}), max_len=11) == "not_msgpack"


@pytest.mark.parametrize("key", [
    pk(1), pk(-1), pk(None), pk(True), pk(1.5), pk([1]), pk({"a": 1}),
], ids=["int", "negative-int", "nil", "bool", "float", "array", "map"])
def test_g3_non_string_map_keys(key: bytes) -> None:
    assert reason_of(envelope(VERSION, KIND_HELLO, b"\x81" + key + b"\x01")) == "not_msgpack"
    # Deeper down as well: the whole frame is checked, not just the top level.
    assert reason_of(envelope(VERSION, KIND_HELLO, b"\x91\x81\xa1k\x81" + key + b"\x01")) == "not_msgpack"
    # Note: msgpack's strict_map_key also lets bin (bytes) keys through; see the report.


# -- G5: a seeded mutation fuzzer -----------------------------------------------------------

INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5,
               0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xCB, 0xCC, 0xCF, 0xD3, 0xD4, 0xD6, 0xD8, 0xD9, 0xDB, 0xDC,
               0xDD, 0xDE, 0xDF, 0xE0, 0xFF]


def _mutate(rng: random.Random, frame: bytes, corpus: list[bytes]) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip one bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # a random byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 2 and data:  # a byte that msgpack treats specially
            data[rng.randrange(len(data))] = rng.choice(INTERESTING)
        elif op == 3:  # insert random bytes
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 4 and data:  # delete a slice
            del data[pos:pos + rng.randint(1, 8)]
        elif op == 5:  # truncate
            del data[pos:]
        elif op == 6 and data:  # duplicate a slice
            data[pos:pos] = data[pos:pos + rng.randint(1, 16)]
        elif op == 7:  # splice in part of another valid frame
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            data[pos:] = other[cut:]
        elif op == 8:  # a header claiming a huge or odd length
            data[pos:pos] = bytes([rng.choice([0xDC, 0xDD, 0xDE, 0xDF, 0xDA, 0xDB, 0xC5, 0xC6])]) + struct.pack(
                ">I", rng.choice([0, 1, 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)]))
    return bytes(data)


def _assert_plain(body: Any) -> None:
    """A decoded body holds only plain msgpack values, never an object built from the wire."""
    stack = [body]
    while stack:
        value = stack.pop()
        if value is None or type(value) in (bool, int, float, str, bytes):
            continue
        if type(value) is list:
            stack.extend(value)
        elif type(value) is dict:
            for key, item in value.items():
                assert type(key) in (str, bytes), f"map key {key!r} ({type(key).__name__})"
                stack.append(item)
        else:
            raise AssertionError(f"decode built a {type(value).__name__}: {value!r}")


def test_g5_mutation_fuzzer_only_frame_errors() -> None:
    seed = int(os.environ.get("ACTORQ_FUZZ_SEED", random.randrange(2**32)))
    print(f"G5 fuzz seed: {seed} (rerun with ACTORQ_FUZZ_SEED={seed})")
    rng = random.Random(seed)
    corpus = [encode(kind, body) for kind, body in SAMPLE_BODIES.items()]
    corpus.append(encode(JOBS, [SAMPLE_BODIES[JOBS][0]] * 20))
    corpus.append(encode(HELLO, {"nested": [[{"a": [1.5, -3, b"\x00", "\u00e9\u6f22"]}]] * 3}))
    reasons: Counter[str] = Counter()
    accepted = 0
    for i in range(10_000):
        frame = _mutate(rng, rng.choice(corpus), corpus)
        try:
            generic = decode(frame)
        except FrameError as exc:
            generic = exc
        except Exception as exc:  # the one thing that must never happen
            pytest.fail(f"seed={seed} case={i}: decode raised {exc!r} for frame {frame!r}")
        try:
            decode(frame, max_len=64, kinds=KINDS, max_depth=2)  # a receiver's tighter bounds
        except FrameError:
            pass
        except Exception as exc:  # the one thing that must never happen
            pytest.fail(f"seed={seed} case={i}: decode(max_depth=2) raised {exc!r} for frame {frame!r}")
        try:
            kind, body = decode(frame, kinds=KINDS)
        except FrameError as exc:
            assert exc.reason, f"seed={seed} case={i}: FrameError without a reason for {frame!r}"
            reasons[exc.reason] += 1
            if isinstance(generic, FrameError):
                assert exc.reason == generic.reason, f"seed={seed} case={i}: the two decodes disagree"
            else:  # a receiver's set only adds unknown_kind to what every decode refuses
                assert exc.reason == "unknown_kind" and generic[0] not in KINDS, f"seed={seed} case={i}"
            continue
        except Exception as exc:  # the one thing that must never happen
            pytest.fail(f"seed={seed} case={i}: decode raised {exc!r} for frame {frame!r}")
        accepted += 1
        # compared as msgpack: a mutated float may be NaN, which equals nothing
        assert not isinstance(generic, FrameError) and (kind, pk(body)) == (generic[0], pk(generic[1])), \
            f"seed={seed} case={i}: the two decodes disagree"
        assert kind in KINDS, f"seed={seed} case={i}: kind {kind!r}"
        _assert_plain(body)
    print(f"G5 accepted={accepted} rejected={dict(reasons)}")
    assert sum(reasons.values()) + accepted == 10_000
    assert sum(reasons.values()) > 1000, "the fuzzer hardly produced bad frames"


# -- G10: values nested 1,000 deep, and the opt-in depth bound ------------------------------
# msgpack's own stack stops at 1,024 levels (G3 above); anything shallower is built, so
# every description of a bad value must be safe for it, and receivers of free-form
# bodies bound the depth themselves (``max_depth=``).

DEEP = 1_000


def _nested(depth: int, leaf: bytes = b"\xc0", nest: bytes = b"\x91") -> bytes:
    return nest * depth + leaf


@pytest.mark.parametrize("nest", [b"\x91", b"\x81\xa1k"], ids=["array", "map"])
def test_g10_a_kind_or_version_nested_1000_deep_is_a_frame_error(nest: bytes) -> None:
    # Before: RecursionError from formatting the bad value (repr of the nested list).
    assert reason_of(envelope(_nested(DEEP, nest=nest), KIND_HELLO, b"\xc0")) == "bad_version"
    assert reason_of(envelope(VERSION, _nested(DEEP, nest=nest), b"\xc0")) == "unknown_kind"
    assert reason_of(envelope(VERSION, _nested(DEEP, nest=nest), b"\xc0"), kinds=KINDS) == "unknown_kind"


def test_g10_ten_thousand_deep_frames_in_a_row_raise_only_frame_errors() -> None:
    frames = [envelope(_nested(DEEP), KIND_HELLO, b"\xc0"), envelope(VERSION, _nested(DEEP), b"\xc0"),
              envelope(VERSION, KIND_HELLO, _nested(DEEP))]
    reasons: Counter[str] = Counter()
    for i in range(10_000):
        try:
            decode(frames[i % 3], kinds=KINDS, max_depth=64)
        except FrameError as exc:
            reasons[exc.reason] += 1
    assert reasons == {"bad_version": 3334, "unknown_kind": 3333, "too_deep": 3333}


@pytest.mark.parametrize("value", [
    [[1] * 3] * 3, {"k": {"j": [1, {"i": None}]}}, "x" * 10_000, b"\x00" * 10_000, 2**64 - 1, -(2**63), 1.5,
    float("nan"), None, True, ["\u00e9" * 5_000], {"k" * 5_000: 1},
], ids=lambda v: type(v).__name__)
def test_describe_is_short_and_never_formats_a_containers_contents(value: Any) -> None:
    text = describe(value)
    assert 0 < len(text) <= 80, text
    if isinstance(value, (list, dict, bytes)):  # by type and size, never by content
        assert text == f"{type(value).__name__} of {len(value)} {'item' if len(value) == 1 else 'items'}"
    deep: Any = None
    for _ in range(100_000):  # far beyond the interpreter's recursion limit
        deep = [deep]
    assert describe(deep) == "list of 1 item"


@pytest.mark.parametrize("nest", [b"\x91", b"\x81\xa1k"], ids=["array", "map"])
def test_max_depth_bounds_the_body_and_is_off_by_default(nest: bytes) -> None:
    at_bound = envelope(VERSION, KIND_HELLO, _nested(64, nest=nest))
    past_bound = envelope(VERSION, KIND_HELLO, _nested(65, nest=nest))
    assert decode(at_bound, max_depth=64)[0] == HELLO
    assert reason_of(past_bound, max_depth=64) == "too_deep"
    assert decode(past_bound)[0] == HELLO  # opt-in: the job wire walks no body
    assert reason_of(envelope(VERSION, KIND_HELLO, _nested(DEEP, nest=nest)), max_depth=64) == "too_deep"
    assert decode(envelope(VERSION, KIND_HELLO, b"\x01"), max_depth=0) == (HELLO, 1)
    assert reason_of(envelope(VERSION, KIND_HELLO, b"\x90"), max_depth=0) == "too_deep"


@pytest.mark.parametrize("value,depth", [
    (None, 0), (1, 0), ("s", 0), (b"b", 0), ([], 1), ({}, 1), ([1, [2]], 2), ({"a": {"b": [3]}}, 3),
    ((1, (2, (3,))), 3), ([[], [[[]]], []], 4), ({"wide": [[0]] * 10_000}, 3),
], ids=repr)
def test_check_depth_counts_nested_containers(value: Any, depth: int) -> None:
    check_depth(value, depth)
    if depth:
        with pytest.raises(FrameError) as info:
            check_depth(value, depth - 1)
        assert info.value.reason == "too_deep"


def test_check_depth_is_iterative() -> None:
    # Built in Python, deeper than any frame can carry: no recursion anywhere.
    deep: Any = 0
    for _ in range(200_000):
        deep = {"k": [deep]}
    with pytest.raises(FrameError, match="too_deep"):
        check_depth(deep, 64)
    check_depth(deep, 400_000)
