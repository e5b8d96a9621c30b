#!/usr/bin/env python3
"""A userspace stand-in for `tc qdisc ... netem delay`, for kernels built without sch_netem.

Two tap devices: the host's own interface (INNER, which carries its address) and its leg on the link
(OUTER, bridged with the host's veth). Frames are copied between them; those the host sends (INNER to
OUTER) are held for the current delay, as netem on the host's egress would. A line on stdin sets a new
delay in milliseconds; the end of stdin ends the process, and the taps vanish with it.

usage: delay-link.py INNER OUTER [DELAY_MS]
"""
import fcntl
import heapq
import os
import select
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


def tap(name):
    fd = os.open('/dev/net/tun', os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH', name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def send(fd, frame):
    try:
        os.write(fd, frame)
    except OSError:
        pass  # that side is down (EIO): the frame is lost, as on a wire


inner, outer = tap(sys.argv[1]), tap(sys.argv[2])
delay = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.0
stdin = sys.stdin.fileno()
pending = b''
held, seq = [], 0
print('ready', flush=True)
while True:
    timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
    ready, _, _ = select.select([inner, outer, stdin], [], [], timeout)
    for fd in ready:
        if fd == stdin:
            chunk = os.read(stdin, 1024)
            if not chunk:
                sys.exit(0)
            pending += chunk
            while b'\n' in pending:
                line, pending = pending.split(b'\n', 1)
                delay = float(line) / 1000
            continue
        while True:
            try:
                frame = os.read(fd, 65536)
            except BlockingIOError:
                break
            if fd == outer:
                send(inner, frame)
            else:
                seq += 1
                heapq.heappush(held, (time.monotonic() + delay, seq, frame))
    now = time.monotonic()
    while held and held[0][0] <= now:
        send(outer, heapq.heappop(held)[2])
