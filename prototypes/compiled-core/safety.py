"""(d) safety checks for the compiled core."""
import gc, random, sys, threading, importlib
core = importlib.import_module(sys.argv[1] if len(sys.argv) > 1 else "core_c")
ok = True
def check(name, cond):
    global ok
    ok &= bool(cond); print(("PASS " if cond else "FAIL ") + name)

# 1. a memoryview outlives its last owner; every other buffer is allocated and overwritten
pool = core.Pool(4096, 4096, 8, 4)
b = pool.alloc_len(4096); memoryview(b)[:] = b"\xAB" * 4096
mv = memoryview(b); addr = b.address; del b
others = [pool.try_alloc(4096) for _ in range(7)]
for o in others: o.put_slice(b"\x00" * 4096)
try: pool.try_alloc(4096); check("exhausted while view pins the buffer", False)
except core.Exhausted: check("exhausted while view pins the buffer", True)
check("held view unchanged (IoBufMut export)", bytes(mv) == b"\xAB" * 4096)
check("no other buffer at the pinned address", all(o.address != addr for o in others))
del others, o; mv.release(); del mv
again = [pool.try_alloc(4096) for _ in range(8)]
check("pinned buffer returns after the view goes", addr in {o.address for o in again})
del again

# 2. same through freeze/slice/numpy
import numpy as np
b = pool.alloc_len(4096); memoryview(b)[:] = b"\xCD" * 4096
f = b.freeze(); s = f[10:20]; arr = np.frombuffer(s, np.uint8); addr = f.address if hasattr(f, "address") else None
del f, s, b
others = [pool.try_alloc(4096) for _ in range(7)]
for o in others: o.put_slice(b"\x11" * 4096)
check("numpy array of an IoBuf slice unchanged", bytes(arr) == b"\xCD" * 10)
del others, o, arr

# 3. export counting: try_into_mut / release refuse while views live
b = pool.alloc_len(100); f = b.freeze(); v = memoryview(f)
check("try_into_mut refuses with a live export", f.try_into_mut() is None)
try: f.release(); check("release raises BufferError with a live export", False)
except BufferError: check("release raises BufferError with a live export", True)
v.release(); m = f.try_into_mut(); check("try_into_mut succeeds once the export is gone", m is not None and len(m) == 100)
c = None
b2 = pool.alloc_len(10); f2 = b2.freeze(); c = f2.clone()
check("try_into_mut refuses with a clone", f2.try_into_mut() is None)
del c, m, b, f, b2, f2

# 4. resurrection from __del__ in a cycle cannot alias
pool2 = core.Pool(4096, 4096, 4, 2)
saved = []
class Holder:
    def __init__(self, buf): self.buf = buf; self.me = self
    def __del__(self): saved.append(self)      # resurrects self (and its buffer)
h = Holder(pool2.alloc_len(4096)); memoryview(h.buf)[:] = b"\xEE" * 4096
h2 = Holder(pool2.try_alloc(4096).freeze())   # IoBuf inside a resurrecting cycle
del h, h2; gc.collect()
check("resurrected objects kept their buffers", len(saved) == 2)
others = [pool2.try_alloc(4096) for _ in range(2)]
for o in others: o.put_slice(b"\x00" * 4096)
check("resurrected IoBufMut bytes unchanged", bytes(saved[0].buf) == b"\xEE" * 4096)
addrs = {o.address for o in others}
check("no alias with resurrected buffers", saved[0].buf.address not in addrs)
try: pool2.try_alloc(4096); check("pool2 exhausted (2 held by resurrected, 2 live)", False)
except core.Exhausted: check("pool2 exhausted (2 held by resurrected, 2 live)", True)
for x in saved: x.me = None
saved.clear(); del others, o, x; gc.collect()
check("all back after the resurrected objects die", len([pool2.try_alloc(4096) for _ in range(4)]) == 4)

# 5. random alloc/drop/freeze/view/thread churn: no two live buffers share an address
pool3 = core.Pool(4096, 65536, 16, 4)
errors = []
def churn(seed, n=20000):
    rnd = random.Random(seed); live = []
    try:
        for _ in range(n):
            r = rnd.random()
            if r < 0.45 and len(live) < 12:
                try: b = pool3.try_alloc(rnd.choice([1, 4096, 5000, 65536]))
                except core.Exhausted: continue
                tag = bytes([rnd.randrange(256)]) * 16
                b.put_slice(tag)
                x = rnd.random()
                obj = b.freeze() if x < 0.3 else b
                view = memoryview(obj) if x > 0.7 else None
                live.append((obj, view, tag))
            elif live:
                obj, view, tag = live.pop(rnd.randrange(len(live)))
                if bytes(view if view is not None else obj)[:16] != tag: errors.append("corrupt")
                if rnd.random() < 0.3 and view is None:
                    try: obj.release()
                    except BufferError: errors.append("bad BufferError")
        for obj, view, tag in live:
            if bytes(view if view is not None else obj)[:16] != tag: errors.append("corrupt at end")
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
for t in ts: t.start()
for t in ts: t.join()
check(f"4-thread churn: no corruption ({len(errors)} errors)", not errors)
st = pool3.stats(); pool3.flush_thread_cache(); st = pool3.stats()
check("thread exit flushed caches: created == global_free", all(d["created"] == d["global_free"] for d in st))
print("ALL PASS" if ok else "SOME FAILED")
