import struct
import time

import config
import detectors as det
import regmap
from node import Node
from node_fixtures import STATE_ROOT, FakeBoard, fresh, node_config, run


def node_register(node, address):
    """A node status or counter register as a master reads it (function 4)."""
    words = read_inputs(node, 0, regmap.IDENTITY_REGISTERS)
    return struct.unpack_from(">H", words, 2 * address)[0]


def write(node, address, words):
    data = bytearray(2 * len(words))
    for i, w in enumerate(words):
        struct.pack_into(">H", data, 2 * i, w)
    return node.on_write(address, data, 0, len(words))


def test_outputs_stay_safe_until_every_window_is_full():
    node, board = fresh("boot")
    assert not board.out[0].energised
    run(node, board, [100, 100], 7)
    assert not board.out[0].energised
    assert node_register(node, regmap.IR_NODE_STATUS) & regmap.STATUS_NOT_READY
    run(node, board, [101, 99], 1)
    assert board.out[0].energised
    assert node_register(node, regmap.IR_OUTPUTS_ENERGISED) == 1


def test_critical_bound_trips_in_the_same_cycle_and_survives_reboot():
    node, board = fresh("trip")
    run(node, board, [0, 0], 8)
    assert board.out[0].energised
    run(node, board, [800, 0], 1)  # 6.25 m (128 counts per m) > 5 m: critical high bound
    assert not board.out[0].energised
    assert node.latch.latched == 1
    cause = node_register(node, regmap.IR_TRIP_CAUSE)
    assert cause == (0 << 8) | det.CHECK_HIGH, cause
    assert node_register(node, regmap.IR_TRIPS + 1) == 1
    # back to normal: stays tripped
    run(node, board, [0, 0], 20)
    assert not board.out[0].energised
    # reboot: a new Node on the same flash is still latched
    board2 = FakeBoard(STATE_ROOT + "-trip")
    node2 = Node(node_config(), board2)
    run(node2, board2, [0, 0], 20)
    assert node2.latch.latched == 1 and not board2.out[0].energised
    assert node_register(node2, regmap.IR_NODE_STATUS) & regmap.STATUS_TRIP_LATCHED


def test_reset_needs_the_code_and_only_permits_restart():
    node, board = fresh("reset")
    run(node, board, [0, 0], 8)
    run(node, board, [800, 0], 1)
    assert write(node, regmap.HR_RESET, [9999]) == 3
    assert node.latch.latched and node.reset_rejects == 1
    # reset while the cause persists: cleared, but the next cycle trips again
    assert write(node, regmap.HR_RESET, [1234]) == 0
    assert node.latch.latched == 0 and not board.out[0].energised
    run(node, board, [800, 0], 1)
    assert node.latch.latched == 1
    run(node, board, [0, 0], 8)
    assert write(node, regmap.HR_RESET, [1234]) == 0
    assert not board.out[0].energised, "a reset must not energise by itself"
    run(node, board, [0, 0], 1)
    assert board.out[0].energised


def test_reset_pin():
    node, board = fresh("pin")
    run(node, board, [0, 0], 8)
    run(node, board, [800, 0], 1)
    board.reset_input.forced = True
    run(node, board, [0, 0], 1)
    board.reset_input.forced = False
    assert node.latch.latched == 0


def test_sensor_fault_trips():
    node, board = fresh("fault")
    run(node, board, [0, 0], 8)
    board.sampler_obj.status[0] = det.INPUT_MISSING
    run(node, board, [0, 0], 1)
    assert node.latch.latched == 1
    assert node_register(node, regmap.IR_TRIP_CAUSE) == det.CHECK_FAULT


def test_warning_does_not_trip():
    node, board = fresh("warn")
    run(node, board, [0, 0], 8)
    run(node, board, [0, 150], 1)  # rate warning on the spare channel
    assert node.detectors[1].level == det.SEVERITY_WARNING
    assert board.out[0].energised and node.latch.latched == 0
    assert node_register(node, regmap.IR_DETECTIONS + 1) >= 1


def test_remote_thresholds_are_clamped_to_the_node_config():
    node, board = fresh("tune")
    hr = regmap.holding_address(0, regmap.HR_HIGH)
    words = struct.unpack(">HH", struct.pack(">f", 50.0))
    assert write(node, hr, list(words)) == 0
    assert node.bank.holding_f32(hr) == 5.0, "a high bound cannot be widened"
    words = struct.unpack(">HH", struct.pack(">f", 3.0))
    assert write(node, hr, list(words)) == 0
    assert node.bank.holding_f32(hr) == 3.0
    assert node.detectors[0].high == 384
    z = regmap.holding_address(0, regmap.HR_Z_THRESHOLD)
    assert write(node, z, [900]) == 0
    assert node.bank.holding_u16(z) == 600
    assert write(node, z, [100]) == 0
    assert node.bank.holding_u16(z) == 200
    rate = regmap.holding_address(0, regmap.HR_RATE_LIMIT)
    words = struct.unpack(">HH", struct.pack(">f", 9.0))
    assert write(node, rate, list(words)) == 0
    assert node.bank.holding_f32(rate) == 2.0


def test_tuning_after_the_channel_configs_are_dropped_holds_infinities_at_the_limits():
    cfg = node_config()
    board = FakeBoard(STATE_ROOT + "-tune-inf")
    node = Node(cfg, board)
    assert cfg.channels == [None, None], "the node releases each channel configuration once built"
    low = regmap.holding_address(0, regmap.HR_LOW)
    high = regmap.holding_address(0, regmap.HR_HIGH)
    minus_inf = struct.unpack(">HH", struct.pack(">f", float("-inf")))
    plus_inf = struct.unpack(">HH", struct.pack(">f", float("inf")))
    assert write(node, low, list(minus_inf)) == 0
    assert node.bank.holding_f32(low) == -5.0, "a low bound cannot be widened"
    assert write(node, high, list(plus_inf)) == 0
    assert node.bank.holding_f32(high) == 5.0
    assert write(node, low, list(plus_inf)) == 0
    assert node.detectors[0].low == node.detectors[0].high == 640, "low is held at or below high"
    words = struct.unpack(">HH", struct.pack(">f", -192.5 / 128))  # resolution 0.01: 1/128 per count
    assert write(node, low, list(words)) == 0
    assert node.detectors[0].low == -193, "rounded half away from zero, as the configuration does"
    rate = regmap.holding_address(1, regmap.HR_RATE_LIMIT)
    assert write(node, rate, list(minus_inf)) == 0
    assert node.bank.holding_f32(rate) == 0.0 and node.detectors[1].rate_limit == 0


def test_half_a_float_and_foreign_addresses_are_refused():
    node, board = fresh("half")
    high = regmap.holding_address(0, regmap.HR_HIGH)
    assert write(node, high + 1, [1]) == 3, "the low word alone is half a value"
    assert write(node, high + 1, [1, 0, 0]) == 3, "so is a block that starts on it"
    assert write(node, high, [1]) == 3, "and the high word alone"
    assert node.bank.holding_f32(high) == 5.0, "nothing of a refused write is applied"
    assert write(node, regmap.holding_address(2, regmap.HR_LOW), [0, 0]) == 2
    assert write(node, 5, [1]) == 2
    nan = struct.unpack(">HH", struct.pack(">f", float("nan")))
    assert write(node, regmap.holding_address(0, regmap.HR_LOW), list(nan)) == 3


def test_watchdog_is_fed_only_after_timely_cycles():
    node, board = fresh("wdt")
    now = node.next_due_ms
    node.step(now)
    fed = board.wdt.feeds
    assert fed == 1
    # a stalled loop: the next cycle runs 5 periods late, no feed
    node.step(time.ticks_add(node.next_due_ms, 500))
    assert board.wdt.feeds == fed
    assert node.overruns == 1


def read_inputs(node, address, count):
    """Input registers as a master reads them: function 4 through the node's slave."""
    pdu = bytearray(struct.pack(">BHH", 4, address, count))
    length = node.slave.handle(pdu, 0, len(pdu))
    assert length == 2 + 2 * count and node.slave.response[0] == 4
    return bytes(node.slave.response[2:length])


def test_values_are_published_as_float32_when_read():
    node, board = fresh("pub")
    run(node, board, [250, -75], 1)
    base = regmap.channel_address(0, regmap.CH_VALUE)
    words = read_inputs(node, base, 2 * regmap.IR_CHANNEL_STRIDE)
    assert struct.unpack_from(">f", words, 0)[0] == 250 / 128
    assert struct.unpack_from(">f", words, 2 * regmap.IR_CHANNEL_STRIDE)[0] == -75 / 128
    # a read of the second channel's Z-score alone packs that channel as of the last sample
    run(node, board, [250, 100], 1)
    z = regmap.channel_address(1, regmap.CH_ZSCORE)
    read_inputs(node, z, 2)
    assert node.bank.get_f32(regmap.channel_address(1, regmap.CH_VALUE)) == 100 / 128
    assert node.bank.get_f32(regmap.channel_address(0, regmap.CH_VALUE)) == 250 / 128
    # a missing input keeps the last good value in its register
    board.sampler_obj.status[1] = det.INPUT_MISSING
    run(node, board, [250, 7], 1)
    read_inputs(node, 0, 120)
    assert node.bank.get_f32(regmap.channel_address(1, regmap.CH_VALUE)) == 100 / 128


def test_status_and_counters_are_those_of_the_last_sample_when_read():
    node, board = fresh("counters")
    run(node, board, [0, 0], 5)
    words = read_inputs(node, 0, regmap.IDENTITY_REGISTERS)
    assert struct.unpack_from(">I", words, 2 * regmap.IR_SAMPLE_COUNT)[0] == 5
    assert struct.unpack_from(">H", words, 2 * regmap.IR_NODE_STATUS)[0] & regmap.STATUS_NOT_READY
    run(node, board, [0, 0], 7)
    assert write(node, regmap.HR_RESET, [9999]) == 3
    words = read_inputs(node, 0, regmap.IDENTITY_REGISTERS)
    assert struct.unpack_from(">I", words, 2 * regmap.IR_SAMPLE_COUNT)[0] == 12
    assert struct.unpack_from(">H", words, 2 * regmap.IR_RESET_REJECTS)[0] == 1
    status = struct.unpack_from(">H", words, 2 * regmap.IR_NODE_STATUS)[0]
    assert status & regmap.STATUS_RUNNING and not status & regmap.STATUS_NOT_READY, status


def test_slow_channel_is_sampled_every_nth_cycle():
    root = STATE_ROOT + "-slow"
    board = FakeBoard(root)
    cfg = node_config()
    cfg2 = config.from_dict({
        "node_id": 5, "sample_period_ms": 100, "reset_code": 1, "outputs": [],
        "channels": [{"name": "fast", "source": {"type": "sim", "signal": 0}, "resolution": 0.01,
                      "physical": [-10, 10], "bounds": [-5, 5], "zscore": {"window": 8}},
                     {"name": "slow", "source": {"type": "sim", "signal": 0}, "resolution": 0.01,
                      "physical": [-10, 10], "bounds": [-5, 5], "zscore": {"window": 8},
                      "sample_period_ms": 500, "rate": {"limit": 0.3, "horizon_s": 30}}],
        "modbus": {"tcp": {"port": 502}},
    })
    assert cfg2.channels[1].divider == 5 and cfg2.channels[1].rate_horizon == 60
    node = Node(cfg2, board)
    run(node, board, [1, 2], 50)
    assert node.detectors[0].filled == 8  # ring of 8, full
    assert node.detectors[1].filled == 10  # 50 cycles, one sample in five
    assert cfg.channels[0].divider == 1


def test_built_a_step_at_a_time_the_node_is_the_one_built_at_once():
    import node as node_module

    whole, _ = fresh("whole")
    cfg = node_config()
    yielded = [n for n in node_module.build_steps(cfg, FakeBoard(STATE_ROOT + "-whole"))]
    stepped = yielded[-1]
    assert len(yielded) == 2 + 2 and all(n is stepped for n in yielded)
    assert isinstance(stepped, Node) and cfg.channels == [None, None]
    assert not stepped.outputs[0].energised  # safe from the first step on
    assert bytes(stepped.bank.inputs) == bytes(whole.bank.inputs)
    assert bytes(stepped.bank.holding) == bytes(whole.bank.holding)
    assert list(stepped.limits) == list(whole.limits)


def test_the_watchdog_starts_only_once_every_channel_is_set_up():
    # Once started it cannot be paused: started earlier, a slow set-up of many channels
    # would reset the board before its first cycle.
    import node as node_module

    board = FakeBoard(STATE_ROOT + "-wdt")
    started = [board.wdt is not None for _ in node_module.build_steps(node_config(), board)]
    assert started == [False, False, False, True]


def test_a_channel_block_is_written_back_whole_with_its_reserved_register():
    node, board = fresh("block")
    base = regmap.holding_address(0, regmap.HR_LOW)
    block = [node.bank.holding_u16(base + i) for i in range(regmap.HR_CHANNEL_STRIDE)]
    low, high = struct.unpack(">HH", struct.pack(">f", -1.0)), struct.unpack(">HH", struct.pack(">f", 2.0))
    block[0:2], block[2:4], block[7] = low, high, 0xBEEF
    assert write(node, base, block) == 0, "read, changed and written back as one block"
    assert (node.bank.holding_f32(base), node.bank.holding_f32(base + 2)) == (-1.0, 2.0)
    assert node.bank.holding_u16(base + regmap.HR_RESERVED) == 0, "the reserved register ignores what it got"
    assert write(node, base + regmap.HR_RESERVED, [7]) == 0 and node.bank.holding_u16(base + 7) == 0
    assert write(node, base + regmap.HR_RESERVED, [7, 0]) == 2, "a block crossing into the next channel"


def test_a_low_bound_above_the_high_one_is_held_at_it():
    node, board = fresh("order")
    low = regmap.holding_address(0, regmap.HR_LOW)
    high = regmap.holding_address(0, regmap.HR_HIGH)
    assert write(node, high, list(struct.unpack(">HH", struct.pack(">f", 2.0)))) == 0
    assert write(node, low, list(struct.unpack(">HH", struct.pack(">f", 3.0)))) == 0
    assert node.bank.holding_f32(low) == node.bank.holding_f32(high) == 2.0
