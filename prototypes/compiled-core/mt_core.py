"""mt.py against the real compiled core (BufferPool on iobuf._core): two threads vs one on one pool
(free-threaded build). Median of rounds; each thread builds its own bound method.

    PYTHONPATH=src python -X gil=0 prototypes/compiled-core/mt_core.py [N] [ROUNDS]
"""
import sys, threading, time, statistics, importlib, gc
from iobuf import BufferPool, BufferPoolConfig, IMPLEMENTATION
assert IMPLEMENTATION == "compiled"
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 15
pool = BufferPool(BufferPoolConfig.for_storage())

def work(size, n, out, barrier, kind):
    alloc = pool.try_alloc if kind != "bytearray" else bytearray
    sz = int(str(size))  # a thread-local int object
    barrier.wait()
    t0 = time.perf_counter_ns(); c0 = time.thread_time_ns()
    if kind == "pool":
        for _ in range(n):
            b = alloc(sz); del b
    elif kind == "pool+freeze":
        for _ in range(n):
            f = alloc(sz).freeze(); c = f[1:100]; del f, c
    else:
        for _ in range(n):
            b = alloc(sz); del b
    out.append((time.perf_counter_ns() - t0, time.thread_time_ns() - c0))

def run(threads, size, kind):
    out = []; barrier = threading.Barrier(threads)
    ts = [threading.Thread(target=work, args=(size, N, out, barrier, kind)) for _ in range(threads)]
    for t in ts: t.start()
    for t in ts: t.join()
    wall = max(w for w, _ in out); cpu = sum(c for _, c in out) / threads
    return wall / N, cpu / N

gc.disable()
for kind, size in (("pool", 65536), ("pool", 4096), ("pool+freeze", 4096), ("bytearray", 65536), ("bytearray", 4096)):
    r1, r2 = [], []
    for _ in range(ROUNDS):
        r1.append(run(1, size, kind)); r2.append(run(2, size, kind))
    w1 = statistics.median(w for w, _ in r1); c1 = statistics.median(c for _, c in r1)
    w2 = statistics.median(w for w, _ in r2); c2 = statistics.median(c for _, c in r2)
    print(f"{kind:12s} {size:6d}: 1T {w1:7.1f} ns/cycle  2T wall {w2:7.1f} ns/cycle/thread  scaling 2T/1T = {2*w1/w2:.2f}  CPU/cycle 2T vs 1T = {c2/c1:.2f}")
