"""
TCP file download benchmark on 127.0.0.1: our file server + C{udpsuite fetch} against
C{python -m http.server} + curl, C{twistd web --path} + curl, and nginx + curl when nginx
is installed; and our plain port (C{--plain-port}) + C{udpsuite fetch --plain}, and
+ C{nc -N} (which half-closes after the name, so it skips the server's 0.25 s name gap).

Each server serves the same file from the same directory (page cache warm after the
first round); each client writes to the same filesystem.  Rounds are interleaved so
machine noise hits every pair alike; the median time per pair is printed with its
ratio to ours.  Our client also verifies the sha256 and fsyncs before its rename
(curl does neither), and the time of every client includes its process start; so each
curl pair is also timed followed by the sha256 of what it wrote (" +sha256", with
C{openssl dgst}, else C{sha256sum}): the same work as ours.
Then 8 of our downloads run at once while the server's resident memory is sampled.

    python bench/files_bench.py [--size-mib 1024] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

PYTHON = sys.executable
SHA256 = ["openssl", "dgst", "-sha256"] if shutil.which("openssl") else ["sha256sum"]
TWISTD = os.path.join(os.path.dirname(PYTHON), "twistd")


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def waitPort(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not start")


def makeFile(path: str, size: int) -> None:
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 << 20))
            f.write(chunk)
            left -= len(chunk)


def nginxConfig(directory: str, root: str, port: int) -> str:
    conf = os.path.join(directory, "nginx.conf")
    with open(conf, "w") as f:
        f.write(
            textwrap.dedent(
                f"""
                daemon off; worker_processes 1; pid {directory}/nginx.pid;
                error_log {directory}/nginx.err;
                events {{ worker_connections 64; }}
                http {{
                    access_log off; sendfile on; tcp_nopush on;
                    client_body_temp_path {directory}; proxy_temp_path {directory};
                    fastcgi_temp_path {directory}; uwsgi_temp_path {directory};
                    scgi_temp_path {directory};
                    server {{ listen 127.0.0.1:{port}; root {root}; }}
                }}
                """
            )
        )
    return conf


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def timedPlainNc(nc: str, port: int, dest: str) -> float:
    """C{printf f.bin | nc -N 127.0.0.1 PORT > DEST}: the plain protocol's raw floor."""
    started = time.monotonic()
    with open(dest, "wb") as f:
        subprocess.run([nc, "-N", "127.0.0.1", str(port)], input=b"f.bin", stdout=f, check=True)
    return time.monotonic() - started


def peakRss(pid: int, stop: threading.Event, result: list[int]) -> None:
    peak = 0
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            break
        time.sleep(0.02)
    result.append(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="work directory (default: a temp dir)")
    parser.add_argument(
        "--out",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where clients write (default /dev/shm: measures the transfer, not the disk)",
    )
    args = parser.parse_args()
    work = args.dir or tempfile.mkdtemp(prefix="files-bench-")
    root = os.path.join(work, "root")
    out = tempfile.mkdtemp(prefix="files-bench-out-", dir=args.out or work)
    os.makedirs(root, exist_ok=True)
    size = args.size_mib << 20
    makeFile(os.path.join(root, "f.bin"), size)

    ports = {name: freePort() for name in ("ours", "plain", "twistd web", "http.server", "nginx")}
    servers: dict[str, subprocess.Popen[bytes]] = {}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    servers["ours"] = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "udpsuite", "files", "--root", root,
         "--port", str(ports["ours"]), "--plain-port", str(ports["plain"]),
         "--interface", "127.0.0.1"], **quiet)  # fmt: skip
    servers["twistd web"] = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "web", "--path", root,
         "--listen", f"tcp:{ports['twistd web']}:interface=127.0.0.1"], **quiet)  # fmt: skip
    servers["http.server"] = subprocess.Popen(
        [PYTHON, "-m", "http.server", str(ports["http.server"]), "--bind", "127.0.0.1",
         "--directory", root], **quiet)  # fmt: skip
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx:
        conf = nginxConfig(work, root, ports["nginx"])
        servers["nginx"] = subprocess.Popen([nginx, "-c", conf, "-p", work], **quiet)
    else:
        print("nginx not installed: skipped")
    curl = shutil.which("curl")
    try:
        for name in servers:
            waitPort(ports[name])
        fetch = [PYTHON, "-m", "twisted_udpsuite", "fetch", "-q", "--force"]
        ours = f"127.0.0.1:{ports['ours']}"
        clients = {"ours": lambda: timed([*fetch, ours, "f.bin", os.path.join(out, "ours.bin")])}
        plain = f"127.0.0.1:{ports['plain']}"
        clients["ours --plain"] = lambda: timed(
            [*fetch, "--plain", plain, "f.bin", os.path.join(out, "plain.bin")]
        )
        nc = shutil.which("nc")
        if nc:
            clients["ours --plain, nc"] = lambda: timedPlainNc(
                nc, ports["plain"], os.path.join(out, "nc.bin")
            )
        for name in servers:
            if name != "ours" and curl:
                url = f"http://127.0.0.1:{ports[name]}/f.bin"
                dest = os.path.join(out, name.replace(" ", "_") + ".bin")
                clients[name] = lambda url=url, dest=dest: timed([curl, "-sSf", "-o", dest, url])
                # The same work as ours: download, then the file's sha256 (by OpenSSL, with
                # the CPU's SHA instructions, as our client's hashlib; coreutils' sha256sum
                # has none here and takes 3x longer).
                clients[name + " +sha256"] = lambda url=url, dest=dest: (
                    timed([curl, "-sSf", "-o", dest, url]) + timed([*SHA256, dest])
                )
        times: dict[str, list[float]] = {name: [] for name in clients}
        cold: dict[str, float] = {}
        for round in range(args.rounds + 1):
            for name, run in clients.items():
                elapsed = run()
                if round == 0:  # page cache, and our server's digest cache, still cold
                    cold[name] = elapsed
                else:
                    times[name].append(elapsed)
                for leftover in os.listdir(out):
                    os.unlink(os.path.join(out, leftover))
        oursTime = statistics.median(times["ours"])
        print(f"{args.size_mib} MiB over 127.0.0.1, median of {args.rounds} after a cold run:")
        for name, values in times.items():
            median = statistics.median(values)
            print(
                f"  {name:<20} {median:6.2f} s  {size / median / 2**20:7.0f} MiB/s  "
                f"ratio to ours {median / oursTime:5.2f}  (cold {cold[name]:.2f}; runs: "
                + ", ".join(f"{v:.2f}" for v in values)
                + ")"
            )
        stop = threading.Event()
        peak: list[int] = []
        sampler = threading.Thread(
            target=peakRss, args=(servers["ours"].pid, stop, peak), daemon=True
        )
        sampler.start()
        started = time.monotonic()
        procs = [
            subprocess.Popen([*fetch, ours, "f.bin", os.path.join(out, f"c{i}.bin")])
            for i in range(8)
        ]
        codes = [p.wait() for p in procs]
        for leftover in os.listdir(out):
            os.unlink(os.path.join(out, leftover))
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
        print(
            f"8 concurrent downloads from ours: {elapsed:.2f} s, exit codes {set(codes)}, "
            f"server peak RSS {peak[0] / 1024:.1f} MiB"
        )
    finally:
        for proc in servers.values():
            proc.terminate()
        for proc in servers.values():
            proc.wait()
        shutil.rmtree(out, ignore_errors=True)
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
