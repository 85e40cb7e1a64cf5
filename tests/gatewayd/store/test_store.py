import sqlite3

import pytest

from gatewayd.store import migrations
from gatewayd.store.database import Reading, Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "g.sqlite3")
    yield s
    s.close()


def test_database_is_in_wal_mode_with_migrations_recorded(store):
    assert store.journal_mode() == "wal"
    assert migrations.applied(store.conn) == [name for name, _ in migrations.MIGRATIONS]


def test_migrations_are_not_applied_twice(tmp_path):
    Store(tmp_path / "g.sqlite3").close()
    conn = sqlite3.connect(tmp_path / "g.sqlite3")
    assert migrations.migrate(conn) == []
    conn.close()


def test_write_and_summarise(store):
    store.register_device("pump-1", "edge-node", "tcp://h:502/1", {"node_id": 1}, [("flow", "m3/h"), ("temp", "C")])
    n = store.write_readings(
        [
            Reading("pump-1", "flow", 1000, 20.0),
            Reading("pump-1", "flow", 2000, 22.0),
            Reading("pump-1", "temp", 2000, 30.5),
        ]
    )
    assert n == 3
    assert store.reading_count() == 3
    assert store.reading_count("pump-1") == 3
    by_channel = {s.channel: s for s in store.summaries()}
    assert (by_channel["flow"].count, by_channel["flow"].mean, by_channel["flow"].last) == (2, 21.0, 22.0)
    assert by_channel["temp"].unit == "C"
    assert {s.channel: s.count for s in store.summaries(since_ms=1500)} == {"flow": 1, "temp": 1}


def test_channel_ids_survive_reopening(tmp_path):
    s = Store(tmp_path / "g.sqlite3")
    s.register_device("n", "edge-node", "a", {}, [("a", ""), ("b", "")])
    s.write_readings([Reading("n", "b", 1, 1.0)])
    s.close()
    s = Store(tmp_path / "g.sqlite3")
    s.register_device("n", "edge-node", "a", {}, [("b", ""), ("a", "")])
    s.write_readings([Reading("n", "b", 2, 2.0)])
    assert {x.channel: x.count for x in s.summaries()} == {"a": 0, "b": 2}
    s.close()


def test_unknown_channel_writes_nothing(store):
    store.register_device("n", "edge-node", "a", {}, [("a", "")])
    with pytest.raises(KeyError):
        store.write_readings([Reading("n", "a", 1, 1.0), Reading("n", "zzz", 1, 1.0)])
    assert store.reading_count() == 0
