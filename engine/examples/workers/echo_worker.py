#!/usr/bin/env python3
"""The echo worker in Python 3, standard library only (docs/WORKERS.md).

Connects to `spillway serve --workers ADDR`, says Hello, and answers each Work with its
payload. No reconnection: exits 0 when Spillway says it is shutting down, 1 when the
connection ends otherwise, and cleanly on SIGINT or SIGTERM (between two frames).

    python3 engine/examples/workers/echo_worker.py --connect 127.0.0.1:7879 --credit 16
"""

import argparse
import signal
import socket
import struct
import sys

MAGIC, VERSION = b"SK", 1
HEADER = struct.Struct("<2sBBI")  # magic, version, frame type, body length
# Worker -> Spillway.
HELLO, ANSWER = 0x01, 0x02
# Spillway -> worker.
WELCOME, WORK, PONG, ERROR = 0x81, 0x82, 0x83, 0x84
WELCOME_BODY = struct.Struct("<QQI4x")  # worker_id, answer_timeout_ns, max_frame_bytes
WORK_FIXED = struct.Struct("<QQQIBBBx")  # work_id, connection, message, tenant, priority, role, flags
ANSWER_FIXED = struct.Struct("<QB3x")  # work_id, status
STATUS_OK = 0
ERROR_SHUTTING_DOWN = 7
FRAME_BYTES_MAX = 16 << 20  # the most `[workers] max_frame_bytes` can be

stopping = False


def frame(frame_type, body):
    return HEADER.pack(MAGIC, VERSION, frame_type, len(body)) + body


def connect(address):
    if address.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address[len("unix:"):])
    else:
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(0.1)  # wake up now and then to look for a signal
    return sock


def frames(buffer):
    """Yields (type, body) for each whole frame at the start of `buffer`, and removes it."""
    while len(buffer) >= HEADER.size:
        magic, version, frame_type, length = HEADER.unpack_from(buffer)
        if magic != MAGIC or version != VERSION or HEADER.size + length > FRAME_BYTES_MAX:
            raise ValueError(f"not a worker-protocol frame: {bytes(buffer[:HEADER.size]).hex()}")
        end = HEADER.size + length
        if len(buffer) < end:
            return
        body = bytes(buffer[HEADER.size:end])
        del buffer[:end]
        yield frame_type, body


def serve(options):
    sock = connect(options.connect)
    name = options.name.encode()[:64]
    sock.sendall(frame(HELLO, struct.pack("<I", options.credit) + name))
    buffer = bytearray()
    answered = 0
    while not stopping:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        if not chunk:
            print(f"{options.name}: spillway closed the connection (answered {answered})", file=sys.stderr)
            return 1
        buffer += chunk
        out = bytearray()
        for frame_type, body in frames(buffer):
            if frame_type == WORK:
                work_id = WORK_FIXED.unpack_from(body)[0]
                payload = body[WORK_FIXED.size:]
                out += frame(ANSWER, ANSWER_FIXED.pack(work_id, STATUS_OK) + payload)
                answered += 1
            elif frame_type == WELCOME:
                worker_id, timeout_ns, max_frame = WELCOME_BODY.unpack(body)
                print(f"{options.name}: worker {worker_id:#x} of spillway at {options.connect} "
                      f"(answer within {timeout_ns // 1_000_000} ms, frames up to {max_frame} B)",
                      file=sys.stderr)
            elif frame_type == ERROR:
                (code,) = struct.unpack_from("<H", body)
                detail = body[2:].decode(errors="replace")
                if code == ERROR_SHUTTING_DOWN:
                    print(f"{options.name}: spillway is shutting down (answered {answered})", file=sys.stderr)
                    return 0
                print(f"{options.name}: spillway cut this worker: code {code} ({detail})", file=sys.stderr)
                return 1
            elif frame_type != PONG:
                raise ValueError(f"unknown frame type {frame_type:#x}")
        sock.sendall(out)  # one write for every answer of this read
    print(f"{options.name}: stopped by a signal (answered {answered})", file=sys.stderr)
    return 0


def main():
    parser = argparse.ArgumentParser(description="A Spillway worker that answers each message with its payload")
    parser.add_argument("--connect", required=True, help="HOST:PORT or unix:PATH (spillway serve --workers)")
    parser.add_argument("--name", default="py-echo", help="the name Spillway shows, 1 to 64 bytes")
    parser.add_argument("--credit", type=int, default=16, help="Works held at once, 1 to 65536")
    options = parser.parse_args()

    def stop(_signal, _frame):
        global stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        return serve(options)
    except (OSError, ValueError) as error:
        print(f"{options.name}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
