"""The OCI distribution client: transport rules, authentication, credentials and the client."""

from __future__ import annotations

from hatch_jib.registry.client import PulledManifest, RegistryClient
from hatch_jib.registry.credentials import Credential, find_credential
from hatch_jib.registry.transport import TransportOptions

__all__ = ["Credential", "PulledManifest", "RegistryClient", "TransportOptions", "find_credential"]
