"""Builds gateway/models/word_zipf.tsv, the word-frequency table behind the verifier's IDF weights.

Dev-time only (`pip install wordfreq==3.1.1`): the gateway reads the shipped table and never imports
wordfreq. The table is derived from wordfreq's English data (CC BY-SA 4.0, see the NOTICE written
beside it). Zipf = log10(occurrences per billion words); the verifier uses IDF = 9 - Zipf.
"""

from __future__ import annotations

import re
from pathlib import Path

import wordfreq

TOP_N = 30_000
OUT = Path(__file__).resolve().parents[2] / "gateway" / "models" / "word_zipf.tsv"
WORD = re.compile(r"^[a-z][a-z']*$")


def main() -> None:
    rows = []
    for word in wordfreq.top_n_list("en", TOP_N):
        if WORD.match(word):
            rows.append(f"{word}\t{wordfreq.zipf_frequency(word, 'en'):.2f}")
    header = f"# wordfreq 3.1.1 English, top {TOP_N}, alphabetic only; CC BY-SA 4.0\n"
    OUT.write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} words to {OUT}")


if __name__ == "__main__":
    main()
