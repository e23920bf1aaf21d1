"""Hostile input: any interval text, oversized requests, and a config with every key wrong."""

from __future__ import annotations

import copy
import math
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.__main__ import main as controller_main
from controller.http.interval import IntervalError, parse_interval
from dialout.config import ConfigError, parse_config
from sim_switch.dial.tls import client_ssl_context
from tests.servers import REPO, ControllerProcess, write_config

MAX_INTERVAL_S = 0.05
# Far above MAX_INTERVAL_S: a request that takes this long has hung, whatever the machine's load.
HANG_S = 10.0
interval_texts = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[+-]?\d{0,6}(\.\d{0,6})?([eE][+-]?\d{1,4})?", fullmatch=True),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@given(interval_texts)
def test_the_interval_parser_accepts_or_explains_anything(text: str) -> None:
    seconds: float | None = None
    explanation = ""
    try:
        seconds = parse_interval([text], MAX_INTERVAL_S)
    except IntervalError as exc:  # the only exception it may raise
        explanation = str(exc)
    if seconds is None:
        assert explanation
    else:
        assert math.isfinite(seconds)
        assert 0 <= seconds <= MAX_INTERVAL_S


@pytest.fixture(scope="module")
def strict_controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerProcess]:
    config = write_config(
        tmp_path_factory.mktemp("hostile"),
        controller=f"  max_interval_s: {MAX_INTERVAL_S}\n  max_header_bytes: 4096\n",
    )
    with ControllerProcess.start(config) as process:
        yield process


@pytest.fixture(scope="module")
def context(strict_controller: ControllerProcess) -> ssl.SSLContext:
    return client_ssl_context(strict_controller.config.parent / "certs", "switch-1")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=interval_texts)
def test_any_interval_over_http_is_200_or_400_never_500_never_a_hang(
    strict_controller: ControllerProcess, context: ssl.SSLContext, text: str
) -> None:
    with httpx.Client(http2=True, verify=context, trust_env=False, timeout=HANG_S) as client:
        response = client.get(f"{strict_controller.url}/ping", params={"interval": text})
    assert response.status_code in (200, 400), response.text
    body = response.json()
    if response.status_code == 400:
        assert body["error"]
    else:
        assert 0 <= body["interval_s"] <= MAX_INTERVAL_S


@pytest.mark.parametrize("http2", [False, True])
def test_an_oversized_request_is_refused_by_the_configured_limit(
    strict_controller: ControllerProcess, context: ssl.SSLContext, http2: bool
) -> None:
    with httpx.Client(http2=http2, verify=context, trust_env=False, timeout=HANG_S) as client:
        refused = client.get(
            f"{strict_controller.url}/ping", params={"interval": "0", "pad": "a" * 3500}, headers={"x-pad": "b" * 1000}
        )
        fine = client.get(f"{strict_controller.url}/ping", params={"interval": "0", "pad": "a" * 1024})
    assert refused.status_code == 431
    assert "over max_header_bytes (4096)" in refused.json()["error"]
    assert fine.status_code == 200


def test_a_huge_http11_request_is_refused_before_it_is_read_whole(
    strict_controller: ControllerProcess, context: ssl.SSLContext
) -> None:
    with httpx.Client(http2=False, verify=context, trust_env=False, timeout=HANG_S) as client:
        refused = client.get(f"{strict_controller.url}/ping?interval=0", headers={"x-pad": "a" * 200_000})
    assert refused.status_code == 431  # Hypercorn's own limit, from the same setting


def test_an_oversized_http2_header_block_is_refused_and_the_controller_carries_on(
    strict_controller: ControllerProcess, context: ssl.SSLContext
) -> None:
    # Over SETTINGS_MAX_HEADER_LIST_SIZE: Hypercorn ends the connection rather than read it.
    with (
        httpx.Client(http2=True, verify=context, trust_env=False, timeout=HANG_S) as client,
        pytest.raises(httpx.HTTPError),
    ):
        client.get(f"{strict_controller.url}/ping?interval=0", headers={"x-pad": "a" * 65536})
    with httpx.Client(http2=True, verify=context, trust_env=False, timeout=HANG_S) as client:
        assert client.get(f"{strict_controller.url}/ping?interval=0").status_code == 200


# --- a config with every key wrong ----------------------------------------------------------------------------

REPO_CONFIG: dict[str, Any] = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))


def leaves(node: object, path: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        yield from (f"{path}[{index}]" for index in range(len(node)))
        yield path
    else:
        yield path


def replaced(data: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    changed = copy.deepcopy(data)
    keys = path.replace("[", ".[").split(".")
    node: Any = changed
    for key in keys[:-1]:
        node = node[int(key[1:-1])] if key.startswith("[") else node[key]
    last = keys[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return changed


WRONG_VALUES = [{"a": 1}, ["a"], "yes please", True, -7, None]


@pytest.mark.parametrize("path", sorted(set(leaves(REPO_CONFIG))))
def test_every_key_with_a_wrong_value_is_named(path: str) -> None:
    errors = [_config_error(replaced(REPO_CONFIG, path, wrong)) for wrong in WRONG_VALUES]
    named = [error.path for error in errors if error is not None]
    assert all(name == path or name.startswith((f"{path}.", f"{path}[")) for name in named), named
    # Every key refuses most wrong values; a string key takes "yes please", a list key may take ["a"].
    assert len(named) >= len(WRONG_VALUES) - 2, path


def _config_error(data: dict[str, Any]) -> ConfigError | None:
    try:
        parse_config(data)
    except ConfigError as exc:
        return exc
    return None


@pytest.mark.parametrize(
    ("scenario", "missing"),
    [
        ({"http2": True}, "pings"),
        ({"persistent": {"every_s": 1, "interval_s": 0}}, "persistent.duration_s"),
        ({"persistent": {"duration_s": 5, "interval_s": 0}}, "persistent.every_s"),
        ({"persistent": {"duration_s": 5, "every_s": 1}}, "persistent.interval_s"),
    ],
)
def test_a_missing_required_key_is_named(scenario: dict[str, Any], missing: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"scenarios": {"s": scenario}})
    assert caught.value.path == f"scenarios.s.{missing}"


def test_the_cli_turns_a_wrong_key_into_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    for key in ("port", "max_interval_s", "hostnames", "switches", "graceful_timeout_s"):
        data = replaced(REPO_CONFIG, f"controller.{key}", {"nested": "mapping"})
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        assert controller_main(["--config", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f": controller.{key}: " in err
        assert "Traceback" not in err
