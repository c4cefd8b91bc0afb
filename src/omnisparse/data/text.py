"""Text normalisation and the sentence source of the default corpus.

:func:`normalize_text` is THE normaliser of the project: the corpus transcripts are produced by it
and hypotheses / references are passed through it (:func:`normalize_for_scoring`) before WER is
computed, so that the model is never penalised for a spelling convention.

Output alphabet: lower-case ``a``-``z``, the apostrophe (only inside a word, as in ``don't`` or
``o'clock``) and single spaces.  Digits are spelled out (``1984`` -> ``one thousand nine hundred
eighty four``, ``3.5`` -> ``three point five``, ``21st`` -> ``twenty first``), ``&`` -> ``and``,
``%`` -> ``percent``, ``$5`` -> ``five dollars``, accents are stripped, everything else (hyphens,
punctuation, quotes) becomes a word boundary.

:func:`fortune_sentences` turns Debian's ``fortunes`` files into a sorted list of unique, normalised
sentences of 3..25 words (about 22k from Debian bookworm's ``fortunes`` + ``fortunes-min``).
Sentences with tokens espeak-ng would not read as written (``iii`` -> "roman three", ``st`` ->
"saint") are left out so that every transcript matches its audio.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path

__all__ = [
    "number_to_words",
    "ordinal_to_words",
    "normalize_text",
    "normalize_for_scoring",
    "split_sentences",
    "fortune_entries",
    "fortune_sentences",
    "DEFAULT_FORTUNES_DIR",
]

DEFAULT_FORTUNES_DIR = "/usr/share/games/fortunes"

# ----------------------------------------------------------------------------------------------
# numbers
# ----------------------------------------------------------------------------------------------

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
         "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(1_000_000_000, "billion"), (1_000_000, "million"), (1_000, "thousand")]
_MAX_SPELLED = 999_999_999

_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest or not words:
        words.append(_ONES[rest])
    return words


def number_to_words(n: int) -> str:
    """Spell out a non-negative integer: ``1984`` -> ``one thousand nine hundred eighty four``.

    Numbers up to 999,999,999 are read as numbers; larger ones digit by digit.
    """
    if n < 0:
        raise ValueError(f"negative number: {n}")
    if n > _MAX_SPELLED:
        return " ".join(_ONES[int(d)] for d in str(n))
    if n == 0:
        return "zero"
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            head, n = divmod(n, value)
            words += _below_thousand(head) + [name]
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def ordinal_to_words(n: int) -> str:
    """``1`` -> ``first``, ``21`` -> ``twenty first``, ``100`` -> ``one hundredth``."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last = last + "th"
    words[-1] = last
    return " ".join(words)


def _plural(words: str) -> str:
    """``nineteen eighty`` -> ``nineteen eighties`` (for ``1980s``)."""
    head, _, last = words.rpartition(" ")
    if last.endswith("y"):
        last = last[:-1] + "ies"
    elif last.endswith(("s", "x")):
        last = last + "es"
    else:
        last = last + "s"
    return f"{head} {last}" if head else last


def _digits(s: str) -> str:
    return " ".join(_ONES[int(d)] for d in s)


def _int_words(s: str) -> str:
    # Leading zeros ("007") are read digit by digit, as people do.
    if len(s) > 1 and s.startswith("0"):
        return _digits(s)
    return number_to_words(int(s))


# ----------------------------------------------------------------------------------------------
# the normaliser
# ----------------------------------------------------------------------------------------------

# Characters mapped before anything else (after NFKD).  Typographic quotes, dashes, ellipses.
_CHAR_MAP = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201b": "'", "\u02bc": "'", "\u0060": "'", "\u00b4": "'",
    "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u2026": " ",
    "\u00df": "ss", "\u00e6": "ae", "\u00c6": "ae", "\u0153": "oe", "\u0152": "oe", "\u00f8": "o",
    "\u00d8": "o", "\u0142": "l", "\u0141": "l", "\u00f0": "d", "\u00fe": "th", "\u0131": "i",
})

_RE_OVERSTRIKE = re.compile(r".\x08")
_RE_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_RE_MONEY = re.compile(r"\$\s*(\d+(?:\.\d+)?)")
_RE_PERCENT = re.compile(r"(\d)\s*%")
_RE_ORDINAL = re.compile(r"(?<![a-z0-9])(\d+)(st|nd|rd|th)(?![a-z])")
_RE_DECADE = re.compile(r"(?<![a-z0-9])'?(\d+0)'?s(?![a-z])")
_RE_DECIMAL = re.compile(r"(?<![\d.])(\d*)\.(\d+)(?![\d.]*\d)")
_RE_DOTTED = re.compile(r"(?<=\d)\.(?=\d)")
_RE_INT = re.compile(r"\d+")
_RE_TITLES = re.compile(r"\b(mr|mrs|messrs|dr|etc)\b\.?")
_TITLES = {"mr": "mister", "mrs": "missus", "messrs": "messieurs", "dr": "doctor", "etc": "et cetera"}
_RE_NOT_ALLOWED = re.compile(r"[^a-z' ]+")
_RE_LONE_APOSTROPHE = re.compile(r"(?<![a-z])'+|'+(?![a-z])")
_RE_SPACES = re.compile(r"\s+")


def _strip_accents(s: str) -> str:
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if not unicodedata.combining(c))


def _decimal(m: re.Match[str]) -> str:
    whole, frac = m.group(1), m.group(2)
    head = _int_words(whole) if whole else ""
    return f" {head} point {_digits(frac)} "


def normalize_text(s: str) -> str | None:
    """Normalise free text to lower-case words; ``None`` when nothing word-like remains.

    >>> normalize_text("Don't panic! It's 3.5% of $1,984 -- o'clock.")
    "don't panic it's three point five percent of one thousand nine hundred eighty four dollars o'clock"
    """
    if not s:
        return None
    s = _RE_OVERSTRIKE.sub("", s)  # nroff-style bold / underline (c\bc, _\bc)
    s = s.translate(_CHAR_MAP)
    s = _strip_accents(s).translate(_CHAR_MAP)
    s = s.lower()
    s = _RE_TITLES.sub(lambda m: f" {_TITLES[m.group(1)]} ", s)

    # numbers and the symbols that go with them
    s = _RE_DIGIT_COMMA.sub("", s)
    s = _RE_MONEY.sub(lambda m: f" {m.group(1)} dollars ", s)
    s = _RE_PERCENT.sub(r"\1 percent ", s)
    s = s.replace("%", " percent ").replace("&", " and ")
    s = _RE_ORDINAL.sub(lambda m: f" {ordinal_to_words(int(m.group(1)))} ", s)
    s = _RE_DECADE.sub(lambda m: f" {_plural(_int_words(m.group(1)))} ", s)
    s = _RE_DECIMAL.sub(_decimal, s)
    s = _RE_DOTTED.sub(" point ", s)  # 1.2.3
    s = _RE_INT.sub(lambda m: f" {_int_words(m.group(0))} ", s)

    # everything that is not a letter, an apostrophe or a space is a word boundary
    s = _RE_NOT_ALLOWED.sub(" ", s)
    # a title glued to a number or a dropped symbol ("3mr", "1etc") is a word only now: expand it, or
    # the output would change when normalised again (references are, at scoring time)
    s = _RE_TITLES.sub(lambda m: f" {_TITLES[m.group(1)]} ", s)
    s = _RE_LONE_APOSTROPHE.sub(" ", s)
    s = _RE_SPACES.sub(" ", s).strip()
    return s or None


def normalize_for_scoring(s: str | None) -> str:
    """The normaliser applied to references and hypotheses before WER; never ``None``."""
    return normalize_text(s or "") or ""


# ----------------------------------------------------------------------------------------------
# fortunes -> sentences
# ----------------------------------------------------------------------------------------------

# Abbreviations after which a full stop does not end a sentence.
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "rev", "gen", "col", "capt", "lt", "sgt",
    "gov", "sen", "rep", "hon", "mt", "ft", "vs", "etc", "e.g", "i.e", "cf", "vol", "ch",
    "fig", "inc", "ltd", "co", "corp", "approx", "dept", "univ", "messrs", "mme", "mlle", "pp",
    "op", "ca", "viz", "al",
}
_RE_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
# characters that never occur in a readable sentence: code, ASCII art, markup, e-mail headers
_ART_CHARS = set("{}[]<>|\\_=~^#*@`+")
# *emphasis* and _underlined_ words of plain-text mail; removed before the art test
_RE_EMPHASIS = re.compile(r"(?<![\w*_])([*_])(?=\w)([^*_\n]*?\w)\1(?![\w*_])")
_RE_ART_RUN = re.compile(r"[^\w\s.,;:!?'\"()-]{2,}|[-=_*~^.+]{4,}")


def split_sentences(text: str) -> list[str]:
    """Split running text into sentences on ``.``, ``!`` or ``?`` followed by white space,
    without splitting after common abbreviations (``Mr.``, ``e.g.``) or initials (``J. R. R.``)."""
    text = _RE_SPACES.sub(" ", text).strip()
    if not text:
        return []
    pieces: list[str] = []
    start = 0
    for m in _RE_SENTENCE_END.finditer(text):
        candidate = text[start:m.start()]
        last_word = candidate.rsplit(" ", 1)[-1].rstrip("\"')]").lower()
        if last_word.endswith("."):
            stem = last_word[:-1].lstrip("\"'([")
            if stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha()):
                continue  # "Mr. Smith", "J. Smith"
        pieces.append(text[start:m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


# Tokens that espeak-ng does not read as written (it says "roman three" for "iii", "saint" for
# "st", "pounds" for "lbs", ...): a sentence holding one would get a transcript that does not
# match its audio, so it is not used.
_UNSPOKEN_AS_WRITTEN = {
    "st", "jr", "sr", "mt", "ft", "lbs", "lb", "ltd", "dept", "inc", "vs", "govt", "ave", "oz", "km",
    "kg", "mph", "cm", "mm", "ml", "hr", "hrs", "min", "sec", "yr", "yrs", "pp", "vol", "co", "corp",
    "approx", "pres", "gov", "sen", "rep", "prof", "capt", "col", "gen", "lt", "sgt", "rev",
}
_RE_ROMAN = re.compile(r"^(?=[ivxl]{2,}$)(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})$")


def _speakable(sentence: str) -> bool:
    """True when espeak-ng reads every token of a normalised sentence as written."""
    return not any(t in _UNSPOKEN_AS_WRITTEN or _RE_ROMAN.match(t) for t in sentence.split())


def _looks_like_art(line: str) -> bool:
    """A line of ASCII art, code, a table or a header rather than prose."""
    visible = [c for c in line if not c.isspace()]
    if not visible:
        return False
    alnum = sum(c.isalnum() for c in visible)
    if len(visible) >= 4 and alnum / len(visible) < 0.6:
        return True
    if any(c in _ART_CHARS for c in visible):
        return True
    if _RE_ART_RUN.search(line.replace("...", "")):
        return True
    return False


def _read_fortune_file(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Old fortune files are latin-1; latin-1 decodes any byte sequence.
        return raw.decode("latin-1")


def _fortune_files(root: Path) -> list[Path]:
    files = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or p.suffix in {".dat", ".u8", ".gz", ".pdat"}:
            continue
        if p.is_dir():  # off/ (offensive fortunes) and the like
            continue
        if p.is_file():
            files.append(p)
    return files


def fortune_entries(root: str | Path = DEFAULT_FORTUNES_DIR) -> list[str]:
    """The raw prose of every fortune (attribution removed), in file order.  Entries containing
    ASCII art, code or tables are dropped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no fortunes directory at {root}; install the 'fortunes' package "
                                "(scripts/setup.sh)")
    entries: list[str] = []
    for path in _fortune_files(root):
        text = _RE_OVERSTRIKE.sub("", _read_fortune_file(path)).replace("\r\n", "\n")
        for entry in re.split(r"^%[ \t]*$", text, flags=re.MULTILINE):
            lines: list[str] = []
            for line in entry.split("\n"):
                stripped = line.strip()
                if stripped.startswith(("--", "\u2014", "\u2013")):
                    break  # attribution: the rest of the entry is the source, not the quote
                lines.append(_RE_EMPHASIS.sub(r"\2", line))
            if not any(line.strip() for line in lines):
                continue
            if any(_looks_like_art(line) for line in lines):
                continue
            entries.append(" ".join(line.strip() for line in lines if line.strip()))
    return entries


def fortune_sentences(root: str | Path = DEFAULT_FORTUNES_DIR, min_words: int = 3,
                      max_words: int = 25) -> list[str]:
    """Unique normalised sentences of ``min_words``..``max_words`` words from the fortune files
    under ``root``, sorted (so the list depends only on the files).  Cached per process."""
    return list(_fortune_sentences(str(Path(root).resolve()), min_words, max_words))


@functools.lru_cache(maxsize=4)
def _fortune_sentences(root: str, min_words: int, max_words: int) -> tuple[str, ...]:
    sentences: set[str] = set()
    for entry in fortune_entries(root):
        for sentence in split_sentences(entry):
            norm = normalize_text(sentence)
            if norm is None:
                continue
            n = norm.count(" ") + 1
            if min_words <= n <= max_words and _speakable(norm):
                sentences.add(norm)
    return tuple(sorted(sentences))
