"""bench.py adapted to the real compiled core: iobuf._core.PoolCore through a
Python subclass that defines the three hooks (as BufferPool does).
Interleaved rounds, gc disabled, median ns/cycle (loop overhead included).

    PYTHONPATH=src python prototypes/compiled-core/bench_core.py [N]
"""
import gc, random, statistics, sys, time
import numpy
from iobuf import _core as core
from iobuf._config import BufferPoolConfig
from iobuf._errors import Exhausted, Oversized, PoolClosed

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ROUNDS = 15


class P(core.PoolCore):
    __slots__ = ("_closed", "_alignment", "__weakref__")

    def __init__(self, config):
        self._closed = True
        self._alignment = config.alignment
        self._core_init(config, config.resolve_thread_cache_capacity())
        self._closed = False

    def _bypass(self, capacity, length):
        if self._closed:
            raise PoolClosed()
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        b = core.IoBufMut.zeroed_with_alignment(max(capacity, 1), self._alignment)
        b.truncate(length)
        return b

    def _oversized(self):
        return PoolClosed() if self._closed else Oversized()

    def _exhausted(self):
        return PoolClosed() if self._closed else Exhausted()


storage_cfg = BufferPoolConfig.for_storage()
network_cfg = BufferPoolConfig.for_network()
pools = {"storage": P(storage_cfg), "network": P(network_cfg)}
tests = {}


def mk(name, setup, body, n=N):
    src = "def f(N):\n" + "".join(f"    {l.strip()}\n" for l in setup.split(";") if l.strip()) + \
          "    for _ in range(N):\n" + "".join(f"        {l.strip()}\n" for l in body.split(";")) + \
          "    return time.perf_counter_ns()\n"
    g = {}
    exec(src, globals(), g)
    fn = g["f"]

    def run(fn=fn, n=n):
        t0 = time.perf_counter_ns()
        t1 = fn(n)
        return (t1 - t0) / n
    tests[name] = run


mk("empty loop", "", "pass")
for cfg_name, cfg in (("storage", storage_cfg), ("network", network_cfg)):
    for size in cfg.class_sizes:
        mk(f"alloc+drop {cfg_name} {size}", f"alloc = pools['{cfg_name}'].try_alloc", f"b = alloc({size}); del b")
mk("bytearray(4096)", "ba = bytearray", "b = ba(4096); del b")
mk("bytearray(1MiB)", "ba = bytearray", "b = ba(1<<20); del b", n=N // 20)
mk("numpy.empty(4096)", "e = numpy.empty; u8 = numpy.uint8", "b = e(4096, u8); del b")
mk("(b) pool 4K mv+write", "alloc = pools['storage'].alloc_len", "b = alloc(4096); m = memoryview(b); m[0] = 1; del m, b")
mk("(b) pool 4K spare+write", "alloc = pools['storage'].try_alloc", "b = alloc(4096); m = b.spare_capacity(); m[0] = 1; del m, b")
mk("(b) bytearray 4K mv+write", "ba = bytearray", "b = ba(4096); m = memoryview(b); m[0] = 1; del m, b")
mk("(c) mv[1:100]", "mv = memoryview(bytearray(4096))", "s = mv[1:100]; del s")
mk("(c) alloc+freeze+drop", "alloc = pools['storage'].try_alloc", "f = alloc(4096).freeze(); del f")
mk("(c) alloc+drop (freeze base)", "alloc = pools['storage'].try_alloc", "b = alloc(4096); del b")
mk("(c) clone", "b = pools['storage'].try_alloc(4096); b.set_len(4096); f = b.freeze()", "c = f.clone(); del c")
mk("(c) slice f[1:100]", "b = pools['storage'].try_alloc(4096); b.set_len(4096); f = b.freeze()", "c = f[1:100]; del c")
mk("(c) f.slice(1, 100)", "b = pools['storage'].try_alloc(4096); b.set_len(4096); f = b.freeze()", "c = f.slice(1, 100); del c")
mk("(c) split_to(1)", "b = pools['storage'].try_alloc(8<<20); b.set_len(8<<20); f = b.freeze()", "c = f.split_to(1); del c")

names = list(tests)
res = {k: [] for k in names}
gc.disable()
for k in names:
    tests[k]()  # warm up
for r in range(ROUNDS):
    random.shuffle(names)
    for k in names:
        res[k].append(tests[k]())
gc.enable()
med = {k: statistics.median(v) for k, v in res.items()}
for k in tests:
    print(f"{k:38s} {med[k]:10.1f} ns")
ba = med["bytearray(4096)"]
npy = med["numpy.empty(4096)"]
allocs = [k for k in med if k.startswith("alloc+drop storage") or k.startswith("alloc+drop network")]
worst_k = max(allocs, key=lambda k: med[k])
worst = med[worst_k]
print(f"\nworst pooled alloc+drop ({worst_k}) {worst:.1f} ns: {worst/ba:.2f}x bytearray(4096) (<=0.6), {worst/npy:.2f}x numpy.empty(4096) (<=0.7)")
print(f"1 MiB: bytearray(1MiB)/pool = {med['bytearray(1MiB)']/med['alloc+drop storage 1048576']:.0f}x (>=150)")
print(f"(b) 4K: pool/bytearray = {med['(b) pool 4K mv+write']/med['(b) bytearray 4K mv+write']:.2f} (<=0.8); spare {med['(b) pool 4K spare+write']/med['(b) bytearray 4K mv+write']:.2f}")
base = med["(c) mv[1:100]"]
fr = med["(c) alloc+freeze+drop"] - med["(c) alloc+drop (freeze base)"] + med["empty loop"]
print(f"(c) vs mv[1:100] ({base:.1f}): freeze~{fr:.1f} -> {fr/base:.2f}x, clone {med['(c) clone']/base:.2f}x, "
      f"slice [1:100] {med['(c) slice f[1:100]']/base:.2f}x, .slice() {med['(c) f.slice(1, 100)']/base:.2f}x, split_to {med['(c) split_to(1)']/base:.2f}x (each <=2)")
