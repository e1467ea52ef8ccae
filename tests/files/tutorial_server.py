"""
The socket tutorials' TCP 文件下载器 server, as they write it: blocking sockets, the name
is one recv(1024), the whole file is sent, then the connection closed; a missing file
gets nothing.  Serves the current directory on 127.0.0.1, COUNT connections one after
another.  Usage: tutorial_server.py COUNT (prints "listening PORT" first).
"""

import socket
import sys


def main() -> None:
    count = int(sys.argv[1])
    tcp_server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp_server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp_server.bind(("127.0.0.1", 0))
    tcp_server.listen(128)
    print("listening", tcp_server.getsockname()[1], flush=True)
    for _ in range(count):
        client_socket, client_addr = tcp_server.accept()
        file_name = client_socket.recv(1024).decode("utf-8")
        content = None
        try:
            with open(file_name, "rb") as f:
                content = f.read()
        except Exception:
            print(f"no such file: {file_name!r}", flush=True)
        if content:
            client_socket.sendall(content)
            print(f"sent {file_name!r}: {len(content)} bytes", flush=True)
        client_socket.close()
    tcp_server.close()


main()
