#!/usr/bin/env python3
"""Issue 15's admin-endpoint measurements against `spillway serve` (release build), on
loopback, each run bounded in time. Figures land in README.md ("Operating it").

  scripts/admin-bench.py scrape [--reps 3] [--duration 10] [--connections 15000] [--window 4]
      The TCP server at its max rate (loadgen closed loop, CONNECTIONS connections, WINDOW
      messages outstanding each), alternately without and with a scraper that GETs /metrics
      every second as Prometheus would; REPS runs of each. Reports delivered msg/s and p99
      per run, their medians per mode and the ratio, and every scrape's duration.

  scripts/admin-bench.py reload [--duration 12] [--connections 500] [--per-connection 100]
                                [--before 20] [--after 50] [--at 5]
      5x overload by the token bucket: CONNECTIONS connections each offered PER-CONNECTION
      msg/s against a configured rate of BEFORE msg/s per connection (burst equal to it), so
      1 - BEFORE/PER-CONNECTION of the messages are refused. AT seconds in, the file is
      rewritten to AFTER msg/s and the server gets SIGHUP. A poller reads /metrics every
      100 ms; reported: the refused share per 100 ms around the reload, and how long after
      the signal the share came within 3 points of 1 - AFTER/PER-CONNECTION. Also: no
      connection closed by the server, and loadgen's reconciliation.

Needs `cargo build --release -p spillway -p spillway-loadgen` first.
"""

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from spillway_bench import Serve, family_sum, loadgen, metrics  # noqa: E402


def thread_cpu_seconds(pid, name):
    """CPU time of `pid`'s thread called `name`: schedstat's time on a CPU, in ns (the
    clock-tick counts of /proc/.../stat are 10 ms coarse, longer than a scrape)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/comm") as comm:
            if comm.read().strip() != name:
                continue
        with open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
            return int(schedstat.read().split()[0]) / 1e9
    return 0.0


def scrape(options):
    rows = {"off": [], "on": []}
    scrapes = []
    admin_cpu = []  # admin thread CPU seconds per scrape, per run
    for rep in range(options.reps):
        for mode in ("off", "on"):
            serve = Serve("--shards", "1")
            stop = threading.Event()
            taken = []

            def scraper():
                while not stop.wait(1.0):
                    started = time.perf_counter()
                    body = metrics(serve.admin)
                    taken.append((time.perf_counter() - started, len(body)))

            thread = threading.Thread(target=scraper) if mode == "on" else None
            if thread:
                thread.start()
            report = loadgen("--target", f"tcp://{serve.listen}", "--closed-loop",
                             "--window", str(options.window), "--connections",
                             str(options.connections), "--duration", str(options.duration),
                             "--warmup", "2")
            stop.set()
            if thread:
                thread.join()
            admin_cpu_s = thread_cpu_seconds(serve.process.pid, "spillway-admin")
            serve.stop()
            row = (report["delivered_rate"], report["latency_us"]["p99"], report["reconciled"])
            rows[mode].append(row)
            scrapes += taken
            if taken:
                admin_cpu.append(admin_cpu_s / len(taken))
            scraped = (f"; {len(taken)} scrapes, slowest {max(t for t, _ in taken) * 1e3:.1f} ms, "
                       f"{taken[-1][1]} bytes, admin thread CPU {admin_cpu_s * 1e3:.0f} ms "
                       f"in all") if taken else ""
            print(f"run {rep + 1} scraping {mode:>3}: delivered {row[0]:>9,.0f} msg/s, "
                  f"p99 {row[1]:>9.1f} us, reconciled {row[2]}{scraped}", flush=True)
    print()
    medians = {}
    for mode in ("off", "on"):
        rates = [row[0] for row in rows[mode]]
        p99s = [row[1] for row in rows[mode]]
        medians[mode] = (statistics.median(rates), statistics.median(p99s))
        print(f"scraping {mode:>3}: delivered median {medians[mode][0]:,.0f} "
              f"[{min(rates):,.0f}-{max(rates):,.0f}] msg/s, p99 median {medians[mode][1]:.1f} "
              f"[{min(p99s):.1f}-{max(p99s):.1f}] us")
    print(f"with/without scraping: throughput {medians['on'][0] / medians['off'][0]:.3f}x, "
          f"p99 {medians['on'][1] / medians['off'][1]:.3f}x")
    times = sorted(t for t, _ in scrapes)
    print(f"scrapes at {options.connections} connections: {len(times)}, median "
          f"{statistics.median(times) * 1e3:.2f} ms, slowest {times[-1] * 1e3:.2f} ms; admin "
          f"thread CPU per scrape {statistics.median(admin_cpu) * 1e3:.2f} ms (median of runs), "
          f"{statistics.median(admin_cpu) * 100:.2f}% of one core at one scrape a second")


def reload(options):
    workdir = tempfile.mkdtemp(prefix="spillway-reload-")
    config = os.path.join(workdir, "spillway.toml")

    def write(rate):
        with open(config, "w") as file:
            file.write(f"[rate]\nper_connection_per_sec = {rate}\nburst = {options.before}\n"
                       "adaptive = false\nadaptive_floor_per_sec = 1\n")

    write(options.before)
    serve = Serve("--shards", "1", "--config", config)
    samples = []  # (time, submitted, refused)
    stop = threading.Event()

    def poll():
        while not stop.wait(0.1):
            text = metrics(serve.admin)
            samples.append((time.time(), family_sum(text, "spillway_messages_submitted_total"),
                            family_sum(text, "spillway_messages_refused_total")))

    poller = threading.Thread(target=poll)
    poller.start()
    signalled = []

    def reload_later():
        time.sleep(options.at)
        write(options.after)
        signalled.append(time.time())
        serve.process.send_signal(signal.SIGHUP)

    reloader = threading.Thread(target=reload_later)
    reloader.start()
    rate = options.connections * options.per_connection
    report = loadgen("--target", f"tcp://{serve.listen}", "--rate", str(rate), "--connections",
                     str(options.connections), "--duration", str(options.duration),
                     "--warmup", "0")
    reloader.join()
    stop.set()
    poller.join()
    # Closed by the server: every reason but the client's own close at the end.
    closed = family_sum(metrics(serve.admin), "spillway_connections_closed_total") - family_sum(
        metrics(serve.admin), 'spillway_connections_closed_total{reason="peer"}')
    log = serve.stop()
    expected_before = 1 - options.before / options.per_connection
    expected_after = 1 - options.after / options.per_connection
    at = signalled[0]
    print(f"offered {rate:,} msg/s over {options.connections} connections; limit "
          f"{options.before} -> {options.after} msg/s per connection at SIGHUP; refused share "
          f"expected {expected_before:.0%} -> {expected_after:.0%}")
    reached = None
    for (t0, s0, r0), (t1, s1, r1) in zip(samples, samples[1:]):
        if s1 <= s0:
            continue
        share = (r1 - r0) / (s1 - s0)
        since = t1 - at
        if -1.0 <= since <= 2.0:
            print(f"  {since * 1e3:+7.0f} ms  refused {share:6.1%}")
        if reached is None and t0 >= at and abs(share - expected_after) <= 0.03:
            reached = t1 - at
    applied = [line for line in log.splitlines() if "SIGHUP: configuration reloaded" in line]
    print(f"reload logged: {bool(applied)}; share within 3 points of {expected_after:.0%} "
          f"{reached * 1e3:.0f} ms after the signal (the first 100-ms sample wholly after it)"
          if reached is not None else "the share never reached the new value")
    print(f"connections closed by the server during the run: {closed:.0f}; loadgen reconciled: "
          f"{report['reconciled']}; refused {report['refused']:,} of {report['submitted']:,}")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    scrape_args = commands.add_parser("scrape")
    scrape_args.add_argument("--reps", type=int, default=3)
    scrape_args.add_argument("--duration", type=int, default=10)
    scrape_args.add_argument("--connections", type=int, default=15000)
    scrape_args.add_argument("--window", type=int, default=4)
    reload_args = commands.add_parser("reload")
    reload_args.add_argument("--duration", type=int, default=12)
    reload_args.add_argument("--connections", type=int, default=500)
    reload_args.add_argument("--per-connection", type=int, default=100)
    reload_args.add_argument("--before", type=int, default=20)
    reload_args.add_argument("--after", type=int, default=50)
    reload_args.add_argument("--at", type=float, default=5.0)
    options = parser.parse_args()
    for binary in (SPILLWAY, LOADGEN):
        if not os.access(binary, os.X_OK):
            sys.exit(f"{binary} is missing: cargo build --release -p spillway -p spillway-loadgen")
    {"scrape": scrape, "reload": reload}[options.command](options)


if __name__ == "__main__":
    main()
