# Virtual node: the firmware in the MicroPython unix port, with the simulated pump
# plant as its sensors, served over Modbus TCP.
#   micropython -X heapsize=128k firmware/vnode.py --port 5020 --unit 1 --seed 1
import sys

import gc

import plant
import regmap
from modbus_pdu import ModbusSlave
from modbus_tcp import ModbusTcpServer
from node import Node

USAGE = "usage: vnode.py [--port N] [--bind ADDR] [--unit N] [--seed N] [--period-ms N]"


def parse_args(argv):
    opts = {"port": 5020, "bind": "127.0.0.1", "unit": 1, "seed": 1, "period-ms": 100}
    i = 0
    while i < len(argv):
        key = argv[i]
        if not key.startswith("--") or key[2:] not in opts or i + 1 >= len(argv):
            raise ValueError("bad argument %r\n%s" % (key, USAGE))
        name = key[2:]
        opts[name] = argv[i + 1] if name == "bind" else int(argv[i + 1])
        i += 2
    if not 1 <= opts["unit"] <= 247:
        raise ValueError("--unit must be 1..247")
    if not 10 <= opts["period-ms"] <= 60000:
        raise ValueError("--period-ms must be 10..60000")
    return opts


def main(argv):
    try:
        opts = parse_args(argv)
    except ValueError as exc:
        print("error:", exc)
        return 2
    period = opts["period-ms"]
    bank = regmap.RegisterBank()
    source = plant.PumpPlant(seed=opts["seed"], dt_s=period / 1000)
    node = Node(opts["unit"], plant.CHANNELS, source, bank, period_ms=period)
    try:
        server = ModbusTcpServer(ModbusSlave(bank, opts["unit"]), port=opts["port"], bind=opts["bind"])
    except OSError as exc:
        print("error: cannot listen on %s:%d: %s" % (opts["bind"], opts["port"], exc))
        return 3
    gc.collect()
    print("READY", opts["port"])
    try:
        node.run(server)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


sys.exit(main(sys.argv[1:]))
