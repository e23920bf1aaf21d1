"""The user's own PKI on both halves: a tenant CA with an intermediate, files named as in the report, RSA and EC
keys. dialout's own PKI in certs/ is not touched, and every broken file is one exit-2 line that names it."""

from __future__ import annotations

import datetime
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from controller.__main__ import main as controller_main
from dialout.pki import generate_certs
from sim_switch.__main__ import main as switch_main
from tests.commands import run_module
from tests.servers import ControllerProcess, write_config

TENANT = "shivaram-1.tenants.servicefractal.com"
SWITCH_ID = f"client.{TENANT}"


@dataclass(frozen=True)
class TenantPKI:
    """Files as the report names them, in ``directory``."""

    directory: Path
    root: trustme.CA
    intermediate: trustme.CA

    @property
    def switch_cert(self) -> Path:
        return self.directory / f"client.{TENANT}.cert.pem"

    @property
    def switch_key(self) -> Path:
        return self.directory / f"client.{TENANT}.key.pem"

    @property
    def ca_chain(self) -> Path:
        return self.directory / f"{TENANT}-ca-chain.cert.pem"

    @property
    def controller_cert(self) -> Path:
        return self.directory / f"controller-1.{TENANT}.cert.pem"

    @property
    def controller_key(self) -> Path:
        return self.directory / f"controller-1.{TENANT}.key.pem"


def write_leaf(cert: trustme.LeafCert, cert_path: Path, key_path: Path) -> None:
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))  # leaf, then intermediate
    key_path.write_bytes(cert.private_key_pem.bytes())
    key_path.chmod(0o600)


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> TenantPKI:
    directory = tmp_path_factory.mktemp("tenant-pki")
    root = trustme.CA(organization_name="servicefractal", key_type=trustme.KeyType.RSA)
    intermediate = root.create_child_ca(key_type=trustme.KeyType.ECDSA)
    pki = TenantPKI(directory, root, intermediate)
    (directory / pki.ca_chain.name).write_bytes(intermediate.cert_pem.bytes() + root.cert_pem.bytes())
    switch = intermediate.issue_cert(SWITCH_ID, common_name=SWITCH_ID, key_type=trustme.KeyType.RSA)
    write_leaf(switch, pki.switch_cert, pki.switch_key)
    controller = intermediate.issue_cert(
        "localhost", "127.0.0.1", common_name=f"controller-1.{TENANT}", key_type=trustme.KeyType.ECDSA
    )
    write_leaf(controller, pki.controller_cert, pki.controller_key)
    return pki


def own_pki_config(
    directory: Path, pki: TenantPKI, switch: dict[str, Path] | None = None, controller: dict[str, Path] | None = None
) -> Path:
    """A config with both halves on ``pki`` (files overridable), and dialout's certs/ beside it."""
    switch_tls = {"cert": pki.switch_cert, "key": pki.switch_key, "ca": pki.ca_chain, **(switch or {})}
    controller_tls = {
        "cert": pki.controller_cert,
        "key": pki.controller_key,
        "client_ca": pki.ca_chain,
        **(controller or {}),
    }
    return write_config(
        directory,
        controller=(
            "  hostnames: [somewhere-else.example]  # would make dialout reissue controller.pem, were it consulted\n"
            f"  switches: [{SWITCH_ID}]\n"
            f"  tls: {{cert: '{controller_tls['cert']}', key: '{controller_tls['key']}', "
            f"client_ca: '{controller_tls['client_ca']}'}}\n"
        ),
        switch_id=SWITCH_ID,
        switch=f"  tls: {{cert: '{switch_tls['cert']}', key: '{switch_tls['key']}', ca: '{switch_tls['ca']}'}}\n",
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_both_halves_on_the_users_pki_multiplex_and_leave_certs_alone(tmp_path: Path, tenant: TenantPKI) -> None:
    generate_certs(tmp_path / "certs", ["localhost"], ["switch-1"])
    before = snapshot(tmp_path / "certs")
    config = own_pki_config(tmp_path, tenant)
    with ControllerProcess.start(config) as controller:
        done = run_module(
            "sim_switch",
            "--config",
            str(config),
            "--url",
            f"https://localhost:{controller.port}",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"controller CN=controller-1.{TENANT}" in done.stdout
        assert f"controller saw {SWITCH_ID}: 1 connection, 3 streams, 3 at once; both views agree" in done.stdout
        assert "MULTIPLEXED: 3 pings as 3 streams on 1 connection (HTTP/2)" in done.stdout
        controller.wait_for(f"opened by {SWITCH_ID}")
    assert snapshot(tmp_path / "certs") == before
    assert not any("issued" in line for line in controller.lines)


def quote(text: object) -> str:
    return re.escape(str(text))


def broken_files(tmp_path: Path, tenant: TenantPKI) -> dict[str, tuple[dict[str, Path], str]]:
    """Each broken switch file, and the line it must give (a regular expression of its start)."""
    foreign = trustme.CA().issue_cert(SWITCH_ID, common_name=SWITCH_ID)
    write_leaf(foreign, tmp_path / "foreign.cert.pem", tmp_path / "foreign.key.pem")
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    expired = tenant.intermediate.issue_cert(
        SWITCH_ID,
        common_name=SWITCH_ID,
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    write_leaf(expired, tmp_path / "expired.cert.pem", tmp_path / "expired.key.pem")
    (tmp_path / "empty.pem").write_text("not a certificate\n", encoding="ascii")
    leaf = f"the certificate of CN={quote(SWITCH_ID)},.*"
    return {
        "missing": ({"cert": tmp_path / "nowhere.pem"}, f"{quote(tmp_path / 'nowhere.pem')}: certificate file missing"),
        "key mismatch": (
            {"key": tenant.controller_key},
            f"{quote(tenant.controller_key)}: this key does not match the certificate in {quote(tenant.switch_cert)}",
        ),
        "expired": (
            {"cert": tmp_path / "expired.cert.pem", "key": tmp_path / "expired.key.pem"},
            f"{quote(tmp_path / 'expired.cert.pem')}: {leaf} expired on ",
        ),
        "other CA": (
            {"cert": tmp_path / "foreign.cert.pem", "key": tmp_path / "foreign.key.pem"},
            f"{quote(tmp_path / 'foreign.cert.pem')}: {leaf} is not issued by the CA in {quote(tenant.ca_chain)} "
            r"\(its issuer: OU=Testing CA",
        ),
        "no certificate": (
            {"ca": tmp_path / "empty.pem"},
            f"{quote(tmp_path / 'empty.pem')}: holds no PEM certificate",
        ),
    }


@pytest.mark.parametrize("case", ["missing", "key mismatch", "expired", "other CA", "no certificate"])
def test_each_broken_switch_file_is_one_exit_2_line(
    tmp_path: Path, tenant: TenantPKI, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files, line = broken_files(tmp_path, tenant)[case]
    config = own_pki_config(tmp_path, tenant, switch=files)
    assert switch_main(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.match(f"sim_switch: {line}", err), err
    assert not (tmp_path / "certs").exists(), "nothing generated for a half on its own PKI"


def test_a_url_the_controller_certificate_does_not_name_is_refused_before_dialing(
    tmp_path: Path, tenant: TenantPKI, capsys: pytest.CaptureFixture[str]
) -> None:
    config = own_pki_config(tmp_path, tenant)
    assert switch_main(["--config", str(config), "--url", "https://controller-1.example:8443"]) == 2
    assert capsys.readouterr().err == (
        f"sim_switch: {tenant.controller_cert}: the URL's host 'controller-1.example' is not among the controller "
        "certificate's names (localhost, 127.0.0.1) (read more: docs/pki.md)\n"
    )


def test_controller_with_a_key_that_does_not_match_is_one_exit_2_line(
    tmp_path: Path, tenant: TenantPKI, capsys: pytest.CaptureFixture[str]
) -> None:
    config = own_pki_config(tmp_path, tenant, controller={"key": tenant.switch_key})
    assert controller_main(["--config", str(config)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"controller: {tenant.switch_key}: this key does not match the certificate in {tenant.controller_cert} "
        "(read more: docs/pki.md)"
    )


def test_a_fleet_on_the_users_pki_takes_each_switchs_files_by_id(tmp_path: Path, tenant: TenantPKI) -> None:
    for n in (1, 2, 3):
        name = f"fleet-{n:02d}"
        issued = tenant.intermediate.issue_cert(name, common_name=name, key_type=trustme.KeyType.ECDSA)
        write_leaf(issued, tmp_path / f"client.{name}.cert.pem", tmp_path / f"client.{name}.key.pem")
    config = own_pki_config(
        tmp_path, tenant, switch={"cert": tmp_path / "client.{id}.cert.pem", "key": tmp_path / "client.{id}.key.pem"}
    )
    text = config.read_text(encoding="utf-8").replace(f"switches: [{SWITCH_ID}]", 'switches: ["fleet-*"]')
    text += "  fleet:\n    fleet: {switches: 3, id_pattern: 'fleet-{n:02d}', pings: 2, interval_s: 0.1}\n"
    config.write_text(text, encoding="utf-8")
    with ControllerProcess.start(config) as controller:
        done = run_module(
            "sim_switch",
            "--config",
            str(config),
            "--scenario",
            "fleet",
            "--url",
            f"https://localhost:{controller.port}",
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FLEET OK: 3 switches x 2 pings, 6 ok, 0 failed" in done.stdout
    assert not (tmp_path / "certs").exists()


def test_a_user_placed_certificate_in_certs_is_used_not_reissued(tmp_path: Path, tenant: TenantPKI) -> None:
    """dialout reissues only what it issued; the user's own switch-1.pem, other names and all, stays."""
    certs = tmp_path / "certs"
    generate_certs(certs, ["localhost"], ["switch-1"])
    shutil.copy(tenant.switch_cert, certs / "switch-1.pem")
    shutil.copy(tenant.switch_key, certs / "switch-1.key")
    before = snapshot(certs)
    config = tmp_path / "config.yaml"
    config.write_text("controller: {hostnames: [localhost]}\nscenarios: {seed: {pings: [0]}}\n", encoding="utf-8")
    # The switch does not trust the tenant's controller here; what matters is that nothing was rewritten first.
    switch_main(["--config", str(config), "--url", "https://127.0.0.1:1"])
    assert snapshot(certs) == before
