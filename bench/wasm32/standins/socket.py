# A stand-in for the socket module, which MicroPython's WebAssembly port lacks: enough for
# the node's Modbus TCP server to start (bench/firmware_heap32.py). Nothing connects.
AF_INET = 2
SOCK_STREAM = 1
SOL_SOCKET = 1
SO_REUSEADDR = 4


def getaddrinfo(host, port):
    return [(AF_INET, SOCK_STREAM, 0, "", (host, port))]


class socket:
    def __init__(self, family=AF_INET, kind=SOCK_STREAM):
        pass

    def setsockopt(self, level, option, value):
        pass

    def bind(self, address):
        pass

    def listen(self, backlog):
        pass

    def setblocking(self, flag):
        pass

    def close(self):
        pass
