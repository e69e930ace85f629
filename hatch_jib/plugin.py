"""Registers the `jib` build target with hatch."""

from __future__ import annotations

from hatchling.plugin import hookimpl

from hatch_jib.builder import JibBuilder

__all__ = ["hatch_register_builder"]


@hookimpl
def hatch_register_builder() -> type[JibBuilder]:
    return JibBuilder
