"""The `auto` choice of phrase engine: the native extension, else its pure-Python twin.

Decided once at import, like uvicorn's `loops/auto.py`: `GATEWAY_NO_EXTENSIONS=1` forces the twin;
`GATEWAY_STRICT_NATIVE=1` (CI, the Docker image) turns a missing extension into an ImportError
instead of a silent fallback, so a broken build never ships as a slow gateway.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["IMPLEMENTATION", "PhraseReplacer", "load_engine", "replace_phrases"]

IMPLEMENTATION: str

if os.environ.get("GATEWAY_NO_EXTENSIONS") == "1":
    from gateway.transform.compress._phrases_py import PhraseReplacer, replace_phrases

    IMPLEMENTATION = "python"
else:
    try:
        from gateway.transform.compress._phrases_c import (  # type: ignore[assignment]
            PhraseReplacer,
            replace_phrases,
        )

        IMPLEMENTATION = "native"
    except ImportError as exc:
        if os.environ.get("GATEWAY_STRICT_NATIVE") == "1":
            raise ImportError(
                "gateway.transform.compress._phrases_c (built from native/phrases.pyx) is not importable and "
                "GATEWAY_STRICT_NATIVE=1 forbids the pure-Python fallback; build it with "
                "`python setup.py build_ext --inplace` (needs Cython and a C compiler)"
            ) from exc
        from gateway.transform.compress._phrases_py import PhraseReplacer, replace_phrases

        IMPLEMENTATION = "python"


def load_engine(name: str) -> ModuleType:
    """The module of one engine by name, "native" or "python", whatever `auto` picked.

    For tests and benchmarks that compare the two; ImportError if the native one is not built.
    """
    if name == "python":
        return importlib.import_module("gateway.transform.compress._phrases_py")
    if name == "native":
        try:
            return importlib.import_module("gateway.transform.compress._phrases_c")
        except ImportError as exc:
            raise ImportError(
                "the native phrase engine gateway.transform.compress._phrases_c is not built; run "
                "`python setup.py build_ext --inplace`"
            ) from exc
    raise ValueError(f"unknown phrase engine {name!r}; expected 'native' or 'python'")
