"""CPU time of a benchmarked server process and everything it started (Linux /proc)."""

from __future__ import annotations

import os
from pathlib import Path


def tree_cpu(pid: int | None) -> float | None:
    """CPU seconds (user + system) used so far by `pid` and its descendants; None off Linux."""
    if pid is None or not Path("/proc").is_dir():
        return None
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        todo.extend(children.get(p, []))
    return total / os.sysconf("SC_CLK_TCK")
