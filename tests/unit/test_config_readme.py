"""The README's configuration reference documents exactly the keys of `config.SCHEMA`."""

from __future__ import annotations

import re
from pathlib import Path

from hatch_jib.config import ARRAY_OF_TABLES, env_var_for, schema_keys

README = Path(__file__).resolve().parents[2] / "README.md"
HEADER = "| key | type | default | env var | example |"


def reference_rows() -> list[list[str]]:
    """The cells of each row of the configuration reference table."""
    lines = README.read_text().splitlines()
    start = lines.index(HEADER) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
    return rows


def test_readme_reference_has_one_row_per_schema_key_in_schema_order():
    keys = [re.fullmatch(r"`([a-z.-]+)`", row[0]) for row in reference_rows()]

    assert all(keys), "each row's first cell must be one backquoted key"
    assert [match[1] for match in keys if match] == [key for key, _ in schema_keys()]


def test_readme_reference_gives_each_keys_type_and_env_var():
    kinds = dict(schema_keys())

    for key_cell, kind, default, env_var, example in reference_rows():
        key = key_cell.strip("`")
        assert kind == kinds[key], key
        expected = "(none)" if kinds[key] == ARRAY_OF_TABLES else f"`{env_var_for(key)}`"
        assert env_var == expected, key
        assert default and example, f"{key}: default and example must not be empty"
