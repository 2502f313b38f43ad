"""Config mappings and TOML: unknown keys, wrong types and unreadable files are named."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from autoweave_plugins.config import from_mapping, load_toml, require
from autoweave_plugins.errors import ConfigError


@dataclass(frozen=True)
class Sample:
    count: int = 2
    ratio: float = 0.5
    names: tuple[str, ...] = ()
    label: str | None = None

    def validate(self, prefix: str) -> None:
        require(self.count >= 0, f"{prefix}.count", "must not be negative")


def test_defaults_and_coercion() -> None:
    assert from_mapping(Sample, None, "s") == Sample()
    built = from_mapping(Sample, {"count": 3, "ratio": 1, "names": ["a"], "label": None}, "s")
    assert built == Sample(3, 1.0, ("a",), None)
    assert isinstance(built.ratio, float)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"cuont": 1}, r"s\.cuont: unknown key; did you mean 'count'"),
        ({"count": True}, r"s\.count: must be an integer, not bool"),
        ({"count": -1}, r"s\.count: must not be negative"),
        ({"ratio": "1"}, r"s\.ratio: must be a number"),
        ({"names": "abc"}, r"s\.names: must be a list"),
        ({"names": ["a", 2]}, r"s\.names\[1\]: must be str"),
        ({"label": 3}, r"s\.label: must be str"),
    ],
)
def test_errors_name_the_key(mapping: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping(Sample, mapping, "s")


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="s: must be a mapping"):
        from_mapping(Sample, [1, 2], "s")


def test_toml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_toml(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("x = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)
    good = tmp_path / "good.toml"
    good.write_text("[s]\ncount = 4\n")
    assert from_mapping(Sample, load_toml(good)["s"], "s").count == 4
