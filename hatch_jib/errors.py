"""The exceptions a user sees: each says what is wrong and what to do next."""

from __future__ import annotations

__all__ = ["BuildError", "ConfigError", "JibError", "RegistryError"]


class JibError(Exception):
    """A failure the user can act on; rendered as one or two lines, never a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(JibError):
    """The configuration or command line is wrong; nothing was sent anywhere."""

    exit_code = 2


class BuildError(JibError):
    """The build itself failed: resolution, installation, layer writing or an output."""


class RegistryError(JibError):
    """A registry answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        registry: str = "",
        repository: str = "",
        code: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.registry = registry
        self.repository = repository
        self.code = code
        self.status = status
