"""`[tool.jib]` plus `JIB_*` environment and command-line overrides, as frozen dataclasses.

All validation happens here, before any network traffic. Errors name the full key path.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hatch_jib.errors import ConfigError
from hatch_jib.image.platform import Platform, parse_platform
from hatch_jib.image.reference import Reference, parse_reference

__all__ = [
    "SCHEMA",
    "Auth",
    "ConfigEntry",
    "ContainerConfig",
    "ExtraDirectory",
    "FromConfig",
    "JibConfig",
    "PythonConfig",
    "ToConfig",
    "effective_config",
    "env_var_for",
    "format_config",
    "load_config",
    "schema_keys",
    "unknown_variables",
]

# Leaf types of the schema.
STR, BOOL, STR_LIST, STR_MAP = "string", "boolean", "array of strings", "table of strings"
SIZE = "size"  # bytes, or a string like "10MB" or "off"
INT = "positive integer"
ARRAY_OF_TABLES = "array of tables"
_AUTH = {"username": STR, "password": STR}
_EXTRA_DIRECTORY = {
    "from": STR,
    "into": STR,
    "includes": STR_LIST,
    "excludes": STR_LIST,
    "permissions": STR_MAP,
}
SCHEMA: dict[str, Any] = {
    "from": {"image": STR, "platforms": STR_LIST, "auth": _AUTH, "cred-helper": STR},
    "to": {"image": STR, "tags": STR_LIST, "auth": _AUTH, "cred-helper": STR},
    "container": {
        "entrypoint": STR_LIST,
        "args": STR_LIST,
        "script": STR,
        "environment": STR_MAP,
        "labels": STR_MAP,
        "annotations": STR_MAP,
        "ports": STR_LIST,
        "volumes": STR_LIST,
        "user": STR,
        "working-directory": STR,
        "creation-time": STR,
        "files-modification-time": STR,
        "format": STR,
        "app-root": STR,
    },
    "python": {
        "version": STR,
        "implementation": STR,
        "libc": STR,
        "platform-tags": STR_LIST,
        "lock": STR,
        "extras": STR_LIST,
        "groups": STR_LIST,
        "bytecode": STR,
        "layer-threshold": SIZE,
    },
    "extra-directories": [_EXTRA_DIRECTORY],
    "allow-insecure-registries": STR_LIST,
    "send-credentials-over-http": BOOL,
    "registry-ca-file": STR,
    "upload-chunk-size": INT,
    "cache-dir": STR,
    "offline": BOOL,
    "console": STR,
}
_SECRET_KEYS = {"password"}
# Patterns used only when a key is set are left for `re` to compile (and cache) on first use.
_PORT = r"(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?"


@dataclass(frozen=True)
class Auth:
    """Explicit credentials, with where they came from (for the log, never the secret)."""

    username: str
    password: str = field(repr=False)
    source: str = "tool.jib"


@dataclass(frozen=True)
class FromConfig:
    """`tool.jib.from`: the base image, its platforms and how to log in to its registry."""

    image: Reference
    platforms: tuple[Platform, ...] = (Platform(),)
    auth: Auth | None = None
    cred_helper: str | None = None


@dataclass(frozen=True)
class ToConfig:
    """`tool.jib.to`: the image to push, its tags and how to log in to its registry."""

    image: Reference | None = None
    tags: tuple[str, ...] = ()
    auth: Auth | None = None
    cred_helper: str | None = None


@dataclass(frozen=True)
class ContainerConfig:
    """`tool.jib.container`: how the image runs and what its config and manifest say."""

    entrypoint: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    script: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    user: str | None = None
    working_directory: str = "/app"
    creation_time: str = "1970-01-01T00:00:00Z"
    files_modification_time: int = 1
    format: str | None = None
    app_root: str = "/app"


@dataclass(frozen=True)
class PythonConfig:
    """`tool.jib.python`: the target's Python, the dependencies to install, the layers."""

    version: str | None = None
    implementation: str | None = None
    libc: str | None = None
    platform_tags: tuple[str, ...] = ()
    lock: str | None = None
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    bytecode: str = "auto"
    # Installed size from which a dependency gets its own layer; None: never.
    layer_threshold: int | None = 10 << 20


@dataclass(frozen=True)
class ExtraDirectory:
    """One `tool.jib.extra-directories` entry: a project directory copied into the image."""

    source: Path
    into: str
    includes: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    permissions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JibConfig:
    """The whole validated `[tool.jib]`, with where each key was set."""

    from_: FromConfig
    to: ToConfig
    container: ContainerConfig = ContainerConfig()
    python: PythonConfig = PythonConfig()
    extra_directories: tuple[ExtraDirectory, ...] = ()
    allow_insecure_registries: frozenset[str] = frozenset()
    send_credentials_over_http: bool = False
    registry_ca_file: Path | None = None  # trusted in addition to the system store
    upload_chunk_size: int | None = None  # bytes per PATCH; None: only for very large blobs
    cache_dir: Path | None = None
    offline: bool = False
    console: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    # Things to tell the user once the console is up, such as a misspelt JIB_ variable.
    warnings: tuple[str, ...] = field(default=(), compare=False)


def env_var_for(path: str) -> str:
    """`to.auth.username` -> `JIB_TO_AUTH_USERNAME`."""
    return "JIB_" + re.sub(r"[.-]", "_", path).upper()


def load_config(
    table: Mapping[str, Any] | None,
    *,
    project_root: Path,
    version: str = "",
    name: str = "",
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> JibConfig:
    """Validate `[tool.jib]`, overlaid by `JIB_*` variables, overlaid by CLI `overrides`.

    `version` and `name` fill the `{version}` and `{name}` placeholders in `to.tags`.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = _deep_copy(table or {})
    sources: dict[str, str] = {}

    # Check the table's shape first, so a typo is reported even if an override hides it.
    _check_shape(raw, SCHEMA, "tool.jib")
    for path in _leaf_paths(raw):
        sources[path] = "pyproject.toml"

    # Overlay the environment, then the command line.
    for path, kind in _schema_leaves(SCHEMA):
        variable = env_var_for(path)
        if environ.get(variable):
            _set_path(raw, path, _parse_env(environ[variable], kind, variable))
            sources[path] = f"env {variable}"
    for path, value in (overrides or {}).items():
        if value is not None:
            _set_path(raw, path, value)
            sources[path] = "command line"

    placeholders = {"version": version, "name": name}
    try:
        config = _build(raw, project_root=project_root, placeholders=placeholders, sources=sources)
    except ConfigError as error:
        raise _with_source(error, sources) from error.__cause__
    warnings = unknown_variables(environ) + _outside_project(config, project_root)
    return dataclasses.replace(config, warnings=tuple(warnings))


def _outside_project(config: JibConfig, project_root: Path) -> list[str]:
    """Extra directories from outside the project end up in the image: say so."""
    root = project_root.resolve()
    return [
        f"`tool.jib.extra-directories[{index}].from` is {item.source.resolve()}, outside the "
        f"project: its files go into the image"
        for index, item in enumerate(config.extra_directories)
        if not item.source.resolve().is_relative_to(root)
    ]


# JIB_ variables that are not config keys but are ours all the same.
_OTHER_VARIABLES = {"JIB_DEBUG"}


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each `JIB_*` variable that sets nothing, with the closest real one."""
    known = {env_var_for(path) for path, _ in _schema_leaves(SCHEMA)} | _OTHER_VARIABLES
    warnings = []
    for name in sorted(variable for variable in environ if variable.startswith("JIB_")):
        if name in known:
            continue
        import difflib  # only for the rare misspelt variable

        close = difflib.get_close_matches(name, sorted(known), n=1)
        guess = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"Environment variable {name} is not a hatch-jib setting{guess}")
    return warnings


def _with_source(error: ConfigError, sources: Mapping[str, str]) -> ConfigError:
    """Add "(set by JIB_X)" when the key the error names was set outside pyproject.toml."""
    match = re.search(r"`tool\.jib\.([a-z.-]+)", error.message)
    source = sources.get(match[1]) if match else None
    if source is None or source == "pyproject.toml":
        return error
    origin = source.removeprefix("env ") if source.startswith("env ") else source
    return ConfigError(f"{error.message} (set by {origin})", hint=error.hint)


# --- shape checking ---------------------------------------------------------------------------


def _check_shape(value: Any, schema: Any, path: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            array, _, _ = path.rpartition("[")
            section = f"[[{array}]]" if path.endswith("]") else f"[{path}]"
            raise ConfigError(
                f"Field `{path}` must be a table",
                hint=f"write it under a {section} header, or as an inline table {{ key = ... }}",
            )
        for key, item in value.items():
            if key not in schema:
                raise _unknown_key(path, key, schema)
            _check_shape(item, schema[key], f"{path}.{key}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise ConfigError(
                f"Field `{path}` must be an array of tables",
                hint=f"write each item under its own [[{path}]] header, with double brackets",
            )
        for index, item in enumerate(value):
            _check_shape(item, schema[0], f"{path}[{index}]")
    else:
        _check_leaf(value, schema, path)


def _check_leaf(value: Any, kind: str, path: str) -> None:
    ok = {
        STR: isinstance(value, str),
        BOOL: isinstance(value, bool),
        INT: isinstance(value, int) and not isinstance(value, bool) and value > 0,
        STR_LIST: isinstance(value, list) and all(isinstance(item, str) for item in value),
        STR_MAP: isinstance(value, dict)
        and all(isinstance(item, (str, int, float, bool)) for item in value.values()),
        SIZE: isinstance(value, (str, int)) and not isinstance(value, bool),
    }[kind]
    if ok:
        return
    # Name the offending item of an array, and say what it is in TOML's words.
    if kind == STR_LIST and isinstance(value, list):
        index = next(i for i, item in enumerate(value) if not isinstance(item, str))
        path, kind, value = f"{path}[{index}]", STR, value[index]
    article = "an" if kind[0] in "aeiou" else "a"
    raise ConfigError(
        f"Field `{path}` must be {article} {kind}, not {_toml_type(value)} {value!r}",
        hint=f"write it as {_EXAMPLES[kind]}",
    )


_EXAMPLES = {
    STR: '"text" (in quotes)',
    BOOL: "true or false",
    INT: "a whole number above 0, such as 1048576",
    STR_LIST: '["a", "b"]',
    STR_MAP: '{ KEY = "value" }',
    SIZE: 'a number of bytes or a size such as "10MB", or "off"',
}


def _toml_type(value: Any) -> str:
    """The TOML name of a parsed value's type, for messages."""
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string")):
        if isinstance(value, kind):
            return name
    if isinstance(value, list):
        return "array"
    return "table" if isinstance(value, dict) else type(value).__name__


def _unknown_key(path: str, key: str, schema: dict[str, Any]) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(key, list(schema), n=1)
    hint = f"did you mean `{path}.{close[0]}`?" if close else f"known keys: {', '.join(schema)}"
    return ConfigError(f"Unknown key `{path}.{key}`", hint=hint)


def schema_keys() -> list[tuple[str, str]]:
    """Every settable key path with its type, in schema order (what the README documents)."""
    return _schema_leaves(SCHEMA, tables=True)


def _schema_leaves(
    schema: dict[str, Any], prefix: str = "", *, tables: bool = False
) -> list[tuple[str, str]]:
    # Arrays of tables have no single env var, so only `tables=True` lists them.
    leaves: list[tuple[str, str]] = []
    for key, kind in schema.items():
        path = f"{prefix}{key}"
        if isinstance(kind, dict):
            leaves.extend(_schema_leaves(kind, f"{path}.", tables=tables))
        elif isinstance(kind, str):
            leaves.append((path, kind))
        elif tables:
            leaves.append((path, ARRAY_OF_TABLES))
    return leaves


def _leaf_paths(raw: dict[str, Any], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for key, value in raw.items():
        if isinstance(value, dict) and key not in ("environment", "labels", "annotations"):
            paths.extend(_leaf_paths(value, f"{prefix}{key}."))
        else:
            paths.append(f"{prefix}{key}")
    return paths


def _parse_env(text: str, kind: str, name: str) -> Any:
    if kind == BOOL:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(
            f"Environment variable {name}={text!r} must be true or false",
            hint=f"set {name}=true or {name}=false (1/0, yes/no and on/off work too)",
        )
    if kind == INT:
        if not (text.strip().isascii() and text.strip().isdigit()) or int(text) <= 0:
            raise ConfigError(
                f"Environment variable {name}={text!r} must be a positive integer",
                hint=f"set {name} to a whole number of bytes, such as 1048576",
            )
        return int(text)
    if kind == STR_LIST:
        return [item.strip() for item in text.split(",") if item.strip()]
    if kind == STR_MAP:
        pairs = [item.partition("=") for item in text.split(",") if item.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ConfigError(
                f"Environment variable {name} must be KEY=value pairs, comma-separated",
                hint=f"for example {name}=LOG_LEVEL=info,MODE=prod",
            )
        return {key.strip(): value for key, _, value in pairs}
    return text


def _set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value


# --- building the dataclasses -----------------------------------------------------------------


def _build(
    raw: dict[str, Any],
    *,
    project_root: Path,
    placeholders: Mapping[str, str],
    sources: dict[str, str],
) -> JibConfig:
    from_raw, to_raw = raw.get("from", {}), raw.get("to", {})
    if not from_raw.get("image"):
        raise ConfigError(
            "No base image: `tool.jib.from.image` is not set",
            hint='set it in pyproject.toml (from.image = "python:3.12-slim") or JIB_FROM_IMAGE',
        )
    from_ = FromConfig(
        image=parse_reference(from_raw["image"], key="tool.jib.from.image"),
        platforms=_platforms(from_raw.get("platforms")),
        auth=_auth(from_raw.get("auth"), "tool.jib.from.auth", sources, "from"),
        cred_helper=from_raw.get("cred-helper"),
    )
    target = _target_reference(to_raw["image"]) if to_raw.get("image") else None
    to = ToConfig(
        image=target,
        tags=_tags(to_raw.get("tags"), placeholders, target.tag if target else None),
        auth=_auth(to_raw.get("auth"), "tool.jib.to.auth", sources, "to"),
        cred_helper=to_raw.get("cred-helper"),
    )
    cache_dir = raw.get("cache-dir")
    ca_file = raw.get("registry-ca-file")
    return JibConfig(
        from_=from_,
        to=to,
        container=_container(raw.get("container", {})),
        python=_python(raw.get("python", {})),
        extra_directories=_extra_directories(raw.get("extra-directories", []), project_root),
        allow_insecure_registries=frozenset(raw.get("allow-insecure-registries", [])),
        send_credentials_over_http=bool(raw.get("send-credentials-over-http", False)),
        registry_ca_file=(project_root / ca_file) if ca_file else None,
        upload_chunk_size=raw.get("upload-chunk-size"),
        cache_dir=(project_root / cache_dir) if cache_dir else None,
        offline=bool(raw.get("offline", False)),
        console=_choice(raw.get("console"), ("plain", "rich"), "tool.jib.console"),
        sources=dict(sources),
    )


def _target_reference(text: str) -> Reference:
    """`to.image`, with its tag only if one is written: it is pushed, as Jib does.

    A digest names content that exists, so there is nothing to push it as.
    """
    reference = parse_reference(text, key="tool.jib.to.image")
    if reference.digest:
        raise ConfigError(
            f"`tool.jib.to.image` = {text!r} names a digest; the image is pushed by tag",
            hint="drop the @sha256:... part and list tags in `tool.jib.to.tags`",
        )
    name = text.strip()
    if name.rfind(":") <= name.rfind("/"):  # no tag written: "latest" came by default
        reference = dataclasses.replace(reference, tag=None)
    return reference


def _platforms(values: list[str] | None) -> tuple[Platform, ...]:
    if not values:
        return (Platform(),)
    return tuple(
        parse_platform(text, key=f"tool.jib.from.platforms[{index}]")
        for index, text in enumerate(values)
    )


def _auth(raw: dict[str, Any] | None, path: str, sources: dict[str, str], side: str) -> Auth | None:
    if not raw:
        return None
    if not raw.get("username") or not raw.get("password"):
        prefix = env_var_for(f"{side}.auth")
        raise ConfigError(
            f"`{path}` needs both username and password",
            hint=f"set both in pyproject.toml, or {prefix}_USERNAME and {prefix}_PASSWORD",
        )
    return Auth(raw["username"], raw["password"], source=_auth_source(path, sources, side))


def _auth_source(path: str, sources: dict[str, str], side: str) -> str:
    """Where the username and password came from, for logs and hints; never the values."""
    found = [sources.get(f"{side}.auth.{field}", "pyproject.toml") for field in _AUTH_FIELDS]
    if all(source.startswith("env ") for source in found):
        prefix = env_var_for(f"{side}.auth")
        return f"{prefix}_USERNAME/{prefix}_PASSWORD"
    if found[0] == found[1]:
        return f"{found[0]} ({path}.username)"
    # One here, one there: name both, so that a hint does not ask to set what is set.
    labels = [
        source.removeprefix("env ") if source.startswith("env ") else f"{source} ({path}.{field})"
        for source, field in zip(found, _AUTH_FIELDS, strict=True)
    ]
    return " and ".join(labels)


_AUTH_FIELDS = ("username", "password")


def _tags(
    values: list[str] | None, placeholders: Mapping[str, str], image_tag: str | None
) -> tuple[str, ...]:
    """The tags to push: the one in `to.image`, then `to.tags`; `latest` if neither has one."""
    tags = [image_tag] if image_tag else []
    for index, template in enumerate(values or ([] if image_tag else ["latest"])):
        tag = template
        for placeholder, value in placeholders.items():
            tag = tag.replace(f"{{{placeholder}}}", value)
        if unknown := re.search(r"\{[^}]*\}", tag):
            raise ConfigError(
                f"`tool.jib.to.tags[{index}]` = {template!r} has the unknown placeholder "
                f"{unknown[0]}",
                hint="the placeholders are {version} and {name}",
            )
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
            raise ConfigError(
                f"`tool.jib.to.tags[{index}]` = {template!r} gives the invalid tag {tag!r}",
                hint="a tag is 1 to 128 letters, digits, _ . and -, and does not start with . or -",
            )
        tags.append(tag)
    return tuple(dict.fromkeys(tags))


def _container(raw: dict[str, Any]) -> ContainerConfig:
    key = "tool.jib.container"
    for index, port in enumerate(raw.get("ports", [])):
        _check_port(port, f"{key}.ports[{index}]")
    for name in ("working-directory", "app-root"):
        if name in raw:
            raw[name] = _image_path(raw[name], f"{key}.{name}")
    volumes = [
        _image_path(volume, f"{key}.volumes[{index}]")
        for index, volume in enumerate(raw.get("volumes", []))
    ]
    _check_runtime_strings(raw, key)
    return ContainerConfig(
        entrypoint=tuple(raw["entrypoint"]) if "entrypoint" in raw else None,
        args=tuple(raw["args"]) if "args" in raw else None,
        script=raw.get("script"),
        environment={k: str(v) for k, v in raw.get("environment", {}).items()},
        labels={k: str(v) for k, v in raw.get("labels", {}).items()},
        annotations={k: str(v) for k, v in raw.get("annotations", {}).items()},
        ports=tuple(dict.fromkeys(p for port in raw.get("ports", []) for p in _expand_port(port))),
        volumes=tuple(volumes),
        user=raw.get("user"),
        working_directory=raw.get("working-directory", raw.get("app-root", "/app")),
        creation_time=_creation_time(raw.get("creation-time"), f"{key}.creation-time"),
        files_modification_time=_mtime(
            raw.get("files-modification-time"), f"{key}.files-modification-time"
        ),
        format=_choice(raw.get("format"), ("docker", "oci"), f"{key}.format"),
        app_root=raw.get("app-root", "/app"),
    )


def _image_path(value: str, path: str) -> str:
    """An absolute, normalized path inside the image; `..` could climb out of the root."""
    parts = value.split("/")
    if not value.startswith("/") or ".." in parts or any(c in value for c in "\0\n\r"):
        raise ConfigError(
            f"`{path}` = {value!r} must be an absolute path inside the image",
            hint='write it like "/app" or "/srv/static", without ".." components',
        )
    return posixpath.normpath(value).replace("//", "/")


def _check_runtime_strings(raw: dict[str, Any], key: str) -> None:
    """Values that go into the image config verbatim must be well formed there."""
    for name in raw.get("environment", {}):
        if not name or "=" in name or "\0" in name:
            raise ConfigError(
                f"`{key}.environment` has the variable name {name!r}",
                hint="names must be non-empty and hold no `=`",
            )
    user = raw.get("user")
    if user is not None and (not user.strip() or any(c in user for c in "\0\n\r")):
        raise ConfigError(
            f"`{key}.user` = {user!r} is not a user",
            hint='write a name or uid, optionally with a group: "app", "1000:1000"',
        )
    if raw.get("entrypoint") == []:
        raise ConfigError(
            f"`{key}.entrypoint` is empty",
            hint="give the command as an array, or leave the key out to run the project's script",
        )


def _check_port(text: str, path: str) -> None:
    match = re.fullmatch(_PORT, text)
    bad = not match or not 1 <= int(match[1]) <= 65535
    if match and match[2]:
        bad = bad or not int(match[1]) <= int(match[2]) <= 65535
    if bad:
        raise ConfigError(
            f"`{path}` = {text!r} is not a port",
            hint='write a port or range with an optional protocol: "8000", "9000-9002/udp"',
        )


def _expand_port(text: str) -> list[str]:
    """`ExposedPorts` keys for a checked port or range: one `port/protocol` each, as Docker's
    EXPOSE and Jib write them; the image config has no form for a range."""
    match = re.fullmatch(_PORT, text)
    assert match is not None  # _check_port came first
    first, last, protocol = int(match[1]), int(match[2] or match[1]), match[3] or "tcp"
    return [f"{port}/{protocol}" for port in range(first, last + 1)]


def _creation_time(value: str | None, path: str) -> str:
    if value in (None, "EPOCH"):
        return "1970-01-01T00:00:00Z"
    if value == "USE_CURRENT_TIMESTAMP":
        return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    parsed = _parse_time(value, path, "EPOCH, USE_CURRENT_TIMESTAMP or ISO-8601")
    return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")


# Tar headers hold mtimes in 11 octal digits; later or negative times need PAX records.
_MAX_MTIME = 8**11 - 1
# 2107-12-31T23:59:59Z: zip's last time, and so of hatchling's wheel under SOURCE_DATE_EPOCH.
_LAST_ZIP_TIME = 4_354_819_199


def _mtime(value: str | None, path: str) -> int:
    # Checked even when the key is set: hatchling reads it too when it builds the wheel.
    epoch = _source_date_epoch()
    if value is None:
        if epoch is None:
            return 1
        value, path = epoch, "SOURCE_DATE_EPOCH"
    if value.isascii() and value.isdigit():
        seconds = int(value)
    else:
        seconds = int(_parse_time(value, path, "seconds since the epoch or ISO-8601").timestamp())
    if not 0 <= seconds <= _MAX_MTIME:
        raise ConfigError(
            f"`{path}` = {value!r} is outside 1970 to 2242",
            hint="give a time tar headers can hold, such as 2024-01-01T00:00:00Z",
        )
    return seconds


def _source_date_epoch() -> str | None:
    """SOURCE_DATE_EPOCH as the reproducible-builds spec defines it: unset, or a whole
    number of seconds. Set but empty is malformed too, and would fail hatchling's wheel."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return None
    seconds = value.strip(string.whitespace)  # what int() allows around the digits
    hint = (
        "unset it, or give one such as `git log -1 --format=%ct` prints (hatchling reads it "
        "too when it builds the wheel)"
    )
    if not (seconds.isascii() and seconds.isdigit()):
        raise ConfigError(
            f"SOURCE_DATE_EPOCH is {value!r}, not a whole number of seconds since the epoch",
            hint=hint,
        )
    if int(seconds) > _LAST_ZIP_TIME:
        raise ConfigError(
            f"SOURCE_DATE_EPOCH is {value!r}, past 2107, which zip (a wheel) cannot hold", hint=hint
        )
    return seconds


def _parse_time(value: str, path: str, forms: str) -> datetime:
    """An ISO-8601 time in UTC; naive times are taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError) as error:
        raise ConfigError(
            f"`{path}` = {value!r} is not a time",
            hint=f"use {forms}, such as 2024-01-01T00:00:00Z",
        ) from error


def _choice(value: str | None, allowed: tuple[str, ...], path: str) -> str | None:
    if value is not None and value not in allowed:
        raise ConfigError(
            f"`{path}` must be one of {', '.join(allowed)}, not {value!r}",
            hint=f"set it to {' or '.join(repr(item) for item in allowed)}, or leave it out",
        )
    return value


def _python(raw: dict[str, Any]) -> PythonConfig:
    key = "tool.jib.python"
    version = raw.get("version")
    if version is not None and not re.fullmatch(r"3\.\d{1,2}", version):
        raise ConfigError(f"`{key}.version` must be like 3.12, not {version!r}")
    return PythonConfig(
        version=version,
        implementation=_choice(raw.get("implementation"), ("cp",), f"{key}.implementation"),
        libc=_choice(raw.get("libc"), ("glibc", "musl"), f"{key}.libc"),
        platform_tags=tuple(raw.get("platform-tags", [])),
        lock=raw.get("lock"),
        extras=tuple(raw.get("extras", [])),
        groups=tuple(raw.get("groups", [])),
        bytecode=_choice(
            raw.get("bytecode", "auto"), ("auto", "always", "never"), f"{key}.bytecode"
        )
        or "auto",
        layer_threshold=_size(raw.get("layer-threshold", 10 << 20), f"{key}.layer-threshold"),
    )


_SIZE = r"(?i)\s*(\d+(?:\.\d+)?)\s*(|B|[KMG]i?B?)\s*"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(value: int | str, path: str) -> int | None:
    """Bytes from an integer or a string like "10MB" (units of 1024); "off" means never."""
    if isinstance(value, int):
        size: int | None = value
    elif value.strip().lower() in ("off", "none", "never"):
        return None
    elif match := re.fullmatch(_SIZE, value):
        unit = _UNITS[match[2][:1].upper() if match[2][:1].upper() in "KMG" else ""]
        size = int(float(match[1]) * unit)
    else:
        size = None
    if size is None or size < 0:
        raise ConfigError(
            f"`{path}` = {value!r} is not a size",
            hint='give bytes (10485760), a size like "10MB" or "512KB", or "off"',
        )
    return size


def _extra_directories(items: list[dict[str, Any]], root: Path) -> tuple[ExtraDirectory, ...]:
    result = []
    for index, item in enumerate(items):
        path = f"tool.jib.extra-directories[{index}]"
        for required, example in (
            ("from", '"src/static" (a directory of the project)'),
            ("into", '"/app/static" (where its files go in the image)'),
        ):
            if not item.get(required):
                raise ConfigError(
                    f"`{path}.{required}` is required",
                    hint=f"add {required} = {example} to that item",
                )
        into = _image_path(item["into"], f"{path}.into")
        source = root / item["from"]
        if not source.is_dir():
            raise ConfigError(
                f"`{path}.from`: directory {source} does not exist",
                hint="give a directory relative to the project root (where pyproject.toml is)",
            )
        for key, mode in item.get("permissions", {}).items():
            if not isinstance(mode, str) or not re.fullmatch(r"[0-7]{3,4}", mode):
                raise ConfigError(
                    f"`{path}.permissions` gives {key!r} the mode {mode!r}",
                    hint='write modes as octal strings, like "755" or "0640"',
                )
        result.append(
            ExtraDirectory(
                source=source,
                into=into,
                includes=tuple(item.get("includes", [])),
                excludes=tuple(item.get("excludes", [])),
                permissions=dict(item.get("permissions", {})),
            )
        )
    return tuple(result)


# --- the effective configuration, for --print-config -------------------------------------------

_MASK = "***"
_SECRET_NAME = r"(?i)passw|secret|token|credential|api[_-]?key|private"


@dataclass(frozen=True)
class ConfigEntry:
    """One schema key's effective value and where it came from; secrets already masked."""

    key: str
    value: Any
    source: str


def effective_config(config: JibConfig) -> tuple[ConfigEntry, ...]:
    """Every schema key, in schema order, with its value (None when unset) and its source."""
    entries = []
    for path, _kind in schema_keys():
        value = _plain(_lookup(config, path))
        if path.endswith(".password") and value is not None:
            value = _MASK
        elif isinstance(value, dict):
            value = {k: _MASK if re.search(_SECRET_NAME, k) else v for k, v in value.items()}
        source = config.sources.get(path, "default")
        if path == "to.tags" and config.to.image is not None and config.to.image.tag:
            # The first tag is the one written in to.image: name where that came from.
            image = f"to.image's tag ({config.sources.get('to.image', 'default')})"
            source = image if source == "default" else f"{image} and {source}"
        entries.append(ConfigEntry(path, value, source))
    return tuple(entries)


def format_config(config: JibConfig) -> str:
    """The effective configuration as TOML-like lines, each with its source as a comment."""
    lines = []
    for entry in effective_config(config):
        text = "(unset)" if entry.value is None else _toml_value(entry.value)
        lines.append((f"{entry.key} = {text}", entry.source))
    width = max(len(line) for line, _ in lines)
    return "\n".join(f"{line:<{width}}  # {source}" for line, source in lines) + "\n"


def _lookup(config: JibConfig, path: str) -> Any:
    # Schema keys map to attributes: kebab-case to snake_case, `from` to `from_`.
    node: Any = config
    for part in path.split("."):
        name = "from_" if part == "from" else part.replace("-", "_")
        if node is None:
            return None
        node = getattr(node, name)
    return node


def _plain(value: Any) -> Any:
    if isinstance(value, (Reference, Platform, Path)):
        return str(value)
    if isinstance(value, ExtraDirectory):
        return {
            "from": str(value.source),
            "into": value.into,
            "includes": list(value.includes),
            "excludes": list(value.excludes),
            "permissions": dict(value.permissions),
        }
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + pairs + " }" if pairs else "{}"
    return str(value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)
