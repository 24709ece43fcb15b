"""The credential vault (architecture §5): upstream secrets sealed at rest and injected by providers.

Public surface: `Vault` (envelope encryption, subject tokens of on-behalf-of tasks, master-key
rotation), `Providers` (bearer, API key, OAuth client credentials, on-behalf-of), the values
in `model`. The agent never holds any of these secrets; only the HTTP gateway injects them.
"""

from tether.credentials.model import (
    CredentialInfo,
    CredentialInvalid,
    CredentialKind,
    CredentialNotFound,
    Injection,
    Secret,
    SubjectTokenMissing,
    UpstreamAuthFailed,
)
from tether.credentials.providers import Injected, Provider, Providers
from tether.credentials.vault import Vault, master_kid

__all__ = [
    "CredentialInfo",
    "CredentialInvalid",
    "CredentialKind",
    "CredentialNotFound",
    "Injected",
    "Injection",
    "Provider",
    "Providers",
    "Secret",
    "SubjectTokenMissing",
    "UpstreamAuthFailed",
    "Vault",
    "master_kid",
]
