"""Print the first TCP port from argv[1] upward on which nothing listens on 127.0.0.1 (setup.sh: Redis)."""

import socket
import sys


def first_free(start: int) -> int:
    for port in range(start, start + 100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise SystemExit(f"no free port in {start}..{start + 99}")


if __name__ == "__main__":
    print(first_free(int(sys.argv[1])))
