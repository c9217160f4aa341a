"""IoBufs: shape and canonical form, zero-copy splitting and reading, joining, errors, pool release."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from iobuf import BufferPool, IoBuf, IoBufMut
from iobuf._chain import IoBufs
from iobuf._config import BufferPoolConfig


def make_pool(max_per_class: int = 8) -> BufferPool:
    """The small pool every test here uses: classes 64..4096 bytes."""
    return BufferPool(BufferPoolConfig(min_size=64, max_size=4096, max_per_class=max_per_class))


def pooled(pool: BufferPool, data: bytes) -> IoBuf:
    """A frozen pooled IoBuf holding ``data``."""
    buf = pool.alloc(len(data))
    buf.put_slice(data)
    out = buf.freeze()
    assert out.is_pooled
    return out


def in_use(pool: BufferPool) -> int:
    """Pooled buffers not free in the shared list or this thread's cache, over all classes."""
    return sum(c.created - c.global_free - c.local_free for c in pool.stats().classes)


def assert_canonical(chain: IoBufs) -> None:
    """No empty chunks, and len/chunk_count agree with the chunks."""
    chunks = chain.chunks()
    assert all(len(c) > 0 for c in chunks)
    assert chain.chunk_count == len(chunks)
    assert len(chain) == chain.remaining() == sum(len(c) for c in chunks)
    assert bool(chain) == (len(chain) > 0)


@pytest.fixture
def pool() -> Iterator[BufferPool]:
    """A fresh small pool, closed after the test."""
    with make_pool() as p:
        yield p


# -- shape and canonical form ------------------------------------------------------------


def test_empty_chain_has_no_chunks() -> None:
    """IoBufs() is empty: len 0, falsy, chunk_count 0, no chunks, bytes b''."""
    chain = IoBufs()
    assert (len(chain), bool(chain), chain.chunk_count, chain.chunks(), bytes(chain)) == (
        0,
        False,
        0,
        [],
        b"",
    )


def test_constructor_drops_every_kind_of_empty_input() -> None:
    """Empty bytes, bytearray, memoryview, IoBuf and IoBufMut items are all dropped."""
    chain = IoBufs([b"", bytearray(), memoryview(b""), IoBuf(), IoBufMut(), b"x", IoBuf(b"")])
    assert chain.chunk_count == 1
    assert bytes(chain) == b"x"
    assert_canonical(chain)


@pytest.mark.parametrize("n", range(6))
def test_chunk_count_counts_appended_non_empty_pieces(n: int) -> None:
    """Appending n non-empty pieces (with empties between) gives chunk_count n."""
    chain = IoBufs()
    for i in range(n):
        chain.append(bytes([65 + i]) * (i + 1))
        chain.append(b"")
    assert chain.chunk_count == n
    assert bytes(chain) == b"".join(bytes([65 + i]) * (i + 1) for i in range(n))
    assert_canonical(chain)


def test_prepend_and_append_keep_order() -> None:
    """prepend adds at the front and append at the back, whatever the input type."""
    chain = IoBufs([b"mid"])
    chain.prepend(IoBuf(b"<"))
    chain.append(bytearray(b">"))
    chain.prepend(IoBufMut(b"[["))
    chain.append(memoryview(b"]]"))
    assert bytes(chain) == b"[[<mid>]]"
    assert [bytes(c) for c in chain] == [b"[[", b"<", b"mid", b">", b"]]"]
    assert_canonical(chain)


def test_prepend_and_append_ignore_empty_input() -> None:
    """Empty input to prepend/append changes nothing, into an empty or a full chain."""
    chain = IoBufs()
    for empty in (b"", IoBuf(), bytearray(), IoBufMut()):
        chain.prepend(empty)
        chain.append(empty)
    assert chain.chunk_count == 0
    chain.prepend(b"a")
    for empty in (b"", IoBuf(), bytearray(), IoBufMut()):
        chain.prepend(empty)
        chain.append(empty)
    assert chain.chunk_count == 1
    assert bytes(chain) == b"a"


def test_single_bytes_like_argument_becomes_one_chunk() -> None:
    """IoBufs(b'abc') (or one IoBuf/IoBufMut/bytearray) is one chunk, not three ints."""
    for arg in (b"abc", bytearray(b"abc"), memoryview(b"abc"), IoBuf(b"abc"), IoBufMut(b"abc")):
        chain = IoBufs(arg)
        assert chain.chunk_count == 1
        assert bytes(chain) == b"abc"
    assert IoBufs(b"").chunk_count == 0


def test_chain_of_a_chain_shares_the_chunks() -> None:
    """IoBufs(other_chain) iterates the other chain's chunks: same layout, same memory."""
    first = IoBufs([b"ab", b"cd"])
    second = IoBufs(first)
    assert [c.address for c in second.chunks()] == [c.address for c in first.chunks()]
    second.advance(3)
    assert bytes(first) == b"abcd"


def test_iobuf_input_is_cloned_so_cursors_stay_independent() -> None:
    """Advancing the chain leaves the caller's IoBuf alone, and the reverse."""
    mine = IoBuf(b"hello")
    chain = IoBufs([mine])
    chain.advance(2)
    assert bytes(mine) == b"hello"
    mine.advance(4)
    assert bytes(chain) == b"llo"
    assert len(chain) == 3


def test_iobufmut_input_is_frozen_even_when_empty() -> None:
    """The chain takes an IoBufMut's bytes over; the IoBufMut then refuses writes."""
    full = IoBufMut(b"data")
    empty = IoBufMut()
    chain = IoBufs()
    chain.append(full)
    chain.append(empty)
    assert bytes(chain) == b"data"
    assert len(full) == 0
    for spent in (full, empty):
        with pytest.raises(ValueError, match="frozen"):
            spent.put_slice(b"x")


def test_mutable_bytes_like_input_is_copied() -> None:
    """Changing a bytearray after appending it does not change the chain."""
    data = bytearray(b"abc")
    chain = IoBufs([data])
    chain.append(data)
    data[:] = b"xyz"
    assert bytes(chain) == b"abcabc"


def test_bytes_input_is_wrapped_without_copying() -> None:
    """A bytes item is stored zero-copy: the chunk's address is the bytes' address."""
    data = b"zero-copy"
    chain = IoBufs([data])
    assert chain.chunks()[0].address == IoBuf(data).address


def test_chunks_and_iteration_return_clones() -> None:
    """Advancing a chunk got from chunks() or iteration leaves the chain alone."""
    chain = IoBufs([b"abc", b"def"])
    for chunk in chain.chunks():
        chunk.advance(len(chunk))
    for chunk in chain:
        chunk.advance(1)
    assert bytes(chain) == b"abcdef"
    assert [bytes(c) for c in chain] == [b"abc", b"def"]


def test_iteration_is_over_a_snapshot() -> None:
    """Mutating the chain while iterating it does not raise or change the iteration."""
    chain = IoBufs([b"a", b"b"])
    seen = []
    for chunk in chain:
        seen.append(bytes(chunk))
        chain.append(b"z")
    assert seen == [b"a", b"b"]
    assert bytes(chain) == b"abzz"


def test_clone_and_copy_are_independent_chains_over_shared_memory() -> None:
    """clone()/copy.copy share chunk memory but not cursors; deepcopy copies the bytes."""
    chain = IoBufs([b"abc", b"def"])
    for other in (chain.clone(), copy.copy(chain)):
        assert [c.address for c in other] == [c.address for c in chain]
        other.advance(4)
        assert (bytes(other), bytes(chain)) == (b"ef", b"abcdef")
    deep = copy.deepcopy(chain)
    assert deep == chain
    assert [c.address for c in deep] != [c.address for c in chain]


# -- advance ----------------------------------------------------------------------------


def test_advance_walks_across_chunks_and_drops_drained_ones() -> None:
    """advance spans boundaries, removes drained chunks and keeps partial ones."""
    chain = IoBufs([b"abc", b"de", b"fghi"])
    chain.advance(0)
    assert chain.chunk_count == 3
    chain.advance(3)
    assert (bytes(chain), chain.chunk_count) == (b"defghi", 2)
    chain.advance(3)
    assert (bytes(chain), chain.chunk_count) == (b"ghi", 1)
    chain.advance(3)
    assert (bytes(chain), chain.chunk_count) == (b"", 0)
    assert_canonical(chain)


def test_advance_past_end_raises_and_changes_nothing() -> None:
    """advance(len + 1) raises the seed's message and leaves the chain as it was."""
    chain = IoBufs([b"ab", b"cd"])
    with pytest.raises(ValueError, match="cannot advance past end of buffer"):
        chain.advance(5)
    assert (bytes(chain), chain.chunk_count) == (b"abcd", 2)


# -- split_to ---------------------------------------------------------------------------

# For [b"abc", b"de", b"fghi"]: at -> (prefix chunk count, rest chunk count).
SPLIT_SHAPES = {
    0: (0, 3),
    1: (1, 3),
    2: (1, 3),
    3: (1, 2),
    4: (2, 2),
    5: (2, 1),
    6: (3, 1),
    7: (3, 1),
    8: (3, 1),
    9: (3, 0),
}


@pytest.mark.parametrize("at", sorted(SPLIT_SHAPES))
def test_split_to_at_every_point_of_a_three_chunk_chain(at: int) -> None:
    """split_to at each boundary and interior point gives the right bytes, shapes and no copies."""
    data = b"abcdefghi"
    pieces = [b"abc", b"de", b"fghi"]
    chain = IoBufs(pieces)
    starts = [IoBuf(p).address for p in pieces]
    head = chain.split_to(at)
    assert (bytes(head), bytes(chain)) == (data[:at], data[at:])
    assert (head.chunk_count, chain.chunk_count) == SPLIT_SHAPES[at]
    assert_canonical(head)
    assert_canonical(chain)
    # Zero-copy: every byte still lives at its original address.
    offsets = [0, 3, 5]
    for part, base in ((head, 0), (chain, at)):
        pos = base
        for chunk in part:
            k = max(i for i, off in enumerate(offsets) if off <= pos)
            assert chunk.address == starts[k] + (pos - offsets[k])
            pos += len(chunk)


def test_split_to_whole_chain_moves_everything_and_zero_gives_empty() -> None:
    """split_to(len) takes every chunk and leaves self empty; split_to(0) returns an empty chain."""
    chain = IoBufs([b"ab", b"cd"])
    none = chain.split_to(0)
    assert (len(none), none.chunk_count, bytes(chain)) == (0, 0, b"abcd")
    everything = chain.split_to(4)
    assert (bytes(everything), everything.chunk_count) == (b"abcd", 2)
    assert (len(chain), chain.chunk_count) == (0, 0)
    chain.append(b"new")
    assert bytes(everything) == b"abcd"


def test_split_to_out_of_bounds_raises_and_changes_nothing() -> None:
    """split_to(len + 1) raises 'split_to out of bounds' and leaves the chain unchanged."""
    chain = IoBufs([b"ab", b"cd"])
    with pytest.raises(ValueError, match="split_to out of bounds"):
        chain.split_to(5)
    assert (bytes(chain), chain.chunk_count) == (b"abcd", 2)


def test_split_to_keeps_pooled_chunks_pooled(pool: BufferPool) -> None:
    """Splitting a pooled chunk keeps both halves pooled and on the same memory."""
    chunk = pooled(pool, b"0123456789")
    chain = IoBufs([chunk, b"tail"])
    head = chain.split_to(4)
    (h,) = head.chunks()
    first = chain.chunks()[0]
    assert h.is_pooled
    assert first.is_pooled
    assert (h.address, first.address) == (chunk.address, chunk.address + 4)


# -- copy_to_bytes ------------------------------------------------------------------------


def test_copy_to_bytes_within_first_chunk_is_zero_copy_for_bytes() -> None:
    """When the first chunk covers n, the result is that chunk's memory (bytes backing)."""
    data = b"abcdef"
    chain = IoBufs([data, b"ghi"])
    out = chain.copy_to_bytes(4)
    assert out.address == IoBuf(data).address
    assert (bytes(out), bytes(chain), chain.chunk_count) == (b"abcd", b"efghi", 2)
    whole = chain.copy_to_bytes(2)
    assert whole.address == IoBuf(data).address + 4
    assert (bytes(chain), chain.chunk_count) == (b"ghi", 1)


def test_copy_to_bytes_within_first_chunk_is_zero_copy_for_pooled(pool: BufferPool) -> None:
    """A pooled first chunk that covers n yields a pooled result at the same address."""
    chunk = pooled(pool, b"pooled-bytes")
    chain = IoBufs([chunk, b"x"])
    out = chain.copy_to_bytes(6)
    assert out.is_pooled
    assert out.address == chunk.address
    assert bytes(chain) == b"-bytesx"


def test_copy_to_bytes_across_chunks_copies(pool: BufferPool) -> None:
    """Spanning chunks gives a new unpooled bytes-backed IoBuf and advances correctly."""
    chain = IoBufs([pooled(pool, b"abc"), b"de", b"fghi"])
    addresses = {c.address for c in chain}
    out = chain.copy_to_bytes(7)
    assert bytes(out) == b"abcdefg"
    assert not out.is_pooled
    assert out.address not in addresses
    assert (bytes(chain), chain.chunk_count) == (b"hi", 1)
    assert_canonical(chain)


def test_copy_to_bytes_exactly_to_a_boundary_drops_the_chunks() -> None:
    """copy_to_bytes ending on a chunk boundary leaves no drained chunk behind."""
    chain = IoBufs([b"ab", b"cd", b"ef"])
    assert chain.copy_to_bytes(4) == b"abcd"
    assert (bytes(chain), chain.chunk_count) == (b"ef", 1)
    assert chain.copy_to_bytes(2) == b"ef"
    assert chain.chunk_count == 0


def test_copy_to_bytes_zero_is_empty_and_does_not_advance() -> None:
    """copy_to_bytes(0) returns an empty unpooled IoBuf and leaves the chain alone."""
    chain = IoBufs([b"ab"])
    out = chain.copy_to_bytes(0)
    assert (len(out), out.is_pooled, out.address) == (0, False, 0)
    assert bytes(chain) == b"ab"


def test_copy_to_bytes_too_many_raises_and_changes_nothing() -> None:
    """Asking for more than len raises 'not enough data' and leaves the chain unchanged."""
    chain = IoBufs([b"ab", b"cd"])
    with pytest.raises(ValueError, match="not enough data"):
        chain.copy_to_bytes(5)
    assert (bytes(chain), chain.chunk_count) == (b"abcd", 2)


# -- joining -------------------------------------------------------------------------------


def test_coalesce_single_chunk_is_zero_copy(pool: BufferPool) -> None:
    """coalesce of one chunk shares its memory (bytes and pooled backings)."""
    data = b"only"
    assert IoBufs([data]).coalesce().address == IoBuf(data).address
    chunk = pooled(pool, b"pooled")
    out = IoBufs([chunk]).coalesce()
    assert (out.address, out.is_pooled, bytes(out)) == (chunk.address, True, b"pooled")


def test_coalesce_several_chunks_copies_and_leaves_the_chain() -> None:
    """coalesce of several chunks copies into a new IoBuf; the chain is unchanged."""
    chain = IoBufs([b"ab", b"cd", b"ef"])
    addresses = {c.address for c in chain}
    out = chain.coalesce()
    assert bytes(out) == b"abcdef"
    assert out.address not in addresses
    assert (bytes(chain), chain.chunk_count) == (b"abcdef", 3)


def test_coalesce_empty_and_after_advance() -> None:
    """coalesce of an empty chain is an empty IoBuf; after advance it is the suffix."""
    assert IoBufs().coalesce() == b""
    assert len(IoBufs().coalesce()) == 0
    chain = IoBufs([b"ab", b"cd", b"ef"])
    chain.advance(3)
    assert chain.coalesce() == b"def"


def test_coalesce_with_pool_copies_several_chunks_into_a_pooled_buffer(pool: BufferPool) -> None:
    """Several chunks are copied into a pooled buffer of the pool."""
    chain = IoBufs([b"ab", IoBuf(b"cd"), bytearray(b"ef")])
    out = chain.coalesce_with_pool(pool)
    assert (bytes(out), out.is_pooled) == (b"abcdef", True)
    assert chain.chunk_count == 3


def test_coalesce_with_pool_single_and_empty(pool: BufferPool) -> None:
    """One chunk is returned zero-copy (unpooled stays unpooled); empty gives an empty IoBuf."""
    data = b"single"
    out = IoBufs([data]).coalesce_with_pool(pool)
    assert (out.address, out.is_pooled) == (IoBuf(data).address, False)
    empty = IoBufs().coalesce_with_pool(pool)
    assert (len(empty), empty.is_pooled) == (0, False)
    assert in_use(pool) == 0


def test_coalesce_with_pool_rejects_a_non_pool() -> None:
    """coalesce_with_pool needs a BufferPool: anything else is a TypeError naming pool."""
    with pytest.raises(TypeError, match="pool must be a BufferPool"):
        IoBufs([b"a", b"b"]).coalesce_with_pool(object())  # type: ignore[arg-type]


def test_as_single_by_chunk_count() -> None:
    """as_single: empty -> empty IoBuf, one chunk -> that chunk (zero-copy), more -> None."""
    empty = IoBufs().as_single()
    assert empty is not None
    assert len(empty) == 0
    data = b"one"
    one = IoBufs([data]).as_single()
    assert one is not None
    assert one.address == IoBuf(data).address
    assert IoBufs([b"a", b"b"]).as_single() is None
    chain = IoBufs([b"a", b"bc"])
    chain.advance(1)
    assert chain.as_single() == b"bc"


# -- Python protocols ----------------------------------------------------------------------


def test_equality_is_by_content_whatever_the_layout() -> None:
    """== compares bytes against chains of other layouts, IoBuf, IoBufMut and bytes-likes."""
    chain = IoBufs([b"ab", b"cde", b"f"])
    assert chain == IoBufs([b"abcdef"])
    assert chain == IoBufs([b"a", b"bcd", b"ef"])
    assert chain == b"abcdef"
    assert chain == bytearray(b"abcdef")
    assert chain == IoBuf(b"abcdef")
    assert chain == IoBufMut(b"abcdef")
    assert b"abcdef" == chain  # noqa: SIM300 - the reflected == is the point
    assert chain != b"abcdeg"
    assert chain != b"abcde"
    assert chain != IoBufs([b"abcdeg"])
    assert chain != "abcdef"
    assert chain != 7
    assert IoBufs() == b""
    assert IoBufs() == IoBufs([b""])


def test_chain_is_unhashable() -> None:
    """A mutable container has no hash."""
    with pytest.raises(TypeError):
        hash(IoBufs())


def test_repr_shows_length_layout_and_a_preview() -> None:
    """repr names the class, len, chunk_count, chunk lengths and a truncated preview."""
    text = repr(IoBufs([b"ab", b"c" * 40]))
    assert text.startswith("IoBufs(len=42, chunk_count=2, chunk_lens=[2, 40], data=b'abccc")
    assert text.endswith("...')")
    assert repr(IoBufs()) == "IoBufs(len=0, chunk_count=0, chunk_lens=[], data=b'')"


# -- bad arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [5, "text", None, 1.5, [b"a"]])
def test_append_and_prepend_reject_non_bytes(bad: object) -> None:
    """append/prepend of a non-bytes-like object raise TypeError naming buf."""
    chain = IoBufs([b"keep"])
    with pytest.raises(TypeError, match="buf must be a bytes-like object"):
        chain.append(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="buf must be a bytes-like object"):
        chain.prepend(bad)  # type: ignore[arg-type]
    assert (bytes(chain), chain.chunk_count) == (b"keep", 1)


def test_constructor_rejects_non_iterables_and_bad_items_without_side_effects() -> None:
    """A bad argument or item raises TypeError before any IoBufMut item is frozen."""
    with pytest.raises(TypeError, match="iterable must be an iterable"):
        IoBufs(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iterable items must be a bytes-like object"):
        IoBufs("text")  # type: ignore[arg-type]
    mut = IoBufMut(b"still mine")
    with pytest.raises(TypeError, match="iterable items"):
        IoBufs([mut, 3])  # type: ignore[list-item]
    mut.put_slice(b"!")
    assert bytes(mut) == b"still mine!"


@pytest.mark.parametrize("method", ["advance", "copy_to_bytes", "split_to"])
@pytest.mark.parametrize(
    ("bad", "error"),
    [(-1, ValueError), (True, TypeError), (1.0, TypeError), ("1", TypeError), (None, TypeError)],
)
def test_size_arguments_are_checked(method: str, bad: object, error: type[Exception]) -> None:
    """Negative sizes are ValueError; bool, float, str, None are TypeError; the chain is unchanged."""
    chain = IoBufs([b"ab", b"cd"])
    name = "at" if method == "split_to" else "n"
    with pytest.raises(error, match=rf"^{name} must be"):
        getattr(chain, method)(bad)
    assert (bytes(chain), chain.chunk_count) == (b"abcd", 2)


# -- pooled memory comes back --------------------------------------------------------------------


def test_pooled_chunks_return_to_the_pool_when_chain_and_results_go(pool: BufferPool) -> None:
    """After every chain operation, dropping the chain and its results frees every pooled buffer."""
    chain = IoBufs([pooled(pool, b"a" * 100), pooled(pool, b"b" * 100), pooled(pool, b"c" * 100)])
    assert in_use(pool) == 3
    head = chain.split_to(150)
    part = chain.copy_to_bytes(10)
    joined = head.coalesce_with_pool(pool)
    single = chain.coalesce()
    chain.advance(20)
    # a (head), b (split between head, part and chain), c (chain), and joined.
    assert in_use(pool) == 4
    del head, part, joined, single
    assert in_use(pool) == 2  # b and c, both still in the chain
    chain.advance(20)
    assert in_use(pool) == 1  # b drained
    del chain
    assert in_use(pool) == 0


def test_advance_releases_drained_pooled_chunks(pool: BufferPool) -> None:
    """A pooled chunk goes back to the pool as soon as advance drains it."""
    chain = IoBufs([pooled(pool, b"x" * 64), pooled(pool, b"y" * 64)])
    assert in_use(pool) == 2
    chain.advance(64)
    assert in_use(pool) == 1
    chain.advance(63)
    assert in_use(pool) == 1
    chain.advance(1)
    assert in_use(pool) == 0


# -- model-based ------------------------------------------------------------------------------


KINDS = ("bytes", "bytearray", "iobuf", "iobufmut", "pooled")


class ChainMachine(RuleBasedStateMachine):
    """Drive an IoBufs and a plain ``bytes`` model with the same operations."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = make_pool(max_per_class=4)
        self.chain = IoBufs()
        self.model = b""

    def piece(self, data: bytes, kind: str) -> object:
        """``data`` in the form named by ``kind``."""
        if kind == "bytearray":
            return bytearray(data)
        if kind == "iobuf":
            return IoBuf(data)
        if kind == "iobufmut":
            return IoBufMut(data)
        if kind == "pooled":
            buf = self.pool.alloc(len(data))
            buf.put_slice(data)
            return buf
        return data

    @rule(data=st.binary(max_size=8), kind=st.sampled_from(KINDS))
    def append(self, data: bytes, kind: str) -> None:
        """Append a piece."""
        self.chain.append(self.piece(data, kind))  # type: ignore[arg-type]
        self.model += data

    @rule(data=st.binary(max_size=8), kind=st.sampled_from(KINDS))
    def prepend(self, data: bytes, kind: str) -> None:
        """Prepend a piece."""
        self.chain.prepend(self.piece(data, kind))  # type: ignore[arg-type]
        self.model = data + self.model

    @rule(n=st.integers(0, 40))
    def advance(self, n: int) -> None:
        """Advance, or fail cleanly past the end."""
        if n > len(self.model):
            with pytest.raises(ValueError, match="cannot advance past end"):
                self.chain.advance(n)
            return
        self.chain.advance(n)
        self.model = self.model[n:]

    @rule(n=st.integers(0, 40))
    def copy_to_bytes(self, n: int) -> None:
        """copy_to_bytes returns the prefix and advances, or fails cleanly."""
        if n > len(self.model):
            with pytest.raises(ValueError, match="not enough data"):
                self.chain.copy_to_bytes(n)
            return
        out = self.chain.copy_to_bytes(n)
        assert bytes(out) == self.model[:n]
        self.model = self.model[n:]

    @rule(n=st.integers(0, 40))
    def split_to(self, n: int) -> None:
        """split_to returns a canonical prefix chain, or fails cleanly."""
        if n > len(self.model):
            with pytest.raises(ValueError, match="split_to out of bounds"):
                self.chain.split_to(n)
            return
        head = self.chain.split_to(n)
        assert bytes(head) == self.model[:n]
        assert_canonical(head)
        self.model = self.model[n:]

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def coalesce(self) -> None:
        """coalesce and coalesce_with_pool give the content and change nothing."""
        assert self.chain.coalesce() == self.model
        assert self.chain.coalesce_with_pool(self.pool) == self.model

    @invariant()
    def matches_model(self) -> None:
        """The chain holds the model's bytes in canonical form."""
        assert bytes(self.chain) == self.model
        assert self.chain == self.model
        assert_canonical(self.chain)

    def teardown(self) -> None:
        """Dropping the chain gives every pooled buffer back."""
        self.chain = IoBufs()
        assert in_use(self.pool) == 0
        self.pool.close()


TestChainMachine = ChainMachine.TestCase
TestChainMachine.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trips_with_every_protocol(protocol: int) -> None:
    """IoBufs pickles like IoBuf and IoBufMut do, with protocols 0 to 5: the copy has the
    same bytes and the same chunk layout, and holds no pooled memory."""
    with make_pool() as pool:
        chain = IoBufs([b"head:", pooled(pool, b"pooled body"), bytearray(b":tail")])
        chain.advance(2)
        back = pickle.loads(pickle.dumps(chain, protocol=protocol))
        assert type(back) is IoBufs
        assert back == chain == b"ad:pooled body:tail"
        assert [bytes(c) for c in back.chunks()] == [b"ad:", b"pooled body", b":tail"]
        assert not any(c.is_pooled for c in back.chunks())
        assert_canonical(back)
        empty = pickle.loads(pickle.dumps(IoBufs(), protocol=protocol))
        assert type(empty) is IoBufs and len(empty) == 0 and empty.chunk_count == 0


def test_the_same_iobufmut_twice_keeps_both_copies() -> None:
    """``IoBufs([m, m])`` holds m's bytes twice (the second freeze used to give an
    empty chunk, silently dropping them)."""
    m = IoBufMut(b"hello")
    chain = IoBufs([m, b"-", m])
    assert bytes(chain) == b"hello-hello" and len(m) == 0
