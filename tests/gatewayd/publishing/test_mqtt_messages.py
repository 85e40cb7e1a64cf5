import json

from gatewayd.config import MqttSection
from gatewayd.publishing.mqtt import Publisher, Topics
from gatewayd.store.database import Reading, Store


async def no_store(*args):
    raise AssertionError("not used")


def test_topics():
    t = Topics("plant/", "site-1")
    assert (t.status, t.telemetry("p"), t.health("p"), t.alerts, t.summary("p")) == (
        "plant/site-1/status",
        "plant/site-1/telemetry/p",
        "plant/site-1/health/p",
        "plant/site-1/alerts",
        "plant/site-1/summary/p",
    )


async def test_summary_mode_publishes_minutes_not_readings(tmp_path):
    store = Store(tmp_path / "g.sqlite3")
    store.register_device("p", "edge-node", "x", {}, [("flow", "m3/h")])
    store.write_readings([Reading("p", "flow", 60_000 + 1000 * i, float(i)) for i in range(60)])
    minute = store.minute_of_all(60_000)
    store.close()
    pub = Publisher(MqttSection(host="h", telemetry="summaries"), "site", no_store)
    pub.telemetry("p", 1, {"flow": 1.0}, {"flow": "m3/h"})
    assert pub.queue.empty()
    pub.summary("p", 60_000, minute["p"])
    msg = pub.queue.get_nowait()
    body = json.loads(msg.payload)
    assert msg.topic == "gateway/site/summary/p" and msg.qos == 1
    assert body["schema"] == 1 and body["channels"]["flow"]["count"] == 60 and body["channels"]["flow"]["mean"] == 29.5


async def test_full_queue_drops_and_counts():
    pub = Publisher(MqttSection(host="h"), "site", no_store)
    for i in range(pub.queue.maxsize + 5):
        pub.telemetry("p", i, {"v": 1.0}, {})
    assert pub.dropped == 5 and pub.queue.full()
