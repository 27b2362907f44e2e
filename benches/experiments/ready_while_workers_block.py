#!/usr/bin/env python3
"""How long a GET waits when it becomes ready together with K requests that then block their
worker (POST heads whose body is withheld), all on parked kept-alive connections: p50/p90/p99 of
the GET over ROUNDS rounds. Start the server pinned (taskset -c 0,1: 2 CPUs, 4 parked-set
waiters), then: python3 ready_while_workers_block.py PORT 150 4"""
import socket, sys, time, threading
port, rounds, K = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def mk():
    s = socket.create_connection(("127.0.0.1", port)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); return s
def rd(s):
    buf = b""
    while b"\r\n\r\n" not in buf: buf += s.recv(65536)
    h, _, rest = buf.partition(b"\r\n\r\n"); n = int([l.split(b":")[1] for l in h.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(rest) < n: rest += s.recv(65536)
    return h.split(b"\r\n")[0]
s0 = mk(); s0.sendall(b"POST /file/c/small HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\n\r\n" + b"x" * 4096); rd(s0)
GET = b"GET /file/c/small HTTP/1.1\r\nHost: x\r\n\r\n"
warm = [mk() for _ in range(8)]
lats = []
for r in range(rounds):
    bl = [mk() for _ in range(K)]; g = mk()
    for s in bl + [g] + warm: s.sendall(GET)
    for s in bl + [g] + warm: rd(s)
    time.sleep(0.001)
    # warm-up so some workers linger, then the coincidence
    for s in warm: s.sendall(GET)
    for s in warm: rd(s)
    for s in bl: s.sendall(b"POST /file/c/b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
    t = time.perf_counter(); g.sendall(GET); rd(g); lats.append(time.perf_counter() - t)
    for s in bl: s.sendall(b"12345")
    for s in bl: rd(s)
    for s in bl + [g]: s.close()
    time.sleep(0.02)
lats.sort(); ms = [x * 1000 for x in lats]
print(f"K={K} n={len(ms)} p50={ms[len(ms)//2]:.2f} p90={ms[int(len(ms)*.9)]:.2f} p99={ms[int(len(ms)*.99)]:.2f} max={ms[-1]:.2f} >5ms={sum(1 for x in ms if x>5)}")
