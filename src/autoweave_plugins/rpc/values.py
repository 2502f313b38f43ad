"""The value model: what may cross between host and worker, checked by the sender.

msgpack's packer accepts more than the receiving ``FrameDecoder`` reads: it packs ``{200: 5}``,
which the decoder (``strict_map_key``: a hostile peer's int keys could all collide in one hash
bucket) refuses, and it packs a list of a million empty dicts, which the decoder's budget
refuses. A value refused at the receiving end breaks the protocol and ends the worker, so the
sender checks here first, against the same limits, and refuses with a message that names the
value. Both sides call ``check_value``: the host for hook arguments (``UnsendableValue``, before
anything is sent), the worker for hook results (a ``HookError``: "returned an unsendable value").

The model: ``None``, ``bool``, ``int`` (-2**63 .. 2**64-1), ``float``, ``str``, ``bytes``, lists
and tuples (a tuple arrives as a list), and dicts whose keys are ``str`` or ``bytes``. Bulk data
belongs in one ``bytes`` value: it costs one item, however long.
"""

from __future__ import annotations

from typing import Any, Final

from autoweave_plugins.rpc.frames import DEFAULT_MAX_CONTAINERS, DEFAULT_MAX_ELEMENTS

__all__ = ["MAX_DEPTH", "PLAIN_TYPES", "UNSENDABLE", "ValueBudget", "check_value"]

UNSENDABLE = "UnsendableValue"
"""The type of the ERROR a worker sends for a hook result outside the model (no traceback):
the host raises it as ``HookError`` saying the hook "returned an unsendable value"."""

MAX_DEPTH = 500
"""Nesting the packer accepts (its own limit is 511, the frame's envelope takes a few)."""
_MIN_INT, _MAX_INT = -(2**63), 2**64 - 1
_SCALARS = (str, bytes, bool, float, type(None))
PLAIN_TYPES: Final = frozenset(_SCALARS)
"""Types in the model whatever their value, so a sender may skip ``check_value`` for them
(a str or bytes can still be too long for a frame: that is the frame's check)."""


class ValueBudget:
    """What is left of one frame's decode budget (``FrameDecoder``'s containers and items)."""

    __slots__ = ("containers", "elements")

    def __init__(
        self, containers: int = DEFAULT_MAX_CONTAINERS, elements: int = DEFAULT_MAX_ELEMENTS
    ) -> None:
        self.containers = containers
        self.elements = elements


def _key_text(key: object) -> str:
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def check_value(
    value: Any, where: str, budget: ValueBudget | None = None
) -> tuple[str, str] | None:
    """None if ``value`` fits the model and ``budget`` (which it spends), else where and why
    not: ``("args[0][200]", "map key 200 is an int; ...")``."""
    if type(value) in PLAIN_TYPES:
        return None  # most hooks take and return these: no budget or stack to build
    budget = budget if budget is not None else ValueBudget()
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, at, depth = stack.pop()
        if isinstance(item, _SCALARS):
            continue
        if isinstance(item, int):
            if not _MIN_INT <= item <= _MAX_INT:
                return at, f"the int {_key_text(item)} is outside 64 bits; send it as a str"
            continue
        if depth >= MAX_DEPTH:
            return at, f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, list | tuple):
            budget.containers -= 1
            budget.elements -= len(item)
            if budget.containers < 0 or budget.elements < 0:
                return _over_budget(at)
            stack.extend((v, f"{at}[{i}]", depth + 1) for i, v in enumerate(item))
        elif isinstance(item, dict):
            budget.containers -= 1
            budget.elements -= len(item)
            if budget.containers < 0 or budget.elements < 0:
                return _over_budget(at)
            for key, v in item.items():
                if not isinstance(key, str | bytes):
                    return at, (
                        f"map key {_key_text(key)} is a {type(key).__name__}; only str "
                        "(or bytes) keys cross, so convert it, e.g. str(key)"
                    )
                stack.append((v, f"{at}[{_key_text(key)}]", depth + 1))
        else:
            return at, (
                f"a {type(item).__name__} cannot be sent; values are None, bool, int, "
                "float, str, bytes, list, tuple and dict with str keys"
            )
    return None


def _over_budget(at: str) -> tuple[str, str]:
    return at, (
        f"more than {DEFAULT_MAX_CONTAINERS} lists and dicts or {DEFAULT_MAX_ELEMENTS} "
        "items in all; send bulk data as one bytes value"
    )
