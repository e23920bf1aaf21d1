"""``python -m controller explain``: ask a running controller what a switch's client did, and say it in words.

It asks ``GET /diagnosis`` of the controller's admin listener where the config says it listens (``controller.admin``;
a wildcard host is asked on loopback), or at ``--url``: an ``https`` URL is asked over mutual TLS as the config's
switch (``switch.id``'s certificate), which reads every switch's records only if ``controller.operators`` lists it.
The question's own connection is not counted against anyone. Its first line says which URL it asked, and why.

Exit codes (``EXIT_CODES``): 0 nothing to fix, 1 a problem (a client refused, or not multiplexing what it could),
2 usage or config, 3 inconclusive, 4 the controller could not be reached, 5 it saw nothing to explain.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

import httpx

from dialout.config import Config
from dialout.errors import DialoutError, PKIError
from dialout.pages import Page
from dialout.text import format_address, plural
from dialout.tls_files import switch_files, switch_ssl_context

TIMEOUT_S = 30.0
INCONCLUSIVE_EXIT = 3  # no problem found, but one that the controller's own loop lag could have made
UNREACHABLE_EXIT = 4
NOTHING_SEEN_EXIT = 5
EXIT_CODES = {
    0: "nothing to fix: every client multiplexed, or nothing needed it",
    1: "a problem: a client refused, or one that did not multiplex what it could",
    2: "usage, config or certificate error, or an answer that is not a dialout controller's",
    INCONCLUSIVE_EXIT: "no problem, but a finding the controller's own loop lag could have made",
    UNREACHABLE_EXIT: "the controller could not be reached",
    NOTHING_SEEN_EXIT: "the controller saw no connection (of that switch, in that window) and refused none",
}


class ExplainError(DialoutError):
    """The controller's answer cannot be read, or it was asked wrongly: exit code 2."""

    page = Page.EXPLAIN


class Unreachable(ExplainError):
    exit_code = UNREACHABLE_EXIT


class NothingSeen(ExplainError):
    exit_code = NOTHING_SEEN_EXIT


def which_url(cfg: Config, url: str | None) -> tuple[str, str]:
    """The URL to ask, and why that one (for the line that says so)."""
    if url:
        return url.rstrip("/"), "--url"
    if cfg.controller.admin.enabled:
        return own_url(cfg), "controller.admin in the config: the admin listener"
    return own_url(cfg), "controller.port in the config, as switch.id (the admin listener is off)"


def ask(cfg: Config, url: str | None, switch: str | None, since: str | None) -> dict[str, Any]:
    """The controller's answer (``GET /diagnosis`` JSON): ``switches``, a diagnosis per switch, ``carriers``, the
    trusted proxies whose own connections were left out, and ``refused_handshakes``, by address."""
    target, _ = which_url(cfg, url)
    query = {name: value for name, value in (("switch", switch), ("since", since)) if value}
    try:
        verify = _client_context(cfg) if target.startswith("https:") else False  # plain HTTP: nothing to verify
        with httpx.Client(verify=verify, trust_env=False, timeout=TIMEOUT_S) as client:
            response = client.get(f"{target}/diagnosis", params=query)
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot ask the controller at {target}: {_reason(exc)}") from exc
    if response.status_code == 404:
        raise ExplainError(f"{target} has no /diagnosis: not a dialout controller, or an older one")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200 or not isinstance(answer, dict) or not isinstance(answer.get("switches"), list):
        error = answer.get("error") if isinstance(answer, dict) else None
        raise ExplainError(f"{target}/diagnosis answered {response.status_code}: {error or response.text[:200]}")
    switches: list[dict[str, Any]] = answer["switches"]
    if not switches and not answer.get("refused_handshakes"):
        if switch:
            raise NothingSeen(
                f"the controller at {target} saw no connection from switch {switch}{_window(since)} (a refused "
                "handshake has no name yet: explain without --switch lists them by address)"
            )
        raise NothingSeen(
            f"the controller at {target} saw no connection from any switch{_window(since)}, and refused no handshake"
        )
    return answer


def _window(since: str | None) -> str:
    """`` in the last 5 s`` for seconds ago, `` since 2026-...`` for a time."""
    if not since:
        return ""
    try:
        return f" in the last {float(since):g} s"
    except ValueError:
        return f" since {since}"


def render(answer: dict[str, Any], asked: tuple[str, str]) -> str:
    """The answer in words, under a line that says whom it asked and why (``which_url``)."""
    target, why = asked
    lines = [f"the controller at {target} ({why}) says:"]
    for refused in answer.get("refused_handshakes") or ():  # an older controller sends none
        lines.append(f"{refused['address']}: {refused['sentence']}")
    for diagnosis in answer["switches"]:
        runs = len(diagnosis.get("runs", ()))
        apart = f", in {runs} runs apart (each judged alone)" if runs > 1 else ""
        lines.append(
            f"{diagnosis['switch']}: {plural(diagnosis['connections'], 'connection')}, "
            f"{plural(diagnosis['streams'], 'request')}{apart}"
        )
        lines += [
            f"  {_severity(finding):<7} {finding['kind']}: {finding['sentence']}" for finding in diagnosis["findings"]
        ]
    for carrier in answer.get("carriers") or ():  # an older controller sends none
        lines.append(
            f"{carrier['proxy']}: a trusted proxy; its {plural(carrier['connections'], 'connection')} carry the "
            "switches' requests, each diagnosed above as its switch's: left out"
        )
    return "\n".join(lines)


def _severity(finding: dict[str, Any]) -> str:
    return "inconclusive" if finding.get("inconclusive") else str(finding["severity"])


def exit_code(answer: dict[str, Any]) -> int:
    """0 when no finding is a problem (multiplexed, or nothing needed it), 1 when one is or a handshake was
    refused, ``INCONCLUSIVE_EXIT`` when none is but one was inconclusive (the controller's own loop lagged more than
    it holds through)."""
    switches: Sequence[dict[str, Any]] = answer["switches"]
    if answer.get("refused_handshakes") or not all(diagnosis["ok"] for diagnosis in switches):
        return 1
    return INCONCLUSIVE_EXIT if any(diagnosis.get("inconclusive") for diagnosis in switches) else 0


def own_url(cfg: Config) -> str:
    """The admin listener, which answers for every switch; the TLS port if there is none (where the config's
    switch reads only its own records, unless it is in ``controller.operators``)."""
    controller = cfg.controller
    if controller.admin.enabled:
        scheme, host, port = "http", controller.admin.host, controller.admin_port
    else:
        scheme, host, port = "https", controller.host, controller.port
    if port == 0:
        raise ExplainError("controller.port is 0 (any free port): say where it listens with --url")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "localhost"}.get(host, host)  # a wildcard is asked on loopback
    return f"{scheme}://{format_address(host, port)}"


def _client_context(cfg: Config) -> ssl.SSLContext:
    try:
        return switch_ssl_context(switch_files(cfg.switch, cfg.switch.switch_id))
    except PKIError as exc:
        raise ExplainError(f"cannot ask as {cfg.switch.switch_id}: {exc}") from exc


def _reason(exc: httpx.HTTPError) -> str:
    cause: BaseException = exc
    while (inner := cause.__cause__ or cause.__context__) is not None:
        cause = inner
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused (is it running? is the port right?)"
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"its certificate is not trusted: {cause.verify_message}"
    return str(cause) or type(cause).__name__
