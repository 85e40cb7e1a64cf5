"""`gatewayd probe` against pymodbus servers: a register decoded with the other orders beside
it, a configured generic device read as the daemon reads it, and every failure named with
exit 1 (a Modbus exception, a unit that does not answer, a refused connection)."""

import asyncio
import threading

import pytest
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

from gatewayd.cli.main import main
from gatewayd.cli.probe import parse_spec
from gatewayd.demo.virtual_node import free_port
from tests.gatewayd.acquisition.test_generic_devices import device_context


@pytest.fixture
def server():
    """A pymodbus server on its own loop in a thread (the CLI runs its own loop)."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder = {}

    async def serve():
        holder["server"] = ModbusTcpServer(
            ModbusServerContext(devices=device_context(), single=True), address=("127.0.0.1", port)
        )
        task = asyncio.create_task(holder["server"].serve_forever())
        while not holder["server"].is_active():
            await asyncio.sleep(0.01)
        started.set()
        await task

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert started.wait(10)
    yield port
    asyncio.run_coroutine_threadsafe(holder["server"].shutdown(), loop).result(10)
    thread.join(10)
    loop.close()


def test_a_float_with_every_order_beside_it(server, capsys):
    assert main(["probe", "--host", "127.0.0.1", "--port", str(server), "--register", "holding:6:float32"]) == 0
    out = capsys.readouterr().out
    assert "holding 6..7" in out and "float32 ABCD (word_order big, byte_order big): 123.456  <- configured" in out
    assert out.count("float32 ") == 4  # CDAB, BADC, DCBA beside it
    assert main(["probe", "--host", "127.0.0.1", "--port", str(server), "--register", "holding:8:float32"]) == 0
    assert "BADC (word_order big, byte_order little): -0.5" in capsys.readouterr().out  # the right order shows


def test_a_configured_device_as_the_daemon_reads_it(server, tmp_path, capsys):
    config = tmp_path / "gatewayd.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}"\n[[devices]]\nname = "meter"\nprofile = "generic"\n'
        f'host = "127.0.0.1"\nport = {server}\n'
        '[[devices.registers]]\nname = "temp"\naddress = 20\nscale = 0.1\noffset = -40\nunit = "C"\n'
        '[[devices.registers]]\nname = "u32"\naddress = 4\ntype = "uint32"\nword_order = "little"\n'
    )
    assert main(["probe", "meter", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "temp = 25 C" in out and "u32 = 3e+09" in out
    assert "uint32 CDAB (word_order little, byte_order big): 3e+09  <- configured" in out


def test_failures_are_named(server, capsys):
    assert main(["probe", "--host", "127.0.0.1", "--port", str(server), "--register", "holding:5000"]) == 1
    assert "Modbus exception 2 (illegal data address)" in capsys.readouterr().err
    assert main(["probe", "--host", "127.0.0.1", "--port", str(free_port()), "--register", "input:0"]) == 1
    assert "cannot connect to 127.0.0.1" in capsys.readouterr().err

    async def silent_server():
        mute = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        return mute

    loop = asyncio.new_event_loop()
    mute = loop.run_until_complete(silent_server())
    port = mute.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        args = ["probe", "--host", "127.0.0.1", "--port", str(port), "--timeout", "0.3", "--register", "input:0"]
        assert main(args) == 1
        assert "unit 1 did not answer within 0.3 s" in capsys.readouterr().err
    finally:
        loop.call_soon_threadsafe(mute.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_bad_specs_and_40001_addresses(server, capsys):
    assert parse_spec("holding:40001").address == 40001  # a valid protocol address: probed, with a hint
    assert main(["probe", "--host", "127.0.0.1", "--port", str(server), "--register", "holding:40007:float32"]) == 1
    err = capsys.readouterr().err
    assert "its protocol address is holding:6" in err and "Modbus exception 2" in err
    for bad in ("holding", "registers:1", "holding:x", "coil:1:uint16", "input:1:bit", "holding:70000", "input:1:word"):
        with pytest.raises((ValueError, KeyError)):
            parse_spec(bad)
    assert main(["probe", "--register", "holding:1"]) == 2
    assert "name a device of the configuration, or give --host and --register" in capsys.readouterr().err
