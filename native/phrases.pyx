# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Native phrase engine (gateway.transform.compress._phrases_c): one trie pass over the str's own buffer.

The twin is gateway/compress/_phrases_py.py: same names, same algorithm, byte-identical output.
The scan reads the PEP 393 buffer of the str in place (1, 2 or 4 bytes per character, no copy) and
records matches as (start, end, entry, case) in a C array; for large inputs it runs without the GIL
so other threads (the event loop, embedding inference) keep going. The output is then assembled
from slices of the original str, so text with no match is returned as the very same object.
"""

from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memset

from gateway.transform.compress import table

__all__ = ["PhraseReplacer", "replace_phrases"]

cdef extern from "Python.h":
    int PyUnicode_READY(object o) except -1
    int PyUnicode_KIND(object o)
    void* PyUnicode_DATA(object o)
    Py_UCS4 PyUnicode_READ(int kind, const void* data, Py_ssize_t index) nogil

cdef enum:
    # Below this many characters taking and re-taking the GIL costs more than the scan itself.
    NOGIL_MIN_CHARS = 4096
    # Trie alphabet: a-z, then the space.
    NSYM = 27

ctypedef struct Match:
    Py_ssize_t start
    Py_ssize_t end
    int entry
    int case_

cdef class PhraseReplacer:
    """A compiled phrase table; `replace(text)` returns (new text, number of replacements)."""

    cdef int* next_        # node * NSYM + symbol -> child node, or -1
    cdef int* terminal     # node -> entry index ending here, or -1
    cdef int nodes
    cdef signed char symbol[128]
    cdef unsigned char word_ascii[128]
    cdef Py_UCS4* ranges   # flattened (lo, hi) pairs of non-word characters above ASCII
    cdef int nranges
    cdef list variants

    def __cinit__(self):
        self.next_ = NULL
        self.terminal = NULL
        self.ranges = NULL

    def __init__(self, entries, word_ascii=table.WORD_ASCII, nonword_ranges=table.NONWORD_RANGES):
        cdef int capacity = 1
        cdef int node, sym, i
        entries = list(entries)
        for pattern, _ in entries:
            capacity += len(pattern)
        self.next_ = <int*>malloc(capacity * NSYM * sizeof(int))
        self.terminal = <int*>malloc(capacity * sizeof(int))
        self.ranges = <Py_UCS4*>malloc((2 * len(nonword_ranges) + 1) * sizeof(Py_UCS4))
        if self.next_ == NULL or self.terminal == NULL or self.ranges == NULL:
            raise MemoryError()
        for i in range(capacity * NSYM):
            self.next_[i] = -1
        for i in range(capacity):
            self.terminal[i] = -1
        self.nodes = 1
        memset(self.symbol, -1, sizeof(self.symbol))
        for i in range(26):
            self.symbol[ord("a") + i] = i
            self.symbol[ord("A") + i] = i
        self.symbol[ord(" ")] = 26
        memset(self.word_ascii, 0, sizeof(self.word_ascii))
        for ch in word_ascii:
            self.word_ascii[ord(ch)] = 1
        self.nranges = len(nonword_ranges)
        for i, (lo, hi) in enumerate(nonword_ranges):
            self.ranges[2 * i] = lo
            self.ranges[2 * i + 1] = hi
        self.variants = []
        for index, (pattern, replacement) in enumerate(entries):
            node = 0
            for ch in pattern:
                sym = self.symbol[ord(ch)]
                if self.next_[node * NSYM + sym] < 0:
                    self.next_[node * NSYM + sym] = self.nodes
                    self.nodes += 1
                node = self.next_[node * NSYM + sym]
            self.terminal[node] = index
            self.variants.append(
                (replacement, replacement[0].upper() + replacement[1:], replacement.upper())
            )

    def __dealloc__(self):
        free(self.next_)
        free(self.terminal)
        free(self.ranges)

    cdef inline bint is_word(self, Py_UCS4 c) noexcept nogil:
        cdef int i
        if c < 128:
            return self.word_ascii[c]
        for i in range(self.nranges):
            if self.ranges[2 * i] <= c <= self.ranges[2 * i + 1]:
                return False
        return True

    cdef Py_ssize_t scan(self, int kind, const void* data, Py_ssize_t n,
                         Match** out, Py_ssize_t* cap) noexcept nogil:
        """Fill *out with the matches, growing it as needed; returns their count, -1 on no memory."""
        cdef Py_ssize_t i = 0, j, count = 0, best_end
        cdef int node, sym, best_entry, case_
        cdef Py_UCS4 c, d
        cdef bint prev_word = False, has_lower
        cdef Match* grown
        while i < n:
            c = PyUnicode_READ(kind, data, i)
            if not prev_word and c < 128 and self.symbol[c] >= 0 and self.next_[self.symbol[c]] >= 0:
                node = 0
                j = i
                best_end = -1
                best_entry = -1
                while j < n:
                    d = PyUnicode_READ(kind, data, j)
                    if d >= 128:
                        break
                    sym = self.symbol[d]
                    if sym < 0:
                        break
                    node = self.next_[node * NSYM + sym]
                    if node < 0:
                        break
                    j += 1
                    if self.terminal[node] >= 0 and (
                        j == n or not self.is_word(PyUnicode_READ(kind, data, j))
                    ):
                        best_end = j
                        best_entry = self.terminal[node]
                if best_end >= 0:
                    has_lower = False
                    for j in range(i, best_end):
                        d = PyUnicode_READ(kind, data, j)
                        if 97 <= d <= 122:
                            has_lower = True
                            break
                    if not has_lower:
                        case_ = 2
                    elif 65 <= c <= 90:
                        case_ = 1
                    else:
                        case_ = 0
                    if count == cap[0]:
                        cap[0] = cap[0] * 2 + 16
                        grown = <Match*>realloc(out[0], cap[0] * sizeof(Match))
                        if grown == NULL:
                            return -1
                        out[0] = grown
                    out[0][count].start = i
                    out[0][count].end = best_end
                    out[0][count].entry = best_entry
                    out[0][count].case_ = case_
                    count += 1
                    i = best_end
                    prev_word = True  # a match always ends on a letter
                    continue
            prev_word = self.is_word(c)
            i += 1
        return count

    def replace(self, str text not None):
        cdef int kind
        cdef const void* data
        cdef Py_ssize_t n = len(text)
        cdef Py_ssize_t cap = 0, count, k, last = 0
        cdef Match* matches = NULL
        PyUnicode_READY(text)  # a no-op on 3.12+, needed for legacy strings before
        kind = PyUnicode_KIND(text)
        data = PyUnicode_DATA(text)
        if n >= NOGIL_MIN_CHARS:
            # `text` is referenced by this frame, so its buffer stays valid while the GIL is away.
            with nogil:
                count = self.scan(kind, data, n, &matches, &cap)
        else:
            count = self.scan(kind, data, n, &matches, &cap)
        try:
            if count < 0:
                raise MemoryError()
            if count == 0:
                return text, 0
            pieces = []
            for k in range(count):
                pieces.append(text[last:matches[k].start])
                pieces.append(self.variants[matches[k].entry][matches[k].case_])
                last = matches[k].end
            pieces.append(text[last:])
            return "".join(pieces), count
        finally:
            free(matches)


_REPLACERS = {level: PhraseReplacer(table.entries_for(level)) for level in ("light", "standard")}


def replace_phrases(str text not None, str level="standard"):
    """Rewrite verbose phrases in `text` at `level`; returns (new text, replacements made)."""
    try:
        replacer = _REPLACERS[level]
    except KeyError:
        raise ValueError(f"unknown phrase level {level!r}; expected 'light' or 'standard'") from None
    return (<PhraseReplacer>replacer).replace(text)
