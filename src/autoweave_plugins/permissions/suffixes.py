"""Public suffixes (``com``, ``co.uk``, ``github.io``): names under which unrelated parties register.

A wildcard pattern ``*.d`` grants every site under ``d``. That is one owner's sites when ``d`` is
a registered domain, and everybody's when ``d`` is a public suffix, so such wildcards are refused.
Counting dots cannot tell the two apart (``co.uk`` has one, like ``example.com``); the Public
Suffix List can.

The list comes from the ``publicsuffixlist`` package, which ships a copy of it and is released
whenever the list changes: nothing is downloaded at run time, and upgrading the package updates
the list. Both sections count: ICANN suffixes (``co.uk``) and the private section (``github.io``,
whose subdomains belong to different users). A name under an unlisted top-level domain is judged
by the list's default rule ``*``: its last label is the suffix, so ``*.localhost`` is refused too.
"""

from __future__ import annotations

import functools

from publicsuffixlist import PublicSuffixList

__all__ = ["is_public_suffix"]


@functools.cache
def _suffix_list() -> PublicSuffixList:
    # Built on first use (~50 ms): workers import this module but never parse patterns.
    return PublicSuffixList(accept_unknown=True)


def is_public_suffix(host: str) -> bool:
    """True when the canonical (lowercase, A-label) ``host`` is itself a public suffix."""
    return _suffix_list().is_public(host)
