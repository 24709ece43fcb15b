"""Random bytes from the operating system's CSPRNG, fetched a block at a time.

Ids (events, decisions, tokens, approvals) and AES-GCM nonces are drawn on the hot path, many
per call, and often on the audit writer's thread. Each `os.urandom` is a system call that lets
go of the GIL, and on a busy server taking it back can wait a whole switch interval: measured
here, the writer spent more time re-taking the GIL after drawing event ids than hashing the
events. One `os.urandom(4096)` serves a thread for hundreds of draws instead.

The bytes are the kernel's CSPRNG output, only fetched earlier. Values drawn here are public
once used (ids, nonces); keys are drawn from `secrets` directly, so no key material waits in
a buffer. Each thread has its own block, and a forked child drops its parent's, so two
processes never hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

BLOCK = 4096


class _Block(threading.local):
    data = b""
    pos = 0


_block = _Block()


def random_bytes(n: int) -> bytes:
    """`n` bytes from the OS CSPRNG (via this thread's block)."""
    b = _block
    end = b.pos + n
    if end > len(b.data):
        if n > BLOCK // 4:
            return os.urandom(n)
        b.data, b.pos, end = os.urandom(BLOCK), 0, n
    out = b.data[b.pos : end]
    b.pos = end
    return out


def _forget() -> None:
    global _block
    _block = _Block()


os.register_at_fork(after_in_child=_forget)

__all__ = ["random_bytes"]
