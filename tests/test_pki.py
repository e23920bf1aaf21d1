"""Certificates appear by themselves, keys are 0600, and nothing is replaced that should be kept."""

from __future__ import annotations

import datetime
import fcntl
import logging
import multiprocessing
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.x509.oid import NameOID

from dialout.pki import (
    PKIError,
    ca_cert_path,
    controller_identity,
    ensure_certs,
    ensure_switch_certs,
    generate_certs,
    switch_identity,
)
from tests.commands import run_module
from tests.servers import write_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_first_run_makes_a_ca_and_every_identity_with_private_keys_0600(tmp_path: Path) -> None:
    written = ensure_certs(tmp_path, ["localhost", "127.0.0.1", "::1"], ["switch-1"])
    names = sorted(path.name for path in written)
    assert names == sorted(["ca.pem", "ca.key", "controller.pem", "controller.key", "switch-1.pem", "switch-1.key"])
    for path in written:
        assert mode(path) == (0o600 if path.suffix == ".key" else 0o644), path
    assert not list(tmp_path.glob(".*")), "no temporary files are left behind"

    switch = load(switch_identity(tmp_path, "switch-1").cert)
    assert switch.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "switch-1"
    assert switch.issuer == load(ca_cert_path(tmp_path)).subject
    validity = switch.not_valid_after_utc - switch.not_valid_before_utc
    assert 360 <= validity.days <= 370

    server = load(controller_identity(tmp_path).cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sorted(str(ip) for ip in san.get_values_for_type(x509.IPAddress)) == ["127.0.0.1", "::1"]


def test_second_run_writes_nothing(tmp_path: Path) -> None:
    ensure_certs(tmp_path, ["localhost"], ["switch-1"])
    before = {path: path.read_bytes() for path in tmp_path.iterdir()}
    assert ensure_certs(tmp_path, ["localhost"], ["switch-1"]) == []
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_a_new_switch_gets_a_certificate_from_the_existing_ca(tmp_path: Path) -> None:
    ensure_certs(tmp_path, ["localhost"], ["switch-1"])
    ca_before = ca_cert_path(tmp_path).read_bytes()
    written = ensure_certs(tmp_path, ["localhost"], ["switch-1", "switch-2"])
    assert sorted(path.name for path in written) == ["switch-2.key", "switch-2.pem"]
    assert ca_cert_path(tmp_path).read_bytes() == ca_before
    assert load(switch_identity(tmp_path, "switch-2").cert).issuer == load(ca_cert_path(tmp_path)).subject


def test_changed_hostnames_reissue_the_controller_certificate(tmp_path: Path) -> None:
    ensure_certs(tmp_path, ["localhost"], ["switch-1"])
    written = ensure_certs(tmp_path, ["localhost", "controller.example"], ["switch-1"])
    assert sorted(path.name for path in written) == ["controller.key", "controller.pem"]


def test_a_ca_certificate_without_its_key_is_kept_and_the_error_says_why(tmp_path: Path) -> None:
    ensure_certs(tmp_path, ["localhost"], ["switch-1"])
    (tmp_path / "ca.key").unlink()
    ca_before = ca_cert_path(tmp_path).read_bytes()
    assert ensure_certs(tmp_path, ["localhost"], ["switch-1"]) == []  # nothing needed issuing: fine
    with pytest.raises(PKIError, match=r"switch-9\.pem is missing, and .*ca\.key is not here to issue it"):
        ensure_certs(tmp_path, ["localhost"], ["switch-9"])
    assert ca_cert_path(tmp_path).read_bytes() == ca_before


def test_dialout_reissues_its_own_stale_certificate_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ensure_certs(tmp_path, ["localhost"], ["switch-1"])
    with caplog.at_level(logging.INFO, logger="dialout.pki"):
        ensure_certs(tmp_path, ["localhost", "controller.example"], ["switch-1"])
    assert f"reissued {controller_identity(tmp_path).cert} for dialout controller" in caplog.text
    assert "dialout issued it (OU=dialout controller) and it named localhost, now " in caplog.text


def user_certificate(
    directory: Path, name: str, not_before: datetime.datetime | None = None, not_after: datetime.datetime | None = None
) -> bytes:
    """A certificate from a CA that is not dialout's, for ``name``, placed where dialout keeps ``name``'s."""
    issued = trustme.CA().issue_cert(
        name, "other-name.example", common_name=name, not_before=not_before, not_after=not_after
    )
    identity = switch_identity(directory, name)
    identity.cert.write_bytes(issued.cert_chain_pems[0].bytes())
    identity.key.write_bytes(issued.private_key_pem.bytes())
    return identity.cert.read_bytes()


def test_a_certificate_the_user_placed_is_never_reissued(tmp_path: Path) -> None:
    ensure_certs(tmp_path, ["localhost"], ["switch-1"])
    placed = user_certificate(tmp_path, "switch-1")  # other names, other CA: "stale" were it dialout's
    assert ensure_certs(tmp_path, ["localhost"], ["switch-1"]) == []
    assert switch_identity(tmp_path, "switch-1").cert.read_bytes() == placed
    with pytest.raises(PKIError, match=r"switch-1\.pem: not issued by dialout; dialout will not replace it"):
        generate_certs(tmp_path, ["localhost"], ["switch-1"])
    assert switch_identity(tmp_path, "switch-1").cert.read_bytes() == placed


def test_an_expired_certificate_the_user_placed_is_an_error_not_a_reissue(tmp_path: Path) -> None:
    ensure_certs(tmp_path, ["localhost"], ["switch-1"])
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    placed = user_certificate(
        tmp_path, "switch-1", not_before=now - datetime.timedelta(days=9), not_after=now - datetime.timedelta(days=2)
    )
    with pytest.raises(PKIError, match=r"switch-1\.pem: the certificate of CN=switch-1,.* expired on "):
        ensure_certs(tmp_path, ["localhost"], ["switch-1"])
    assert switch_identity(tmp_path, "switch-1").cert.read_bytes() == placed


def test_a_switch_with_no_ca_makes_none_and_says_where_the_files_come_from(tmp_path: Path) -> None:
    """config.yaml copied elsewhere: its relative certs_dir is empty there. The switch makes no CA (a switch host
    never holds a CA key), nothing at all, and says which files to copy from where."""
    config = write_config(tmp_path)
    done = run_module("sim_switch", "--config", str(config), "--url", "https://127.0.0.1:9")
    assert done.returncode == 2, done.stdout + done.stderr
    certs = tmp_path / "certs"
    assert done.stderr == (
        f"sim_switch: {certs} (switch.certs_dir in {config}) has no ca.pem, and a switch never makes a CA: the "
        f"controller makes its PKI when it first starts (`python -m controller --config {config}`); copy ca.pem, "
        "switch-1.pem, switch-1.key from its certs_dir here (read more: docs/pki.md)\n"
    )
    assert not certs.exists() or not any(certs.iterdir())


def test_a_switch_issues_only_its_own_certificate_and_only_for_an_id_in_the_fleet(tmp_path: Path) -> None:
    """On the controller's own machine (its CA key there): switch-2, in the fleet, gets its certificate and nothing
    else is touched; switch-01, a typo of switch-1, gets none and is named."""
    fleet = "  switches: [switch-1, switch-2]\n"
    certs = tmp_path / "certs"
    ensure_certs(certs, ["127.0.0.1"], ["switch-1"])
    before = {path.name: path.read_bytes() for path in certs.iterdir()}
    config = write_config(tmp_path, controller=fleet, switch_id="switch-01")
    typo = run_module("sim_switch", "--config", str(config), "--url", "https://127.0.0.1:9")
    assert typo.returncode == 2, typo.stdout + typo.stderr
    assert "switch 'switch-01' is not in controller.switches (switch-1, switch-2)" in typo.stderr
    assert "did you mean switch-1?" in typo.stderr
    assert {path.name: path.read_bytes() for path in certs.iterdir()} == before
    config = write_config(tmp_path, controller=fleet, switch_id="switch-2")
    other = run_module("sim_switch", "--config", str(config), "--url", "https://127.0.0.1:9")
    assert other.returncode == 1, other.stdout + other.stderr  # its certificate made; nothing listens on port 9
    after = {path.name: path.read_bytes() for path in certs.iterdir()}
    assert set(after) - set(before) == {"switch-2.pem", "switch-2.key"}
    assert {name: after[name] for name in before} == before
    assert mode(certs / "switch-2.key") == 0o600


def _waits_for_a_lock(pid: int) -> bool:
    """Whether process ``pid`` is blocked on a file lock: /proc/locks marks each waiter with "->"."""
    return any(
        fields[1] == "->" and fields[5] == str(pid)
        for fields in map(str.split, Path("/proc/locks").read_text().splitlines())
    )


def test_a_switch_issuing_while_another_process_issues_waits_for_it(tmp_path: Path) -> None:
    """A fleet's shards started together on one machine issue into one certs_dir: one that looked while another
    had written a key and not yet its certificate took it for an orphan key and exited 2. It waits instead, and
    then finds nothing to issue: the key stays beside its own certificate."""
    certs = tmp_path / "certs"
    generate_certs(certs, ["localhost"], [])
    elsewhere = tmp_path / "elsewhere"
    generate_certs(elsewhere, ["localhost"], [])
    shutil.copy(ca_cert_path(elsewhere), ca_cert_path(certs))  # so that what is issued below is the CA's
    shutil.copy(elsewhere / "ca.key", certs / "ca.key")
    ensure_switch_certs(elsewhere, ["fleet-1"], None)
    # As the other process does it, half-way: the directory locked, the key written, the certificate not yet.
    directory = os.open(certs, os.O_RDONLY | os.O_DIRECTORY)
    # Spawned, not forked: a forked child would share this process's lock, and wait on itself.
    issuer = multiprocessing.get_context("spawn").Process(target=ensure_switch_certs, args=(certs, ["fleet-1"], None))
    try:
        fcntl.flock(directory, fcntl.LOCK_EX)
        shutil.copy(elsewhere / "fleet-1.key", certs / "fleet-1.key")
        issuer.start()
        deadline = time.monotonic() + 30
        while issuer.is_alive() and not _waits_for_a_lock(issuer.pid or 0) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling for the state, bounded
        assert issuer.is_alive(), "it did not wait: it took the key without its certificate for an orphan"
        shutil.copy(elsewhere / "fleet-1.pem", certs / "fleet-1.pem")
    finally:
        os.close(directory)  # the other process is done
        issuer.join(30)
    assert issuer.exitcode == 0
    assert (certs / "fleet-1.key").read_bytes() == (elsewhere / "fleet-1.key").read_bytes()  # nothing reissued
