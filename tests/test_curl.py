"""Interop: curl, a client we did not write, multiplexes its pings to our controller over one HTTP/2 connection."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from dialout.pki import ca_cert_path, switch_identity
from tests.servers import ControllerProcess
from tests.tools import require

# One line per transfer: curl's own view of the connection it used.
WRITE_OUT = "%{http_code} %{http_version} %{num_connects}\\n"


def curl_pings(
    url: str,
    certs_dir: Path,
    *options: str,
    write_out: str,
    count: int = 3,
    switch_id: str = "switch-1",
    intervals: Sequence[float] = (0.3, 0.6, 0.9),
) -> str:
    """curl's ``--write-out`` for each of the first ``count`` of ``intervals``, as switch ``switch_id``."""
    identity = switch_identity(certs_dir, switch_id)
    command = [
        require("curl"),
        "--silent",
        "--show-error",
        "--no-progress-meter",
        "--http2",
        "--cacert",
        str(ca_cert_path(certs_dir)),
        "--cert",
        str(identity.cert),
        "--key",
        str(identity.key),
        "--write-out",
        write_out,
        *options,
    ]
    for interval in intervals[:count]:
        command += [f"{url}/ping?interval={interval}", "--output", "/dev/null"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def curl(
    url: str, certs_dir: Path, *options: str, count: int = 3, switch_id: str = "switch-1"
) -> list[tuple[str, str, int]]:
    """Each transfer's status, HTTP version and how many connections curl opened for it."""
    written = curl_pings(url, certs_dir, *options, write_out=WRITE_OUT, count=count, switch_id=switch_id)
    rows = [line.split() for line in written.splitlines()]
    return [(code, version, int(connects)) for code, version, connects in rows]


def test_curl_parallel_multiplexes_three_pings_on_one_connection(controller_process: ControllerProcess) -> None:
    certs_dir = controller_process.config.parent / "certs"
    transfers = curl(controller_process.url, certs_dir, "--parallel")
    assert [(code, version) for code, version, _ in transfers] == [("200", "2")] * 3
    assert sum(connects for _, _, connects in transfers) == 1


def test_curl_without_a_client_certificate_is_refused(controller_process: ControllerProcess) -> None:
    certs_dir = controller_process.config.parent / "certs"
    done = subprocess.run(
        [
            require("curl"),
            "--silent",
            "--show-error",
            "--http2",
            "--cacert",
            str(ca_cert_path(certs_dir)),
            f"{controller_process.url}/ping?interval=0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # curl reports the refusal as the alert (exit 56) or, when the close wins the race, as a failed socket
    # call (exit 55); either way it got no HTTP answer.
    assert done.returncode in (55, 56), done.stderr
    assert done.stdout == ""
