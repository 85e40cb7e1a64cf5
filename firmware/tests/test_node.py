import time

import regmap
from node import Node


class Ramp:
    def __init__(self):
        self.t = 0

    def update(self):
        self.t += 1

    def value(self, index):
        return self.t + index / 4


def make_node(period_ms=100):
    bank = regmap.RegisterBank()
    node = Node(9, (("a", "V"), ("b", "mA")), Ramp(), bank, period_ms=period_ms)
    return node, bank


def test_identity_and_descriptors_are_published():
    _, bank = make_node()
    assert bank.get_u16(regmap.IR_MAGIC) == regmap.MAGIC
    assert bank.get_u16(regmap.IR_MAP_VERSION) == 1
    assert bank.get_u16(regmap.IR_NODE_ID) == 9
    assert bank.get_u16(regmap.IR_CHANNEL_COUNT) == 2
    assert bank.get_u16(regmap.IR_SAMPLE_PERIOD_MS) == 100
    name = regmap.descriptor_address(1, regmap.DESC_NAME)
    assert bytes(bank.inputs[2 * name : 2 * name + 2]) == b"b\x00"
    unit = regmap.descriptor_address(1, regmap.DESC_UNIT)
    assert bytes(bank.inputs[2 * unit : 2 * unit + 4]) == b"mA\x00\x00"


def test_sample_writes_values_and_counts():
    node, bank = make_node()
    node.sample(time.ticks_ms())
    node.sample(time.ticks_ms())
    assert bank.get_f32(regmap.channel_address(0, regmap.CH_VALUE)) == 2.0
    assert bank.get_f32(regmap.channel_address(1, regmap.CH_VALUE)) == 2.25
    assert bank.get_u16(regmap.IR_SAMPLE_COUNT + 1) == 2


def test_step_samples_on_schedule_and_counts_overruns():
    node, bank = make_node(period_ms=100)
    t0 = node.next_due_ms
    assert node.step(t0)
    assert not node.step(time.ticks_add(t0, 50))
    assert node.step(time.ticks_add(t0, 100))
    # 350 ms late: one sample, one overrun, schedule restarts from now.
    late = time.ticks_add(t0, 550)
    assert node.step(late)
    assert node.overruns == 1
    assert bank.get_u16(regmap.IR_OVERRUNS) == 1
    assert node.due_in_ms(late) == 100


def test_too_many_channels_is_rejected():
    channels = [("c%d" % i, "") for i in range(regmap.MAX_CHANNELS + 1)]
    try:
        Node(1, channels, Ramp(), regmap.RegisterBank())
    except ValueError:
        return
    raise AssertionError("ValueError not raised")
