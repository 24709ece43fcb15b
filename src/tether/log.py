"""Operator logs (structlog). Never a token or a secret: bind ids at the edge."""

from __future__ import annotations

import contextlib
import logging
import sys

import structlog


class _Stderr:
    """Whatever `sys.stderr` is at the moment of writing.

    structlog keeps the file it was configured with; a test runner or an embedding CLI may
    swap `sys.stderr` and close the old one, and a log line must never raise in a request.
    """

    def write(self, text: str) -> int:
        try:
            return sys.stderr.write(text)
        except ValueError:  # the current stream was closed under us: fall back to the process's own
            return sys.__stderr__.write(text) if sys.__stderr__ else 0

    def flush(self) -> None:
        with contextlib.suppress(ValueError):
            sys.stderr.flush()


def configure(level: str = "info", json_logs: bool = False) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


__all__ = ["configure", "get_logger"]
