"""A trusted proxy's word is checked, not taken: the controller verifies the forwarded certificate itself, and
accepts only the proxy's SUCCESS. Here switch-2 plays the trusted proxy, with forged forwarding headers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from controller.accounts.connections import ConnectionRegistry
from dialout.config import ControllerConfig
from dialout.pki import switch_identity
from dialout.text import Address
from tests.certificates import issued_by_our_ca
from tests.servers import RunningController, run_controller
from tests.switches import async_switch_client


@pytest.fixture
async def proxied(certs_dir: Path) -> AsyncIterator[RunningController]:
    cfg = ControllerConfig(certs_dir=certs_dir, switches=("switch-1",), trusted_proxies=("switch-2",))
    async with run_controller(cfg) as running:
        yield running


def forwarding(cert: Path, verify: str = "SUCCESS", connection: str = "7") -> dict[str, str]:
    return {
        "X-Dialout-Client-Cert": quote(cert.read_text(encoding="ascii"), safe=""),
        "X-Dialout-Client-Verify": verify,
        "X-Dialout-Connection": connection,
        "X-Dialout-Peer": "127.0.0.9:5000",
        "X-Dialout-Request": "1",
        "X-Dialout-Protocol": "HTTP/2.0",
        "X-Dialout-TLS": "TLSv1.3",
        "X-Dialout-ALPN": "h2",
    }


async def ping_as_proxy(running: RunningController, certs_dir: Path, headers: dict[str, str]) -> httpx.Response:
    async with async_switch_client(certs_dir, "switch-2", http2=False) as proxy:
        return await proxy.get(f"{running.url}/ping", params={"interval": "0"}, headers=headers)


async def test_a_trusted_proxy_forwarding_a_verified_switch_is_believed(
    proxied: RunningController, certs_dir: Path
) -> None:
    response = await ping_as_proxy(proxied, certs_dir, forwarding(switch_identity(certs_dir, "switch-1").cert))
    assert response.status_code == 200
    assert response.json()["switch"] == "switch-1"
    (record,) = [c for c in proxied.registry.connections("switch-1") if c.via == "switch-2"]
    assert (record.peer, record.alpn, record.streams) == (Address("127.0.0.9", 5000), "h2", 1)


async def test_a_certificate_from_another_ca_is_refused_even_from_a_trusted_proxy(
    proxied: RunningController, certs_dir: Path, foreign_certs_dir: Path
) -> None:
    response = await ping_as_proxy(proxied, certs_dir, forwarding(switch_identity(foreign_certs_dir, "switch-1").cert))
    assert response.status_code == 403
    assert "the forwarded client certificate is not trusted here" in response.json()["error"]
    assert "is not issued by the CA in" in response.json()["error"]


async def test_only_the_proxys_success_counts(proxied: RunningController, certs_dir: Path) -> None:
    headers = forwarding(switch_identity(certs_dir, "switch-1").cert, verify="FAILED:certificate has expired")
    response = await ping_as_proxy(proxied, certs_dir, headers)
    assert response.status_code == 403
    assert response.json()["error"] == (
        "no verified client certificate from the switch (the proxy's verification said "
        "'FAILED:certificate has expired'). Fix: let the proxy forward only certificates it verified itself (nginx: "
        "ssl_verify_client on)"
    )
    assert response.json()["refused"] == "proxy_unverified"


def test_a_proxied_connection_closes_when_its_carriers_close_or_its_number_is_reused() -> None:
    registry = ConnectionRegistry()
    upstream = [registry.open(Address("127.0.0.1", port), "nginx-proxy", "http/1.1", "TLSv1.3", {}) for port in (1, 2)]
    first = registry.proxied(
        "nginx-proxy", "7", Address("10.0.0.1", 5000), "switch-1", "h2", "TLSv1.3", upstream=upstream[0]
    )
    assert (
        registry.proxied("nginx-proxy", "7", Address("10.0.0.1", 5000), "switch-1", "h2", "TLSv1.3", upstream[1])
        is first
    )
    registry.close(upstream[0])
    assert first.closed_at is None  # the second one still carries it
    registry.close(upstream[1])
    assert first.closed_at is not None

    carrier = registry.open(Address("127.0.0.1", 3), "nginx-proxy", "http/1.1", "TLSv1.3", {})
    second = registry.proxied(
        "nginx-proxy", "8", Address("10.0.0.1", 5001), "switch-1", "h2", "TLSv1.3", upstream=carrier
    )
    third = registry.proxied(
        "nginx-proxy", "8", Address("10.0.0.2", 6000), "switch-2", "h2", "TLSv1.3", upstream=carrier
    )
    assert third is not second
    assert second.closed_at is not None  # the proxy numbered another connection 8: this one is over
    assert third.closed_at is None


@pytest.mark.parametrize(
    ("usage", "days", "why"),
    [
        (ExtendedKeyUsageOID.CLIENT_AUTH, 30, None),  # the control: a client certificate from our CA is believed
        (ExtendedKeyUsageOID.SERVER_AUTH, 30, "its extended key usage does not include clientAuth"),
        (None, 30, "basicConstraints.cA must not be asserted in an EE certificate"),
        (ExtendedKeyUsageOID.CLIENT_AUTH, -1, "expired on"),
    ],
    ids=["client", "server-only", "a-ca", "expired"],
)
async def test_a_forwarded_certificate_must_be_a_valid_client_certificate(
    proxied: RunningController,
    certs_dir: Path,
    tmp_path: Path,
    usage: x509.ObjectIdentifier | None,
    days: int,
    why: str | None,
) -> None:
    """The chain's signatures are not enough: the forwarded certificate is verified as a client certificate
    (cryptography.x509.verification): a CA's own certificate, a server-only one and an expired one are refused."""
    cert = issued_by_our_ca(certs_dir, tmp_path, usage=usage, days=days).cert
    response = await ping_as_proxy(proxied, certs_dir, forwarding(cert))
    if why is None:
        assert response.status_code == 200, response.text
        assert response.json()["switch"] == "switch-1"
        return
    assert response.status_code == 403
    assert response.json()["error"].startswith("the forwarded client certificate is not trusted here: ")
    assert why in response.json()["error"]
