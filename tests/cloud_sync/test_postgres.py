"""The fleet's backend on the suite's own PostgreSQL: two servers as one endpoint, a batch stored
once when both receive it at once, monthly partitions and retention, bundles every server
sees, and the fleet view."""

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from cloud_sync.cli import main
from cloud_sync.server import BackgroundEndpoint, open_parts
from gatewayd.demo.virtual_node import free_port
from gatewayd.models.bundle import generate_keypair
from tests.cloud_sync.test_endpoint import alert, batch
from tests.cloud_sync.uploads import store_batch, summary_records
from tests.faults.support import wait_for

pytestmark = pytest.mark.integration


def test_two_servers_receiving_the_same_batches_at_once_store_each_once(tmp_path, postgres_url):
    servers = [BackgroundEndpoint(tmp_path / f"s{i}", database=postgres_url) for i in range(2)]
    token = servers[0].tokens.issue("gw")
    try:
        answers: list[dict] = []
        lock = threading.Lock()

        def send(server, body, batch_id, barrier):
            barrier.wait()
            r = requests.post(
                f"{server.url}/v1/batches",
                data=gzip.compress(body, mtime=0),
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": batch_id, "Content-Encoding": "gzip"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            with lock:
                answers.append({"batch": batch_id, **r.json()})

        for round_ in range(20):
            records = [alert(f"outbox:{round_}-{i}", id=f"a{round_}-{i}") for i in range(50)]
            body = batch(*records)
            barrier = threading.Barrier(4)
            threads = [
                threading.Thread(target=send, args=(servers[i % 2], body, f"b:{round_}", barrier)) for i in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        stored = servers[1].storage.records("gw")
        assert len(stored) == len({r["key"] for r in stored}) == 20 * 50
        for round_ in range(20):
            mine = [a for a in answers if a["batch"] == f"b:{round_}"]
            assert sorted(a["accepted"] for a in mine) == [0, 0, 0, 50]
            assert sum(a["duplicate"] for a in mine) == 3
        assert servers[0].storage.usage("gw")["batches"] == 20
    finally:
        for s in servers:
            s.stop()


def test_serve_with_two_workers_takes_a_token_issued_while_it_runs(tmp_path, postgres_url, capsys):
    port = free_port()
    data = tmp_path / "cloud"
    server = subprocess.Popen(
        [sys.executable, "-m", "cloud_sync", "serve", "--data", str(data), "--database", postgres_url]
        + ["--port", str(port), "--workers", "2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy():
            try:
                return requests.get(f"{url}/v1/health", timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for("the server", healthy, 60)
        assert main(["token", "gw", "--data", str(data), "--database", postgres_url]) == 0
        token = capsys.readouterr().out.strip()
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {token}"
        for i in range(40):  # over new connections, so both worker processes answer some
            r = requests.post(
                f"{url}/v1/batches",
                data=batch(alert(f"outbox:{i}", id=f"a{i}")),
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"b:{i}", "Connection": "close"},
                timeout=10,
            )
            assert r.status_code == 200 and r.json()["accepted"] == 1
        assert s.get(f"{url}/v1/models", timeout=5).json() == {"models": []}
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    storage, _, _ = open_parts(data, postgres_url)
    assert len(storage.records("gw", "alert")) == 40
    storage.close()


def test_several_workers_need_a_database(tmp_path, capsys):
    assert main(["serve", "--data", str(tmp_path), "--workers", "2"]) == 2
    assert "shared database" in capsys.readouterr().err


def test_records_go_to_monthly_partitions_and_retention_empties_them(tmp_path, postgres_url):
    storage, _, _ = open_parts(tmp_path, postgres_url)
    try:
        assert store_batch(storage, "gw", summary_records(["pump-1"], 30)) == 30
        assert store_batch(storage, "gw", [alert()]) == 1
        partitions = storage._rows(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'records'"
        )
        assert len(partitions) == 2  # this month and the next
        assert storage._rows("SELECT count(*) FROM schema_migrations")[0][0] == 1
        later = int(time.time() * 1000) + 500 * 86_400_000
        deleted = storage.prune({"summary": 400}, later)
        assert deleted["summary"] == 30
        assert [r["kind"] for r in storage.records("gw")] == ["alert"]  # alerts are kept
        storage.prune({"summary": 400, "alert": 400}, later)
        assert storage.records("gw") == []
        assert storage._rows("SELECT count(*) FROM record_keys")[0][0] == 0  # their keys with them
        # a second server starting on the same database finds it migrated
        other, _, _ = open_parts(tmp_path, postgres_url)
        assert other._rows("SELECT count(*) FROM schema_migrations")[0][0] == 1
        other.close()
    finally:
        storage.close()


def test_bundles_published_by_one_are_served_by_every_server_and_the_fleet_view(tmp_path, postgres_url, capsys):
    a = BackgroundEndpoint(tmp_path / "a", database=postgres_url)
    b = BackgroundEndpoint(tmp_path / "b", database=postgres_url)
    try:
        token = a.tokens.issue("gw")
        store_batch(a.storage, "gw", summary_records(["pump-1"], 60))
        health = {
            "key": "health:1",
            "kind": "health",
            "payload": {"minute_ms": 1, "devices": {"pump-1": {"state": "ok"}}, "backlog": {"alerts": 3, "labels": 4}},
        }
        loaded = {
            "key": "outbox:9",
            "kind": "model_event",
            "payload": {"event": "loaded", "name": "pump-1", "version": 1, "ts_ms": 2},
        }
        store_batch(a.storage, "gw", [health, loaded, alert()])
        generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
        common = ["--data", str(tmp_path / "a"), "--database", postgres_url]
        assert (
            main(["retrain", "--gateway", "gw", "--device", "pump-1", *common, "--key", str(tmp_path / "k.pem")]) == 0
        )
        assert "published pump-1 v2 for gw" in capsys.readouterr().out  # above the version the gateway runs
        headers = {"Authorization": f"Bearer {token}"}
        for server in (a, b):
            assert requests.get(f"{server.url}/v1/models", headers=headers, timeout=5).json()["models"] == [
                {"name": "pump-1", "version": 2, "url": "/v1/models/pump-1/2"}
            ]
        archive = requests.get(f"{b.url}/v1/models/pump-1/2", headers=headers, timeout=5)
        assert archive.status_code == 200 and archive.content[:2] == b"\x1f\x8b"
        assert main(["fleet", *common, "--json"]) == 0
        (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert row["gateway"] == "gw" and row["backlog"] == 7 and row["alerts_open"] == 1
        assert row["models"] == {"pump-1": 1} and row["silent"] is False
        assert main(["fleet", *common, "--silent-after", "0"]) == 0
        assert "SILENT" in capsys.readouterr().out
    finally:
        a.stop()
        b.stop()


def test_an_endpoint_whose_database_is_away_answers_503(tmp_path, postgres_server):
    url = postgres_server.create_database("away")
    ep = BackgroundEndpoint(tmp_path / "cloud", database=url)
    token = ep.tokens.issue("gw")
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "b:1"}
    try:
        assert requests.post(f"{ep.url}/v1/batches", data=batch(alert()), headers=headers, timeout=10).ok
        # every connection of the pool ended by the server (as when the database restarts)
        subprocess.run(
            [
                str(postgres_server.bin_dir / "psql"),
                postgres_server.url,
                "-qc",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'away'",
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
        )
        answers = {
            requests.post(
                f"{ep.url}/v1/batches",
                data=batch(alert(f"outbox:{i}")),
                headers={**headers, "Idempotency-Key": f"b:{i}"},
                timeout=10,
            ).status_code
            for i in range(2, 12)
        }
        assert answers <= {200, 503} and 200 in answers  # broken connections answer 503, then the pool recovers
    finally:
        ep.stop()
