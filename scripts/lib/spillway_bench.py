"""What the bench scripts share: the release binaries, `spillway serve` on free ports with
its admin endpoint, loadgen's JSON report, and reading /metrics."""

import json
import os
import re
import resource
import signal
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPILLWAY = os.path.join(ROOT, "target/release/spillway")
LOADGEN = os.path.join(ROOT, "target/release/loadgen")


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))


class Serve:
    """`spillway serve` with its admin endpoint on a free port; stopped with SIGINT."""

    def __init__(self, *args):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [SPILLWAY, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
             "--max-connections", "16000", "--duration-s", "300", *args],
            stdout=subprocess.DEVNULL, stderr=self.log, preexec_fn=raise_nofile)
        self.listen = self.await_word("listening on")
        self.admin = self.await_word("admin endpoint on http://")

    def await_word(self, phrase):
        deadline = time.time() + 20
        while time.time() < deadline:
            self.log.seek(0)
            match = re.search(re.escape(phrase) + r" ?(\S+)", self.log.read())
            if match:
                return match.group(1)
            time.sleep(0.05)
        raise SystemExit(f"spillway serve never said {phrase!r}")

    def stop(self):
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.seek(0)
        return self.log.read()


def loadgen(*args):
    answer = subprocess.run([LOADGEN, *args, "--json"], capture_output=True, text=True,
                            preexec_fn=raise_nofile, timeout=600)
    if answer.returncode != 0:
        raise SystemExit(f"loadgen failed: {answer.stderr[-2000:]}")
    return json.loads(answer.stdout)


def metrics(admin):
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=5) as answer:
        return answer.read().decode()


def family_sum(text, name):
    """The sum of every sample of counter `name` (all label sets)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " ") or (
                "{" in name and line.startswith(name)):
            total += float(line.rsplit(" ", 1)[1])
    return total
