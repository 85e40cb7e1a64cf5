# Modbus TCP transport: MBAP framing over non-blocking sockets, driven by poll() from
# the node's main loop so that sampling never waits on the network.
import select
import socket
from micropython import const

from modbus_pdu import EX_GATEWAY_NO_RESPONSE

_MBAP = const(7)
_MAX_ADU = const(260)


class _Connection:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray(_MAX_ADU)
        self.view = memoryview(self.buf)
        self.fill = 0


class ModbusTcpServer:
    def __init__(self, slave, port=502, bind="0.0.0.0", max_clients=4):
        self.slave = slave
        self.max_clients = max_clients
        self.out = bytearray(_MBAP + 256)
        self.out_view = memoryview(self.out)
        self.connections = []
        self.dropped = 0
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(socket.getaddrinfo(bind, port)[0][-1])
        listener.listen(max_clients)
        listener.setblocking(False)
        self.listener = listener
        self.poller = select.poll()
        self.poller.register(listener, select.POLLIN)

    def close(self):
        for conn in self.connections:
            conn.sock.close()
        self.connections = []
        self.listener.close()

    def poll(self, timeout_ms):
        """Serve whatever is ready, waiting at most timeout_ms for the first event."""
        for obj, event in self.poller.ipoll(timeout_ms):
            if obj is self.listener:
                self._accept()
            else:
                conn = self._find(obj)
                if conn is None:
                    self.poller.unregister(obj)
                elif event & (select.POLLHUP | select.POLLERR):
                    self._drop(conn)
                else:
                    self._read(conn)

    def _find(self, sock):
        for conn in self.connections:
            if conn.sock is sock:
                return conn
        return None

    def _accept(self):
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        if len(self.connections) >= self.max_clients:
            # Oldest first out: a master that reconnects must not be locked out by stale sockets.
            self._drop(self.connections[0])
        sock.setblocking(False)
        self.connections.append(_Connection(sock))
        self.poller.register(sock, select.POLLIN)

    def _drop(self, conn):
        self.dropped += 1
        try:
            self.poller.unregister(conn.sock)
        except (OSError, ValueError):
            pass
        conn.sock.close()
        self.connections.remove(conn)

    def _read(self, conn):
        try:
            n = conn.sock.readinto(conn.view[conn.fill :])
        except OSError:
            self._drop(conn)
            return
        if n is None:
            return
        if n == 0:
            self._drop(conn)
            return
        conn.fill += n
        while conn.fill >= _MBAP:
            buf = conn.buf
            length = buf[4] << 8 | buf[5]
            if buf[2] or buf[3] or length < 2 or length > _MAX_ADU - 6:
                self._drop(conn)  # not Modbus: resynchronising a TCP stream is guesswork
                return
            total = 6 + length
            if conn.fill < total:
                return
            self._answer(conn, total)
            remaining = conn.fill - total
            for i in range(remaining):
                buf[i] = buf[total + i]
            conn.fill = remaining

    def _answer(self, conn, total):
        buf = conn.buf
        slave = self.slave
        unit = buf[6]
        if unit == slave.unit or unit == 0 or unit == 0xFF:
            n = slave.handle(buf, _MBAP, total - _MBAP)
        else:
            n = slave.exception(buf[_MBAP], EX_GATEWAY_NO_RESPONSE)
        out = self.out
        out[0] = buf[0]
        out[1] = buf[1]
        out[2] = 0
        out[3] = 0
        out[4] = (n + 1) >> 8
        out[5] = (n + 1) & 0xFF
        out[6] = unit
        reply = slave.response
        for i in range(n):
            out[_MBAP + i] = reply[i]
        try:
            conn.sock.write(self.out_view[: _MBAP + n])
        except OSError:
            self._drop(conn)
