# Node application (ESP32, or the virtual board): load config.json, start the node, serve
# Modbus. A bad configuration leaves every output in its power-on (de-energised) state and
# says why on the REPL and, where the Modbus settings can still be read, in the CONFIG_ERROR
# register.
#
# The configuration is validated before the node's own modules are imported, so that the
# validator and the parsed JSON are back in the heap before the node's code comes in: the
# heap at boot peaks at the larger of the two, not at their sum.
import gc
import sys
import time


def board_class():
    if sys.platform == "esp32":
        from hal_esp32 import Board
    else:  # the virtual board: this application in the unix port, its flash a folder
        from hal_unix import VirtualBoard as Board
    return Board


# Relative to the flash root, the current folder at boot ("/" on the ESP32).
CONFIG_PATH = "config.json"


def load_config():
    """Validate the configuration, then unload the validator: only its result stays in RAM."""
    import config

    try:
        return config.load(CONFIG_PATH), None
    except config.ConfigError as exc:
        return None, exc
    finally:
        del sys.modules["config"]  # freed by the caller's collection: this frame still holds it


def main():
    cfg, error = load_config()
    gc.collect()
    if cfg is None:
        config_error(error)
        return
    import regmap
    from node import Node

    Board = board_class()
    gc.collect()  # what loading the code left behind: the node's buffers then start in a clean heap
    board = Board(cfg.reset_pin)
    if cfg.wifi is not None and cfg.tcp is not None:
        if not board.connect_wifi(*cfg.wifi):
            print("wifi: not connected; Modbus TCP answers once the link comes up")
    node = Node(cfg, board)  # takes the channel configurations over, releasing each as it goes
    servers = board.transports(node.slave, cfg)
    channel_count = len(cfg.channels)
    gc.collect()
    # The identity line edge-flash reads back after a deploy.
    print("node %d running: %d channels, register map %d, firmware %d.%d, %d bytes free" % (
        cfg.node_id, channel_count, regmap.MAP_VERSION, regmap.FW_VERSION >> 8, regmap.FW_VERSION & 0xFF,
        gc.mem_free()))
    node.run(servers)


def config_error(exc):
    import config
    import regmap
    from modbus_pdu import ModbusSlave
    from node import config_error_node

    Board = board_class()
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
    finally:
        # A Ctrl-C (a console, a deploy) may stop the node with its heap locked: the REPL
        # that follows must be able to allocate.
        if "node" in sys.modules:
            sys.modules["node"].unlock_heap()
