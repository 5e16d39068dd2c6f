#!/usr/bin/env python3
"""A TCP proxy that a chaos script can cut and restore, as a network failure would.

    tcp_proxy.py LISTEN_PORT TARGET_HOST TARGET_PORT

Listens on 127.0.0.1:LISTEN_PORT and forwards every connection to the target.
SIGUSR1 cuts: every open connection is reset and new ones are closed at once (the
service behind stays up, as when the network between goes down). SIGUSR2 restores.
Prints "ready" on stdout once listening. Standard library only.
"""

import asyncio
import signal
import socket
import sys


class Proxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.down = False
        self.open: set[asyncio.StreamWriter] = set()

    def cut(self) -> None:
        self.down = True
        for writer in list(self.open):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # SO_LINGER 0: a reset, not a polite FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            writer.close()
        self.open.clear()

    def restore(self) -> None:
        self.down = False

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self.down:
            client_w.close()
            return
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self.open.update((client_w, server_w))
        await asyncio.gather(self.pipe(client_r, server_w), self.pipe(server_r, client_w))
        self.open.discard(client_w)
        self.open.discard(server_w)


async def main() -> None:
    listen_port, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    proxy = Proxy(host, port)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, proxy.cut)
    loop.add_signal_handler(signal.SIGUSR2, proxy.restore)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", listen_port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
