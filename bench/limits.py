#!/usr/bin/env python3
"""Hostile-client limits, measured: slowloris and silent clients, 5,000 idle keep-alive connections,
a proxy at its open-file limit, and many large request bodies at once.

Prints one table row per (scenario, server). nginx and Caddy run beside ollama-proxy where the scenario
applies to any reverse proxy (slowloris, idle keep-alive); the others are about holding requests for a
sleeping Ollama. Run by bench/limits.sh, which installs nginx and Caddy and builds the binaries.
"""

import asyncio
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("BENCH_TARGET", os.path.join(ROOT, "target", "release"))
PROXY = os.path.join(TARGET, "ollama-proxy")
FAKE = os.path.join(TARGET, "bench-fake")
CAP = 200  # seconds: longest wait for a server to close a connection
MIB = 1 << 20
# BENCH_ONLY=slow,idle,fds,bodies runs only those scenarios.
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "slow,idle,fds,bodies").split(",")))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    """VmRSS of a process and its children (nginx workers), KiB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, AttributeError):
            pass
    return total


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))


class Server:
    """A server under test, stopped on exit."""

    def __init__(self, name, argv, port, tmp, stderr_path=None):
        self.name, self.port, self.tmp = name, port, tmp
        self.log = stderr_path or os.path.join(tmp, "stderr.log")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{name} did not start: {open(self.log).read()}")
                time.sleep(0.05)

    def rss(self):
        return rss_kib(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def proxy(upstream, *args, prlimit=None):
    tmp = tempfile.mkdtemp(prefix="limits-")
    port = free_port()
    argv = [PROXY, "--bind", "127.0.0.1", "--port", str(port), "--ollama-url", upstream, *args]
    if prlimit:
        argv = ["prlimit", f"--nofile={prlimit}:{prlimit}", "--"] + argv
    return Server("ollama-proxy", argv, port, tmp)


def nginx(upstream):
    tmp = tempfile.mkdtemp(prefix="limits-nginx-")
    port = free_port()
    host = upstream.split("//", 1)[1]
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes auto; pid {tmp}/nginx.pid; error_log {tmp}/error.log; daemon off;
events {{ worker_connections 16384; }}
http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};
  upstream o {{ server {host}; keepalive 256; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; proxy_request_buffering off; }} }} }}
""")
    return Server("nginx", ["nginx", "-c", conf], port, tmp)


def caddy(upstream):
    tmp = tempfile.mkdtemp(prefix="limits-caddy-")
    port = free_port()
    conf = os.path.join(tmp, "Caddyfile")
    with open(conf, "w") as f:
        f.write(f"{{\n admin off\n auto_https off\n}}\nhttp://127.0.0.1:{port} {{\n"
                f" reverse_proxy {upstream.split('//', 1)[1]} {{\n  flush_interval -1\n }}\n}}\n")
    env_home = {"HOME": tmp, "XDG_DATA_HOME": tmp, "XDG_CONFIG_HOME": tmp}
    os.environ.update(env_home)
    return Server("caddy", ["caddy", "run", "--config", conf, "--adapter", "caddyfile"], port, tmp)


async def wait_closed(reader, start):
    """Seconds until the server closed the connection (None: still open at CAP)."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(4096), CAP - (time.time() - start))
            if not data:
                return time.time() - start
    except (asyncio.TimeoutError, ConnectionError):
        return None if time.time() - start >= CAP - 1 else time.time() - start


async def slowloris(port, start):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /api/version HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    closed = asyncio.ensure_future(wait_closed(r, start))
    while not closed.done():
        try:
            w.write(b"a")
            await w.drain()
        except ConnectionError:
            break
        await asyncio.wait([closed], timeout=1)
    result = await closed
    w.close()
    return result


async def silent(port, start):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    result = await wait_closed(r, start)
    w.close()
    return result


GET = b"GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n"


async def one_request(port, start, stay=True):
    """GET /api/version on a new connection; then (stay) idle until the server closes it."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(GET)
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 60)
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    await r.readexactly(length)
    status = int(head.split()[1])
    if not stay:
        w.close()
        return status, time.time() - start
    closed = await wait_closed(r, time.time())
    w.close()
    return status, closed


def seconds(values):
    done = [v for v in values if v is not None]
    if not done:
        return f"none closed in {CAP} s"
    text = f"{min(done):.1f} / {statistics.median(done):.1f} / {max(done):.1f} s"
    return text + (f", {len(values) - len(done)} still open at {CAP} s" if len(done) < len(values) else "")


async def sample_peak(server, until):
    peak = 0
    while not until.done():
        peak = max(peak, server.rss())
        await asyncio.wait([until], timeout=0.5)
    return peak


async def scenario_slow(server):
    start = time.time()
    tasks = [asyncio.ensure_future(slowloris(server.port, start)) for _ in range(300)]
    tasks += [asyncio.ensure_future(silent(server.port, start)) for _ in range(50)]
    done = asyncio.ensure_future(asyncio.gather(*tasks))
    peak = await sample_peak(server, done)
    closed = await done
    return [server.name, "300 slowloris (1 byte/s) + 50 silent",
            f"slowloris closed {seconds(closed[:300])}; silent {seconds(closed[300:])}",
            f"{peak / 1024:.1f}"]


async def scenario_idle(server, n=5000):
    start = time.time()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(one_request(server.port, start)))
        if i % 250 == 249:
            await asyncio.sleep(0.05)
    done = asyncio.ensure_future(asyncio.gather(*tasks, return_exceptions=True))
    peak = await sample_peak(server, done)
    results = await done
    ok = sum(1 for r in results if isinstance(r, tuple) and r[0] == 200)
    closed = [r[1] for r in results if isinstance(r, tuple)]
    return [server.name, f"{n:,} idle keep-alive connections",
            f"{ok:,} answered; closed after {seconds(closed)}", f"{peak / 1024:.1f}"]


async def scenario_fds(fake):
    server = proxy(fake, prlimit=1024)
    try:
        start = time.time()
        idle = [asyncio.ensure_future(one_request(server.port, start)) for _ in range(1000)]
        await asyncio.sleep(2)
        lat, statuses = [], []
        for _ in range(20):
            t = time.time()
            try:
                status, _ = await asyncio.wait_for(one_request(server.port, t, stay=False), 30)
            except (OSError, asyncio.TimeoutError):
                status = 0
            lat.append(time.time() - t)
            statuses.append(status)
        peak = server.rss()
        log = open(server.log).read()
        emfile = log.count("out of file descriptors") + log.count("cannot accept")
        ok = statuses.count(200)
        first = [r for r in idle if r.done() and not r.cancelled() and r.exception() is None]
        for t in idle:
            t.cancel()
        return ["ollama-proxy", "open-file limit 1,024: 1,000 idle clients, then 20 new ones",
                f"{len(first)}/1,000 answered within 2 s; new clients: {ok}/20 answered 200 within 30 s,"
                f" latency median {statistics.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms;"
                f" fd warnings logged: {emfile}", f"{peak / 1024:.1f}"]
    finally:
        server.stop()


async def post_big(port, body):
    """POST /api/chat with `body`; the status, or 0 when the connection was closed on us."""
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        w.write(body)
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), CAP)
        w.close()
        return int(head.split()[1])
    except (ConnectionError, asyncio.IncompleteReadError):
        return 0


async def slow_ollama(reader, writer):
    """A fake Ollama that reads the whole body, then thinks for 1.5 s."""
    head = await reader.readuntil(b"\r\n\r\n")
    m = re.search(rb"content-length: (\d+)", head, re.I)
    if m:
        await reader.readexactly(int(m.group(1)))
    await asyncio.sleep(1.5)
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n'
                 b'Connection: close\r\n\r\n{"done":true}')
    await writer.drain()
    writer.close()


async def scenario_bodies():
    body = b" " * (16 * MIB)
    rows = []
    slow = await asyncio.start_server(slow_ollama, "127.0.0.1", 0)
    url = "http://127.0.0.1:%d" % slow.sockets[0].getsockname()[1]
    server = proxy(url)
    try:
        statuses = await asyncio.gather(*[post_big(server.port, body) for _ in range(64)])
        rows.append(["ollama-proxy", "64 x 16 MiB POSTs to a slow Ollama (awake)",
                     f"{statuses.count(200)}/64 answered 200 (16 buffered, the rest streamed)",
                     f"{hwm_kib(server.proc.pid) / 1024:.1f} (peak)"])
    finally:
        server.stop()
        slow.close()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    down = "http://127.0.0.1:%d" % free_port()
    server = proxy(down, "--max-queue", "10", "--mac", "02:00:00:00:00:01", "--broadcast",
                   "127.0.0.1", "--wol-port", str(udp.getsockname()[1]), "--wake-timeout", "5s")
    try:
        statuses = await asyncio.gather(*[post_big(server.port, body) for _ in range(100)])
        refused = statuses.count(503) + statuses.count(0)
        rows.append(["ollama-proxy", "100 x 16 MiB POSTs, Ollama asleep, MAX_QUEUE 10",
                     f"{refused}/100 refused with 503 (or closed unread), none hang",
                     f"{hwm_kib(server.proc.pid) / 1024:.1f} (peak)"])
    finally:
        server.stop()
        udp.close()
    return rows


def show(row):
    print("| " + " | ".join(row) + " |", flush=True)


async def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fake_proc = subprocess.Popen([FAKE], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    print("| server | scenario | what happened | RSS MiB |")
    print("|---|---|---|---:|", flush=True)
    try:
        fake = "http://" + re.search(r'"addr":"([^"]+)"', fake_proc.stdout.readline()).group(1)
        if "slow" in ONLY:
            servers = [proxy(fake), nginx(fake), caddy(fake)]
            try:
                for row in await asyncio.gather(*[scenario_slow(s) for s in servers]):
                    show(row)
            finally:
                for s in servers:
                    s.stop()
        for make in (proxy, nginx, caddy) if "idle" in ONLY else ():  # one at a time: 5,000 sockets
            server = make(fake)
            try:
                show(await scenario_idle(server))
            finally:
                server.stop()
        if "fds" in ONLY:
            show(await scenario_fds(fake))
        for row in await scenario_bodies() if "bodies" in ONLY else ():
            show(row)
    finally:
        fake_proc.terminate()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
