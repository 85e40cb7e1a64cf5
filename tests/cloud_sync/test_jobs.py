"""Retraining as jobs: in this process (the embedded default), and on the Redis queue with
`cloud-sync worker` processes on the shared PostgreSQL, one of them killed mid-job."""

import os
import signal
import subprocess
import sys
import time

import pytest

from cloud_sync.cli import main
from cloud_sync.server import open_parts
from gatewayd.models.bundle import generate_keypair
from tests.cloud_sync.uploads import store_batch, summary_records
from tests.faults.support import wait_for

GATEWAYS = {"gw-a": ["pump-1", "pump-2"], "gw-b": ["pump-1"]}


def fill(data, database=None, minutes=120):
    storage, _, _ = open_parts(data, database)
    for seed, (gateway, devices) in enumerate(GATEWAYS.items()):
        assert store_batch(storage, gateway, summary_records(devices, minutes, seed=seed)) == minutes
    storage.close()


def test_fleet_retrain_runs_a_job_per_scope_here_and_reports_them(tmp_path, capsys):
    data = tmp_path / "cloud"
    fill(data)
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    assert main(["retrain", "--fleet", "--data", str(data), "--key", str(tmp_path / "k.pem"), "--trees", "20"]) == 0
    published = capsys.readouterr().out
    # a job per device of each gateway, and the global model for the fleet
    assert published.count("published") == 4 and "published global v1 for the fleet" in published
    storage, bundles, _ = open_parts(data, None)
    assert bundles.latest("gw-a") == [("global", 1), ("pump-1", 1), ("pump-2", 1)]
    assert bundles.latest("gw-b") == [("global", 1), ("pump-1", 1)]
    jobs = storage.jobs()
    assert len(jobs) == 4 and {j["state"] for j in jobs} == {"done"} and {j["attempts"] for j in jobs} == {1}
    storage.close()
    assert main(["jobs", "--data", str(data)]) == 0
    assert capsys.readouterr().out.startswith("4 done")


def test_a_job_run_again_publishes_no_second_version(tmp_path):
    from cloud_sync.jobs import Scope, job_id, run_job

    data = tmp_path / "cloud"
    fill(data)
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    storage, bundles, _ = open_parts(data, None)
    scope = Scope("pump-1", ["gw-a", "gw-b"], ["pump-1"], ["gw-a", "gw-b"], trees=10)
    job = job_id("r1", scope)
    storage.create_job(job, scope.__dict__, 0)
    assert run_job(storage, bundles, tmp_path / "k.pem", job) == 1
    # as if the worker died after publishing, before the job was marked done: the queue runs it again
    storage.job_started(job, "killed", 1)
    assert run_job(storage, bundles, tmp_path / "k.pem", job) == 1
    assert bundles.versions("gw-a", "pump-1") == [1] and bundles.versions("gw-b", "pump-1") == [1]
    assert storage.job(job)["attempts"] == 3 and storage.job(job)["state"] == "done"
    storage.close()


def _worker(tmp_path, data, database, queue, name):
    with open(tmp_path / f"{name}.log", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "cloud_sync", "worker", "--data", str(data), "--database", database]
            + ["--queue", queue, "--key", str(tmp_path / "k.pem"), "--processes", "1", "--dead-worker-s", "2"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the kill takes the worker process too
        )


@pytest.mark.integration
def test_workers_on_the_queue_survive_a_killed_worker_and_publish_once(tmp_path, postgres_url, redis_server, capsys):
    data = tmp_path / "cloud"
    fill(data, postgres_url, minutes=1500)
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    common = ["--data", str(data), "--database", postgres_url]
    assert main(["retrain", "--fleet", *common, "--key", str(tmp_path / "k.pem"), "--queue", redis_server.url]) == 0
    assert "queued 4 job(s)" in capsys.readouterr().out
    storage, bundles, _ = open_parts(data, postgres_url)
    assert {j["state"] for j in storage.jobs()} == {"queued"}
    first = _worker(tmp_path, data, postgres_url, redis_server.url, "first")
    try:
        running = wait_for(
            "a job to start", lambda: next((j for j in storage.jobs() if j["state"] == "running"), None), 60
        )
        os.killpg(first.pid, signal.SIGKILL)  # mid-job: no ack, no cleanup
        first.wait(10)
        assert storage.job(running["id"])["state"] == "running"  # killed before it finished
        second = _worker(tmp_path, data, postgres_url, redis_server.url, "second")
        try:
            wait_for("every job done", lambda: {j["state"] for j in storage.jobs()} == {"done"}, 240)
        finally:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    jobs = {j["id"]: j for j in storage.jobs()}
    assert jobs[running["id"]]["attempts"] >= 2 and jobs[running["id"]]["worker"] != running["worker"]
    # one version per scope, whatever ran twice
    assert bundles.versions("gw-a", "pump-1") == [1] and bundles.versions("gw-a", "pump-2") == [1]
    assert bundles.versions("gw-b", "pump-1") == [1] and bundles.versions("fleet", "global") == [1]
    assert dict(bundles.latest("gw-b")) == {"global": 1, "pump-1": 1}
    storage.close()
    assert main(["jobs", *common]) == 0
    assert capsys.readouterr().out.startswith("4 done")


def test_the_scale_floor_asked_for_goes_with_each_job(tmp_path):
    data = tmp_path / "cloud"
    fill(data, minutes=60)
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    common = ["--data", str(data), "--key", str(tmp_path / "k.pem"), "--trees", "10"]
    assert main(["retrain", "--fleet", *common, "--scale-floor", "0.05"]) == 0
    storage, _, _ = open_parts(data, None)
    assert {j["scope"]["scale_floor"] for j in storage.jobs()} == {0.05}
    storage.close()


def test_worker_and_prune_refuse_what_they_cannot_do(tmp_path, capsys):
    data = str(tmp_path / "cloud")
    assert main(["worker", "--data", data, "--key", str(tmp_path / "none.pem")]) == 2
    assert "--queue" in capsys.readouterr().err
    assert main(["worker", "--data", data, "--queue", "redis://127.0.0.1:9/0", "--key", str(tmp_path / "x")]) == 2
    assert "no signing key" in capsys.readouterr().err
    assert main(["prune", "--data", data, "--keep", "summary=soon"]) == 2
    assert "KIND=DAYS" in capsys.readouterr().err
    fill(tmp_path / "cloud", minutes=10)
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub")
    retrain = ["retrain", "--fleet", "--data", data]
    assert main([*retrain, "--key", str(tmp_path / "missing.pem")]) == 2
    assert "no signing key" in capsys.readouterr().err
    assert main([*retrain, "--key", str(tmp_path / "k.pem"), "--queue", "redis://127.0.0.1:9/0"]) == 2
    assert "cannot be reached" in capsys.readouterr().err


def test_prune_deletes_a_kind_past_its_retention_and_keeps_the_rest(tmp_path, capsys):
    from tests.cloud_sync.test_endpoint import alert

    data = tmp_path / "cloud"
    fill(data, minutes=30)
    storage, _, _ = open_parts(data, None)
    store_batch(storage, "gw-a", [alert()])
    stored_by = max(ms for (ms,) in storage._rows("SELECT received_ms FROM records"))
    storage.close()
    wait_for("the clock to pass the last arrival", lambda: time.time() * 1000 > stored_by + 1, 5)
    assert main(["prune", "--data", str(data), "--keep", "summary=0"]) == 0
    assert "summary: 60 deleted" in capsys.readouterr().out  # 30 minutes of each gateway
    storage, _, _ = open_parts(data, None)
    assert [r["kind"] for r in storage.records("gw-a")] == ["alert"]
    storage.close()
