"""Platforms (`os/arch[/variant]`): parsing, normalisation and matching in indexes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hatch_jib.errors import ConfigError

__all__ = ["Platform", "parse_platform"]

_ARCH_ALIASES = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm"}
_KNOWN_ARCHES = {"amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le"}


@dataclass(frozen=True)
class Platform:
    """An OCI platform; arm64 without a variant means v8."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def normalized(self) -> Platform:
        variant = self.variant
        if self.architecture == "arm64" and variant in (None, "v8"):
            variant = None
        if self.architecture == "arm" and variant is None:
            variant = "v7"
        return Platform(self.os, self.architecture, variant)

    def matches(self, other: Platform) -> bool:
        return self.normalized() == other.normalized()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            data["variant"] = self.variant
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Platform:
        data = data or {}
        return cls(
            os=str(data.get("os", "")),
            architecture=str(data.get("architecture", "")),
            variant=data.get("variant") or None,
        )


def parse_platform(text: str, *, key: str = "platform") -> Platform:
    """Parse `linux/arm64/v8`-style text; `key` names the setting in errors."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(
            f"`{key}` value {text!r} is not a platform",
            hint='write it as os/arch[/variant], for example "linux/amd64" or "linux/arm64/v8"',
        )
    os_name, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
    if os_name != "linux" or arch not in _KNOWN_ARCHES:
        raise ConfigError(
            f"`{key}` value {text!r} names an unknown platform",
            hint=f"use linux with one of: {', '.join(sorted(_KNOWN_ARCHES))}",
        )
    return Platform(os_name, arch, parts[2] if len(parts) == 3 else None)
