"""All tables, one MetaData. Each context's tables live in a module of its own here.

Import order follows the migrations (0001 identity, 0002 audit, then the later contexts).
"""

from tether.store.schema import approvals, audit, console, credentials, gateway, identity, tokens
from tether.store.schema._meta import BigInt, UTCDateTime, metadata

__all__ = [
    "BigInt",
    "UTCDateTime",
    "approvals",
    "audit",
    "console",
    "credentials",
    "gateway",
    "identity",
    "metadata",
    "tokens",
]
