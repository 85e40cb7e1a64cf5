import regmap
from helpers import assert_close


def test_float_is_stored_high_word_first():
    bank = regmap.RegisterBank()
    bank.set_f32(100, 1.5)
    assert bytes(bank.inputs[200:204]) == b"\x3f\xc0\x00\x00"
    assert_close(bank.get_f32(100), 1.5, 0)


def test_u32_is_stored_high_word_first():
    bank = regmap.RegisterBank()
    bank.set_u32(6, 0x00010002)
    assert bank.get_u16(6) == 1
    assert bank.get_u16(7) == 2


def test_text_is_nul_padded_and_truncated():
    bank = regmap.RegisterBank()
    bank.set_text(300, "flow", 6)
    assert bytes(bank.inputs[600:612]) == b"flow" + b"\x00" * 8
    bank.set_text(300, "a-very-long-channel-name", 2)
    assert bytes(bank.inputs[600:604]) == b"a-ve"


def test_channel_blocks_do_not_overlap_descriptors():
    last = regmap.channel_address(regmap.MAX_CHANNELS - 1, regmap.CH_SEVERITY)
    assert last < regmap.IR_DESCRIPTOR_BASE
    assert regmap.descriptor_address(regmap.MAX_CHANNELS, 0) == regmap.INPUT_REGISTER_COUNT


def test_scaled_counts_encode_exactly_as_float32():
    import gc
    import struct

    bank = regmap.RegisterBank()
    cases = ((0, 0), (1, 0), (-1, 0), (250, 7), (-75, 7), (1 << 20, 10), (-(1 << 20), 20), (3, 12), (12345, 4))
    for counts, k in cases:
        bank.set_scaled(100, counts, k)
        expected = struct.pack(">f", counts / (1 << k))
        assert bytes(bank.inputs[200:204]) == expected, (counts, k, bytes(bank.inputs[200:204]), expected)
    bank.set_scaled(100, 1, 140)  # below float32's normal range
    assert bytes(bank.inputs[200:204]) == b"\x00\x00\x00\x00"
    bank.set_scaled(100, -1, 140)
    assert bytes(bank.inputs[200:204]) == b"\x80\x00\x00\x00"
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for i in range(200):
        bank.set_scaled(100, i - 100, 5)
    used = gc.mem_alloc() - before
    gc.enable()
    assert used == 0, used
