"""``python -m controller``: serve, regenerate certificates, run the demo, or explain a switch.

Exit codes: 0 ok, 1 the run failed (a demo scenario failed, the port is taken; explain: a client was refused or
did not multiplex; serve: streams still open when ``graceful_timeout_s`` ran out were cut), 2 usage, config or
certificate error, 3 inconclusive (explain, trials, demo), explain's own 4 (unreachable) and 5 (nothing seen), 70 a bug
of dialout's (one line; ``DIALOUT_TRACEBACK=1`` shows where).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import multiprocessing
import signal
import socket
import ssl
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from controller.accounts.connections import ConnectionRegistry
from controller.commands import account, explain, trials
from controller.commands.nginx_conf import render, render_stream, state_dir, this_controller
from controller.diagnosis.analysis import WindowError, diagnose, limits_of, parse_window
from controller.diagnosis.sentences import headline
from controller.http.metrics import counted_over_workers, worker_gone
from controller.server.balance import Loads
from controller.server.serve import (
    Listeners,
    ServerError,
    Stopped,
    admin_token,
    bind_sockets,
    check_loopback_only,
    check_store,
    log_stopped,
    new_registry,
    serve,
    server_ssl_context,
)
from controller.server.workers import stop_signals_handled, supervise
from controller.trials.plan import TRAFFIC, TrialSpec
from dialout.collector import pace_for_many_objects
from dialout.command_line import OneLineParser, command_first, run_guarded
from dialout.config import Config, ConfigError, ControllerConfig, load_config
from dialout.config_fields import MAX_WORKERS
from dialout.errors import DialoutError
from dialout.loop_lag import LoopLag
from dialout.pages import Page, read_more
from dialout.pki import ensure_certs, generate_certs
from dialout.text import format_address
from dialout.tls_files import check_other_half

logger = logging.getLogger("controller")

DEMO_SCENARIOS = ("seed", "contrast")
REPORTS_DIR = "reports"  # beside config.yaml: the demo's HTML report of each scenario


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    bound: list[socket.socket] = []  # closed again if the controller cannot start after all
    try:
        return _run(args, bound)
    except DialoutError as exc:
        for sock in bound:
            sock.close()
        print(f"controller: {exc.told()}", file=sys.stderr)
        return exc.code


def _run(args: argparse.Namespace, bound: list[socket.socket]) -> int:
    cfg = load_config(args.config)
    cfg = _with_overrides(cfg, args.host, args.port, args.admin_port, args.client_certs_optional)
    workers = _workers(args, cfg.controller)
    if args.command == "certs":
        return _regenerate_certs(cfg)
    if args.command in ("explain", "account"):  # of a controller that ran: its certificates are there
        return _about_a_controller(cfg, args)
    plan = _trial_plan(args) if args.command == "trials" else ()
    if args.command == "trials" and args.list:
        print(trials.listing())
        return 0
    scenarios = (args.scenario or list(DEMO_SCENARIOS)) if args.command == "demo" else []
    for name in scenarios:
        cfg.scenario(name)  # a wrong name fails before anything is made or served
    listen = _listen_option(args.listen) if args.command == "nginx-conf" else None
    if cfg.controller.tls is None:  # the user's own PKI is never touched
        ensure_certs(cfg.controller.certs_dir, cfg.controller.hostnames, cfg.client_ids)
    if listen is not None:
        return _print_nginx_conf(cfg, listen, args.full, args.stream, args.replica)
    ssl_context = server_ssl_context(cfg.controller)
    check_other_half(cfg, "controller")
    registry = _registry(args.command, cfg.controller, workers)
    (listeners, *others), loads = _listen(cfg, bound, workers)
    pace_for_many_objects()
    if args.command == "demo":
        assert registry is not None
        return asyncio.run(_demo(cfg, ssl_context, listeners, args.config, scenarios, registry))
    if args.command == "trials":
        return asyncio.run(
            trials.run_trials(
                cfg.controller, ssl_context, listeners, plan, args.switch, trials.Outputs(args.json, args.html)
            )
        )
    if registry is None:
        worker = _Worker(cfg, (listeners, *others), args.verbose, args.quiet)
        with counted_over_workers():  # /metrics: every worker's (controller/http/metrics.py)
            return supervise(workers, worker, cfg.controller.graceful_timeout_s, gone=_gone(loads))
    stopped = asyncio.run(_serve_until_signalled(cfg, ssl_context, listeners, registry))
    return 0 if stopped.clean else 1


def _registry(command: str, cfg: ControllerConfig, workers: int) -> ConnectionRegistry | None:
    """The registry ``serve`` in one process and ``demo`` record in, with its account's store opened: before
    anything listens, so that a store it cannot use is said in one line and nothing is served that it would not
    have kept. Workers each open their own after the fork (the store is only checked here); trials make theirs."""
    if workers > 1:
        check_store(cfg)
        return None
    return new_registry(cfg) if command in ("serve", "demo") else None


def _listen(cfg: Config, bound: list[socket.socket], workers: int = 1) -> tuple[list[Listeners], Loads | None]:
    """Every listener the config asks for, bound and listening (each added to ``bound`` as it is), for each
    worker: the TLS and cleartext ones shared by all, each worker taking a connection when it has no more open than
    the others (the load they share, ``controller/server/balance.py``); the admin listener the first's."""
    cleartext = cfg.controller.cleartext
    sockets = bind_sockets(cfg.controller.host, cfg.controller.port)
    bound += sockets
    if cfg.controller.client_certs_optional:
        check_loopback_only(sockets)
    plain = bind_sockets(cleartext.host, cleartext.port, scheme="http") if cleartext else []
    bound += plain
    if workers == 1:
        return [Listeners(sockets, plain, _bind_admin(cfg))], None
    loads = Loads(workers)
    first = Listeners(sockets, plain, _bind_admin(cfg), loads.of(1))
    return [first, *(Listeners(sockets, plain, shared=loads.of(number)) for number in range(2, workers + 1))], loads


def _gone(loads: Loads | None) -> Callable[[int, int], None]:
    """What the parent does when worker ``number`` (process ``pid``) has ended: its metrics' files go, and the
    others stop leaving connections to it."""

    def gone(number: int, pid: int) -> None:
        worker_gone(pid)
        if loads is not None:
            loads.gone(number)

    return gone


def _workers(args: argparse.Namespace, cfg: ControllerConfig) -> int:
    """How many processes serve: ``--workers``, else ``controller.workers``; one for everything but ``serve``."""
    if args.command != "serve":
        return 1
    if args.workers is None:
        return cfg.worker_count
    if not 1 <= args.workers <= MAX_WORKERS:
        raise ConfigError("--workers", f"must be 1 to {MAX_WORKERS}, got {args.workers}")
    return int(args.workers)


@dataclasses.dataclass(frozen=True)
class _Worker:
    """One worker process's serving (controller/server/workers.py): after the fork, its own TLS context, registry
    and account's life; the admin listener in worker 1 alone."""

    cfg: Config
    listeners: tuple[Listeners, ...]  # each worker's, by its number from 1
    verbose: bool
    quiet: bool

    def __call__(self, number: int) -> int:
        _configure_logging(self.verbose, self.quiet, f"controller w{number}")
        listeners = self.listeners[number - 1]
        try:
            registry = new_registry(self.cfg.controller)
            ssl_context = server_ssl_context(self.cfg.controller)
        except DialoutError as exc:
            print(f"controller w{number}: {exc.told()}", file=sys.stderr)
            return exc.code
        parent = multiprocessing.parent_process()
        sentinel = parent.sentinel if parent is not None else None
        stopped = asyncio.run(_serve_until_signalled(self.cfg, ssl_context, listeners, registry, sentinel))
        return 0 if stopped.clean else 1


def _trial_plan(args: argparse.Namespace) -> tuple[TrialSpec, ...]:
    """The trials to run; a wrong name, or a --json or --html file of the user's, is refused before anything is
    served."""
    plan = trials.choose(args.only)
    trials.Outputs(args.json, args.html).check()
    return plan


COMMANDS = {
    "serve": "serve until SIGINT or SIGTERM (the default)",
    "certs": "make a new CA and reissue every certificate dialout issued",
    "demo": "serve (in one process), run the switch's scenarios against it, stop",
    "nginx-conf": "print an nginx server block that fronts this controller, as in the report (--stream: a TCP "
    "balancer over replicas)",
    "explain": "ask the running controller what each switch's client did, and why it was or was not multiplexed",
    "trials": "serve in one process (a trial acts on a live connection), and put the first switch that dials in "
    "through what real controllers do to it; score it",
    "account": "show the controller's account (controller.account), export it as JSON, or prune it now",
}


# Where each sub-command is explained at length: its --help ends by naming the page.
COMMAND_PAGES = {
    "serve": Page.GETTING_STARTED,
    "certs": Page.PKI,
    "demo": Page.GETTING_STARTED,
    "nginx-conf": Page.NGINX,
    "explain": Page.EXPLAIN,
    "trials": Page.TRIALS,
    "account": Page.ACCOUNT,
}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Sub-commands, each with only its own options; ``python -m controller [options]`` still serves, and options
    may still stand before the command."""
    parser, made = parsers()
    return parser.parse_args(command_first(list(sys.argv[1:] if argv is None else argv), made, "serve"))


def parsers() -> tuple[OneLineParser, dict[str, OneLineParser]]:
    """The command line: the parser, and each sub-command's own (docs/reference/cli.md is made from them)."""
    common = OneLineParser(add_help=False)
    common.add_argument("--config", type=Path, default=Path("config.yaml"), help="default: %(default)s")
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true", help="also log when each request arrives")
    loudness.add_argument("-q", "--quiet", action="store_true", help="no line per request or connection")
    # What each sub-command takes beside --config: the serving ones where to listen, nginx-conf where the
    # controller it fronts listens, serve alone bench mode; certs and explain nothing of the kind.
    listening = OneLineParser(add_help=False)
    listening.add_argument("--host", help="listen address (default: controller.host in the config)")
    listening.add_argument("--port", type=int, help="listen port, 0 for any free one (default: controller.port)")
    listening.add_argument(
        "--admin-port",
        type=int,
        help="the admin listener's port, 0 for any free one (default: controller.admin.port, else the listen port + 1)",
    )
    processes = OneLineParser(add_help=False)
    processes.add_argument(
        "--workers",
        type=int,
        help=f"processes that serve, 1 to {MAX_WORKERS} (default: controller.workers, auto: one per core)",
    )
    bench = OneLineParser(add_help=False)
    bench.add_argument(
        "--client-certs-optional",
        action="store_true",
        help="bench mode, loopback only: serve clients without a certificate (h2load cannot present one)",
    )
    fronted = OneLineParser(add_help=False)
    fronted.add_argument("--host", help="the controller's address nginx dials (default: controller.host)")
    fronted.add_argument("--port", type=int, help="the controller's TLS port nginx dials (default: controller.port)")
    takes = {
        "serve": [common, listening, processes, bench],
        "certs": [common],
        "demo": [common, listening],
        "nginx-conf": [common, fronted],
        "explain": [common],
        "trials": [common, listening],
        "account": [common],
    }
    parser = OneLineParser(
        prog="python -m controller",
        description="The controller end of the dial-out pair: GET /ping?interval=SECONDS over HTTP/2 with mTLS.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    made = {
        name: sub.add_parser(name, help=text, description=text, parents=takes[name]) for name, text in COMMANDS.items()
    }
    parser.set_defaults(host=None, port=None, admin_port=None, client_certs_optional=False, workers=None)
    made["demo"].add_argument(
        "--scenario", action="append", help=f"a scenario to run, repeatable (default: {', '.join(DEMO_SCENARIOS)})"
    )
    made["nginx-conf"].add_argument(
        "--listen", default="127.0.0.1:9443", help="where nginx listens for switches (default: %(default)s)"
    )
    made["nginx-conf"].add_argument(
        "--stream",
        action="store_true",
        help="nginx as a TCP balancer in front of controller replicas, TLS passed through (its stream module)",
    )
    made["nginx-conf"].add_argument(
        "--replica",
        action="append",
        metavar="HOST:PORT",
        help="with --stream: a controller replica to spread over, once for each (default: this controller)",
    )
    made["nginx-conf"].add_argument(
        "--full", action="store_true", help="a whole file for `nginx -c FILE`, not just the server block"
    )
    made["explain"].formatter_class = argparse.RawDescriptionHelpFormatter
    made["explain"].epilog = "exit codes:\n" + "\n".join(
        f"  {code}  {said}" for code, said in explain.EXIT_CODES.items()
    )
    made["explain"].add_argument("--switch", help="this switch (its certificate's CN, or an address)")
    made["explain"].add_argument("--since", help="what happened since then: seconds ago, or an ISO 8601 time")
    made["explain"].add_argument(
        "--url",
        help="the controller's admin listener (http://HOST:PORT), or its TLS port (https://...: a switch's own view) "
        "(default: controller.admin in the config)",
    )
    made["explain"].add_argument("--json", action="store_true", help="print GET /diagnosis's JSON")
    made["trials"].formatter_class = argparse.RawDescriptionHelpFormatter
    trial_codes = "\n".join(f"  {code}  {said}" for code, said in trials.EXIT_CODES.items())
    made["trials"].epilog = f"{textwrap.fill('traffic: ' + TRAFFIC, 100)}\n\nexit codes:\n{trial_codes}"
    made["trials"].add_argument("--switch", help="put this switch through the trials (default: the first to dial in)")
    made["trials"].add_argument("--only", help="these trials, by name, separated by commas (see --list)")
    made["trials"].add_argument(
        "--list", action="store_true", help="list the trials: what each does, how long, and what traffic it needs"
    )
    made["trials"].add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON to FILE")
    made["trials"].add_argument(
        "--html", type=Path, metavar="FILE", help="write the results as a page to FILE: each trial's waterfall"
    )
    made["account"].add_argument(
        "action",
        nargs="?",
        choices=account.ACTIONS,
        default="show",
        help="; ".join(f"{name}: {said}" for name, said in account.ACTIONS.items()),
    )
    made["account"].add_argument(
        "--output", type=Path, metavar="FILE", help="export: write to FILE, a new one (default: standard output)"
    )
    parser.epilog = f"{read_more(Page.GETTING_STARTED)}; every option: {Page.CLI}"
    for name, command in made.items():
        command.epilog = "\n\n".join(filter(None, [command.epilog, read_more(COMMAND_PAGES[name])]))
    return parser, made


def _configure_logging(verbose: bool, quiet: bool, name: str = "controller") -> None:
    """``name``: what each line says it is from (a worker's: ``controller w2``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s.%(msecs)03d {name} %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Hypercorn's INFO lines repeat our own "listening on"; keep its warnings and errors.
    logging.getLogger("hypercorn.error").setLevel(logging.WARNING)
    for noisy in ("asyncio", "quart", "hpack", "h2", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if quiet:  # start, stop and trouble only: a soak or a bench makes millions of requests
        for chatty in ("controller.http.app", "controller.accounts.connections", "controller.server.asgi_tls"):
            logging.getLogger(chatty).setLevel(logging.WARNING)


def _with_overrides(
    cfg: Config, host: str | None, port: int | None, admin_port: int | None, client_certs_optional: bool
) -> Config:
    controller = dataclasses.replace(cfg.controller, client_certs_optional=client_certs_optional)
    if host is not None:
        controller = dataclasses.replace(controller, host=host)
    if port is not None:
        controller = dataclasses.replace(controller, port=_port_option("--port", port))
    if admin_port is not None:
        admin = dataclasses.replace(controller.admin, port=_port_option("--admin-port", admin_port))
        controller = dataclasses.replace(controller, admin=admin)
    return dataclasses.replace(cfg, controller=controller)


def _port_option(option: str, port: int) -> int:
    if not 0 <= port <= 65535:
        raise ConfigError(option, f"must be 0 to 65535, got {port}")
    return port


def _regenerate_certs(cfg: Config) -> int:
    written = generate_certs(cfg.controller.certs_dir, cfg.controller.hostnames, cfg.client_ids)
    print(f"controller: wrote {len(written)} files to {cfg.controller.certs_dir}", file=sys.stderr)
    return 0


def _explain(cfg: Config, url: str | None, switch: str | None, since: str | None, as_json: bool) -> int:
    try:
        parse_window(since, None)  # a since the controller would refuse is said here, before it is asked
    except WindowError as exc:
        raise ConfigError("--since", str(exc).removeprefix("since ")) from exc
    answer = explain.ask(cfg, url, switch, since)
    print(json.dumps(answer, indent=2) if as_json else explain.render(answer, explain.which_url(cfg, url)))
    return explain.exit_code(answer)


def _about_a_controller(cfg: Config, args: argparse.Namespace) -> int:
    """``explain`` or ``account``: what a controller did, from what it says or what it kept; nothing is made."""
    if args.command == "explain":
        return _explain(cfg, args.url, args.switch, args.since, args.json)
    return _account(cfg.controller, args.action, args.output)


def _account(cfg: ControllerConfig, action: str, output: Path | None) -> int:
    if action == "export":
        said = account.export(cfg, output)
        if said:
            print(said, file=sys.stderr)
        return 0
    print(account.prune(cfg) if action == "prune" else account.show(cfg))
    return 0


def _listen_option(listen: str, option: str = "--listen") -> str:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(option, f"must be HOST:PORT, e.g. 127.0.0.1:9443, got {listen!r}")
    return listen


def _print_nginx_conf(cfg: Config, listen: str, full: bool, stream: bool, replicas: list[str] | None) -> int:
    if replicas and not stream:
        raise ConfigError("--replica", "is for --stream: nginx in front of one controller dials it (--host, --port)")
    if stream:
        replicas = [_listen_option(replica, "--replica") for replica in replicas or [this_controller(cfg)]]
        text = render_stream(cfg, listen, replicas, full)
    else:
        text = render(cfg, listen, full)
    if full:
        state_dir(listen).mkdir(mode=0o755, exist_ok=True)  # nginx's workers (nobody) use what is in it
    print(text, end="")
    return 0


def _bind_admin(cfg: Config) -> list[socket.socket]:
    """The admin listener's sockets (none when it is off), and its URL in the log."""
    admin = cfg.controller.admin
    if not admin.enabled:
        return []
    admin_token(cfg.controller)  # an unusable token file is said before anything listens
    try:
        sockets = bind_sockets(admin.host, cfg.controller.admin_port, scheme="http", announce=False)
    except ServerError as exc:  # say which listener, and how to move it: its port may only be derived
        where = "controller.admin.port" if admin.port is not None else "controller.port + 1, by default"
        advice = "set controller.admin.port or --admin-port (0: any free port), or controller.admin.enabled: false"
        raise ServerError(f"the admin listener ({where}) {exc}; {advice}", usage=exc.usage) from exc
    host, port = sockets[0].getsockname()[:2]
    logger.info("admin page, /connections, /diagnosis and /metrics: http://%s/", format_address(host, port))
    return sockets


async def _serve_until_signalled(
    cfg: Config,
    ssl_context: ssl.SSLContext,
    listeners: Listeners,
    registry: ConnectionRegistry,
    parent: int | None = None,
) -> Stopped:
    """``parent``: a worker's, the sentinel of the process that started it: readable once that is gone (killed,
    say), and the worker stops as on SIGTERM rather than serve on alone, unwatched."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _on_signal, signum, stop)
    stop_signals_handled()  # a worker's, blocked since its fork
    if parent is not None:
        loop.add_reader(parent, _on_parent_gone, loop, parent, stop)
    stopped = await serve(cfg.controller, ssl_context, listeners, stop.wait, registry)
    _log_summary(registry, cfg)
    log_stopped(stopped)
    return stopped


def _on_parent_gone(loop: asyncio.AbstractEventLoop, parent: int, stop: asyncio.Event) -> None:
    loop.remove_reader(parent)
    logger.warning("the parent process is gone: finishing in-flight requests, then stopping")
    stop.set()


def _on_signal(signum: int, stop: asyncio.Event) -> None:
    logger.info("%s: finishing in-flight requests, then stopping", signal.Signals(signum).name)
    stop.set()


async def _demo(
    cfg: Config,
    ssl_context: ssl.SSLContext,
    listeners: Listeners,
    config_path: Path,
    scenarios: list[str],
    registry: ConnectionRegistry,
) -> int:
    """Serve in this process and run ``python -m sim_switch`` once per scenario as a child: the sockets are
    already listening, so the switch can dial at once and the demo needs no waiting or polling."""
    port = listeners.tls[0].getsockname()[1]
    url = urlunsplit(urlsplit(cfg.switch.controller_url)._replace(netloc=f"{_url_host(cfg)}:{port}"))
    stop = asyncio.Event()
    server = asyncio.create_task(serve(cfg.controller, ssl_context, listeners, stop.wait, registry))
    failed: list[str] = []
    undecided: list[str] = []  # the switch said INCONCLUSIVE: its loop lag could have made a verdict from times
    reports = config_path.parent / REPORTS_DIR
    reports.mkdir(exist_ok=True)
    written: list[Path] = []
    try:
        for name in scenarios:
            print(f"\n=== scenario {name} ===", flush=True)
            report = reports / f"{name}.html"
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sim_switch",
                "--config",
                str(config_path),
                "--scenario",
                name,
                "--url",
                url,
                "--html",
                str(report),
            )
            code = await child.wait()
            if code == explain.INCONCLUSIVE_EXIT:
                undecided.append(name)
            elif code != 0:
                failed.append(name)
            if code != 2 and report.exists():  # 2: it refused to run, e.g. over a file of the user's at that name
                written.append(report)
    finally:
        stop.set()
        stopped = await server
    _log_summary(registry, cfg)
    log_stopped(stopped)
    if written:
        print("\nreports (open in a browser):\n" + "\n".join(f"  {path}" for path in written), flush=True)
    busy = f"; inconclusive on a busy machine (run again): {', '.join(undecided)}" if undecided else ""
    print(
        f"\ndemo: {len(scenarios) - len(failed) - len(undecided)} of {len(scenarios)} scenarios passed{busy}"
        + (f"; failed: {', '.join(failed)}" if failed else ""),
        flush=True,
    )
    return 1 if failed else explain.INCONCLUSIVE_EXIT if undecided else 0


def _log_summary(registry: ConnectionRegistry, cfg: Config) -> None:
    """One line per switch: what the controller saw over its whole run, and its main finding."""
    lag = LoopLag.of_running_loop()
    diagnoses = {
        one.switch: one
        for one in diagnose(registry.connections(), registry.spans(), limits_of(cfg.controller), lag=lag)
    }
    for switch, totals in registry.totals().items():
        found = diagnoses.get(switch)
        finding = f"; {headline(found)}" if found else ""
        logger.info("stopped; %s: %s%s", switch, totals.describe(), finding)
    if not registry.totals():
        logger.info("stopped; no switch connected")


def _url_host(cfg: Config) -> str:
    host = urlsplit(cfg.switch.controller_url).hostname or "localhost"
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    sys.exit(run_guarded("controller", main))
