"""Interleaved micro-benchmarks: 15 rounds, gc disabled, median ns/cycle (loop overhead included)."""
import gc, random, statistics, sys, time, importlib
import numpy
modname = sys.argv[1] if len(sys.argv) > 1 else "core_c"
core = importlib.import_module(modname)
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
ROUNDS = 15

storage = core.Pool(4096, 8 << 20, 64, 32)
network = core.Pool(1024, 128 << 10, 4096, 2048)
eager = core.Pool(4096, 8 << 20, 64, 32); eager.eager_block = True

tests = {}
def mk(name, setup, body, n=N):
    src = f"def f(N):\n" + "".join(f"    {l.strip()}\n" for l in setup.split(";") if l.strip()) + \
          f"    for _ in range(N):\n" + "".join(f"        {l.strip()}\n" for l in body.split(";")) + \
          "    return time.perf_counter_ns()\n"
    g = {}; exec(src, globals(), g); fn = g["f"]
    def run(fn=fn, n=n):
        t0 = time.perf_counter_ns(); t1 = fn(n); return (t1 - t0) / n
    tests[name] = run

mk("empty loop", "", "pass")
for cfg, pool, lo, hi in (("storage", storage, 12, 23), ("network", network, 10, 17)):
    for k in range(lo, hi + 1):
        mk(f"alloc+drop {cfg} {1<<k}", f"alloc = pools['{cfg}'].try_alloc", f"b = alloc({1<<k}); del b")
pools = {"storage": storage, "network": network, "eager": eager}
mk("alloc+drop eager-block 4096", "alloc = pools['eager'].try_alloc", "b = alloc(4096); del b")
mk("alloc+drop eager-block 1MiB", "alloc = pools['eager'].try_alloc", "b = alloc(1<<20); del b")
mk("bytearray(4096)", "ba = bytearray", "b = ba(4096); del b")
mk("bytearray(64KiB)", "ba = bytearray", "b = ba(65536); del b", n=N // 4)
mk("bytearray(1MiB)", "ba = bytearray", "b = ba(1<<20); del b", n=N // 20)
mk("numpy.empty(4096)", "e = numpy.empty; u8 = numpy.uint8", "b = e(4096, u8); del b")
mk("numpy.empty(1MiB)", "e = numpy.empty; u8 = numpy.uint8", "b = e(1<<20, u8); del b")
# (b) alloc + memoryview + write one byte per page + drop
mk("(b) pool 4K mv+write", "alloc = pools['storage'].alloc_len", "b = alloc(4096); m = memoryview(b); m[0] = 1; del m, b")
mk("(b) pool 4K spare+write", "alloc = pools['storage'].try_alloc", "b = alloc(4096); m = b.spare_capacity(); m[0] = 1; del m, b")
mk("(b) eager 4K mv+write", "alloc = pools['eager'].alloc_len", "b = alloc(4096); m = memoryview(b); m[0] = 1; del m, b")
mk("(b) bytearray 4K mv+write", "ba = bytearray", "b = ba(4096); m = memoryview(b); m[0] = 1; del m, b")
mk("(b) pool 1M mv+write/page", "alloc = pools['storage'].alloc_len; r = range(0, 1<<20, 4096)", "b = alloc(1<<20); m = memoryview(b); \nfor i in r: m[i] = 1\n        del m, b", n=N // 20)
mk("(b) bytearray 1M mv+write/page", "ba = bytearray; r = range(0, 1<<20, 4096)", "b = ba(1<<20); m = memoryview(b); \nfor i in r: m[i] = 1\n        del m, b", n=N // 20)
# (c) view operations
mk("(c) mv[1:100]", "mv = memoryview(bytearray(4096))", "s = mv[1:100]; del s")
mk("(c) alloc+freeze+drop", "alloc = pools['storage'].try_alloc", "f = alloc(4096).freeze(); del f")
mk("(c) alloc+drop (freeze base)", "alloc = pools['storage'].try_alloc", "b = alloc(4096); del b")
mk("(c) clone", "b = pools['storage'].try_alloc(4096); b.set_len(4096); f = b.freeze()", "c = f.clone(); del c")
mk("(c) slice f[1:100]", "b = pools['storage'].try_alloc(4096); b.set_len(4096); f = b.freeze()", "c = f[1:100]; del c")
mk("(c) split_to(1)", "b = pools['storage'].try_alloc(8<<20); b.set_len(8<<20); f = b.freeze()", "c = f.split_to(1); del c")

names = list(tests)
res = {k: [] for k in names}
gc.disable()
for k in names: tests[k]()  # warm up
for r in range(ROUNDS):
    random.shuffle(names)
    for k in names:
        res[k].append(tests[k]())
gc.enable()
med = {k: statistics.median(v) for k, v in res.items()}
for k in tests:
    print(f"{k:38s} {med[k]:10.1f} ns")
ba = med["bytearray(4096)"]; npy = med["numpy.empty(4096)"]
allocs = [k for k in med if k.startswith("alloc+drop storage") or k.startswith("alloc+drop network")]
worst = max(med[k] for k in allocs)
print(f"\nworst pooled alloc+drop {worst:.1f} ns: {worst/ba:.2f}x bytearray(4096) (<=0.6), {worst/npy:.2f}x numpy.empty(4096) (<=0.7)")
print(f"1 MiB: bytearray(1MiB)/pool = {med['bytearray(1MiB)']/med['alloc+drop storage 1048576']:.0f}x (>=150)")
print(f"(b) 4K: pool/bytearray = {med['(b) pool 4K mv+write']/med['(b) bytearray 4K mv+write']:.2f} (<=0.8); spare {med['(b) pool 4K spare+write']/med['(b) bytearray 4K mv+write']:.2f}; eager {med['(b) eager 4K mv+write']/med['(b) bytearray 4K mv+write']:.2f}")
base = med["(c) mv[1:100]"]
fr = med["(c) alloc+freeze+drop"] - med["(c) alloc+drop (freeze base)"] + med["empty loop"]
print(f"(c) vs mv[1:100] ({base:.1f}): freeze~{fr:.1f} -> {fr/base:.2f}x, clone {med['(c) clone']/base:.2f}x, slice {med['(c) slice f[1:100]']/base:.2f}x, split_to {med['(c) split_to(1)']/base:.2f}x (each <=2)")
