"""
The socket tutorials' TCP 文件下载器 client, as they write it: blocking socket, the bare
name in one send, a recv(1024) loop until the server closes, saved as "[接收]NAME" if
anything arrived.  Usage: tutorial_client.py HOST PORT NAME (prints what it did).
"""

import socket
import sys


def main() -> None:
    host, port, file_name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    tcp_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp_socket.connect((host, port))
    tcp_socket.send(file_name.encode("utf-8"))
    received = 0
    new_file = None
    while True:
        recv_data = tcp_socket.recv(1024)
        if not recv_data:
            break
        if new_file is None:
            new_file = open("[接收]" + file_name, "wb")
        new_file.write(recv_data)
        received += len(recv_data)
    tcp_socket.close()
    if new_file is not None:
        new_file.close()
        print(f"saved {received} bytes")
    else:
        print("nothing received")


main()
