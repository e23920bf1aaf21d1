"""A switch on a machine of its own: it needs exactly its certificate, its key and the CA that verifies the
controller, and after a new CA it is told what is wrong before it dials (issue 17, items 2 and 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from dialout.pki import ca_cert_path, ca_private_key_path, switch_identity
from tests.commands import run_module
from tests.servers import ControllerProcess, write_config
from tests.switches import switch_ran_ok

FLEET = "  fleet:\n    fleet: {switches: 3, pings: 1, interval_s: 0}\n"
FLEET_CONTROLLER = "  switches: [switch-1, 'fleet-*']\n"


def switch_machine(controller_dir: Path, directory: Path, *ids: str) -> Path:
    """A switch's own config and certs_dir, holding what docs/pki.md's recipe copies and nothing more."""
    certs = directory / "certs"
    certs.mkdir(parents=True)
    config = write_config(directory)
    shutil.copy(ca_cert_path(controller_dir / "certs"), certs)
    for switch_id in ids:
        identity = switch_identity(controller_dir / "certs", switch_id)
        shutil.copy(identity.cert, certs)
        shutil.copy(identity.key, certs)
    return config


def issuer_signed(cert: Path, ca: Path) -> bool:
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        leaf.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.read_bytes()))
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def controller_machine(tmp_path: Path, extra: str = "", controller: str = "") -> Path:
    """The controller's config.yaml, in a directory of its own (its certs_dir beside it)."""
    directory = tmp_path / "controller"
    directory.mkdir()
    return write_config(directory, extra=extra, controller=controller)


def test_a_switch_with_only_its_own_files_and_the_ca_runs(tmp_path: Path) -> None:
    config = controller_machine(tmp_path)
    with ControllerProcess.start(config) as process:
        switch_config = switch_machine(config.parent, tmp_path / "switch", "switch-1")
        before = sorted(path.name for path in (tmp_path / "switch" / "certs").iterdir())
        done = run_module("sim_switch", "--config", str(switch_config), "--url", process.url)
    switch_ran_ok(done)
    assert "MULTIPLEXED" in done.stdout
    assert sorted(path.name for path in (tmp_path / "switch" / "certs").iterdir()) == before  # nothing added


def test_a_switch_missing_its_certificate_is_told_which_files_to_copy(tmp_path: Path) -> None:
    config = controller_machine(tmp_path)
    assert run_module("controller", "--config", str(config), "certs").returncode == 0
    switch_config = switch_machine(config.parent, tmp_path / "switch")  # the CA only
    done = run_module("sim_switch", "--config", str(switch_config), "--url", "https://127.0.0.1:1")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "switch-1.pem is missing" in line
    assert "copy switch-1.pem and switch-1.key from the controller's certs_dir" in line
    assert not ca_private_key_path(tmp_path / "switch" / "certs").exists()


def test_a_new_ca_reissues_the_fleet_and_a_stale_switch_is_told_before_it_dials(tmp_path: Path) -> None:
    config = controller_machine(tmp_path, FLEET, FLEET_CONTROLLER)
    certs = config.parent / "certs"
    with ControllerProcess.start(config) as process:
        first = run_module("sim_switch", "--config", str(config), "--url", process.url, "--scenario", "fleet")
        assert first.returncode == 0, first.stdout + first.stderr
    old_switch = switch_machine(config.parent, tmp_path / "old-switch", "switch-1")  # copied under the old CA

    renewed = run_module("controller", "--config", str(config), "certs")
    assert renewed.returncode == 0, renewed.stderr
    for n in (1, 2, 3):  # the fleet's certificates too, which only a fleet run had asked for
        assert issuer_signed(certs / f"fleet-000{n}.pem", ca_cert_path(certs))
    assert issuer_signed(certs / "switch-1.pem", ca_cert_path(certs))

    with ControllerProcess.start(config) as process:
        fleet = run_module("sim_switch", "--config", str(config), "--url", process.url, "--scenario", "fleet", "--json")
        assert fleet.returncode == 0, fleet.stderr
        assert json.loads(fleet.stdout)["answered_ok"] == 3

        # The switch's machine got the new ca.pem but still has the certificate of the old CA, and no CA key.
        shutil.copy(ca_cert_path(certs), tmp_path / "old-switch" / "certs")
        stale = run_module("sim_switch", "--config", str(old_switch), "--url", process.url)
    assert stale.returncode == 2
    [line] = stale.stderr.splitlines()
    old_certs = tmp_path / "old-switch" / "certs"
    assert f"{old_certs / 'switch-1.pem'} was not issued by {old_certs / 'ca.pem'}" in line
    assert "an earlier dialout CA signed it" in line


def test_a_certificate_from_an_earlier_dialout_ca_is_reissued_with_a_line_saying_so(tmp_path: Path) -> None:
    config = controller_machine(tmp_path, FLEET, FLEET_CONTROLLER)
    certs = config.parent / "certs"
    with ControllerProcess.start(config) as process:  # the fleet's certificates are issued when it first runs
        first = run_module("sim_switch", "--config", str(config), "--url", process.url, "--scenario", "fleet")
        assert first.returncode == 0, first.stdout + first.stderr
    kept = (certs / "fleet-0001.pem").read_bytes()
    old = tmp_path / "old"
    (certs / "fleet-0001.pem").rename(old.with_suffix(".pem"))
    (certs / "fleet-0001.key").rename(old.with_suffix(".key"))
    assert run_module("controller", "--config", str(config), "certs").returncode == 0  # a new CA
    # The old CA's certificate comes back, as after a restore from a backup taken before the new CA.
    old.with_suffix(".pem").rename(certs / "fleet-0001.pem")
    old.with_suffix(".key").rename(certs / "fleet-0001.key")
    assert (certs / "fleet-0001.pem").read_bytes() == kept
    with ControllerProcess.start(config) as process:
        fleet = run_module("sim_switch", "--config", str(config), "--url", process.url, "--scenario", "fleet", "--json")
    assert fleet.returncode == 0, fleet.stderr
    assert f"reissued {certs / 'fleet-0001.pem'} for fleet-0001" in fleet.stderr
    assert "an earlier dialout CA signed it" in fleet.stderr
    assert issuer_signed(certs / "fleet-0001.pem", ca_cert_path(certs))
