# The sample cycle and the serving of requests on the heap: nothing allocated, and the
# detection runs with the heap locked (the sampler outside it). A module of its own: each test module is compiled from
# source on the node's heap.
import struct
import time

import detectors as det
from node_fixtures import cycles, fresh


def test_full_sample_cycle_allocates_nothing():
    import gc

    node, board = fresh("alloc")
    board.sampler_obj.values[0] = 37
    board.sampler_obj.values[1] = -12
    cycles(node, 20)  # warm-up done, outputs energised, every counter written once
    assert board.out[0].energised
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        cycles(node, 300)
        used = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert used == 0, used


def test_detectors_run_with_the_heap_locked_and_leave_it_unlocked():
    class AllocatingDetector(det.ChannelDetector):
        def update(self, q, status=det.INPUT_OK):
            self.history = [q]  # the allocation the cycle must never make
            return det.ChannelDetector.update(self, q, status)

    node, _ = fresh("heap-lock")
    cycles(node, 5)
    sound = node.detectors[1]
    node.detectors[1] = AllocatingDetector(window_bits=sound.window_bits)
    try:
        node.sample(time.ticks_ms())
    except MemoryError:
        pass
    else:
        raise AssertionError("an allocation inside a detector went through")
    assert len(bytearray(16)) == 16  # the node released its lock: allocating works again
    node.detectors[1] = sound
    cycles(node, 5)  # and the cycle goes on


def test_an_interrupt_between_a_lock_and_its_try_still_leaves_the_heap_unlocked():
    # The unix port raises Ctrl-C from its signal handler, so it can land after _detect()
    # unlocks for the sampler and before the try that locks again: the lock is one short
    # when the exception reaches sample(). This sampler leaves it so.
    import micropython

    node, board = fresh("heap-interrupt")
    cycles(node, 5)
    plain_read = board.sampler_obj.read

    def interrupted_read(index):
        micropython.heap_unlock()
        raise KeyboardInterrupt

    board.sampler_obj.read = interrupted_read
    try:
        node.sample(time.ticks_ms())
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the interrupt did not reach the caller")
    assert len(bytearray(16)) == 16  # unlocked, not one below unlocked
    board.sampler_obj.read = plain_read
    cycles(node, 5)


def test_unlock_heap_unlocks_from_either_depth():
    import micropython
    from node import unlock_heap

    micropython.heap_lock()
    unlock_heap()
    assert len(bytearray(16)) == 16
    unlock_heap()  # not locked: stays unlocked
    assert len(bytearray(16)) == 16


def test_a_sampler_may_allocate():
    # A driver's I/O (an I2C read returns bytes) runs outside the lock.
    node, board = fresh("sampler-alloc")
    sampler = board.sampler_obj
    sampler.log = []
    plain_read = sampler.read

    def logging_read(index):
        sampler.log.append(bytes(4))
        return plain_read(index)

    sampler.read = logging_read
    cycles(node, 20)
    assert len(sampler.log) == 40 and board.out[0].energised


def test_cycle_counters_wrap_at_2_30_as_their_registers():
    # Wider, they would be heap objects on the ESP32: the cycle would allocate, and a
    # detection counted with the heap locked would fail.
    node, board = fresh("wrap")
    cycles(node, 20)
    node.samples = (1 << 30) - 2
    node.detections = (1 << 30) - 1
    board.sampler_obj.values[1] = 400  # channel 1 beyond its bounds: its checks become active
    cycles(node, 3)
    assert node.samples == 1, node.samples
    assert 0 <= node.detections < 8, node.detections


def test_serving_reads_allocates_nothing():
    import gc

    node, _ = fresh("read-alloc")
    cycles(node, 20)
    requests = []
    for function, address, count in ((4, 0, 24), (4, 100, 20), (4, 105, 3), (3, 16, 16)):
        pdu = bytearray(5)
        struct.pack_into(">BHH", pdu, 0, function, address, count)
        requests.append(pdu)
    for pdu in requests:
        node.slave.handle(pdu, 0, 5)  # the first pass may settle anything lazy
    gc.collect()
    gc.disable()
    try:
        before = gc.mem_alloc()
        for _ in range(50):
            for pdu in requests:
                assert node.slave.handle(pdu, 0, 5) > 2
        used = gc.mem_alloc() - before
    finally:
        gc.enable()
    assert used == 0, used
