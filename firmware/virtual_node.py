# Virtual node: the firmware in the MicroPython unix port, with the simulated pump plant as
# its sensors, served over Modbus TCP (and RTU on a pty when asked).
#   micropython -X heapsize=128k firmware/virtual_node.py --port 5020 --unit 1 --seed 1
import gc
import sys

# The node first, while the heap is empty: the unix port compiles these modules from source,
# and the largest needs the longest free stretch.
from node import Node, config_error_node, unlock_heap  # isort: skip

import config
import regmap
from hal_unix import Board, Scenario
from modbus_pdu import ModbusSlave

USAGE = """usage: virtual_node.py [--port N] [--bind ADDR] [--unit N] [--seed N] [--period-ms N]
                [--config FILE] [--state-dir DIR] [--rtu DEVICE] [--replay CSV]
                [--fault CH:KIND:START[:SIZE]]... [--rig NAME]
--rig NAME: a file in the state dir whose commands drive channels now (`CH KIND [SIZE]`,
            written atomically, as the virtual board's I/O rig)"""

# The simulated pump as a node configuration: what a site would write into config.json.
PUMP_CHANNELS = (
    # name, unit, signal, resolution, physical, bounds, rate limit per 2 s, trips the pump
    ("pressure", "bar", 0, 0.001, (0.0, 16.0), (0.5, 5.0), 3.0, True),
    ("flow", "m3/h", 1, 0.01, (0.0, 60.0), (5.0, 40.0), 20.0, False),
    ("temperature", "C", 2, 0.01, (-40.0, 125.0), (0.0, 60.0), 2.0, False),
    ("current", "A", 3, 0.01, (0.0, 50.0), (0.5, 14.0), 8.0, True),
)


def pump_config(unit, period_ms):
    channels = []
    horizon_s = 20 * period_ms / 1000  # 2 s at the default 100 ms period
    for name, unit_name, signal, resolution, physical, bounds, rate, trips in PUMP_CHANNELS:
        channels.append({
            "name": name, "unit": unit_name, "source": {"type": "sim", "signal": signal},
            "resolution": resolution, "physical": list(physical), "bounds": list(bounds),
            "zscore": {"window": 32, "threshold": 6.0, "tunable": [3.0, 8.0]},
            "rate": {"limit": rate * horizon_s / 2.0, "horizon_s": horizon_s},
            "consecutive": 3, "trips": ["pump_enable"] if trips else [],
        })
    return {
        "node_id": unit, "sample_period_ms": period_ms, "reset_code": 4242,
        "outputs": [{"name": "pump_enable", "pin": 25}], "channels": channels,
        "modbus": {"tcp": {"port": 502}}, "watchdog_ms": max(2000, 8 * period_ms),
    }


def parse_args(argv):
    opts: dict = {"port": 5020, "bind": "127.0.0.1", "unit": 1, "seed": 1, "period-ms": 100,
            "config": None, "state-dir": None, "rtu": None, "replay": None, "rig": None}
    faults = []
    i = 0
    while i < len(argv):
        key = argv[i]
        name = key[2:]
        if not key.startswith("--") or (name not in opts and name != "fault") or i + 1 >= len(argv):
            raise ValueError("bad argument %r\n%s" % (key, USAGE))
        value = argv[i + 1]
        if name == "fault":
            parts = value.split(":")
            if len(parts) not in (3, 4):
                raise ValueError("--fault wants CHANNEL:KIND:START_SAMPLE[:SIZE], got %r" % value)
            faults.append(Scenario(int(parts[0]), parts[1], int(parts[2]), float(parts[3]) if len(parts) == 4 else 0.0))
        elif name in ("bind", "config", "state-dir", "rtu", "replay", "rig"):
            opts[name] = value
        else:
            opts[name] = int(value)
        i += 2
    if not 1 <= opts["unit"] <= 247:
        raise ValueError("--unit must be 1..247")
    if not 10 <= opts["period-ms"] <= 60000:
        raise ValueError("--period-ms must be 10..60000")
    return opts, faults


def main(argv):
    try:
        opts, faults = parse_args(argv)
    except ValueError as exc:
        print("error:", exc)
        return 2
    state_dir = opts["state-dir"] or "/tmp/virtual-node-%d-%d" % (opts["unit"], opts["port"])
    board = Board(state_dir, port=opts["port"], bind=opts["bind"], seed=opts["seed"], scenarios=faults,
                  rtu_device=opts["rtu"], replay=opts["replay"], rig=opts["rig"])
    cfg = None
    try:
        if opts["config"]:
            cfg = config.load(opts["config"])
        else:
            cfg = config.from_dict(pump_config(opts["unit"], opts["period-ms"]))
    except config.ConfigError as exc:
        # Keep the plant safe, say why on the console and in the registers, keep answering.
        print("config error:", exc.message)
        bank = regmap.RegisterBank()
        config_error_node(bank, opts["unit"], opts["period-ms"], exc.code)
        servers = _listen(board, ModbusSlave(bank, opts["unit"]), None)
        if servers is None:
            return 3
        print("READY", opts["port"])
        try:
            while True:
                for s in servers:
                    s.poll(1000)
        except KeyboardInterrupt:
            return 0
    try:
        node = Node(cfg, board)
    except (OSError, ValueError) as exc:
        print("error:", exc)
        return 2
    servers = _listen(board, node.slave, cfg)
    if servers is None:
        return 3
    gc.collect()
    print("READY", opts["port"])
    try:
        node.run(servers)
    except KeyboardInterrupt:
        unlock_heap()  # Ctrl-C may have stopped the cycle with the heap locked
    finally:
        for s in servers:
            if hasattr(s, "close"):
                s.close()
    return 0


def _listen(board, slave, cfg):
    try:
        return board.transports(slave, cfg)
    except OSError as exc:
        print("error: cannot listen on %s:%d: %s" % (board.bind, board.port, exc))
        return None


sys.exit(main(sys.argv[1:]))
