"""The account on PostgreSQL (``controller.account: postgresql://...``): controllers that share one are one
account, whichever served a switch. A real PostgreSQL: a throwaway cluster this module makes with ``initdb`` and
serves on loopback (tests/postgres.py); each test its own database in it."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

from controller.accounts.store import Store
from tests.commands import run_module
from tests.postgres import postgres_cluster
from tests.servers import ControllerProcess, write_config
from tests.switches import switch_ran_ok

_databases = itertools.count(1)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture
def database(cluster: str) -> str:
    """A new, empty database in the cluster: its URL."""
    name = f"account_{next(_databases)}"
    with psycopg.connect(cluster, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return cluster.rsplit("/", 1)[0] + f"/{name}"


def test_controllers_on_one_postgresql_are_one_account(tmp_path: Path, database: str) -> None:
    """Two controllers (two machines' worth: nothing shared but the database), a switch served by each: either
    one's /connections and explain show both; one of them killed, what it recorded stays, and the next controller
    to start closes what it left open."""
    config = write_config(tmp_path, controller=f"  account: {database}\n")
    with ControllerProcess.start(config) as first, ControllerProcess.start(config) as second:
        for controller in (first, second):
            done = run_module("sim_switch", "--config", str(config), "--url", controller.url)
            switch_ran_ok(done)
        for controller in (first, second):
            answer = httpx.get(f"{controller.admin_url}/connections", trust_env=False).json()
            assert len({record["life"] for record in answer["connections"]}) == 2
            assert answer["switches"]["switch-1"]["connections"] == 2
        explained = run_module("controller", "explain", "--config", str(config), "--url", second.admin_url)
        assert "switch-1: 2 connections, 6 requests" in explained.stdout, explained.stdout
        first.process.kill()
        first.process.wait()
        with ControllerProcess.start(config) as third:
            third.seen(rf"account: life \d+ \(pid {first.process.pid}\) ended without stopping")
            answer = httpx.get(f"{third.admin_url}/connections", trust_env=False).json()
    assert len(answer["connections"]) == 2  # nothing of the killed one's is lost
    shown = run_module("controller", "account", "--config", str(config))
    assert f"account: {database} (schema 2" in shown.stdout, shown.stderr
    assert "holds 2 connections" in shown.stdout
    assert "of 3 controller lives" in shown.stdout
    exported = json.loads(run_module("controller", "account", "export", "--config", str(config)).stdout)
    assert [row["switch"] for row in exported["switches"]] == ["switch-1"]


def test_a_schema_1_account_gets_its_indexes_once_whoever_starts_first(database: str) -> None:
    """Schema 2 indexes what retention reads every few seconds (the streams' order and end, the connections'
    close). Replicas that start together on a store made before them both start, and the indexes are made once."""
    Store(database, create=True).close()
    with psycopg.connect(database, autocommit=True) as db:
        db.execute("DROP INDEX streams_by_end, connections_by_close, streams_by_seq")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    with ThreadPoolExecutor(4) as starting:
        stores = list(starting.map(lambda _: Store(database, create=False), range(4)))
    for store in stores:
        store.close()
    with psycopg.connect(database, autocommit=True) as db:
        indexes = {
            row[0]
            for row in db.execute("SELECT indexname FROM pg_indexes WHERE tablename IN ('streams', 'connections')")
        }
        schema = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchall()
    assert {"streams_by_end", "connections_by_close", "streams_by_seq"} <= indexes
    assert schema == [("2",)]


def test_a_postgresql_that_cannot_be_reached_is_one_line(tmp_path: Path, cluster: str) -> None:
    with psycopg.connect(cluster) as probe:  # a port on loopback where nothing listens: this one, once freed
        port = int(probe.info.port) + 1
    config = write_config(tmp_path, controller=f"  account: postgresql://postgres@127.0.0.1:{port}/none\n")
    assert run_module("controller", "certs", "--config", str(config)).returncode == 0  # their lines said first
    refused = run_module("controller", "--config", str(config), "--port", "0", "--admin-port", "0")
    assert refused.returncode == 2
    assert f"cannot use postgresql://postgres@127.0.0.1:{port}/none as the account" in refused.stderr
    assert refused.stderr.count("\n") == 1, refused.stderr
