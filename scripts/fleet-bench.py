#!/usr/bin/env python3
"""Issue 16's fleet-quota measurements: a private Redis (scripts/redis.sh), three
`spillway serve` processes sharing one tenant's fleet-wide rate through it, and loadgen
driving all three at once with a split. Loopback only, each run bounded in time. Figures land
in README.md ("Fleet quotas").

  scripts/fleet-bench.py share [--reps 3] [--duration 10] [--limit 50000]
                               [--offered 150000] [--split 70,20,10] [--connections 100]
      Offers OFFERED msg/s of tenant 0 split SPLIT over the three processes, whose fleet-wide
      limit is LIMIT msg/s. Reports per process the offered and admitted rate and its
      max-min fair share (each process gets its offered rate or an equal part of what the
      smaller ones leave, whichever is less), the total against the limit, and Redis
      operations per admitted message (the servers' own counters over the run).

  scripts/fleet-bench.py fault [--duration 12] [--kill-at 4] [--restart-at 8]
                               [--unavailable local|refuse]
      The same set-up at half the limit's load plus overload, with a health poller on every
      admin endpoint; KILL-AT seconds in, Redis gets SIGKILL; RESTART-AT seconds in, it is
      started again on the same port. Reports, per process, how long after the kill its log
      says it fell back and its health says degraded, and how long after the restart (Redis
      answering PING) it had a lease again and its health says healthy; and that every count
      reconciles and every process exits 0.

Needs `cargo build --release -p spillway -p spillway-loadgen` first.
"""

import argparse
import datetime
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import json

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from spillway_bench import ROOT, Serve, family_sum, loadgen, metrics  # noqa: E402

REDIS_SH = os.path.join(ROOT, "scripts/redis.sh")
TENANT = 0


class Redis:
    """A private redis-server from scripts/redis.sh."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="spillway-fleet-redis-")
        self.url = subprocess.run([REDIS_SH, "start", "--dir", self.dir], check=True,
                                  capture_output=True, text=True).stdout.strip()
        self.port = self.url.rsplit(":", 1)[1]

    def kill(self):
        """SIGKILL, sent from here so that the time taken just before it is the kill's
        (scripts/redis.sh kill spends ~100 ms starting up first); returns that time."""
        with open(os.path.join(self.dir, "redis.pid")) as pid_file:
            pid = int(pid_file.read())
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        return killed_at

    def watch_close(self):
        """An idle connection to the server; returns a function that waits until the server
        closes it and gives that time: when a killed Redis's sockets really close (the
        dying process must be scheduled to exit, tens of ms on a loaded machine)."""
        watcher = socket.create_connection(("127.0.0.1", int(self.port)))

        def closed_at():
            select.select([watcher], [], [], 30)
            return time.time()
        return closed_at

    def restart(self):
        subprocess.run([REDIS_SH, "start", "--dir", self.dir, "--port", self.port],
                       check=True, capture_output=True)

    def stop(self):
        subprocess.run([REDIS_SH, "stop", "--dir", self.dir], check=False)


def write_config(path, redis_url, limit, unavailable, fallback):
    fallback_line = f"fallback_rate_per_sec = {fallback}\n" if fallback else ""
    with open(path, "w") as file:
        file.write(f"""# scripts/fleet-bench.py: one tenant's fleet-wide rate; per-connection rates out of the way.
[rate]
per_connection_per_sec = 1000000
burst = 2000000
[global]
redis = "{redis_url}"
on_unavailable = "{unavailable}"
[[global.tenants]]
tenant = {TENANT}
rate_per_sec = {limit}
{fallback_line}""")


def fair_shares(offered, limit):
    """Max-min fair shares of `limit` for demands `offered`."""
    shares = [0.0] * len(offered)
    left, remaining = limit, len(offered)
    for index in sorted(range(len(offered)), key=lambda i: offered[i]):
        share = min(offered[index], left / remaining)
        shares[index] = share
        left -= share
        remaining -= 1
    return shares


def max_per_window(samples, window_s):
    """The most admitted in any window of about `window_s` between two samples (time,
    cumulative count), scaled to exactly `window_s`."""
    best = 0.0
    for first, (start, start_count) in enumerate(samples):
        for end, end_count in samples[first + 1:]:
            if end - start >= window_s * 0.95:
                best = max(best, (end_count - start_count) * window_s / (end - start))
                break
    return best


def start_fleet(config):
    return [Serve("--config", config, "--shards", "1") for _ in range(3)]


def share(options):
    redis = Redis()
    workdir = tempfile.mkdtemp(prefix="spillway-fleet-")
    config = os.path.join(workdir, "fleet.toml")
    write_config(config, redis.url, options.limit, "local", None)
    totals = []
    try:
        for rep in range(1, options.reps + 1):
            fleet = start_fleet(config)
            before = [metrics(serve.admin) for serve in fleet]
            samples, stop = [], threading.Event()

            def sample_admitted():
                while not stop.wait(0.1):
                    samples.append((time.time(), sum(
                        family_sum(metrics(serve.admin), "spillway_messages_admitted_total")
                        for serve in fleet)))
            sampler = threading.Thread(target=sample_admitted)
            sampler.start()
            report = loadgen(*sum((["--target", f"tcp://{serve.listen}"] for serve in fleet), []),
                             "--split", options.split, "--connections", str(options.connections),
                             "--rate", str(options.offered), "--duration", str(options.duration),
                             "--warmup", "2", "--tenant", str(TENANT))
            stop.set()
            sampler.join()
            after = [metrics(serve.admin) for serve in fleet]
            logs = [serve.stop() for serve in fleet]
            if not report["reconciled"] or not all("reconciles=true" in log for log in logs):
                raise SystemExit(f"rep {rep}: counts do not reconcile: {report['reconcile_errors']}")
            offered = [target["achieved_rate"] for target in report["targets"]]
            admitted = [target["admitted"] / target["duration_s"] for target in report["targets"]]
            fair = fair_shares(offered, options.limit)
            operations = sum(family_sum(a, "spillway_global_redis_operations_total")
                             - family_sum(b, "spillway_global_redis_operations_total")
                             for a, b in zip(after, before))
            admitted_all = sum(family_sum(a, "spillway_messages_admitted_total")
                               - family_sum(b, "spillway_messages_admitted_total")
                               for a, b in zip(after, before))
            total = sum(admitted)
            totals.append(total)
            print(f"rep {rep}: total admitted {total:.0f}/s = {total / options.limit:.4f} x the "
                  f"limit {options.limit}/s; Redis operations per admitted message "
                  f"{operations / admitted_all:.6f} ({operations:.0f} / {admitted_all:.0f})")
            print(f"  the most admitted in any 1 s (sampled every 100 ms): "
                  f"{max_per_window(samples, 1.0) / options.limit:.4f} x the limit; in any "
                  f"100 ms: {max_per_window(samples, 0.1) / (options.limit * 0.1):.4f} x")
            for index, serve in enumerate(fleet):
                print(f"  process {index + 1} ({serve.listen}): offered {offered[index]:.0f}/s, "
                      f"admitted {admitted[index]:.0f}/s, fair share {fair[index]:.0f}/s "
                      f"({admitted[index] / fair[index]:.4f} of it)")
        print(f"median total {statistics.median(totals):.0f}/s = "
              f"{statistics.median(totals) / options.limit:.4f} x the limit "
              f"(runs {', '.join(f'{t:.0f}' for t in totals)})")
    finally:
        redis.stop()


def log_time(log, phrase, after):
    """The first log line's timestamp (a UTC wall-clock time) at or after `after` (epoch s)
    whose text contains `phrase`."""
    for line in log.splitlines():
        if phrase not in line:
            continue
        stamp = datetime.datetime.strptime(line.split()[0][:26], "%Y-%m-%dT%H:%M:%S.%f")
        seconds = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
        if seconds >= after:
            return seconds
    return None


def fault(options):
    redis = Redis()
    workdir = tempfile.mkdtemp(prefix="spillway-fleet-")
    config = os.path.join(workdir, "fleet.toml")
    limit = 50_000
    write_config(config, redis.url, limit, options.unavailable,
                 20_000 if options.unavailable == "local" else None)
    fleet = start_fleet(config)
    health = [[] for _ in fleet]  # (time, degraded) per process
    stop = threading.Event()

    def poll(index, admin):
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://{admin}/health", timeout=2) as answer:
                    body = json.loads(answer.read())
            except OSError:
                continue
            health[index].append((time.time(), body["degraded"]))
            time.sleep(0.005)

    pollers = [threading.Thread(target=poll, args=(i, s.admin)) for i, s in enumerate(fleet)]
    for poller in pollers:
        poller.start()
    events = {}

    def faults():
        time.sleep(options.kill_at)
        closed_at = redis.watch_close()
        events["kill"] = redis.kill()
        events["closed"] = closed_at()
        time.sleep(options.restart_at - options.kill_at)
        # From the start of the restart: Redis's own start-up (~100 ms here) counts against
        # the fleet, which cannot lease before Redis accepts.
        events["restart"] = time.time()
        redis.restart()

    injector = threading.Thread(target=faults)
    injector.start()
    try:
        report = loadgen(*sum((["--target", f"tcp://{serve.listen}"] for serve in fleet), []),
                         "--split", "70,20,10", "--connections", "100", "--rate", "150000",
                         "--duration", str(options.duration), "--warmup", "0",
                         "--tenant", str(TENANT))
        injector.join()
    finally:
        stop.set()
        for poller in pollers:
            poller.join()
        logs = [serve.stop() for serve in fleet]
        codes = [serve.process.returncode for serve in fleet]
        redis.stop()
    kill, closed, restart = events["kill"], events["closed"], events["restart"]
    print(f"on_unavailable = {options.unavailable}; Redis killed {options.kill_at} s in, "
          f"restarted {options.restart_at} s in; loadgen reconciled: {report['reconciled']}; "
          f"exit codes {codes}; servers reconcile: "
          f"{all('reconciles=true' in log for log in logs)}; Redis's connections closed "
          f"{(closed - kill) * 1000:.0f} ms after its SIGKILL")
    for index, log in enumerate(logs):
        fell_back = log_time(log, "fleet quota: no lease, on fallback", kill)
        leased = log_time(log, "fleet quota: leased", restart)
        degraded = next((t for t, d in health[index] if t >= kill and d), None)
        healthy = next((t for t, d in health[index] if t >= restart and not d), None)

        def ms(at, since):
            return f"{(at - since) * 1000:.0f} ms" if at else "never"
        print(f"  process {index + 1}: fell back {ms(fell_back, kill)} after the SIGKILL, "
              f"{ms(fell_back, closed)} after the close (health degraded at "
              f"{ms(degraded, kill)}); leased again {ms(leased, restart)} after the restart "
              f"(health healthy at {ms(healthy, restart)})")
    refused = report["refused_by_reason"]
    print(f"  refused by reason over the run: {refused}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    share_command = commands.add_parser("share")
    share_command.add_argument("--reps", type=int, default=3)
    share_command.add_argument("--duration", type=float, default=10)
    share_command.add_argument("--limit", type=int, default=50_000)
    share_command.add_argument("--offered", type=int, default=150_000)
    share_command.add_argument("--split", default="70,20,10")
    share_command.add_argument("--connections", type=int, default=100)
    fault_command = commands.add_parser("fault")
    fault_command.add_argument("--duration", type=float, default=12)
    fault_command.add_argument("--kill-at", type=float, default=4)
    fault_command.add_argument("--restart-at", type=float, default=8)
    fault_command.add_argument("--unavailable", choices=["local", "refuse"], default="local")
    options = parser.parse_args()
    {"share": share, "fault": fault}[options.command](options)


if __name__ == "__main__":
    main()
