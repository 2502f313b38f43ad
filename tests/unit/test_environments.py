"""The parts of per-plugin environments that need no uv: config, uv's environment, locks, keys."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from autoweave_plugins.config import from_mapping
from autoweave_plugins.environments import (
    EnvironmentBuilder,
    EnvironmentBuildError,
    EnvironmentsConfig,
    InvalidRequirements,
    Target,
    default_cache_dir,
)
from autoweave_plugins.environments.keys import environment_key, redact_url, resolution_key
from autoweave_plugins.environments.lock import (
    MAX_DETAIL,
    LockError,
    canonical_lock,
    culprits,
    error_detail,
    parse_lock,
)
from autoweave_plugins.environments.store import Store, make_read_only, remove_tree, tree_size
from autoweave_plugins.environments.uv import _Bounded, source_args, uv_environment
from autoweave_plugins.errors import ConfigError


def config(**values: object) -> EnvironmentsConfig:
    return from_mapping(EnvironmentsConfig, values, "environments")


# --- config -----------------------------------------------------------------------------------


def test_defaults_use_the_operators_uv_configuration() -> None:
    default = config()
    assert default.only_binary is True
    assert default.index_url is None
    assert not default.exclusive
    assert source_args(default) == ["--only-binary", ":all:"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"index_ulr": "https://x/simple"}, r"environments\.index_ulr: unknown key; did you mean 'index_url'"),
        ({"index_url": "ftp://x/simple"}, r"environments\.index_url: must be an http\(s\):// or file://"),
        ({"index_url": "https://x/simple extra"}, r"environments\.index_url: must not contain whitespace"),
        ({"extra_index_urls": ["https://ok/simple", ""]}, r"environments\.extra_index_urls\[1\]: must be a URL"),
        ({"find_links": "wheels"}, r"environments\.find_links: must be an absolute path"),
        ({"cache_dir": "cache"}, r"environments\.cache_dir: must be an absolute path"),
        ({"offline": True}, r"environments\.offline: needs find_links"),
        ({"offline": True, "find_links": "/w", "index_url": "https://x/simple"}, r"environments\.offline: conflicts with index_url"),
        ({"build_timeout": 0}, r"environments\.build_timeout: must be from 0 to 86400"),
        ({"build_timeout": "60"}, r"environments\.build_timeout: must be a number"),
        ({"max_size_mb": 0}, r"environments\.max_size_mb: must be from 1"),
        ({"only_binary": "yes"}, r"environments\.only_binary: must be bool"),
    ],
)  # fmt: skip
def test_bad_values_name_their_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**values)


def test_cache_dir_defaults_under_the_data_root_else_the_user_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert default_cache_dir(tmp_path) == tmp_path / "environments"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "autoweave-plugins" / "environments"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    assert default_cache_dir() == Path.home() / ".cache" / "autoweave-plugins" / "environments"


# --- what uv runs with ------------------------------------------------------------------------

HOST_ENV = {
    "HOME": "/home/op",
    "PATH": "/usr/bin",
    "AWS_SECRET_ACCESS_KEY": "planted-secret",
    "GITHUB_TOKEN": "planted-token",
    "UV_INSECURE_HOST": "evil.example",
    "UV_NO_VERIFY_HASHES": "1",
    "UV_CONSTRAINT": "/tmp/c.txt",
    "UV_INDEX_URL": "https://operator/simple",
    "UV_INDEX_CORP_PASSWORD": "corp-password",
    "UV_EXTRA_INDEX_URL": "https://operator-extra/simple",
    "UV_CONFIG_FILE": "/etc/op/uv.toml",
    "UV_CACHE_DIR": "/var/cache/uv",
    "HTTPS_PROXY": "http://proxy:3128",
}


def test_uv_gets_no_secrets_and_no_weakening_settings() -> None:
    env = uv_environment(config(), HOST_ENV)
    for name in ("AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "UV_INSECURE_HOST"):
        assert name not in env
    assert "UV_NO_VERIFY_HASHES" not in env
    assert "UV_CONSTRAINT" not in env
    assert "planted" not in repr(env)
    # The operator's own sources, credentials and proxy are what uv needs by default.
    assert env["UV_INDEX_URL"] == "https://operator/simple"
    assert env["UV_INDEX_CORP_PASSWORD"] == "corp-password"
    assert env["UV_CONFIG_FILE"] == "/etc/op/uv.toml"
    assert env["HTTPS_PROXY"] == "http://proxy:3128"
    assert env["UV_CACHE_DIR"] == "/var/cache/uv"
    assert env["UV_PYTHON_DOWNLOADS"] == "never"


def test_configured_indexes_replace_the_operators_and_stay_off_the_command_line() -> None:
    url = "https://user:pw@mirror.example/simple"
    exclusive = config(index_url=url, extra_index_urls=["https://b.example/simple"])
    env = uv_environment(exclusive, HOST_ENV)
    assert env["UV_INDEX_URL"] == url
    assert env["UV_EXTRA_INDEX_URL"] == "https://b.example/simple"
    assert "UV_INDEX_CORP_PASSWORD" not in env
    assert "UV_CONFIG_FILE" not in env
    args = source_args(exclusive)
    assert "--no-config" in args
    assert not any("mirror" in a for a in args)
    # Extra indexes alone add to the operator's.
    added = uv_environment(config(extra_index_urls=["https://b.example/simple"]), HOST_ENV)
    assert added["UV_EXTRA_INDEX_URL"] == "https://b.example/simple https://operator-extra/simple"


def test_offline_uses_only_the_wheelhouse() -> None:
    args = source_args(config(offline=True, find_links="/srv/wheels", only_binary=False))
    assert args == ["--no-config", "--offline", "--no-index", "--find-links", "/srv/wheels"]


def test_captured_output_keeps_head_and_tail_within_the_bound() -> None:
    sink = _Bounded(1000)
    sink.add(b"error: first line\n")
    for _ in range(500):
        sink.add(b"x" * 100)
    sink.add(b"\ncause: the last words")
    text = sink.text()
    assert text.startswith("error: first line")
    assert text.endswith("cause: the last words")
    assert len(sink.head) + len(sink.tail) == 1000
    assert f"[... {sink.dropped} bytes dropped ...]" in text
    assert sink.dropped == 18 + 50_000 + 22 - 1000


# --- locks and uv's messages ------------------------------------------------------------------

LOCK = """\
tinypkg==2.0 \\
    --hash=sha256:bbb \\
    --hash=sha256:aaa
    # via withdep
    # from https://user:secret@mirror.example/simple
withdep==1.0 \\
    --hash=sha256:ccc
    # via -r requirements.in
    # from file:///srv/wheels
"""


def test_lock_parsing_records_sources_without_credentials() -> None:
    packages = parse_lock(LOCK)
    assert [(p.name, p.version, p.hashes, p.source) for p in packages] == [
        ("tinypkg", "2.0", ("sha256:bbb", "sha256:aaa"), "https://***@mirror.example/simple"),
        ("withdep", "1.0", ("sha256:ccc",), "file:///srv/wheels"),
    ]


def test_canonical_lock_ignores_comments_and_order() -> None:
    reordered = LOCK.replace("# via withdep", "# via something else").replace(
        "--hash=sha256:bbb \\\n    --hash=sha256:aaa", "--hash=sha256:aaa \\\n    --hash=sha256:bbb"
    )
    assert canonical_lock(parse_lock(reordered)) == canonical_lock(parse_lock(LOCK))
    assert canonical_lock(parse_lock(LOCK)) == (
        "tinypkg==2.0 sha256:aaa sha256:bbb\nwithdep==1.0 sha256:ccc"
    )


@pytest.mark.parametrize(
    "text",
    ["tinypkg==2.0\n", "tinypkg>=2.0 \\\n    --hash=sha256:aaa\n", "--index-url https://x\n"],
)
def test_a_lock_without_exact_hashed_pins_is_refused(text: str) -> None:
    with pytest.raises(LockError):
        parse_lock(text)


@pytest.mark.parametrize(
    ("stderr", "blamed"),
    [
        (
            "error: No solution found when resolving dependencies\n  cause: Because only "
            "tinypkg<=2.0 is available and you require tinypkg>=3, we can conclude that your "
            "requirements are unsatisfiable.",
            ("tinypkg>=3",),
        ),
        (
            "  cause: Because nosuchpkg was not found in the provided package locations and you "
            "require nosuchpkg>=1, we can conclude ...",
            ("nosuchpkg>=1",),
        ),
        (
            "  cause: Because all versions of withdep depend on tinypkg>=2 and you require "
            "tinypkg==1.0, we can conclude that your requirements and all versions of withdep "
            "are incompatible.",
            ("tinypkg==1.0", "withdep"),
        ),
        ("error: Failed to fetch: `https://x/simple/other-pkg/`", ()),
    ],
)
def test_culprits_are_the_requirements_uv_blames(stderr: str, blamed: tuple[str, ...]) -> None:
    requirements = ("nosuchpkg>=1", "tinypkg==1.0", "tinypkg>=3", "withdep")
    assert culprits(stderr, requirements) == blamed


def test_error_detail_starts_at_the_error_and_is_bounded() -> None:
    assert (
        error_detail("Using CPython 3.11\nerror: broken\n  cause: x") == "error: broken\n  cause: x"
    )
    long = error_detail("error: " + "y" * 100_000)
    assert len(long) <= MAX_DETAIL
    assert long.endswith("[... truncated ...]")


# --- keys ---------------------------------------------------------------------------------------

TARGET = Target("/usr/bin/python3", "3.11.7", "cpython-311", "", "linux-x86_64-glibc2.36")


def test_resolution_key_depends_on_sources_and_target_but_not_credentials() -> None:
    base = resolution_key(("tinypkg==2.0",), config(), TARGET)
    assert base == resolution_key(("tinypkg==2.0",), config(), TARGET)
    assert base != resolution_key(("tinypkg==1.0",), config(), TARGET)
    assert base != resolution_key(("tinypkg==2.0",), config(only_binary=False), TARGET)
    newer = dataclasses.replace(TARGET, python_version="3.11.8")
    assert base != resolution_key(("tinypkg==2.0",), config(), newer)
    with_user = config(index_url="https://alice:one@mirror.example/simple")
    rotated = config(index_url="https://alice:two@mirror.example/simple")
    assert resolution_key(("a",), with_user, TARGET) == resolution_key(("a",), rotated, TARGET)
    assert redact_url("https://alice:one@mirror.example/simple") == (
        "https://***@mirror.example/simple"
    )


def test_environment_key_is_the_lock_and_the_target() -> None:
    lock = canonical_lock(parse_lock(LOCK))
    assert environment_key(lock, TARGET) == environment_key(lock, TARGET)
    assert environment_key(lock, TARGET) != environment_key(lock + " ", TARGET)
    other = dataclasses.replace(TARGET, platform="linux-aarch64-glibc2.36")
    assert environment_key(lock, TARGET) != environment_key(lock, other)
    assert len(environment_key(lock, TARGET)) == 64


def test_current_target_is_this_interpreter() -> None:
    import sys

    target = Target.current()
    assert target.executable == sys.executable
    assert target.cache_tag == sys.implementation.cache_tag
    assert target.python_version.startswith(f"{sys.version_info.major}.{sys.version_info.minor}.")


# --- the store ----------------------------------------------------------------------------------


def test_read_only_trees_are_measured_and_still_removable(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "pkg" / "sub").mkdir(parents=True)
    (tree / "pkg" / "a.py").write_bytes(b"x" * 100)
    (tree / "pkg" / "sub" / "b.py").write_bytes(b"y" * 50)
    os.link(tree / "pkg" / "a.py", tree / "pkg" / "linked.py")
    assert tree_size(tree) == 150
    make_read_only(tree)
    assert (tree / "pkg" / "sub").stat().st_mode & 0o777 == 0o555
    assert (tree / "pkg" / "a.py").stat().st_mode & 0o777 == 0o444
    remove_tree(tree)
    assert not tree.exists()


def test_publish_loses_a_race_without_damage(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.create()
    first, second = store.new_build_dir("k" * 8), store.new_build_dir("k" * 8)
    (first / "mark").write_text("first")
    (second / "mark").write_text("second")
    assert store.publish(first, "k" * 8) is True
    assert store.publish(second, "k" * 8) is False
    assert (store.env_dir("k" * 8) / "mark").read_text() == "first"
    assert sorted(os.listdir(store.envs)) == ["k" * 8]


# --- the builder, before any uv runs -------------------------------------------------------------


async def test_bad_requirement_sets_and_an_unusable_cache_are_typed_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    builder = EnvironmentBuilder({"cache_dir": str(blocker / "cache")})
    with pytest.raises(InvalidRequirements, match="no requirements"):
        await builder.ensure([])
    with pytest.raises(InvalidRequirements, match=r"'humanize>=' is not a PEP 508 requirement"):
        await builder.ensure(["humanize>="])
    with pytest.raises(EnvironmentBuildError, match=r"environment cache .*a-file/cache"):
        await builder.ensure(["humanize"])
    assert builder.lookup(["humanize"]) is None
    assert (builder.stats.uv_runs, builder.stats.failures) == (0, 1)
