"""A hypothesis state machine of one pool against a plain model of what every handle holds.

Profiles: 200 examples by default, 2,000 under CI (``CI`` set; 25-50 s per
interpreter here, 3.13t the slowest), and any number with
``IOBUF_STATEFUL_EXAMPLES=20000`` for a long run.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from iobuf import (
    BufferPool,
    BufferPoolConfig,
    Exhausted,
    IoBuf,
    IoBufMut,
    Oversized,
    PoolClosed,
    flush_thread_cache,
)

from .strategies import payloads, small_configs

ALLOCATORS = ["try_alloc", "alloc", "alloc_zeroed", "try_alloc_zeroed", "alloc_len"]


@dataclass
class Handle:
    """A live object (IoBufMut, IoBuf or memoryview) and what the model says it holds."""

    obj: Any
    content: bytes
    base: int | None  # base address of the pooled buffer it reaches, None if untracked
    size: int | None  # its size class, None if untracked


class PoolMachine(RuleBasedStateMachine):
    """Drives allocate/write/freeze/slice/clone/copy/convert/export/drop/flush/trim/close,
    with hand-offs to a second thread, on pools with and without scrubbing and tracking."""

    def __init__(self) -> None:
        super().__init__()
        self.handles: list[Handle] = []
        self.pool: BufferPool
        self.config: BufferPoolConfig
        self.closed = False

    @initialize(cfg=small_configs(), scrub=st.booleans(), track=st.booleans())
    def build(self, cfg: BufferPoolConfig, scrub: bool, track: bool) -> None:
        """Start from a fresh pool of a small random config, with scrubbing and tracking each on or
        off, and an empty cache in this thread."""
        flush_thread_cache()
        self.config = cfg.with_scrub_on_return(scrub).with_track_allocations(track)
        self.pool = BufferPool(self.config)

    # -- helpers ---------------------------------------------------------------

    def live_bases(self) -> set[int]:
        return {h.base for h in self.handles if h.base is not None}

    def pick(self, data: st.DataObject, kind: type) -> tuple[int, Handle] | None:
        choices = [i for i, h in enumerate(self.handles) if isinstance(h.obj, kind)]
        if not choices:
            return None
        i = data.draw(st.sampled_from(choices))
        return i, self.handles[i]

    def adopt(self, buf: IoBufMut, content: bytes) -> None:
        if buf.is_pooled:
            base = buf.address
            assert base not in self.live_bases(), "a live buffer was handed out twice"
            assert base % self.config.alignment == 0
            size = buf.capacity
            self.handles.append(Handle(buf, content, base, size))
        else:
            self.handles.append(Handle(buf, content, None, None))

    # -- rules -----------------------------------------------------------------

    @rule(
        data=st.data(),
        how=st.sampled_from(ALLOCATORS),
    )
    def allocate(self, data: st.DataObject, how: str) -> None:
        """Allocate through one of the five allocators at a random size up to past max_size: after
        close() every one raises PoolClosed; only try_* may raise Oversized (and only above
        max_size) or Exhausted; the zeroed allocators return zeros, alloc_len the requested length,
        the others an empty buffer (all zeros underneath when scrubbing); a pooled buffer is aligned
        and its address is not one a live handle still reaches."""
        size = data.draw(st.integers(0, self.config.max_size + 64))
        if self.closed:
            with pytest.raises(PoolClosed):
                getattr(self.pool, how)(size)
            return
        try:
            buf = getattr(self.pool, how)(size)
        except Oversized:
            assert how.startswith("try") and size > self.config.max_size
            return
        except Exhausted:
            assert how.startswith("try")
            return
        if how in ("alloc_zeroed", "try_alloc_zeroed"):
            assert bytes(buf) == bytes(size)
            content = bytes(size)
        elif how == "alloc_len":
            assert len(buf) == size
            content = data.draw(st.binary(min_size=size, max_size=size))
            buf.as_memoryview()[:] = content
        else:
            assert len(buf) == 0
            content = b""
            if self.config.scrub_on_return and buf.is_pooled:
                buf.set_len(buf.capacity)  # whatever the last user wrote was zeroed
                assert bytes(buf) == bytes(buf.capacity)
                buf.set_len(0)
        assert buf.capacity >= size
        self.adopt(buf, content)

    @rule(data=st.data(), payload=payloads(300))
    def write(self, data: st.DataObject, payload: bytes) -> None:
        """put_slice into an IoBufMut (what fits, or all of it when it can grow); the model appends the
        same bytes, so a write that landed elsewhere or was lost shows in the invariant."""
        picked = self.pick(data, IoBufMut)
        if picked is None:
            return
        _, h = picked
        room = h.obj.capacity - len(h.obj)
        chunk = payload[: max(room, 0)] if not h.obj._grow else payload
        h.obj.put_slice(chunk)
        h.content += chunk

    @rule(data=st.data())
    def freeze(self, data: st.DataObject) -> None:
        """Freezing an IoBufMut leaves it empty with capacity 0 and yields an IoBuf that holds its
        bytes and still reaches the same pooled buffer."""
        picked = self.pick(data, IoBufMut)
        if picked is None:
            return
        i, h = picked
        frozen = h.obj.freeze()
        assert len(h.obj) == 0 and h.obj.capacity == 0
        self.handles[i] = Handle(frozen, h.content, h.base, h.size)

    @rule(data=st.data())
    def slice_or_clone(self, data: st.DataObject) -> None:
        """slice() or [a:b] of an IoBuf holds exactly those bytes and pins the buffer; an empty part
        reaches no pooled memory; a clone holds all of it."""
        picked = self.pick(data, IoBuf)
        if picked is None:
            return
        _, h = picked
        n = len(h.content)
        a = data.draw(st.integers(0, n))
        b = data.draw(st.integers(a, n))
        part = h.obj.slice(a, b) if data.draw(st.booleans()) else h.obj[a:b]
        if a == b:
            assert not part.is_pooled
            return
        self.handles.append(Handle(part, h.content[a:b], h.base, h.size))
        self.handles.append(Handle(h.obj.clone(), h.content, h.base, h.size))

    @rule(data=st.data())
    def copy_to_bytes(self, data: st.DataObject) -> None:
        """copy_to_bytes(n) returns the first n bytes and advances the source; a full drain moves the
        ownership out, so the drained source no longer counts as reaching the buffer."""
        picked = self.pick(data, (IoBuf, IoBufMut))  # type: ignore[arg-type]
        if picked is None:
            return
        i, h = picked
        n = data.draw(st.integers(0, len(h.content)))
        out = h.obj.copy_to_bytes(n)
        assert out == h.content[:n]
        if n:
            self.handles.append(Handle(out, h.content[:n], h.base, h.size))
        h.content = h.content[n:]
        if n and not h.content:
            # a full drain moves ownership out: the source no longer reaches the buffer
            self.handles[i] = Handle(h.obj, b"", None, None)

    @rule(data=st.data())
    def try_into_mut(self, data: st.DataObject) -> None:
        """try_into_mut succeeds on pooled memory exactly when no other handle reaches the buffer (a
        conversion while shared would let two owners write, a refusal while unique strands it), and
        the IoBufMut it returns holds the same bytes."""
        picked = self.pick(data, IoBuf)
        if picked is None:
            return
        i, h = picked
        sharers = sum(1 for o in self.handles if o.base is not None and o.base == h.base)
        back = h.obj.try_into_mut()
        if back is None:
            # Pooled memory is refused only while another handle reaches it; untracked
            # memory may be refused conservatively (it once exported a view).
            assert h.base is None or sharers > 1, "refused although nothing else reached it"
            return
        assert h.base is None or sharers == 1, "converted while something else reached the buffer"
        assert bytes(back) == h.content
        self.handles[i] = Handle(back, h.content, h.base, h.size)

    @rule(data=st.data())
    def export_view(self, data: st.DataObject) -> None:
        """as_memoryview() of a buffer is a new handle with the same bytes that pins the buffer like an
        owner."""
        picked = self.pick(data, (IoBuf, IoBufMut))  # type: ignore[arg-type]
        if picked is None:
            return
        _, h = picked
        view = h.obj.as_memoryview()
        self.handles.append(Handle(view, h.content, h.base, h.size))

    @precondition(lambda self: bool(self.handles))
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        """Drop a random handle; the invariants then require its buffer back in the pool unless another
        handle still reaches it."""
        i = data.draw(st.integers(0, len(self.handles) - 1))
        del self.handles[i]

    @rule()
    def flush(self) -> None:
        """Flush this thread's cache to the shared lists; the per-class counts must still add up."""
        flush_thread_cache()

    @precondition(lambda self: bool(self.handles))
    @rule(data=st.data(), drop=st.booleans())
    def use_from_another_thread(self, data: st.DataObject, drop: bool) -> None:
        """A second thread reads a handle and either clones it back or drops it there."""
        i = data.draw(st.integers(0, len(self.handles) - 1))
        h = self.handles[i]
        box = [h.obj]
        if drop:  # this thread keeps no reference; the other thread holds the last one
            del self.handles[i]
            h.obj = None
        results: list[Any] = []

        def work() -> None:
            obj = box.pop()
            results.append(bytes(obj) == h.content)
            if not drop and isinstance(obj, IoBuf):
                results.append(obj.clone())
            del obj

        t = threading.Thread(target=work)
        t.start()
        t.join()
        assert results[0], "a handle read different bytes in another thread"
        if len(results) > 1:
            clone = results[1]
            if h.content:
                self.handles.append(Handle(clone, h.content, h.base, h.size))
            else:  # an empty clone reaches no memory (as an empty slice)
                assert not clone.is_pooled

    @rule(keep=st.integers(0, 3))
    def trim(self, keep: int) -> None:
        """trim(keep) frees every free buffer beyond keep per class (from the shared list and this
        thread's cache), returns exactly their bytes, lowers created by as many, leaves min(keep,
        free) on the shared list; after close() it frees nothing."""
        before = {c.size: c for c in self.pool.stats().classes}
        freed = self.pool.trim(keep)
        if self.closed:
            assert freed == 0
            return
        expected = 0
        for c in self.pool.stats().classes:
            b = before[c.size]
            free = b.local_free + b.global_free
            gone = max(0, free - keep)
            expected += gone * c.size
            assert c.created == b.created - gone
            assert c.local_free == 0 and c.global_free == min(keep, free)
        assert freed == expected

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        """Close the pool: allocations now raise PoolClosed, free buffers are dropped, handles stay
        valid."""
        self.pool.close()
        self.closed = True

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def every_handle_holds_what_the_model_says(self) -> None:
        """Every live handle reads the bytes the model says: a buffer handed out twice, a misplaced
        write, or memory freed under a view all show here."""
        for h in self.handles:
            assert bytes(h.obj) == h.content

    @invariant()
    def counts_add_up_per_class(self) -> None:
        """Per class, created never exceeds max_per_class and created - shared free - cached equals the
        distinct buffers the handles reach (after close, nothing is free): a lost or duplicated
        buffer breaks the equation."""
        if not hasattr(self, "pool"):
            return
        in_use: dict[int, set[int]] = {}
        for h in self.handles:
            if h.base is not None and h.size is not None:
                in_use.setdefault(h.size, set()).add(h.base)
        for s in self.pool.stats().classes:
            assert s.created <= s.max_buffers
            if self.closed:  # free buffers were dropped; nothing is parked again
                assert s.global_free == s.local_free == 0, s
            else:
                assert s.created - s.global_free - s.local_free == len(in_use.get(s.size, ())), s

    @invariant()
    def tracking_reports_exactly_the_buffers_in_use(self) -> None:
        """With tracking on, outstanding() lists exactly the pooled buffers some handle still reaches,
        no more (a stale entry) and no fewer."""
        if not hasattr(self, "pool") or not self.config.track_allocations:
            return
        assert {b.address for b in self.pool.outstanding()} == self.live_bases()

    def teardown(self) -> None:
        self.handles.clear()
        if hasattr(self, "pool"):
            self.pool.close()
        flush_thread_cache()


def _examples() -> int:
    if "IOBUF_STATEFUL_EXAMPLES" in os.environ:
        return int(os.environ["IOBUF_STATEFUL_EXAMPLES"])
    return 2000 if os.environ.get("CI") else 200


PoolMachine.TestCase.settings = settings(
    max_examples=_examples(),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPoolMachine = PoolMachine.TestCase
