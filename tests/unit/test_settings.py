"""The manager's config sections: limits from TOML and mappings, and the TypedDicts in step."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path

import pytest

from autoweave_plugins import options
from autoweave_plugins.broker.fetch import FetchLimits
from autoweave_plugins.environments import EnvironmentsConfig
from autoweave_plugins.errors import ConfigError
from autoweave_plugins.policy import GrantPolicy
from autoweave_plugins.process import OutputLimits
from autoweave_plugins.rpc import ServeLimits
from autoweave_plugins.settings import (
    LimitsConfig,
    LoaderConfig,
    ManagerConfig,
    WatcherConfig,
    WorkerPoolConfig,
)

SECTIONS: list[tuple[type[object], object]] = [
    (WorkerPoolConfig, options.WorkerPoolOptions),
    (LoaderConfig, options.LoaderOptions),
    (WatcherConfig, options.WatcherOptions),
    (GrantPolicy, options.PolicyOptions),
    (LimitsConfig, options.LimitsOptions),
    (FetchLimits, options.FetchLimitsOptions),
    (OutputLimits, options.OutputLimitsOptions),
    (ServeLimits, options.ServeLimitsOptions),
    (EnvironmentsConfig, options.EnvironmentsOptions),
]


@pytest.mark.parametrize(("config", "typed"), SECTIONS)
def test_each_typeddict_has_exactly_its_dataclass_keys(config: type, typed: type) -> None:
    fields = [f.name for f in dataclasses.fields(config)]
    assert list(typing.get_type_hints(typed)) == fields


def test_limits_load_from_toml_with_nested_tables(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text(
        "[worker_pool]\nmemory_check_interval = 0.5\n"
        "[limits]\nmax_frame = 1048576\ncancel_grace = 1\nmax_concurrent_requests = 4\n"
        "[limits.fetch]\nmax_redirects = 2\nmax_response_bytes = 4096\n"
        "[limits.output]\nlines_per_second = 5\n"
    )
    config = ManagerConfig.from_toml(path)
    limits = config.limits
    assert (limits.max_frame, limits.cancel_grace, limits.max_concurrent_requests) == (
        1 << 20,
        1.0,
        4,
    )
    assert limits.fetch == FetchLimits(max_redirects=2, max_response_bytes=4096)
    assert limits.output == OutputLimits(lines_per_second=5.0)
    assert limits.ready_timeout == 30.0 and config.worker_pool.memory_check_interval == 0.5


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_frame": 10}, r"limits\.max_frame: must be from 65536"),
        ({"cancel_grace": 0}, r"limits\.cancel_grace: must be > 0"),
        ({"max_concurrent_requests": 0}, r"limits\.max_concurrent_requests: must be >= 1"),
        ({"fetch": {"max_redirect": 1}}, r"limits\.fetch\.max_redirect: unknown key"),
        ({"fetch": {"max_redirects": -1}}, r"limits\.fetch\.max_redirects: must be >= 0"),
        ({"fetch": {"max_timeout": 1.0}}, r"limits\.fetch\.max_timeout: must be >= default"),
        ({"fetch": 3}, r"limits\.fetch: must be a mapping or FetchLimits"),
        ({"output": {"burst": "many"}}, r"limits\.output\.burst: must be an integer"),
        ({"output": {"max_line": 0}}, r"limits\.output\.max_line: must be >= 1"),
    ],
)
def test_bad_limits_name_the_key(limits: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ManagerConfig.from_mapping({"limits": limits})


def test_a_toml_error_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text("[limits.output]\nlines_per_second = -1\n")
    with pytest.raises(ConfigError, match=r"host\.toml: limits\.output\.lines_per_second"):
        ManagerConfig.from_toml(path)


def test_sections_accept_the_dataclass_itself() -> None:
    limits = LimitsConfig(fetch=FetchLimits(max_headers=8))
    assert ManagerConfig.from_mapping({"limits": limits}).limits is limits
    with pytest.raises(ConfigError, match=r"worker_pool\.memory_check_interval: must be > 0"):
        ManagerConfig.from_mapping({"worker_pool": {"memory_check_interval": 0}})


def test_readme_configuration_lists_every_default() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Configuration") :]
    start = section.index("```toml") + len("```toml")
    document = tomllib.loads(section[start : section.index("```", start)])
    assert ManagerConfig.from_mapping(document) == ManagerConfig()
    for name, config in (("worker_pool", WorkerPoolConfig), ("limits", LimitsConfig)):
        assert set(document[name]) == {f.name for f in dataclasses.fields(config)}
    # TOML has no null: a key whose default is None is shown commented out, as "# key = ...".
    table = section[section.index("[environments]") : section.index("```", start)]
    commented = set(re.findall(r"^# (\w+) = ", table, re.MULTILINE))
    fields = {f.name: f.default for f in dataclasses.fields(EnvironmentsConfig)}
    assert set(document["environments"]) | commented == set(fields)
    assert all(fields[key] is None for key in commented)


def test_environments_section_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text(
        '[environments]\nfind_links = "/srv/wheels"\noffline = true\nbuild_timeout = 60\n'
        'extra_index_urls = ["https://mirror.example/simple"]\n'
    )
    with pytest.raises(ConfigError, match=r"environments\.offline: conflicts with index_url"):
        ManagerConfig.from_toml(path)
    path.write_text('[environments]\nfind_links = "/srv/wheels"\noffline = true\n')
    environments = ManagerConfig.from_toml(path).environments
    assert environments.find_links == Path("/srv/wheels") and environments.offline
    assert environments.only_binary and environments.prune_interval == 3600.0
    path.write_text("[environments]\nprune_interval = -1\n")
    with pytest.raises(ConfigError, match=r"environments\.prune_interval: must be >= 0"):
        ManagerConfig.from_toml(path)
