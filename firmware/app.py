# ESP32 application: load /config.json, start the node, serve Modbus. A bad configuration
# leaves every output in its power-on (de-energised) state and says why on the REPL and,
# where the Modbus settings can still be read, in the CONFIG_ERROR register.
import gc
import sys
import time

import regmap
from hal_esp32 import Board
from modbus_pdu import ModbusSlave
from node import Node, config_error_node

CONFIG_PATH = "/config.json"


def load_config():
    """Validate the configuration, then unload the validator: only its result stays in RAM."""
    import config

    try:
        return config.load(CONFIG_PATH), None
    except config.ConfigError as exc:
        return None, exc
    finally:
        del sys.modules["config"]
        gc.collect()


def main():
    cfg, error = load_config()
    if cfg is None:
        config_error(error)
        return
    board = Board(cfg.reset_pin)
    if cfg.wifi is not None and cfg.tcp is not None:
        if not board.connect_wifi(*cfg.wifi):
            print("wifi: not connected; Modbus TCP answers once the link comes up")
    node = Node(cfg, board)
    servers = board.transports(node.slave, cfg)
    gc.collect()
    print("node %d running: %d channels, %d bytes free" % (cfg.node_id, len(cfg.channels), gc.mem_free()))
    node.run(servers)


def config_error(exc):
    import config

    bank = regmap.RegisterBank()
    servers = []
    try:
        fallback = config.transports_only(CONFIG_PATH)
        config_error_node(bank, fallback.node_id, 1000, exc.code)
        board = Board()
        if fallback.wifi is not None:
            board.connect_wifi(*fallback.wifi)
        servers = board.transports(ModbusSlave(bank, fallback.node_id), fallback)
    except (config.ConfigError, OSError):
        pass  # nothing to serve on: the REPL is the only channel left
    last = time.ticks_add(time.ticks_ms(), -5000)
    while True:
        if time.ticks_diff(time.ticks_ms(), last) >= 5000:
            print("config error:", exc.message)  # repeated so a REPL opened later still sees it
            last = time.ticks_ms()
        for server in servers:
            server.poll(100)
        if not servers:
            time.sleep_ms(100)


def run():
    try:
        main()
    except Exception as exc:  # the watchdog resets the board; outputs are safe at boot
        sys.print_exception(exc)
        raise
