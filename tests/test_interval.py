"""/ping's interval: every malformed value gets 400 with a JSON error that says what was wrong."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from controller.http.interval import IntervalError, parse_interval
from sim_switch.dial.tls import client_ssl_context
from tests.servers import RunningController


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0.0), ("5", 5.0), ("0.25", 0.25), (".5", 0.5), ("2.", 2.0), ("1e0", 1.0), ("-0", 0.0)]
)
def test_valid_intervals(text: str, seconds: float) -> None:
    parsed = parse_interval([text], max_interval_s=60)
    assert parsed == seconds
    assert math.copysign(1.0, parsed) == 1.0  # "-0" is 0, not -0.0


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([], "missing query parameter 'interval'"),
        (["abc"], "interval must be a number of seconds, got 'abc'"),
        ([""], "interval must be a number of seconds, got ''"),
        (["-1"], "interval must be >= 0, got '-1'"),
        (["nan"], "interval must be a number of seconds, got 'nan'"),
        (["inf"], "interval must be a number of seconds, got 'inf'"),
        (["1e309"], "interval must be a finite number, got '1e309'"),
        (["61"], "interval must be <= 60 s (max_interval_s), got '61'"),
        (["1_0"], "interval must be a number of seconds, got '1_0'"),
        ([" 5"], "interval must be a number of seconds, got ' 5'"),
        (["1", "2"], "'interval' given 2 times; give it once"),
        (["\u0663"], "interval must be a number of seconds"),  # ARABIC-INDIC DIGIT THREE: float() reads 3
        (["\uff11"], "interval must be a number of seconds"),  # FULLWIDTH DIGIT ONE: float() reads 1
        (["9" * 100], "interval must be a number of seconds, got '99999999999999999999999999999999...'"),
    ],
)
def test_invalid_intervals(values: list[str], message: str) -> None:
    with pytest.raises(IntervalError) as caught:
        parse_interval(values, max_interval_s=60)
    assert str(caught.value).startswith(message)


@pytest.fixture
async def client(certs_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    context: ssl.SSLContext = client_ssl_context(certs_dir, "switch-1")
    async with httpx.AsyncClient(http2=True, verify=context, trust_env=False) as http:
        yield http


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "missing query parameter 'interval'"),
        ("?interval=abc", "got 'abc'"),
        ("?interval=-1", "must be >= 0"),
        ("?interval=nan", "got 'nan'"),
        ("?interval=inf", "got 'inf'"),
        ("?interval=1e309", "must be a finite number"),
        ("?interval=6", "must be <= 5 s"),
        ("?interval=1&interval=2", "given 2 times"),
        ("?interval=%D9%A3", "must be a number of seconds"),
        ("?interval=%EF%BC%91", "must be a number of seconds"),
    ],
)
async def test_bad_interval_gets_400_json(
    controller: RunningController, client: httpx.AsyncClient, query: str, message: str
) -> None:
    response = await client.get(f"{controller.url}/ping{query}")
    assert response.status_code == 400
    assert response.http_version == "HTTP/2"
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]


async def test_good_ping_answers_with_its_json(controller: RunningController, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{controller.url}/ping?interval=0.05")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "interval_s",
        "http_version",
        "client",
        "switch",
        "connection",
        "stream",
        "stream_id",
        "received_at",
        "responded_at",
    }
    assert body["interval_s"] == 0.05
    assert (body["switch"], body["connection"], body["stream"], body["stream_id"]) == ("switch-1", 1, 1, 1)
    assert body["http_version"] == "HTTP/2"
    assert body["client"].startswith("127.0.0.1:")
    assert body["received_at"] < body["responded_at"]


async def test_accepted_connections_do_not_wait_for_nagle(
    controller: RunningController, client: httpx.AsyncClient
) -> None:
    # Linux passes TCP_NODELAY from the listening socket to the ones it accepts; asyncio would not set it on them.
    await client.get(f"{controller.url}/ping?interval=0")
    assert controller.listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


async def test_unknown_path_and_method_get_json_errors(
    controller: RunningController, client: httpx.AsyncClient
) -> None:
    missing = await client.get(f"{controller.url}/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "404 Not Found: GET /nope"}
    wrong_method = await client.post(f"{controller.url}/ping?interval=0")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"error": "405 Method Not Allowed: POST /ping"}


@pytest.mark.parametrize("target", [b"ping?interval=0", b"https://evil.example/ping?interval=0"])
async def test_a_target_that_is_not_a_path_gets_400(
    controller: RunningController, client: httpx.AsyncClient, target: bytes
) -> None:
    response = await client.get(f"{controller.url}/ping?interval=0", extensions={"target": target})
    assert response.status_code == 400
    assert response.json()["error"].startswith("the request target must be a path starting with '/'")


async def test_minus_zero_is_zero_on_the_wire(controller: RunningController, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{controller.url}/ping?interval=-0")
    assert response.status_code == 200
    assert '"interval_s":0.0' in response.text.replace(" ", "")


async def test_logged_fields_are_escaped(
    controller: RunningController, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A newline in the path would forge a second log line, an ESC drive the reader's terminal: each is written
    as an escape, one request one line."""
    with caplog.at_level(logging.INFO, logger="controller.http.app"):
        await client.get(f"{controller.url}/ping%0A99:99:99 forged%1B[2J?interval=0&x=%0Ay")
    [line] = [record.getMessage() for record in caplog.records if "forged" in record.getMessage()]
    assert "\n" not in line
    assert "\x1b" not in line
    assert r"/ping\x0a99:99:99 forged\x1b[2J?interval=0&x=%0Ay -> 404" in line  # the query as it came, encoded


async def test_a_target_that_is_not_ascii_gets_400_one_log_line_and_no_traceback(
    controller: RunningController, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Hypercorn decodes an HTTP/2 :path as ASCII before any app sees it: a raw 0xd9 was a 40-line traceback per
    request. (Over HTTP/1.1, h11 refuses such a target itself, with 400: the test below.)"""
    with caplog.at_level(logging.INFO):
        raw = b"/ping\xd9\xa3?interval=0"
        refused = await client.get(f"{controller.url}/ping?interval=0", extensions={"target": raw})
        after = await client.get(f"{controller.url}/ping?interval=0")
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("the request target must be ASCII")
    assert after.status_code == 200  # the controller, and the connection, carry on
    [line] = [record.getMessage() for record in caplog.records if "not ASCII" in record.getMessage()]
    assert line.endswith("request target is not ASCII, refused with 400: /ping\u00d9\u00a3?interval=0")
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]


async def test_an_http11_target_that_is_not_ascii_gets_400_and_no_traceback(
    controller: RunningController, certs_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    context = client_ssl_context(certs_dir, "switch-1")
    context.set_alpn_protocols(["http/1.1"])
    with caplog.at_level(logging.INFO):
        reader, writer = await asyncio.open_connection("127.0.0.1", controller.port, ssl=context)
        writer.write(b"GET /ping\xd9\xa3?interval=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status = await reader.readline()
        writer.close()
    assert status.startswith(b"HTTP/1.1 400 ")
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]
