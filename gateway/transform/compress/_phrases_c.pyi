"""Types of the native phrase engine built from native/phrases.pyx (same API as _phrases_py)."""

from collections.abc import Sequence

class PhraseReplacer:
    def __init__(
        self,
        entries: Sequence[tuple[str, str]],
        word_ascii: str = ...,
        nonword_ranges: Sequence[tuple[int, int]] = ...,
    ) -> None: ...
    def replace(self, text: str) -> tuple[str, int]: ...

def replace_phrases(text: str, level: str = "standard") -> tuple[str, int]: ...
