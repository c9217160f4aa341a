"""Safety and lifetime checks of the compiled core through the public API
(BufferPool on iobuf._core). Prints PASS/FAIL per check, ALL PASS at the end.

    PYTHONPATH=src python prototypes/compiled-core/safety_core.py
"""
import gc, os, random, sys, threading, time, weakref
import numpy as np
import iobuf
from iobuf import BufferPool, BufferPoolConfig, Exhausted, IoBuf, IoBufMut, PoolClosed, flush_thread_cache

assert iobuf.IMPLEMENTATION == "compiled", iobuf.IMPLEMENTATION
ok = True


def check(name, cond):
    global ok
    ok &= bool(cond)
    print(("PASS " if cond else "FAIL ") + name, flush=True)


def cfg(n, size=4096, cache=None):
    c = BufferPoolConfig(min_size=size, max_size=size, max_per_class=n)
    return c if cache is None else c.with_thread_cache_capacity(cache)


# 1. a memoryview outlives its last owner; every other buffer is allocated and overwritten
pool = BufferPool(cfg(8))
b = pool.alloc_len(4096); memoryview(b)[:] = b"\xAB" * 4096
mv = memoryview(b); addr = b.address; del b
others = [pool.try_alloc(4096) for _ in range(7)]
for o in others: o.put_slice(b"\x00" * 4096)
try: pool.try_alloc(4096); check("exhausted while a view pins the buffer", False)
except Exhausted: check("exhausted while a view pins the buffer", True)
check("held view unchanged (IoBufMut export)", bytes(mv) == b"\xAB" * 4096)
check("no other buffer at the pinned address", all(o.address != addr for o in others))
del others, o; mv.release(); del mv
again = [pool.try_alloc(4096) for _ in range(8)]
check("pinned buffer returns after the view goes", addr in {o.address for o in again})
del again

# 2. freeze / slice / numpy
b = pool.alloc_len(4096); memoryview(b)[:] = b"\xCD" * 4096
f = b.freeze(); s = f[10:20]; arr = np.frombuffer(s, np.uint8)
del f, s, b
others = [pool.try_alloc(4096) for _ in range(7)]
for o in others: o.put_slice(b"\x11" * 4096)
check("numpy array of an IoBuf slice unchanged", bytes(arr) == b"\xCD" * 10)
try: pool.try_alloc(4096); check("the array pins its buffer", False)
except Exhausted: check("the array pins its buffer", True)
del others, o, arr

# 3. export counting: try_into_mut / release refuse while views live
b = pool.alloc_len(100); f = b.freeze(); v = memoryview(f)
check("try_into_mut refuses with a live export", f.try_into_mut() is None and len(f) == 100)
try: f.release(); check("release raises BufferError with a live export", False)
except BufferError as e: check("release raises BufferError with a live export", "memoryviews" in str(e))
v.release(); m = f.try_into_mut(); check("try_into_mut succeeds once the export is gone", m is not None and len(m) == 100 and m.is_pooled)
b2 = pool.alloc_len(10); f2 = b2.freeze(); c = f2.clone()
check("try_into_mut refuses with a clone", f2.try_into_mut() is None)
del c
check("try_into_mut succeeds after the clone goes", f2.try_into_mut() is not None)
b3 = pool.alloc_len(10); v3 = memoryview(b3); f3 = b3.freeze()
check("try_into_mut refuses while a view of the frozen IoBufMut lives", f3.try_into_mut() is None)
del v3
check("... and succeeds once it is gone", f3.try_into_mut() is not None)
b4 = pool.alloc_len(10); v4 = b4.as_memoryview()
try: b4.release(); check("IoBufMut.release raises with a live view", False)
except BufferError: check("IoBufMut.release raises with a live view", len(b4) == 10 and b4.is_pooled)
del v4
b4.release(); check("IoBufMut.release after the view", len(b4) == 0 and not b4.is_pooled)
del m, b, f, b2, f2, b3, f3, b4

# 4. resurrection from __del__ in a cycle cannot alias
pool2 = BufferPool(cfg(4, cache=2))
saved = []
class Holder:
    def __init__(self, buf): self.buf = buf; self.me = self
    def __del__(self): saved.append(self)
h = Holder(pool2.alloc_len(4096)); memoryview(h.buf)[:] = b"\xEE" * 4096
h2 = Holder(pool2.try_alloc(4096).freeze())
del h, h2; gc.collect()
check("resurrected objects kept their buffers", len(saved) == 2)
others = [pool2.try_alloc(4096) for _ in range(2)]
for o in others: o.put_slice(b"\x00" * 4096)
check("resurrected IoBufMut bytes unchanged", bytes(saved[0].buf) == b"\xEE" * 4096)
check("no alias with resurrected buffers", saved[0].buf.address not in {o.address for o in others})
try: pool2.try_alloc(4096); check("pool2 exhausted (2 resurrected, 2 live)", False)
except Exhausted: check("pool2 exhausted (2 resurrected, 2 live)", True)
for x in saved: x.me = None
saved.clear(); del others, o, x; gc.collect()
check("all back after the resurrected objects die", len([pool2.try_alloc(4096) for _ in range(4)]) == 4)

# 5. growth and freeze with live exports keep old memory
h = IoBufMut(b"abc"); v = memoryview(h); h.put_slice(b"d" * 1000); h.put_slice(b"e" * 5000)
check("grown heap buffer: the old view still reads the old bytes", bytes(v) == b"abc")
p = pool.alloc_len(5); memoryview(p)[:] = b"hello"; pv = memoryview(p); fr = p.freeze(); del fr
check("frozen-and-dropped pooled buffer stays pinned by the IoBufMut's view", bytes(pv) == b"hello")
del pv, v, h, p

# 6. multi-thread churn: tags never change under a live holder, no address shared by two live buffers
pool3 = BufferPool(BufferPoolConfig(min_size=4096, max_size=65536, max_per_class=16).with_thread_cache_capacity(4))
errors = []
handoff = []
lock = threading.Lock()
def churn(seed, n=20000):
    rnd = random.Random(seed); live = []
    try:
        for _ in range(n):
            r = rnd.random()
            if r < 0.45 and len(live) < 12:
                try: b = pool3.try_alloc(rnd.choice([1, 4096, 5000, 65536]))
                except Exhausted: continue
                tag = bytes([rnd.randrange(256)]) * 16
                b.put_slice(tag)
                x = rnd.random()
                obj = b.freeze() if x < 0.3 else b
                view = memoryview(obj) if rnd.random() < 0.3 else None
                live.append((obj, tag, view))
            elif r < 0.55 and live:
                with lock: handoff.append(live.pop(rnd.randrange(len(live))))
            elif r < 0.65:
                with lock:
                    if handoff: live.append(handoff.pop())
            elif live:
                obj, tag, view = live.pop(rnd.randrange(len(live)))
                if bytes(obj)[:16] != tag: errors.append("tag changed")
                if view is not None and bytes(view)[:16] != tag: errors.append("view changed")
            for obj, tag, view in live[-3:]:
                if bytes(obj)[:16] != tag: errors.append("live tag changed")
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
handoff.clear(); gc.collect()
check(f"4-thread churn: no corruption ({errors[:3]})", not errors)
st = pool3.stats()
check("4-thread churn: every buffer back (exited threads flushed their caches)",
      all(c.created == c.global_free + c.local_free for c in st.classes))

# 7. pools dropped with buffers outstanding: the pool dies and closes, the buffers stay valid
pool4 = BufferPool(cfg(4))
ref = weakref.ref(pool4)
keep = pool4.alloc_len(4096); memoryview(keep)[:] = b"\x77" * 4096
cls_ref = weakref.ref(pool4._classes[0])
del pool4; gc.collect()
check("a dropped pool is collected with a buffer outstanding", ref() is None)
check("the outstanding buffer is intact", bytes(keep) == b"\x77" * 4096 and keep.is_pooled)
del keep; gc.collect()
check("its size class goes once the buffer does", cls_ref() is None)

# 8. thousands of pools, created and dropped in one thread, and 3000 alive at once
t0 = time.perf_counter()
for i in range(5000):
    p = BufferPool(cfg(2, size=1024))
    x = p.try_alloc(1000); y = p.try_alloc(10).freeze(); del x, y
    if i % 2: p.close()
    del p
check(f"5000 pools made and dropped in one thread ({time.perf_counter() - t0:.2f} s)", True)
many = [BufferPool(cfg(2, size=1024)) for _ in range(3000)]
bufs = [p.try_alloc(1) for p in many]
check("3000 pools alive at once, each allocating", all(b.is_pooled for b in bufs))
del bufs
for p in many: p.close()
del many, p
gc.collect()

# 9. a thread's cache of a pool closed elsewhere is freed; a thread's exit flushes
pool5 = BufferPool(cfg(8, cache=4))
ready, go = threading.Event(), threading.Event()
def worker():
    bs = [pool5.try_alloc(4096) for _ in range(3)]
    del bs
    ready.set(); go.wait()
t = threading.Thread(target=worker); t.start(); ready.wait()
st5 = pool5.stats().classes[0]
check("another thread's cache is not the caller's", st5.local_free == 0 and st5.created == 3 and st5.global_free == 0)
go.set(); t.join()
st5 = pool5.stats().classes[0]
check("the thread's exit flushed its cache to the shared list", st5.global_free == 3)
cref = weakref.ref(pool5._classes[0])
ready.clear(); go.clear()
def worker2():
    b = pool5.try_alloc(4096); del b
    ready.set(); go.wait()
    flush_thread_cache()  # drops this thread's facet of the closed pool
    ready.set()
t = threading.Thread(target=worker2); t.start(); ready.wait(); ready.clear()
pool5.close(); del pool5; gc.collect()
go.set(); ready.wait(); gc.collect()
check("a closed pool's state is freed once the other thread lets its cache go", cref() is None)
t.join()

# 10. fork while other threads allocate: the child allocates and exits
if hasattr(os, "fork"):
    pool6 = BufferPool(BufferPoolConfig(min_size=4096, max_size=65536, max_per_class=64).with_thread_cache_capacity(2))
    stop = threading.Event()
    def spin():
        while not stop.is_set():
            try:
                bs = [pool6.try_alloc(4096) for _ in range(8)]
                del bs
            except Exhausted:
                pass
    spinners = [threading.Thread(target=spin) for _ in range(2)]
    for t in spinners: t.start()
    good = 0
    for _ in range(20):
        pid = os.fork()
        if pid == 0:
            try:
                x = [pool6.try_alloc(4096) for _ in range(20)]
                x[0].put_slice(b"child")
                os._exit(0 if bytes(x[0]) == b"child" else 3)
            except BaseException:
                os._exit(4)
        deadline = time.time() + 10
        while time.time() < deadline:
            wpid, status = os.waitpid(pid, os.WNOHANG)
            if wpid:
                good += os.waitstatus_to_exitcode(status) == 0
                break
            time.sleep(0.01)
        else:
            os.kill(pid, 9); os.waitpid(pid, 0)
    stop.set()
    for t in spinners: t.join()
    check(f"20 forks during 2-thread churn: children allocate and exit ({good}/20)", good == 20)

# 11. closed pool: later returns are freed, never reused
pool7 = BufferPool(cfg(4, cache=4))
a = pool7.try_alloc(4096); addr_a = a.address
pool7.close()
try: pool7.try_alloc(1); check("closed pool raises PoolClosed", False)
except PoolClosed: check("closed pool raises PoolClosed", True)
del a
st7 = pool7.stats().classes[0]
check("a buffer returned after close is not parked", st7.global_free == 0 and st7.local_free == 0)

print("ALL PASS" if ok else "SOME FAILED")
sys.exit(0 if ok else 1)
