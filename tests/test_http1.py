"""labkit.http1: each framing rule, then a hypothesis fuzz (random bytes and random splits).

Messages are fed into a real asyncio.StreamReader, piece by piece from a producer task, so a
parse sees the same partial reads a socket gives; every parse is bounded by a timeout, so a
hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import http1

LIMIT = http1.MAX_HEAD
BOUND = 5.0  # seconds: only a hang reaches it
LOOP = asyncio.new_event_loop()  # one loop for the module: a fuzz runs hundreds of parses


@pytest.fixture(scope="module", autouse=True)
def _close_loop() -> Iterator[None]:
    yield
    LOOP.close()


def parse(data: bytes | Sequence[bytes], what: str = "request", *, method: str = "GET",
          max_head: int = LIMIT, max_body: int | None = None, eof: bool = True) -> Any:
    """Feed `data` (one piece or several) to a StreamReader and parse one message: a Request
    (or None), or with what="response" a Response. Typed Any so a test reads the fields of the
    one it asked for; a wrong kind fails the test with an AttributeError."""
    pieces = [data] if isinstance(data, bytes) else list(data)

    async def run() -> http1.Request | http1.Response | None:
        reader = asyncio.StreamReader(limit=LIMIT)

        async def produce() -> None:
            for piece in pieces:
                reader.feed_data(piece)
                await asyncio.sleep(0)  # let the parser consume a partial read
            if eof:
                reader.feed_eof()

        producer = asyncio.create_task(produce())
        try:
            if what == "request":
                return await asyncio.wait_for(
                    http1.read_request(reader, max_head=max_head, max_body=max_body), BOUND)
            return await asyncio.wait_for(
                http1.read_response(reader, method, max_head=max_head, max_body=max_body), BOUND)
        finally:
            await producer

    return LOOP.run_until_complete(run())


def status_of(data: bytes | Sequence[bytes], **kw: Any) -> int:
    with pytest.raises(http1.HttpError) as err:
        parse(data, **kw)
    return err.value.status


def test_simple_request_and_keep_alive_rules() -> None:
    req = parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A:  v  \r\n\r\n")
    assert isinstance(req, http1.Request)
    assert (req.method, req.target, req.version, req.body) == ("GET", "/a?b=1", "HTTP/1.1", b"")
    assert req.headers == [("Host", "x"), ("X-A", "v")] and req.header("x-a") == "v"
    assert req.keep_alive
    assert not parse(b"GET / HTTP/1.1\r\nConnection: Upgrade, close\r\n\r\n").keep_alive
    assert not parse(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    assert parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive
    # RFC 9112 2.2: an empty line before the request line is ignored.
    assert parse(b"\r\nGET / HTTP/1.1\r\n\r\n").target == "/"


def test_clean_close_between_requests_is_none_and_mid_head_is_400() -> None:
    assert parse(b"") is None
    assert status_of(b"GET / HTTP/1.1\r\nHost: x\r\n") == 400


@pytest.mark.parametrize("head", [
    b"GET /\r\n\r\n",                       # no version
    b"GET  / HTTP/1.1\r\n\r\n",             # two spaces
    b"G(T / HTTP/1.1\r\n\r\n",              # method not a token
    b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",  # whitespace before the colon (RFC 9112 5.1)
    b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",  # obsolete line folding
    b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",     # bare CR in a value
    b"GET / HTTP/1.1\r\nnocolon\r\n\r\n",
])
def test_malformed_heads_are_400(head: bytes) -> None:
    assert status_of(head) == 400


def test_other_major_version_is_505() -> None:
    assert status_of(b"GET / HTTP/2.0\r\n\r\n") == 505


def test_head_over_the_limit_is_431() -> None:
    big = b"GET / HTTP/1.1\r\nX: " + b"a" * LIMIT + b"\r\n\r\n"
    assert status_of(big) == 431
    assert status_of(b"GET / HTTP/1.1\r\nX: " + b"a" * 200 + b"\r\n\r\n", max_head=100) == 431
    # No terminator at all: refused as soon as the limit is passed, not at end of input.
    assert status_of([b"GET / HTTP/1.1\r\nX: ", b"a" * (2 * LIMIT)], eof=False) == 431


def test_content_length_body_and_413_before_reading() -> None:
    assert parse(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").body == b"hello"
    # Equal duplicates are one value (RFC 9110 8.6); the body is not waited for when too big.
    assert parse(b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok").body == b"ok"
    assert status_of(b"POST / HTTP/1.1\r\nContent-Length: 99\r\n\r\n", max_body=10, eof=False) == 413


@pytest.mark.parametrize("value", [b"abc", b"-1", b"+5", b"0x10", b"1 2", b"", b"5, 6",
                                   b"9" * 30])
def test_bad_content_length_is_400(value: bytes) -> None:
    assert status_of(b"POST / HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n") == 400


def test_conflicting_duplicate_content_length_is_400() -> None:
    assert status_of(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab") == 400


def test_truncated_body_is_400() -> None:
    assert status_of(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc") == 400


def test_content_length_with_transfer_encoding_is_400() -> None:
    data = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert status_of(data) == 400


@pytest.mark.parametrize("coding,status", [(b"gzip", 400), (b"chunked, chunked", 400),
                                           (b"gzip, chunked", 501)])
def test_transfer_codings_other_than_chunked(coding: bytes, status: int) -> None:
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: " + coding + b"\r\n\r\n0\r\n\r\n"
    assert status_of(data) == status


def test_chunked_with_extensions_and_trailers() -> None:
    data = (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=value;q=\"a \\\" b\"\r\nhello\r\n"
            b"A ; x\r\n, world!!!\r\n"
            b"0\r\nDigest: abc\r\nX-T: 1\r\n\r\n")
    req = parse(data)
    assert req.body == b"hello, world!!!"
    assert req.trailers == [("Digest", "abc"), ("X-T", "1")]
    assert req.header("digest") is None  # trailers are not merged into the header fields


@pytest.mark.parametrize("size_line", [b"+5", b"0x5", b"5_0", b"-1", b"", b"5;", b"5 ", b"g"])
def test_bad_chunk_size_lines_are_400(size_line: bytes) -> None:
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + size_line + b"\r\nhello\r\n0\r\n\r\n"
    assert status_of(data) == 400


def test_chunk_without_crlf_after_data_is_400() -> None:
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhelloXX0\r\n\r\n"
    assert status_of(data) == 400


def test_chunked_over_the_body_limit_is_413_before_the_chunk_is_read() -> None:
    data = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nFFFFFF\r\n"
    assert status_of(data, max_body=10, eof=False) == 413


def test_trailers_over_the_limit_are_431() -> None:
    data = (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
            + b"X-T: " + b"a" * 300 + b"\r\n\r\n")
    assert status_of(data, max_head=200) == 431


def test_transfer_encoding_in_http10_request_is_400() -> None:
    assert status_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400


# -- responses (the client side) ---------------------------------------------------------------


def test_response_framings() -> None:
    resp = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", "response")
    assert (resp.status, resp.reason, resp.body, resp.keep_alive) == (200, "OK", b"hi", True)
    assert resp.size == len(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=1\r\nhi\r\n0\r\nT: v\r\n\r\n"
    resp = parse(chunked, "response")
    assert (resp.body, resp.trailers, resp.size) == (b"hi", [("T", "v")], len(chunked))
    to_close = parse(b"HTTP/1.0 200 OK\r\n\r\nall of it", "response")
    assert (to_close.body, to_close.keep_alive) == (b"all of it", False)
    # HEAD, 204 and 304 have no body whatever the fields say (RFC 9112 6.3 item 1).
    head = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", "response", method="HEAD",
                 eof=False)
    assert head.body == b"" and head.keep_alive
    assert parse(b"HTTP/1.1 204 No Content\r\n\r\n", "response", eof=False).body == b""
    # An interim 100 Continue is skipped; the final answer is returned.
    final = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
                  "response")
    assert final.status == 201


@pytest.mark.parametrize("data", [
    b"HTTP/2 200 OK\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"junk\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
])
def test_bad_responses_are_502(data: bytes) -> None:
    assert status_of(data, what="response") == 502


def test_response_cut_off_raises_incomplete_read() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        parse(b"", "response")
    with pytest.raises(asyncio.IncompleteReadError):
        parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", "response")


def test_reason_phrases_follow_rfc_9110() -> None:
    assert http1.reason(413) == "Content Too Large"
    assert http1.reason(431) == "Request Header Fields Too Large"
    assert http1.reason(299) == "Status"


# -- fuzz --------------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, derandomize=True)

token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~", min_size=1,
                max_size=12)
value = st.text("".join(chr(c) for c in range(0x21, 0x7f)) + " \t", max_size=30).map(str.strip)
bodies = st.binary(max_size=300)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, bytes, list[tuple[str, str]]]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
    headers = draw(st.lists(st.tuples(token.filter(lambda n: n.lower() not in (
        "content-length", "transfer-encoding", "connection")), value), max_size=6))
    body = draw(bodies)
    chunked = draw(st.booleans())
    head = f"{method} /{draw(token)} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    if chunked:
        sizes = draw(st.lists(st.integers(1, 64), max_size=8))
        encoded, at = b"", 0
        for size in sizes:
            part = body[at:at + size]
            at += len(part)
            if part:
                encoded += b"%x;e=1\r\n" % len(part) + part + b"\r\n"
        body = body[:at]
        data = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + encoded + b"0\r\n\r\n"
    else:
        data = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return data, body, headers


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@FUZZ
@given(valid_requests(), st.lists(st.integers(0, 10_000), max_size=12))
def test_fuzz_random_splits_parse_the_same(case: tuple[bytes, bytes, list[tuple[str, str]]],
                                           cuts: list[int]) -> None:
    data, body, headers = case
    whole = parse(data)
    pieces = parse(splits(data, cuts))
    assert isinstance(whole, http1.Request) and isinstance(pieces, http1.Request)
    assert whole == pieces
    assert whole.body == body
    assert whole.headers[:len(headers)] == headers


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(0, 10_000), max_size=6))
def test_fuzz_random_bytes_parse_or_refuse_never_hang(data: bytes, cuts: list[int]) -> None:
    for what in ("request", "response"):
        try:
            parse(splits(data, cuts), what, max_head=256, max_body=256)
        except http1.HttpError as err:
            assert err.status in (400, 413, 431, 501, 505, 502)
        except asyncio.IncompleteReadError:
            assert what == "response"


@FUZZ
@given(valid_requests(), st.integers(1, 64))
def test_fuzz_oversized_inputs_are_refused(case: tuple[bytes, bytes, list[tuple[str, str]]],
                                           limit: int) -> None:
    data, body, _ = case
    head_size = data.index(b"\r\n\r\n") + 4
    if head_size > limit:
        assert status_of(data, max_head=limit, eof=False) == 431
    if len(body) > limit:
        assert status_of(data, max_body=limit, eof=False) == 413
