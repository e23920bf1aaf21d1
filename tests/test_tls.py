"""Mutual TLS fails closed, in both directions, and the switch says which side refused and why."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import trustme

from controller.__main__ import main as controller_main
from dialout.config import ControllerConfig, OneShot, Scenario
from dialout.pki import PKIError, ca_cert_path, generate_certs, switch_identity
from dialout.refusals import Refusal, explained
from sim_switch.dial.tls import client_ssl_context
from sim_switch.model.results import RunResult
from sim_switch.model.verdict import judge
from sim_switch.render.report import ping_error, verdict_line
from tests.servers import ControllerProcess, RunningController, run_controller, write_config
from tests.switches import one_shot
from tests.tools import require

SCENARIO = Scenario("tls", OneShot((0.0, 0.0, 0.0)))


def context_trusting(ca_dir: Path, cert_dir: Path | None, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A switch context that trusts ``ca_dir``'s CA and presents ``cert_dir``'s switch-1 (or nothing)."""
    context = ssl.create_default_context(cafile=ca_cert_path(ca_dir))
    if cert_dir is not None:
        identity = switch_identity(cert_dir, "switch-1")
        context.load_cert_chain(identity.cert, identity.key)
    if max_version is not None:
        context.maximum_version = max_version
    return context


async def run(url: str, context: ssl.SSLContext) -> RunResult:
    return await one_shot(SCENARIO, url, context, timeout_s=10.0)


def only_error(result: RunResult) -> str:
    errors = {ping_error(ping) for ping in result.pings}
    assert len(errors) == 1, errors
    (error,) = errors
    assert error is not None
    return error


def read_after_handshake(port: int, context: ssl.SSLContext) -> bytes:
    """A blocking TLS client: it reports an alert that comes after the handshake as the ssl.SSLError it is."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.recv(1)


@pytest.mark.parametrize(
    ("cert_dir", "max_version", "alert"),
    [
        (None, None, "TLSV13_ALERT_CERTIFICATE_REQUIRED"),
        ("foreign", None, "TLSV1_ALERT_UNKNOWN_CA"),
        (None, ssl.TLSVersion.TLSv1_2, "SSLV3_ALERT_HANDSHAKE_FAILURE"),
        ("foreign", ssl.TLSVersion.TLSv1_2, "TLSV1_ALERT_UNKNOWN_CA"),
    ],
)
async def test_controller_sends_the_alert_for_a_refused_certificate(
    controller: RunningController,
    certs_dir: Path,
    foreign_certs_dir: Path,
    cert_dir: str | None,
    max_version: ssl.TLSVersion | None,
    alert: str,
) -> None:
    """Pins dialout/asyncio_seam.py: without it asyncio drops the alert and the switch sees only an EOF."""
    context = context_trusting(certs_dir, foreign_certs_dir if cert_dir else None, max_version)
    with pytest.raises(ssl.SSLError) as caught:
        await asyncio.to_thread(read_after_handshake, controller.port, context)
    assert caught.value.reason == alert


async def test_controller_refuses_a_switch_without_certificate(controller: RunningController, certs_dir: Path) -> None:
    no_cert = context_trusting(certs_dir, None)
    result = await run(controller.url, no_cert)
    assert not any(ping.ok for ping in result.pings)
    said = explained(Refusal.NO_CERTIFICATE)
    assert only_error(result) == f"the controller refused our client certificate: {said}"


async def test_controller_refuses_a_switch_without_certificate_over_tls12(
    controller: RunningController, certs_dir: Path
) -> None:
    # Under TLS 1.2 the server checks the client certificate inside the handshake, so the handshake itself fails.
    result = await run(controller.url, context_trusting(certs_dir, None, ssl.TLSVersion.TLSv1_2))
    assert only_error(result).startswith("the controller refused our client certificate")


async def test_controller_refuses_a_certificate_from_a_foreign_ca(
    controller: RunningController, certs_dir: Path, foreign_certs_dir: Path
) -> None:
    result = await run(controller.url, context_trusting(certs_dir, foreign_certs_dir))
    # in the words the controller keeps and logs for the same refusal (dialout/refusals.py)
    [kept] = controller.registry.refusals.since()
    assert (kept.host, kept.refusal) == ("127.0.0.1", Refusal.UNKNOWN_CA)
    assert only_error(result) == f"the controller refused our client certificate: {explained(kept.refusal)}"


async def test_switch_refuses_a_controller_from_a_foreign_ca(
    controller: RunningController, foreign_certs_dir: Path
) -> None:
    result = await run(controller.url, client_ssl_context(foreign_certs_dir, "switch-1"))
    assert only_error(result).startswith("the controller's certificate is not trusted: ")
    assert verdict_line(judge(result)).startswith(
        "FAILED: 3 of 3 pings failed: the controller's certificate is not trusted"
    )


async def test_switch_refuses_a_controller_certificate_for_another_hostname(tmp_path: Path) -> None:
    generate_certs(tmp_path, ["controller.invalid"], ["switch-1"])
    async with run_controller(ControllerConfig(certs_dir=tmp_path)) as running:
        result = await run(running.url, client_ssl_context(tmp_path, "switch-1"))
    # OpenSSL says "IP address mismatch" for an IP SAN and "Hostname mismatch" for a DNS one.
    assert only_error(result).startswith("the controller's certificate is not trusted: ")
    assert only_error(result).endswith("mismatch, certificate is not valid for '127.0.0.1'. (read more: docs/pki.md)")


async def test_tls12_switch_still_gets_http2(controller: RunningController, certs_dir: Path) -> None:
    result = await run(controller.url, context_trusting(certs_dir, certs_dir, ssl.TLSVersion.TLSv1_2))
    assert judge(result).ok
    assert [(record.tls_version, record.alpn) for record in result.connections] == [("TLSv1.2", "h2")]


def test_switch_without_its_certificate_files_says_which_file(tmp_path: Path) -> None:
    with pytest.raises(PKIError, match=r"^\S*switch-1\.pem: certificate file missing$"):
        client_ssl_context(tmp_path, "switch-1")


# --- fail closed: dates, versions, ALPN, key files ------------------------------------------------------------


def switch_context_with_validity(
    certs_dir: Path, tmp_path: Path, not_before: datetime.datetime, not_after: datetime.datetime
) -> ssl.SSLContext:
    """A switch-1 certificate from the controller's own CA, valid only between the two dates."""
    ca = trustme.CA.from_pem(ca_cert_path(certs_dir).read_bytes(), (certs_dir / "ca.key").read_bytes())
    leaf = ca.issue_cert("switch-1", common_name="switch-1", not_before=not_before, not_after=not_after)
    chain = tmp_path / "leaf.pem"
    chain.write_bytes(leaf.private_key_and_cert_chain_pem.bytes())
    context = ssl.create_default_context(cafile=ca_cert_path(certs_dir))
    context.load_cert_chain(chain)
    return context


NOW = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (NOW - datetime.timedelta(days=30), NOW - datetime.timedelta(days=1)),  # expired
        (NOW + datetime.timedelta(days=1), NOW + datetime.timedelta(days=30)),  # not yet valid
    ],
    ids=["expired", "not-yet-valid"],
)
async def test_controller_refuses_a_certificate_outside_its_validity(
    controller: RunningController,
    certs_dir: Path,
    tmp_path: Path,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> None:
    context = switch_context_with_validity(certs_dir, tmp_path, not_before, not_after)
    with pytest.raises(ssl.SSLError) as caught:
        await asyncio.to_thread(read_after_handshake, controller.port, context)
    assert caught.value.reason in ("SSLV3_ALERT_CERTIFICATE_EXPIRED", "SSLV3_ALERT_BAD_CERTIFICATE")
    result = await run(controller.url, context)
    assert only_error(result).startswith("the controller refused our client certificate")
    assert controller.registry.connections() == []


def test_controller_refuses_tls11(controller_process: ControllerProcess) -> None:
    certs_dir = controller_process.config.parent / "certs"
    identity = switch_identity(certs_dir, "switch-1")
    # SECLEVEL=0 lets this OpenSSL offer TLS 1.1 at all, so that what refuses it is the controller.
    done = subprocess.run(
        [
            require("openssl"),
            "s_client",
            "-connect",
            f"127.0.0.1:{controller_process.port}",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-cert",
            str(identity.cert),
            "-key",
            str(identity.key),
            "-CAfile",
            str(ca_cert_path(certs_dir)),
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "alert protocol version" in done.stderr


async def test_a_client_without_alpn_gets_http11_and_is_reported_so(
    controller: RunningController, certs_dir: Path
) -> None:
    context = client_ssl_context(certs_dir, "switch-1")  # no ALPN list set on it: the client offers none

    def plain_request() -> bytes:
        with (
            socket.create_connection(("127.0.0.1", controller.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.selected_alpn_protocol() is None
            tls.sendall(b"GET /ping?interval=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return b"".join(iter(lambda: tls.recv(65536), b""))

    answer = await asyncio.to_thread(plain_request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["http_version"] == "HTTP/1.1"
    [record] = controller.registry.connections()
    assert record.alpn is None
    assert record.to_json()["alpn"] is None


async def test_controller_sends_no_session_tickets(controller: RunningController, certs_dir: Path) -> None:
    """Under TLS 1.3 a server sends its tickets after the handshake, before its first answer: a client that has
    read an answer has read any ticket it was going to get."""
    context = client_ssl_context(certs_dir, "switch-1")

    def session_after_an_answer() -> ssl.SSLSession | None:
        with (
            socket.create_connection(("127.0.0.1", controller.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() == "TLSv1.3"
            tls.sendall(b"GET /ping?interval=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b"".join(iter(lambda: tls.recv(65536), b""))
            assert answer.startswith(b"HTTP/1.1 200")
            return tls.session

    session = await asyncio.to_thread(session_after_an_answer)
    assert session is not None
    assert not session.has_ticket


@pytest.mark.parametrize("key", ["controller.key", "ca.key"])
def test_controller_refuses_to_start_with_a_key_others_can_read(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert controller_main(["certs", "--config", str(config)]) == 0
    (tmp_path / "certs" / key).chmod(0o644)
    assert controller_main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"controller: {tmp_path / 'certs' / key}: private key is readable by others (mode 0644): "
        f"run `chmod 600 {tmp_path / 'certs' / key}` (read more: docs/pki.md)"
    )


# --- bench mode -------------------------------------------------------------------------------------------------


async def test_bench_mode_serves_a_client_without_certificate_but_still_checks_one_that_is_sent(
    certs_dir: Path, foreign_certs_dir: Path
) -> None:
    cfg = ControllerConfig(certs_dir=certs_dir, switches=("switch-1",), client_certs_optional=True)
    async with run_controller(cfg) as running:
        anonymous = ssl.create_default_context(cafile=ca_cert_path(certs_dir))
        async with httpx.AsyncClient(http2=True, verify=anonymous, trust_env=False) as client:
            answer = await client.get(f"{running.url}/ping?interval=0")
        foreign = await run(running.url, context_trusting(certs_dir, foreign_certs_dir))
    assert answer.status_code == 200
    assert answer.json()["switch"] is None
    assert only_error(foreign).startswith("the controller refused our client certificate")


def test_bench_mode_is_refused_off_loopback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    code = controller_main(["--config", str(config), "--client-certs-optional", "--host", "0.0.0.0", "--port", "0"])
    assert code == 2
    assert "--client-certs-optional is for benches on loopback only; 0.0.0.0 is not loopback" in capsys.readouterr().err
