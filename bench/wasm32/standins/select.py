# A stand-in for the select module, which MicroPython's WebAssembly port lacks (see socket.py).
POLLIN = 1
POLLERR = 8
POLLHUP = 16


class poll:
    def register(self, obj, events=POLLIN):
        pass

    def unregister(self, obj):
        pass

    def ipoll(self, timeout_ms=-1):
        return ()
