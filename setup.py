"""Builds the optional Cython extensions in native/ into the gateway package.

The extensions are optional for users: when Cython or a compiler is missing the pure-Python
twins are used. Where GATEWAY_STRICT_NATIVE=1 is set (CI, the Docker image) a failed build is
an error, so a missing extension never goes unnoticed.
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

STRICT = os.environ.get("GATEWAY_STRICT_NATIVE") == "1"
SKIP = os.environ.get("GATEWAY_NO_EXTENSIONS") == "1" and not STRICT

# (module name inside the package, source in native/)
NATIVE_MODULES = [
    ("gateway.transform.compress._phrases_c", "native/phrases.pyx"),
]


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # compiler missing, etc.
            if STRICT:
                raise
            print(f"warning: native extensions not built ({exc}); using pure-Python twins", file=sys.stderr)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            if STRICT:
                raise
            print(f"warning: {ext.name} not built ({exc}); using its pure-Python twin", file=sys.stderr)


def native_extensions() -> list:
    if SKIP:
        return []
    sources = [(name, src) for name, src in NATIVE_MODULES if os.path.exists(src)]
    if not sources:
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        if STRICT:
            raise
        print("warning: Cython not installed; using pure-Python twins", file=sys.stderr)
        return []
    exts = [Extension(name, [src], extra_compile_args=["-O3"]) for name, src in sources]
    return cythonize(exts, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False})


setup(ext_modules=native_extensions(), cmdclass={"build_ext": OptionalBuildExt})
