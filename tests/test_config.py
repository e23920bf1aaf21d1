"""config.yaml: strict, typed, and every error names the file, the line and the key path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dialout.config import (
    DEFAULT_KEEP_ALIVE_MAX_REQUESTS,
    ConfigError,
    Expectation,
    OneShot,
    load_config,
    parse_config,
)
from tests.servers import REPO


def load_text(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


def test_the_repos_config_has_the_reports_scenarios() -> None:
    cfg = load_config(REPO / "config.yaml")
    seed, contrast = cfg.scenario("seed"), cfg.scenario("contrast")
    assert seed.kind == OneShot((5.0, 10.0, 15.0))
    assert seed.http2 is True
    assert seed.expect == Expectation(connections=1, http_version="HTTP/2")
    assert contrast.kind == seed.kind
    assert contrast.http2 is False
    assert contrast.expect == Expectation(connections=3, http_version="HTTP/1.1")
    assert cfg.controller.port == 8443
    assert cfg.controller.max_concurrent_streams == 100
    assert cfg.controller.keep_alive_max_requests == DEFAULT_KEEP_ALIVE_MAX_REQUESTS
    assert cfg.controller.hostnames == ("localhost", "127.0.0.1", "::1")
    assert cfg.switch.switch_id == "switch-1"
    assert cfg.controller.switches == ("switch-1", "fleet-*")
    # Relative paths resolve against the config file's directory, not the working directory.
    assert cfg.controller.certs_dir == REPO / "certs"


def test_bad_ping_interval_names_line_and_key_path(tmp_path: Path) -> None:
    error = load_text(
        tmp_path,
        """\
        scenarios:
          seed:
            pings:
              - 5
              - 10
              - abc
        """,
    )
    assert (
        str(error) == f"{tmp_path / 'config.yaml'}:6: scenarios.seed.pings[2]: must be a finite number >= 0, got 'abc'"
    )


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("controller:\n  port: 8443\n  prot: 1\n", 3, "controller.prot: unknown key (allowed: "),
        ("controller:\n  max_interval_s: yes\n", 2, "controller.max_interval_s: must be a finite number > 0, got True"),
        ("controller:\n  port: 70000\n", 2, "controller.port: must be a whole number from 0 to 65535, got 70000"),
        ("controller:\n  port: '8443'\n", 2, "controller.port: must be a whole number from 0 to 65535, got '8443'"),
        (
            "controller:\n  max_concurrent_streams: 1000\n",
            2,
            "controller.max_concurrent_streams: must be a whole number from 1 to 999",
        ),
        ("controller:\n  hostnames: []\n", 2, "controller.hostnames: must name at least one hostname"),
        ("controller: [1, 2]\n", 1, "controller: must be a mapping, got a list"),
        ("switch:\n  controller_url: ftp://localhost:8443\n", 2, "switch.controller_url: must be an https:// URL"),
        ("switch:\n  tls: {cert: a.pem, key: a.key}\n", 2, "switch.tls.ca: missing"),
        (
            "switch:\n  tls: {cert: a.pem, key: a.key, ca: c.pem, crl: x}\n",
            2,
            "switch.tls.crl: unknown key (allowed: ca, cert, key)",
        ),
        ("controller:\n  tls: {cert: a.pem, key: a.key}\n", 2, "controller.tls.client_ca: missing"),
        ("controller:\n  trusted_proxies: [nginx_1]\n", 2, "controller.trusted_proxies[0]: must be a DNS-style name"),
        (
            "controller:\n  trusted_proxies: [127.0.0.1, 0.0.0.0/0]\n",
            2,
            "controller.trusted_proxies[1]: 0.0.0.0/0 trusts every address; name the proxy's own address or network",
        ),
        ("controller:\n  trusted_proxies: ['::/0']\n", 2, "controller.trusted_proxies[0]: ::/0 trusts every address"),
        (
            "controller:\n  balancers: [nginx]\n",
            2,
            "controller.balancers[0]: must be an address or a network, got 'nginx'",
        ),
        ("controller:\n  balancers: [10.0.0.7, 0.0.0.0/0]\n", 2, "controller.balancers[1]: 0.0.0.0/0 is every address"),
        ("controller:\n  balancers: 10.0.0.7\n", 2, "controller.balancers: must be a list of addresses or networks"),
        (
            "controller:\n  cleartext: {host: 192.0.2.1, port: 8080}\n",
            2,
            "controller.cleartext.host: 192.0.2.1 is not loopback",
        ),
        ("controller:\n  cleartext: {host: 127.0.0.1}\n", 2, "controller.cleartext.port: missing"),
        (
            "scenarios:\n  seed:\n    pings: [1]\n    request: {path: ping}\n",
            4,
            "scenarios.seed.request.path: must start with '/'",
        ),
        (
            "scenarios:\n  seed:\n    pings: [1]\n    request: {path: '/p?i={seconds}'}\n",
            4,
            "scenarios.seed.request.path: may hold {interval} and {n} and nothing else in braces",
        ),
        (
            "scenarios:\n  seed:\n    pings: [1]\n    request: {statuses: [200, 99]}\n",
            4,
            "scenarios.seed.request.statuses[1]: must be a whole number from 100 to 599",
        ),
        (
            "scenarios:\n  seed:\n    pings: [1]\n    expect: {controller_view: always}\n",
            4,
            "scenarios.seed.expect.controller_view: must be one of optional, required",
        ),
        ("switch:\n  id: switch_1\n", 2, "switch.id: must be a DNS-style name"),
        ("controller:\n  switches: [ok-1, bad_2]\n", 2, "controller.switches[1]: must be a DNS-style name"),
        ("controller:\n  switches: []\n", 2, "controller.switches: must be a non-empty list of switch ids"),
        ("switch:\n  request_timeout_s: 0\n", 2, "switch.request_timeout_s: must be a finite number > 0, got 0"),
        ("scenarios:\n  seed:\n    http2: true\n", 2, "scenarios.seed.pings: give one of pings (a one-shot run"),
        ("scenarios:\n  seed:\n    pings: []\n", 3, "scenarios.seed.pings: must be a non-empty list"),
        (
            "scenarios:\n  seed:\n    pings: [1]\n    http2: 'no'\n",
            4,
            "scenarios.seed.http2: must be true or false, got 'no'",
        ),
        ("scenarios:\n  seed:\n    pings: [-1]\n", 3, "scenarios.seed.pings[0]: must be a finite number >= 0, got -1"),
        (
            "scenarios:\n  seed:\n    pings: [.nan]\n",
            3,
            "scenarios.seed.pings[0]: must be a finite number >= 0, got nan",
        ),
        (
            "scenarios:\n  seed:\n    pings: [1]\n    expect: {http_version: HTTP/3}\n",
            4,
            "scenarios.seed.expect.http_version: must be one of HTTP/1.1, HTTP/2, got 'HTTP/3'",
        ),
        (
            "scenarios:\n  seed:\n    pings: [1]\n    expect: {connections: 0}\n",
            4,
            "scenarios.seed.expect.connections: must be a whole number from 1",
        ),
        ("scenarios:\n  seed:\n    pings: [1]\n  seed:\n    pings: [2]\n", 4, "scenarios.seed: duplicate key"),
        ("controller:\n  port: [8443\n", 3, "not valid YAML"),
    ],
)
def test_config_errors_name_line_and_key(tmp_path: Path, text: str, line: int, message: str) -> None:
    error = load_text(tmp_path, text)
    assert str(error).startswith(f"{tmp_path / 'config.yaml'}:{line}: {message}")


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: cannot read config: No such file or directory"):
        load_config(tmp_path / "nowhere.yaml")


def test_an_empty_file_means_all_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.controller.port == 8443
    assert cfg.switch.controller_url == "https://localhost:8443"
    assert cfg.scenarios == ()
    with pytest.raises(ConfigError, match="no scenario named 'seed' \\(known: none\\)"):
        cfg.scenario("seed")


def test_the_fleet_defaults_to_the_configured_switch() -> None:
    cfg = parse_config({"switch": {"id": "edge-7"}})
    assert cfg.controller.switches == ("edge-7",)
    assert cfg.switch_ids == ("edge-7",)
    listed = parse_config({"controller": {"switches": ["a-1", "b-2", "a-1"]}, "switch": {"id": "c-3"}})
    assert listed.controller.switches == ("a-1", "b-2")  # duplicates dropped, order kept
    assert listed.switch_ids == ("a-1", "b-2", "c-3")  # every one gets a certificate


def test_switch_url_follows_the_controller_port_by_default() -> None:
    cfg = parse_config({"controller": {"port": 9443}})
    assert cfg.switch.controller_url == "https://localhost:9443"


def test_a_section_accepts_exactly_its_dataclass_fields(tmp_path: Path) -> None:
    """The allowed keys come from the section's dataclass: the error lists every one of them."""
    error = load_text(tmp_path, "controller:\n  prot: 1\n")
    allowed = str(error).split("(allowed: ")[1].rstrip(")").split(", ")
    assert "trusted_proxies" in allowed
    assert "tls" in allowed
    assert "cleartext" in allowed
    assert "client_certs_optional" not in allowed  # bench mode is a command-line flag only


def test_own_pki_paths_resolve_against_the_config_and_take_the_switch_id(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "controller": {"tls": {"cert": "pki/c.pem", "key": "pki/c.key", "client_ca": "/etc/pki/ca.pem"}},
            "switch": {"tls": {"cert": "pki/client.{id}.cert.pem", "key": "pki/client.{id}.key.pem", "ca": "ca.pem"}},
            "scenarios": {"poll": {"pings": [1], "request": {"method": "post", "headers": {"X-Tenant": "t1"}}}},
        },
        base_dir=tmp_path,
    )
    assert cfg.controller.tls is not None
    assert cfg.controller.tls.client_ca == Path("/etc/pki/ca.pem")
    assert cfg.controller.tls.cert == tmp_path / "pki/c.pem"
    assert cfg.switch.tls is not None
    assert cfg.switch.tls.for_switch("fleet-0001").cert == tmp_path / "pki/client.fleet-0001.cert.pem"
    request = cfg.scenario("poll").request
    assert (request.method, request.headers, request.statuses) == ("POST", (("X-Tenant", "t1"),), (200,))
    assert request.target("2.5") == "/ping?interval=2.5"


def test_a_left_out_certs_dir_is_beside_the_config_not_the_working_directory(tmp_path: Path) -> None:
    """Both halves' default ``certs`` resolves as a written one would: against config.yaml's directory."""
    path = tmp_path / "elsewhere" / "config.yaml"
    path.parent.mkdir()
    path.write_text("scenarios: {seed: {pings: [0]}}\n", encoding="utf-8")
    cfg = load_config(path)
    assert cfg.controller.certs_dir == path.parent / "certs"
    assert cfg.switch.certs_dir == path.parent / "certs"
