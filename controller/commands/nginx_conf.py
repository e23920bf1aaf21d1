"""``python -m controller nginx-conf``: nginx in front of the controller, as in the report (switch -> nginx ->
controller), written from config.yaml.

nginx ends the switch's TLS (HTTP/2, client certificate required and verified against the controller's client CA,
presenting the controller's own certificate so the switch checks the same names), and forwards each request over
keep-alive HTTP/1.1 + mTLS connections to the controller (nginx speaks HTTP/2 only downstream), with its own client
certificate, whose CN is in ``controller.trusted_proxies``, and the ``X-Dialout-*`` headers of
``controller.accounts.forwarded``. ``--full`` wraps the server block in a complete file that ``nginx -c FILE`` runs
in the foreground as any user: pid file and temporary directories in one directory of its own, errors on stderr.

``--stream``: nginx as a TCP (L4) balancer in front of controller replicas (its stream module), each connection
to the next replica in turn. TLS passes through unopened: the switch and a controller see each other's certificate,
so the replicas share one account (``controller.account``: PostgreSQL across machines) and list nginx's address in
``controller.balancers``: many switches come from it, each connection announced by the PROXY protocol's header
(``controller/server/proxy_protocol.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from controller.accounts.forwarded import HEADERS, NGINX_VARIABLES, header_name
from dialout.config import Config, ConfigError
from dialout.tls_files import certificate_names, controller_files, switch_files, switch_identity

# The controller holds a ping for up to max_interval_s: nginx must wait at least that long for the answer.
READ_TIMEOUT_MARGIN_S = 30


def proxy_name(cfg: Config) -> str:
    """The CN of nginx's own client certificate: the first name (not address) in controller.trusted_proxies."""
    if cfg.controller.proxy_names:
        return cfg.controller.proxy_names[0]
    raise ConfigError(
        "controller.trusted_proxies",
        "names no certificate CN for the proxy: add one (e.g. nginx-proxy), for nginx's own client certificate",
    )


def render(cfg: Config, listen: str, full: bool) -> str:
    controller = cfg.controller
    served = controller_files(controller)
    trusted_by_switch = switch_files(cfg.switch, cfg.switch.switch_id).trust.ca  # verifies the controller
    proxy = proxy_name(cfg)
    if controller.tls is None:
        proxy_cert, proxy_key = (
            switch_identity(controller.certs_dir, proxy).cert,
            switch_identity(controller.certs_dir, proxy).key,
        )
        proxy_note = f"issued by dialout's CA like a switch's, CN {proxy}"
    else:  # the user's PKI: dialout issues nothing there
        proxy_cert = controller.tls.client_ca.parent / f"{proxy}.cert.pem"
        proxy_key = controller.tls.client_ca.parent / f"{proxy}.key.pem"
        proxy_note = f"YOURS TO ISSUE: CN {proxy}, from the CA in {controller.tls.client_ca}"
    names = certificate_names(served.identity.chain()[0])
    forwarded = "\n".join(
        f"        proxy_set_header {header_name(field)} {_quote(NGINX_VARIABLES[field])};" for field in HEADERS
    )
    server = f"""\
# dialout: nginx in front of the controller, as in the report (switch -> nginx -> controller).
# Written by `python -m controller nginx-conf` from config.yaml; the switch dials https://{listen}.
upstream dialout_controller {{
    server {this_controller(cfg)};
    keepalive 32;  # nginx reuses its connections to the controller (HTTP/1.1: one request at a time on each)
}}

server {{
    listen {listen} ssl http2;
    ssl_protocols TLSv1.2 TLSv1.3;
    # The controller's own certificate: the switch checks the same names as when it dials the controller.
    ssl_certificate         {_abs(served.identity.cert)};
    ssl_certificate_key     {_abs(served.identity.key)};
    ssl_client_certificate  {_abs(served.trust.ca)};  # the CA of the switches' certificates
    ssl_verify_client on;
    ssl_verify_depth 4;
    http2_max_concurrent_streams {controller.max_concurrent_streams};
    keepalive_requests {controller.keep_alive_max_requests};
    keepalive_timeout 75s;

    location / {{
        proxy_pass https://dialout_controller;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_read_timeout {int(controller.max_interval_s) + READ_TIMEOUT_MARGIN_S}s;
        # What the controller needs to see the switch's connection through nginx (it trusts these only from a
        # peer in controller.trusted_proxies, and verifies the certificate itself):
{forwarded}
        # nginx's own client certificate ({proxy_note}):
        proxy_ssl_certificate     {_abs(proxy_cert)};
        proxy_ssl_certificate_key {_abs(proxy_key)};
        proxy_ssl_trusted_certificate {_abs(trusted_by_switch)};
        proxy_ssl_verify on;
        proxy_ssl_verify_depth 4;
        proxy_ssl_name {names[0] if names else "localhost"};
        proxy_ssl_server_name on;
        proxy_ssl_protocols TLSv1.2 TLSv1.3;
        proxy_ssl_session_reuse on;
    }}
}}
"""
    if not full:
        return server
    state = state_dir(listen)
    temp_paths = "\n".join(
        f"    {kind}_temp_path {state / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    indented = "\n".join(f"    {line}" if line else "" for line in server.splitlines())
    return f"""\
# A complete nginx configuration: run it with `nginx -c THIS_FILE` (foreground; stop with Ctrl-C).
daemon off;
worker_processes 1;
pid {state / "nginx.pid"};
error_log stderr notice;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
{temp_paths}

{indented}
}}
"""


# Where Debian's nginx keeps its stream module (libnginx-mod-stream): nginx -c FILE loads only what FILE names.
STREAM_MODULES = (
    Path("/usr/lib/nginx/modules/ngx_stream_module.so"),
    Path("/usr/lib64/nginx/modules/ngx_stream_module.so"),
)


def render_stream(cfg: Config, listen: str, replicas: list[str], full: bool) -> str:
    """An nginx stream block spreading the switches' connections over ``replicas`` (``HOST:PORT`` each)."""
    controller = cfg.controller
    servers = "\n".join(f"    server {replica} max_fails=1 fail_timeout=10s;" for replica in replicas)
    listen_host = listen.rpartition(":")[0].strip("[]")
    block = f"""\
# dialout: nginx as a TCP (L4) balancer in front of controller replicas, each connection to the next in turn.
# Written by `python -m controller nginx-conf --stream` from config.yaml; the switches dial https://{listen}.
# TLS passes through unopened: every replica presents a certificate for {listen_host} and verifies the switches'
# own, and each lists this nginx's address in controller.balancers, from which it reads the PROXY protocol's header
# (the switch's own address). The replicas are one account when they share controller.account (PostgreSQL).
upstream dialout_replicas {{
{servers}
}}

server {{
    listen {listen};
    proxy_pass dialout_replicas;
    proxy_protocol on;  # each connection begins with the switch's address (controller.balancers reads it)
    proxy_connect_timeout 5s;  # a replica that does not answer: the next one
    # No byte either way for this long closes a connection: longer than the longest ping the controller holds.
    proxy_timeout {int(controller.max_interval_s) + READ_TIMEOUT_MARGIN_S}s;
}}
"""
    if not full:
        return block
    module = next((path for path in STREAM_MODULES if path.exists()), None)
    load = (
        f"load_module {module};  # the stream module (Debian: libnginx-mod-stream)\n"
        if module is not None
        else "# (the stream module is built in: nothing to load)\n"
    )
    indented = "\n".join(f"    {line}" if line else "" for line in block.splitlines())
    return f"""\
# A complete nginx configuration: run it with `nginx -c THIS_FILE` (foreground; stop with Ctrl-C).
{load}daemon off;
worker_processes 1;
pid {state_dir(listen) / "nginx.pid"};
error_log stderr notice;

events {{
    worker_connections 1024;
}}

stream {{
{indented}
}}
"""


def this_controller(cfg: Config) -> str:
    """Where this config's controller listens, as nginx dials it (``HOST:PORT``; a wildcard address: loopback)."""
    host = cfg.controller.host if not _is_wildcard(cfg.controller.host) else "127.0.0.1"
    return f"[{host}]:{cfg.controller.port}" if ":" in host else f"{host}:{cfg.controller.port}"


def state_dir(listen: str) -> Path:
    """Where a ``--full`` nginx keeps its pid file and temporary files: one directory per listen address."""
    tag = "".join(char if char.isalnum() else "-" for char in listen)
    return Path(tempfile.gettempdir()) / f"dialout-nginx-{tag}"


def _abs(path: Path) -> Path:
    return path.resolve()


def _quote(value: str) -> str:
    return f'"{value}"' if ":" in value else value


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")
