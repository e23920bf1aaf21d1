"""Every refusal explained, from the controller's side (issue 29): curl, as someone's own switch would, refused in
each way a new user gets refused, against a ``python -m controller`` process; its log, ``/diagnosis`` and
``controller explain`` saying who was refused, why, and what to change.

Each test dials from a loopback address of its own (curl ``--interface 127.0.0.N``): refused handshakes are kept by
source address, the only name a client has before its handshake ends.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from controller.commands.explain import NOTHING_SEEN_EXIT
from dialout.pki import generate_certs
from dialout.tls_files import Identity, ca_cert_path, controller_identity, switch_identity
from tests.certificates import issued_by_our_ca
from tests.commands import run_module
from tests.servers import ControllerProcess, write_config
from tests.tools import require

PINGS = 20  # refused handshakes in one curl run: a flood, were each one logged
CLIENT, SERVER = ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH

pytestmark = pytest.mark.timing  # log lines a second, counted against the time taken: run loaded too


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    config = write_config(tmp_path_factory.mktemp("refusals"), controller="  switches: [switch-1, switch-2]\n")
    with ControllerProcess.start(config) as process:
        yield process


def certs(process: ControllerProcess) -> Path:
    return process.config.parent / "certs"


def curl(
    process: ControllerProcess,
    source: str,
    identity: Identity | None,
    *,
    count: int = 1,
    trust: bool = True,
    scheme: str = "https",
    options: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """curl pinging ``count`` times from ``source``, one URL after another (it goes on after a failed one), as
    ``identity`` (None: no certificate), trusting the controller's CA unless told not to."""
    command = [require("curl"), "--silent", "--no-progress-meter", "--interface", source, *options]
    command += ["--write-out", "%{http_code}\\n", "--max-time", "20"]
    if trust:
        command += ["--cacert", str(ca_cert_path(certs(process)))]
    if identity is not None:
        command += ["--cert", str(identity.cert), "--key", str(identity.key)]
    for _ in range(count):
        command += [f"{scheme}://127.0.0.1:{process.port}/ping?interval=0", "--output", "/dev/null"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def explain(process: ControllerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return run_module("controller", "explain", "--config", str(process.config), "--url", process.admin_url, *args)


def refused_from(process: ControllerProcess, source: str) -> list[dict[str, Any]]:
    """``/diagnosis``'s refused handshakes from ``source``."""
    done = explain(process, "--json")
    assert done.returncode in (0, 1), done.stderr
    return [entry for entry in json.loads(done.stdout)["refused_handshakes"] if entry["address"] == source]


def said_of(process: ControllerProcess, source: str) -> list[str]:
    """The controller's log lines about refused handshakes from ``source``."""
    return [line for line in process.lines if "TLS handshake" in line and f"from {source}" in line]


def test_a_client_without_a_certificate_is_logged_once_a_second_and_explained(refusing: ControllerProcess) -> None:
    source = "127.0.0.2"
    began = time.monotonic()
    done = curl(refusing, source, None, count=PINGS)
    took_s = time.monotonic() - began
    assert done.stdout.split() == ["000"] * PINGS  # curl's own words: (55)/(56), nothing about a certificate
    # every one recorded: the log's counts add up to all of them, said in a line a second at most (not a flood)
    counted = 1
    while counted < PINGS:  # the first line, then the counts of the seconds after it until all are said
        line = refusing.wait_for(rf"refused (\d+ TLS handshakes?|a TLS handshake) from {re.escape(source)}")
        counted = int(found.group(1)) if (found := re.search(r"\((\d+) in all\)", line.string)) else 1
    lines = said_of(refusing, source)
    first = lines[0]
    assert first.endswith(
        f"refused a TLS handshake from {source}: the client sent no certificate, and the controller requires one "
        "(mutual TLS). Fix: give the client its certificate and key: curl --cert switch-1.pem --key switch-1.key; "
        "Go: tls.Config.Certificates; dialout's switch: switch.id names <id>.pem and <id>.key in certs_dir; "
        "read more: docs/pki.md (OpenSSL: PEER_DID_NOT_RETURN_A_CERTIFICATE)"
    )
    assert len(lines) <= 2 + took_s / 1.0
    [entry] = refused_from(refusing, source)
    assert (entry["refusal"], entry["count"]) == ("no_certificate", PINGS)
    assert entry["detail"] == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    words = explain(refusing)
    assert words.returncode == 1, words.stdout + words.stderr  # a client refused: a problem to fix
    [explained] = [line for line in words.stdout.splitlines() if line.startswith(f"{source}: ")]
    assert re.fullmatch(
        rf"{re.escape(source)}: {PINGS} TLS handshakes refused, the last (just now|\d+ s ago): the client sent no "
        r"certificate, .*Fix: give the client its certificate and key: .*"
        r"\(OpenSSL: PEER_DID_NOT_RETURN_A_CERTIFICATE\)\.",
        explained,
    )


@pytest.mark.parametrize(
    ("source", "how", "refusal", "fix"),
    [
        ("127.0.0.3", "foreign-ca", "unknown_ca", "use a certificate issued by the controller's CA"),
        ("127.0.0.4", "expired", "expired", "issue it anew"),
        ("127.0.0.5", "server-only", "wrong_key_usage", "give the client a switch's certificate"),
        ("127.0.0.6", "untrusting", "controller_untrusted", "give the client the controller's CA"),
        ("127.0.0.7", "plain-http", "plain_http", "dial https://, not http://"),
    ],
)
def test_each_refused_handshake_is_named_with_its_fix(
    refusing: ControllerProcess, tmp_path: Path, source: str, how: str, refusal: str, fix: str
) -> None:
    switch = switch_identity(certs(refusing), "switch-1")
    if how == "foreign-ca":
        generate_certs(tmp_path, ("127.0.0.1",), ("switch-1",))
        done = curl(refusing, source, switch_identity(tmp_path, "switch-1"))
    elif how == "expired":
        done = curl(refusing, source, issued_by_our_ca(certs(refusing), tmp_path, usage=CLIENT, days=-1))
    elif how == "server-only":
        done = curl(refusing, source, issued_by_our_ca(certs(refusing), tmp_path, usage=SERVER, days=30))
    elif how == "untrusting":
        done = curl(refusing, source, switch, trust=False)
    else:
        done = curl(refusing, source, switch, scheme="http")
    assert done.returncode != 0
    refusing.wait_for(rf"refused a TLS handshake from {re.escape(source)}: ", timeout_s=30)
    [entry] = refused_from(refusing, source)
    assert (entry["refusal"], entry["count"]) == (refusal, 1)
    assert f"Fix: {fix}" in entry["sentence"]
    [line] = said_of(refusing, source)
    assert f"Fix: {fix}" in line


def test_a_typoed_switch_id_is_refused_not_judged(refusing: ControllerProcess, tmp_path: Path) -> None:
    """A certificate of our CA for ``switch-01``, not in the fleet: 403 on every ping, said as a refusal with the name
    it probably meant, never "multiplexed" however its requests were carried."""
    typo = issued_by_our_ca(certs(refusing), tmp_path, usage=CLIENT, days=30, name="switch-01")
    done = curl(refusing, "127.0.0.8", typo, count=3, options=["--http2", "--parallel"])
    assert done.stdout.split() == ["403"] * 3
    words = explain(refusing, "--switch", "switch-01")
    assert words.returncode == 1, words.stdout + words.stderr
    lines = words.stdout.splitlines()
    assert lines[1] == "switch-01: 1 connection, 0 requests"
    assert re.fullmatch(
        r"  problem refused: conn #\d+: 3 requests refused with 403 \(not_in_fleet\), as switch-01: the client's "
        r"certificate is verified, but its name is not in the controller's fleet\. Fix: .* Did you mean switch-1\? "
        r"Its requests are not judged as traffic\.",
        lines[2],
    )
    assert len(lines) == 3  # nothing said of its multiplexing
    said = refusing.seen(r"refused a request of switch-01 at 127\.0\.0\.8 \(403\): ")
    assert "(did you mean switch-1?)" in said.string


def test_the_controllers_own_certificate_is_told_so(refusing: ControllerProcess) -> None:
    done = subprocess.run(
        [
            require("curl"),
            "--silent",
            "--cacert",
            str(ca_cert_path(certs(refusing))),
            "--cert",
            str(controller_identity(certs(refusing)).cert),
            "--key",
            str(controller_identity(certs(refusing)).key),
            f"{refusing.url}/ping?interval=0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    answer = json.loads(done.stdout)
    assert answer["refused"] == "not_in_fleet"
    assert "(the controller's own certificate, a server's: give the client a switch's)" in answer["error"]


def test_explain_tells_unreachable_from_nothing_seen(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    with ControllerProcess.start(config) as process:
        quiet = explain(process)
    assert quiet.returncode == NOTHING_SEEN_EXIT
    assert quiet.stderr.endswith(
        "saw no connection from any switch, and refused no handshake (read more: docs/explain.md)\n"
    )


def test_the_shipped_switch_refused_says_so_from_both_ends(refusing: ControllerProcess, tmp_path: Path) -> None:
    """Our switch as switch-01 (a certificate of the controller's CA, the id not in its fleet): every ping is
    refused, and so is its question of what the controller saw, which it says as the controller's refusal, not as
    a controller that keeps no account."""
    config = write_config(tmp_path, switch_id="switch-01")
    made = issued_by_our_ca(certs(refusing), tmp_path, usage=CLIENT, days=30, name="switch-01")
    (tmp_path / "certs").mkdir()
    shutil.copy(ca_cert_path(certs(refusing)), tmp_path / "certs" / "ca.pem")
    shutil.copy(made.cert, tmp_path / "certs" / "switch-01.pem")
    shutil.copy(made.key, tmp_path / "certs" / "switch-01.key")
    done = run_module("sim_switch", "--config", str(config), "--url", refusing.url)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "keeps no account" not in done.stdout
    refused = "HTTP 403: switch 'switch-01' is not in this controller's fleet (did you mean switch-1?)"
    assert f"controller view unavailable: GET /connections failed: {refused}" in done.stdout
    assert done.stdout.splitlines()[-1].startswith(f"FAILED: 3 of 3 pings failed: {refused}")
