"""Hydra command-line overrides as strings: ``++a.b=1``, ``~c``, ``data@x=y``."""

from __future__ import annotations

import re


def split_override(override: str) -> tuple[str, str]:
    """``"++a.b=1"`` -> ``("++a.b", "1")``; ``"~c"`` -> ``("~c", "")``."""
    key, _, value = override.partition("=")
    return key, value


def override_key(override: str) -> str:
    """``++a.b=1`` -> ``a.b``; ``~c`` -> ``c``; ``data@x=y`` -> ``data@x``."""
    return split_override(override)[0].lstrip("+~")


def top_key(override: str) -> str:
    """The first component of the key: ``model.optimizer.lr=1`` -> ``model``,
    ``data@x=y`` -> ``data``, ``tuner/x=y`` -> ``tuner``."""
    return re.split(r"[./@]", override_key(override), maxsplit=1)[0]
