"""The controller's account in its store (``controller.account``, SQLite beside config.yaml): it survives a
restart, keeps what retention says, refuses a store it cannot read in one line, and a store that takes no writes
delays no ping. Real controllers (child processes, or in this test's loop), real switches, a real SQLite file."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import cast

import httpx
import pytest

from controller.accounts.connections import ConnectionRegistry, StreamSpan
from controller.accounts.engines import BUSY_TIMEOUT_S, engine_of
from controller.accounts.ledger import Ledger
from controller.accounts.store import (
    CONNECTION_COLUMNS,
    PRUNE_CONNECTIONS,
    PRUNE_STREAMS,
    Batch,
    ConnectionRow,
    Store,
    SwitchRow,
)
from dialout.config import ControllerConfig, Retention, load_config
from dialout.text import Address
from tests.commands import run_module
from tests.servers import ControllerProcess, run_controller, write_config
from tests.switches import async_switch_client, switch_ran_ok

SWITCH_IDS = ("switch-1",)


def test_a_restart_keeps_the_account_and_numbers_on(tmp_path: Path) -> None:
    """Two lives of one controller: the second's /connections, explain and the switch's cross-check read the
    first's records too, and its connections take numbers the first never gave."""
    config = write_config(tmp_path)
    with ControllerProcess.start(config) as first:
        done = run_module("sim_switch", "--config", str(config), "--url", first.url, "--json")
        switch_ran_ok(done)
        first.process.terminate()
    assert first.process.wait() == 0
    with ControllerProcess.start(config) as second:
        before = httpx.get(f"{second.admin_url}/connections", trust_env=False).json()
        assert [c["switch"] for c in before["connections"]] == ["switch-1"]  # the first life's, read from the store
        assert before["switches"]["switch-1"]["streams"] >= 3
        done = run_module("sim_switch", "--config", str(config), "--url", second.url, "--json")
        switch_ran_ok(done)  # the cross-check found its own connection among both lives'
        after = httpx.get(f"{second.admin_url}/connections", trust_env=False).json()
        ids = [c["id"] for c in after["connections"]]
        assert len(ids) == len(set(ids)) == 2
        assert after["switches"]["switch-1"]["connections"] == 2
        explained = run_module("controller", "explain", "--config", str(config), "--url", second.admin_url)
        assert "switch-1: 2 connections, 6 requests" in explained.stdout, explained.stdout


def test_account_show_export_and_prune(tmp_path: Path) -> None:
    config = write_config(tmp_path)  # pings of 0.3, 0.6 and 0.9 s: in flight at once, whatever the machine's load
    with ControllerProcess.start(config) as running:
        switch_ran_ok(run_module("sim_switch", "--config", str(config), "--url", running.url))
        shown = run_module("controller", "account", "--config", str(config))  # beside a running controller
    assert shown.returncode == 0, shown.stderr
    exported = run_module("controller", "account", "export", "--config", str(config))
    record = json.loads(exported.stdout)
    streams = len(record["streams"])  # the pings, and the switch's questions (its cross-check, its diagnosis)
    assert streams >= 3
    assert f"account: {tmp_path / 'account.sqlite3'} (schema 2" in shown.stdout
    assert f"holds 1 connection, {streams} streams of 1 controller life" in shown.stdout
    (totals,) = record["switches"]
    assert totals == {"switch": "switch-1", "connections": 1, "streams": streams, "peak_in_flight": 3}
    assert [c["switch"] for c in record["connections"]] == ["switch-1"]
    assert record["lives"][0]["stopped"] is not None
    # a file of the user's is never overwritten
    mine = tmp_path / "mine.json"
    mine.write_text("mine")
    refused = run_module("controller", "account", "export", "--config", str(config), "--output", str(mine))
    assert refused.returncode == 2
    assert mine.read_text() == "mine"
    assert refused.stderr.count("\n") == 1
    assert "exists" in refused.stderr
    written = run_module("controller", "account", "export", "--config", str(config), "--output", str(tmp_path / "a"))
    assert written.returncode == 0
    assert json.loads((tmp_path / "a").read_text()) == record
    # prune: what a shorter retention drops, now; the totals stay exact
    config.write_text(config.read_text().replace("controller:\n", "controller:\n  retention: {max_streams: 1}\n"))
    pruned = run_module("controller", "account", "prune", "--config", str(config))
    assert pruned.returncode == 0, pruned.stderr
    assert f"dropped {streams - 1} row" in pruned.stdout
    config.write_text(config.read_text().replace("max_streams: 1}", "max_streams: 1, max_age_s: 0.001}"))
    pruned = run_module("controller", "account", "prune", "--config", str(config))
    assert "dropped 2 rows" in pruned.stdout  # the closed connection and the one stream left
    shown = run_module("controller", "account", "--config", str(config))
    assert "holds 0 connections, 0 streams of 1 controller life" in shown.stdout
    assert json.loads(run_module("controller", "account", "export", "--config", str(config)).stdout)["switches"] == [
        totals
    ]


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        ("UPDATE meta SET value = '99' WHERE key = 'schema'", "holds an account of schema 99, made by a newer dialout"),
        ("DROP TABLE meta", "is an SQLite database, but not a dialout account"),
    ],
)
def test_a_store_it_cannot_read_is_refused_in_one_line(tmp_path: Path, spoil: str, said: str) -> None:
    config = write_config(tmp_path)
    shown = run_module("controller", "account", "--config", str(config))
    assert shown.returncode == 2
    assert "no account at" in shown.stderr
    assert not (tmp_path / "account.sqlite3").exists()
    with ControllerProcess.start(config) as running:
        running.process.terminate()
    db = sqlite3.connect(tmp_path / "account.sqlite3")
    db.execute(spoil)
    db.commit()
    db.close()
    refused = run_module("controller", "--config", str(config), "--port", "0", "--admin-port", "0")
    assert refused.returncode == 2
    assert said in refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr


def test_a_config_built_in_code_keeps_its_account_in_memory(tmp_path: Path) -> None:
    """Only a config read from a file has a directory to keep an account in: a test's, an embedding's, writes
    nothing where it runs."""
    assert ControllerConfig().account is None
    (tmp_path / "config.yaml").write_text("controller: {}\n")
    assert load_config(tmp_path / "config.yaml").controller.account == tmp_path / "account.sqlite3"
    (tmp_path / "config.yaml").write_text("controller: {account: null}\n")
    assert load_config(tmp_path / "config.yaml").controller.account is None


@pytest.mark.timing
async def test_a_locked_store_delays_no_ping_and_is_said_once(
    certs_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the store's write lock: the controller's writes wait (and fail, and wait again) on
    the ledger's thread, never on the loop; pings are answered all the while; the log says so once, then once
    that it writes again, and nothing recorded meanwhile is lost."""
    account = tmp_path / "account.sqlite3"
    cfg = ControllerConfig(certs_dir=certs_dir, switches=SWITCH_IDS, account=account)
    caplog.set_level(logging.WARNING, logger="controller.accounts.ledger")
    async with run_controller(cfg) as running, async_switch_client(certs_dir) as client:
        assert (await client.get(f"{running.url}/ping?interval=0")).status_code == 200
        holder = sqlite3.connect(account, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # the store takes no write until it is let go
        try:
            slowest = 0.0
            answered = 0
            while "cannot write" not in caplog.text:  # the first write to fail took BUSY_TIMEOUT_S
                started = time.monotonic()
                assert (await client.get(f"{running.url}/ping?interval=0")).status_code == 200
                slowest = max(slowest, time.monotonic() - started)
                answered += 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert answered >= 10
        # A ping that waited for the store would take the writer's whole wait on the lock (BUSY_TIMEOUT_S); half of
        # it leaves a loaded machine its slow moments (1.19 s once, in CI's loaded run, against a bound of 1 s).
        assert slowest < BUSY_TIMEOUT_S / 2
        answer = (await client.get(f"{running.url}/connections?switch=switch-1")).json()
        assert "writing to" in caplog.text
        assert "again" in caplog.text
        assert answer["switches"]["switch-1"]["streams"] == answered + 2  # the pings, and this question
        ledger = running.registry.ledger
        assert ledger is not None
        assert ledger.failures >= 1
        assert ledger.dropped_rows == 0
        assert ledger.late_rows >= answered
    assert caplog.text.count("cannot write") == 1


async def test_retention_keeps_the_latest_streams_and_exact_totals(certs_dir: Path, tmp_path: Path) -> None:
    cfg = ControllerConfig(
        certs_dir=certs_dir,
        switches=SWITCH_IDS,
        account=tmp_path / "account.sqlite3",
        retention=dataclasses.replace(Retention(), max_streams=3),
    )
    async with run_controller(cfg) as running, async_switch_client(certs_dir) as client:
        for interval in range(10):
            assert (await client.get(f"{running.url}/ping?interval=0.00{interval}")).status_code == 200
        assert isinstance(running.registry.ledger, Ledger)
        # Retention is applied every few seconds as the ledger writes (every write here, on a busy machine, may
        # come before it is due again), and at a life's last write: that one, asked for now.
        await running.registry.ledger.flush(retain=True)
        account = await running.registry.ledger.read()
    assert [span.query for span in account.spans] == [b"interval=0.007", b"interval=0.008", b"interval=0.009"]
    assert account.totals["switch-1"].streams == 10


async def test_a_killed_life_is_closed_by_the_next(tmp_path: Path) -> None:
    """A controller killed (SIGKILL) with a ping in flight: the next start closes its connection in the account,
    as of its last record, and says so once."""
    config = write_config(tmp_path)
    with ControllerProcess.start(config, "--verbose") as first:
        async with async_switch_client(tmp_path / "certs") as client:
            ping = asyncio.create_task(client.get(f"{first.url}/ping?interval=30"))
            await asyncio.to_thread(first.wait_for, r"GET /ping: received")
            # a question waits for what was answered before it to be written: the ping in flight is in the store
            (was,) = httpx.get(f"{first.admin_url}/connections", trust_env=False).json()["connections"]
            assert was["in_flight"] == 1
            assert was["closed_at"] is None
            first.process.kill()
            with pytest.raises(httpx.HTTPError):
                await ping
    with ControllerProcess.start(config) as second:
        second.seen(rf"account: life 1 \(pid {first.process.pid}\) ended without stopping: 1 connection it left open")
        answer = httpx.get(f"{second.admin_url}/connections", trust_env=False).json()
    (record,) = answer["connections"]
    assert record["life"] == 1
    assert record["closed_at"] is not None
    assert record["in_flight"] == 0


@pytest.mark.timeout(30)  # before the mend this spun in the loop: SIGALRM is what ends it
async def test_a_question_in_the_turn_a_write_ends_is_answered(tmp_path: Path) -> None:
    """A question (a read waits for the latest records: ``flush``) that runs in the very turn the ledger's write
    ends, before that write's done-callbacks: the loop goes on. It spun there once, a controller deaf to every
    request and to SIGTERM (three CI runs). The turn is made exactly: the loop is held in one callback until the
    ledger's thread has finished the write (which queues its result for the next turn), and only then is the
    question's task woken, so that it runs after the write's result is in and before its callbacks."""
    ledger = Ledger(tmp_path / "account.sqlite3", Retention())
    loop = asyncio.get_running_loop()
    asked = asyncio.Event()

    async def question() -> None:
        await asked.wait()
        await ledger.flush()

    def hold_until_written() -> None:
        ledger._thread.submit(lambda: None).result()  # its one thread: the write before this is done
        asked.set()

    asking = asyncio.create_task(question())
    writing = asyncio.create_task(ledger.flush())
    await asyncio.sleep(0)  # both have begun: the write on the ledger's thread, the question waiting
    loop.call_soon(hold_until_written)
    await asyncio.wait_for(asyncio.gather(asking, writing), 10)
    await ledger.close()


def test_rows_come_back_from_sqlite_as_they_were_written(tmp_path: Path) -> None:
    """The SQLite store takes a batch's rows as one JSON text (``engines.SQLite.insert``): what it gives back is
    what was written, type for type, with text that JSON escapes and floats to their last bit."""
    store = Store(tmp_path / "account.sqlite3", create=True)
    life, _ = store.begin_life()
    awkward = 'sw"\\\x01 é ☃ 🚀 \u2028'
    opened = 1_796_000_000.123456789
    named = {
        **{"id": 7, "life": life, "switch": awkward, "peer": "[::1]:50443", "alpn": "h2", "tls_version": "TLSv1.3"},
        **{"via": None, "cleartext": 0, "http_version": "2", "opened_at": "2026-12-07T03:16:02.123+00:00"},
        **{"closed_at": None, "hello": opened - 1e-7, "opened": opened, "closed": None, "streams": 3, "in_flight": 1},
        **{"peak_in_flight": 2, "closed_for": None, "hello_turn": 41, "done_turn": 42},
        **{"upstream": json.dumps(["10.0.0.1:443"]), "proxy_number": None, "from_trusted_proxy": None},
    }
    connection = cast(ConnectionRow, tuple(named[column] for column in CONNECTION_COLUMNS.split(", ")))
    closing = {"closed": opened + 0.1, "streams": 4, "in_flight": 0, "closed_for": "peer_closed"}
    later = cast(ConnectionRow, tuple({**named, **closing}[column] for column in CONNECTION_COLUMNS.split(", ")))
    streams = [
        (
            7,
            number,
            2 * number - 1,
            "/ping",
            f"interval=0.{number}&x=ÿ%00",
            opened + number / 3,
            opened + 0.5,
            None if number == 2 else opened + 0.4999999,
            0.0 if number == 1 else 1e-300,
            None if number else "forged",
        )
        for number in range(4)
    ]
    try:
        store.write(Batch(life, time.time(), [connection], streams[:2], [SwitchRow(awkward, 1, 2, 2)]), None)
        store.write(Batch(life, time.time(), [later], streams[2:], [SwitchRow(awkward, 0, 2, 1)]), None)
        assert store.connection_rows(None, 10) == [later]  # the second write of the row won
        assert store.stream_rows(None, 10) == streams
        assert store.switch_rows() == [SwitchRow(awkward, 1, 4, 2)]
    finally:
        store.close()


def test_a_store_of_schema_1_gets_the_indexes_retention_reads(tmp_path: Path) -> None:
    """Retention runs every few seconds in every process: without indexes each pass read every row (a million
    streams: 130-160 ms of CPU, the write lock held). A store made before them (schema 1) gets them on first use,
    its rows kept; and retention's deletes then read no table end to end."""
    path = tmp_path / "account.sqlite3"
    store = Store(path, create=True)
    life, _ = store.begin_life()
    now = time.time()
    streams = [(1, n, 2 * n - 1, "/ping", "interval=0", now + n, now + n + 0.5, None, 0.0, None) for n in range(1, 51)]
    store.write(Batch(life, now, [], streams, []), None)
    store.close()
    db = sqlite3.connect(path)
    db.executescript(
        "DROP INDEX streams_by_end; DROP INDEX connections_by_close; UPDATE meta SET value = '1' WHERE key = 'schema'"
    )
    db.close()

    store = Store(path, create=False)
    try:
        assert store.size().schema == 2
        assert len(store.stream_rows(None, 100)) == 50
    finally:
        store.close()
    db = sqlite3.connect(path)
    indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"streams_by_end", "connections_by_close"} <= indexes
    for prune in (PRUNE_CONNECTIONS, PRUNE_STREAMS.format(seq=engine_of(path).seq)):
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {prune}", (now, 10))]
        assert not {"SCAN streams", "SCAN connections"} & set(plan), plan  # a bare SCAN reads every row
    db.close()


def test_a_connection_keeps_its_answered_streams_times_not_the_streams() -> None:
    """The switch's cross-check reads a connection's last 1,000 answered streams' times; the streams themselves
    (path, query, record: 330 bytes each) go once the registry's own history lets them go, so a thousand
    connections that have carried a thousand pings each hold some megabytes, not hundreds. An answer's write,
    told after its stream ended, is the time kept."""
    registry = ConnectionRegistry(stream_history=10)
    connection = registry.open(peer=Address("127.0.0.1", 40000), switch="switch-1", alpn="h2", tls_version=None, tls={})
    for number in range(1, 1501):
        span = connection.begin_stream("/ping", "2", b"interval=0", stream_id=2 * number - 1)
        span.answered = span.started + 0.001
        connection.end_stream(span)
        span.answered_at(span.started + 0.002 if number % 2 else span.answered)  # the turn's write, later
    gc.collect()
    # Of this connection's: other tests in this process may hold spans of their own.
    kept_spans = [
        thing for thing in gc.get_objects() if isinstance(thing, StreamSpan) and thing.connection is connection
    ]
    assert len(kept_spans) <= 10 + 1  # the registry's, this one's
    kept = connection.stream_times()
    assert [entry["number"] for entry in kept] == list(range(501, 1501))
    assert kept[-1] == {"stream_id": 2999, "number": 1500, "answered_in_s": 0.001}
    assert kept[-2] == {"stream_id": 2997, "number": 1499, "answered_in_s": 0.002}
