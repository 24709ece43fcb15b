"""Random bytes fetched a block at a time: never repeated across threads or a fork, never short."""

from __future__ import annotations

import os
import threading

import pytest

from tether import entropy
from tether.audit.chain import event_id
from tether.types import new_id


def test_draws_are_distinct_and_of_the_asked_length() -> None:
    draws = [entropy.random_bytes(10) for _ in range(2000)]  # spans several blocks
    assert all(len(d) == 10 for d in draws)
    assert len(set(draws)) == len(draws)


def test_a_draw_larger_than_a_block_comes_whole_from_the_os() -> None:
    big = entropy.random_bytes(entropy.BLOCK * 2)
    assert len(big) == entropy.BLOCK * 2
    assert big != bytes(len(big))


def test_threads_never_share_a_block() -> None:
    seen: list[bytes] = []
    lock = threading.Lock()

    def draw() -> None:
        mine = [entropy.random_bytes(16) for _ in range(500)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == len(seen) == 2000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_hand_out_its_parents_next_bytes() -> None:
    entropy.random_bytes(1)  # the parent holds a partly used block
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next draw, then leave at once
        os.write(w, entropy.random_bytes(32))
        os._exit(0)
    os.close(w)
    child = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != entropy.random_bytes(32)  # without the at-fork reset both would read the same block


def test_ids_stay_unique_and_well_formed() -> None:
    ids = {new_id("tok") for _ in range(5000)} | {event_id() for _ in range(5000)}
    assert len(ids) == 10000
    assert all(len(i) == 30 for i in ids)
