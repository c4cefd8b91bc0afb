"""English sentences for the synthetic corpus, from several Debian text packages.

Every source is a function that reads its files and yields raw text pieces (a sentence or a short
passage); :func:`english_sentences` normalises them (:func:`~omnisparse.data.text.normalize_text`),
filters them, removes duplicates and caps each source's share (:data:`DEFAULT_CAPS`).

=========  ====================  ==========================================================
source     Debian package        what is taken
=========  ====================  ==========================================================
fortunes   fortunes              the fortunes' prose (:func:`~omnisparse.data.text.fortune_entries`)
wordnet    wordnet-base          the quoted usage examples of each synset's gloss
jargon     dict-jargon           the prose paragraphs of the Jargon File's entries
gcide      dict-gcide            the block quotations from literature under the definitions
bible      bible-kjv-text        the King James Version (archaic English: capped by default)
=========  ====================  ==========================================================

Beyond the tokens espeak-ng misreads (``_speakable``, as for the fortunes), sentences are dropped
when they hold dictionary markup, a URL or an e-mail address, an acronym (a word in capitals that
its source never writes otherwise), a single letter other than ``a``, ``i`` or ``o``, a word without
a vowel or a dictionary abbreviation (espeak-ng spells those out), a very long word, the same word
over and over, or a last word that leaves it hanging ("and", "the").
"""

from __future__ import annotations

import functools
import gzip
import logging
import random
import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from omnisparse.data.text import (
    DEFAULT_FORTUNES_DIR,
    _speakable,
    fortune_entries,
    normalize_text,
    split_sentences,
)

__all__ = [
    "Source",
    "SOURCES",
    "DEFAULT_SOURCES",
    "DEFAULT_CAPS",
    "unavailable",
    "source_pieces",
    "source_sentences",
    "english_sentences",
    "source_counts",
]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# readers: raw pieces of text from each source's files
# ----------------------------------------------------------------------------------------------


def _fortunes(root: Path) -> Iterator[str]:
    for entry in fortune_entries(root):
        yield from split_sentences(entry)


_WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
_RE_QUOTED = re.compile(r'"([^"]+)"')


def _wordnet(root: Path) -> Iterator[str]:
    for name in _WORDNET_FILES:
        with open(root / name, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # the licence header
                    continue
                _, bar, gloss = line.partition(" | ")
                if bar:
                    for example in _RE_QUOTED.findall(gloss):
                        yield example.replace(" / ", " ")  # verse: "must / like"


def _read_dictzip(path: Path) -> str:
    # dictzip is gzip with random-access data in the header's extra field; gzip reads it whole.
    # GCIDE is mostly UTF-8 with a few cp1252 bytes (0x92 for an apostrophe).
    raw = gzip.decompress(path.read_bytes())
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


_RE_PARAGRAPHS = re.compile(r"\n[ \t]*\n")
_RE_XREF = re.compile(r"\{([^{}]*)\}")
_RE_JARGON_HEAD = re.compile(r"^(?:\d+\.\s+)?(?:\[[^\]]*\]\s*)?")
_RE_JARGON_SEE = re.compile(r"^(?:See|Compare|Cf\.|Also|Syn\.)\b.*\{")


def _jargon(path: Path) -> Iterator[str]:
    # Entries: the headword in column 0, the pronunciation and part of speech in column 1, then
    # paragraphs indented by 4; code, tables and verse are indented further and left out.
    for para in _RE_PARAGRAPHS.split(_read_dictzip(path)):
        if not para.startswith("    ") or para.startswith("     "):
            continue
        text = " ".join(line.strip() for line in para.split("\n"))
        text = _RE_JARGON_HEAD.sub("", text)  # "2. [techspeak] ..." -> "..."
        for sentence in split_sentences(text):
            if not _RE_JARGON_SEE.match(sentence):  # "See also {hack}."
                yield _RE_XREF.sub(r"\1", sentence)


# a source tag closing a GCIDE paragraph: [1913 Webster], [PJC], [Webster 1913 Suppl.]
_RE_GCIDE_TAG = re.compile(r"^\s*\[[^\]]*\][^\]]*$")
# the author after a quotation: "--Shak.", "--B. Jonson.", "--1 Kings v. 9."
_RE_GCIDE_AUTHOR = re.compile(r"(?:^|\s)--\s*[A-Z0-9(].*$")
# the first headword ("A \A\ [From AS. ..."): the licence and credits come before it
_RE_GCIDE_ENTRY = re.compile(r"^\S[^\n]*\\[^\n]*\\", re.MULTILINE)
_GCIDE_MIN_INDENT = 9  # quotations; definitions and notes start in columns 3 and 6
# GCIDE's character entities: an accent and a letter ("t[^e]te-[`a]-t[^e]te"), ligatures, quotes
_RE_GCIDE_ACCENT = re.compile(r"\[[=^`'\"~.,;-]([A-Za-z])\]")
_RE_GCIDE_LIGATURE = re.compile(r"\[(ae|oe|AE|OE)\]")
_RE_GCIDE_QUOTE = re.compile(r"\[[lr]dqo\]")
# the editor's insertions: one word is read with the quotation ("As if God [were] deducible"), a
# gloss of several is left out ("She [the nightingale] all night long")
_RE_GCIDE_INSERTED_WORD = re.compile(r"(?<![\w\]])\[([A-Za-z']+)\](?![\w\[])")
_RE_GCIDE_GLOSS = re.compile(r"\s*\[[^\[\]]*\s[^\[\]]*\]")
# 1913 spacing of contractions: "I 'll", "could n't", "'t is"
_RE_GCIDE_CONTRACTION = re.compile(r"(?<=\w) (?='(?:ll|s|st|d|re|ve|m)\b|n't\b)")
_RE_GCIDE_TIS = re.compile(r"(?<![\w'])'[Tt] (?=is\b|was\b|were\b|would\b|will\b)")


def _gcide_markup(text: str) -> str:
    text = _RE_GCIDE_ACCENT.sub(r"\1", text)
    text = _RE_GCIDE_LIGATURE.sub(r"\1", text)
    text = _RE_GCIDE_QUOTE.sub('"', text)
    text = _RE_GCIDE_INSERTED_WORD.sub(r"\1", text)
    text = _RE_GCIDE_GLOSS.sub("", text)
    text = _RE_GCIDE_CONTRACTION.sub("", text)
    return _RE_GCIDE_TIS.sub("'t", text)


def _gcide(path: Path) -> Iterator[str]:
    text = _read_dictzip(path)
    first_entry = _RE_GCIDE_ENTRY.search(text)
    for para in _RE_PARAGRAPHS.split(text[first_entry.start() if first_entry else 0:]):
        lines = para.split("\n")
        first = lines[0]
        if len(first) - len(first.lstrip(" ")) < _GCIDE_MIN_INDENT:
            continue
        quote: list[str] = []
        for line in lines:
            if _RE_GCIDE_TAG.match(line):
                break
            head = _RE_GCIDE_AUTHOR.sub("", line)
            quote.append(head.strip())
            if head != line:
                break  # the author closes the quotation
        yield from split_sentences(_gcide_markup(" ".join(quote)))


_RE_VERSE = re.compile(r"^[1-3]?[A-Z][a-z]*\d+:\d+ (.*)$")  # "Ge1:1 In the beginning ..."
_BIBLE_MAGIC = b"EC02"
_LZW_MAGIC = b"\x1f\x9d"


def _bible(path: Path) -> Iterator[str]:
    # bible.data is the King James text as one Unix-compress (LZW) stream with checkpoints, behind
    # an index of its windows; gzip reads such streams, Python's standard library does not.
    raw = path.read_bytes()
    if not raw.startswith(_BIBLE_MAGIC):
        raise ValueError(f"{path}: not a bible-kjv data file (no EC02 header)")
    start = raw.find(_LZW_MAGIC)
    gz = shutil.which("gzip")
    if start < 0 or gz is None:
        raise RuntimeError(f"{path}: cannot decompress (need gzip on PATH and an LZW stream)")
    r = subprocess.run([gz, "-dc"], input=raw[start:], capture_output=True, check=True)
    chapter_key = None
    chapter: list[str] = []
    for line in r.stdout.decode("latin-1").split("\n"):
        m = _RE_VERSE.match(line)
        if not m:
            continue
        key = line.split(":", 1)[0]
        if key != chapter_key and chapter:
            yield from split_sentences(" ".join(chapter))
            chapter = []
        chapter_key = key
        chapter.append(m.group(1))
    if chapter:
        yield from split_sentences(" ".join(chapter))


# ----------------------------------------------------------------------------------------------
# the registry
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A sentence source: its reader, the file or directory it reads and the package that has it."""

    name: str
    package: str
    path: str
    read: Callable[[Path], Iterable[str]]
    description: str


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("fortunes", "fortunes", DEFAULT_FORTUNES_DIR, _fortunes, "fortune cookies"),
    Source("wordnet", "wordnet-base", "/usr/share/wordnet", _wordnet, "WordNet usage examples"),
    Source("jargon", "dict-jargon", "/usr/share/dictd/jargon.dict.dz", _jargon, "the Jargon File"),
    Source("gcide", "dict-gcide", "/usr/share/dictd/gcide.dict.dz", _gcide,
           "quotations in the GNU Collaborative International Dictionary of English"),
    Source("bible", "bible-kjv-text", "/usr/lib/bible.data", _bible, "the King James Bible"),
)}
"""All sources, in priority order: a sentence found in several is attributed to the first."""

DEFAULT_SOURCES: tuple[str, ...] = tuple(SOURCES)
DEFAULT_CAPS: dict[str, int] = {"gcide": 15_000, "bible": 10_000}
"""GCIDE's quotations (some 40k) are mostly from the 16th to 19th centuries and the King James
Bible (17k) is 17th-century English: capped, they are about a quarter of the default union."""


def _source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"unknown sentence source {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]


def _expected_files(source: Source, path: Path) -> list[Path]:
    if source.name == "wordnet":
        return [path / n for n in _WORDNET_FILES]
    return [path]


def unavailable(source: str, path: str | Path | None = None) -> str | None:
    """``None`` when ``source`` can be read (from ``path``, default its own), otherwise one line
    saying what is missing and which Debian package provides it."""
    s = _source(source)
    root = Path(path if path is not None else s.path)
    if s.name == "fortunes":
        missing = [] if root.is_dir() else [root]
    else:
        missing = [p for p in _expected_files(s, root) if not p.is_file()]
    if missing:
        return (f"{s.name}: {missing[0]} not found; install the Debian package '{s.package}' "
                "(scripts/setup.sh)")
    if s.name == "bible":
        with open(root, "rb") as f:
            if f.read(len(_BIBLE_MAGIC)) != _BIBLE_MAGIC:
                return f"bible: {root} is not a bible-kjv data file; reinstall '{s.package}'"
        if shutil.which("gzip") is None:
            return "bible: gzip not found on PATH; install the Debian package 'gzip'"
    return None


def source_pieces(source: str, path: str | Path | None = None) -> Iterator[str]:
    """The raw text pieces of one source, unnormalised and unfiltered (for inspection)."""
    s = _source(source)
    return iter(s.read(Path(path if path is not None else s.path)))


# ----------------------------------------------------------------------------------------------
# filters
# ----------------------------------------------------------------------------------------------

# markup, code, paths, e-mail: nothing a reader would say ("and/or" is fine)
_RE_MARKUP = re.compile(r"[{}<>|\\_=~^#*@+\[\]]|(?<![A-Za-z])/|/(?![A-Za-z])|www\.|"
                        r"\.(?:com|org|net|edu)\b")
# GCIDE writes a character it cannot represent as "?" inside a word: "Ph?bus"
_RE_GLUED_QUESTION = re.compile(r"[A-Za-z]\?[A-Za-z]")
_RE_CAPS_WORD = re.compile(r"\b[A-Z]{2,}\b")
_RE_LOWER_WORD = re.compile(r"\b[A-Z]?[a-z]+\b")
_SINGLE_LETTERS = {"a", "i", "o"}  # "O Lord": the letter's name is the word
# words without a vowel that espeak-ng does not spell out ("hmm", "psst", "tsk")
_RE_NO_VOWEL_WORD = re.compile(r"^(?:h?m{2,}|p?s+t|tsk)$")
_RE_VOWEL = re.compile(r"[aeiouy]")
_RE_ASCII_ALNUM = re.compile(r"[A-Za-z0-9]")
# dictionary abbreviations that survive as words: "esp.", "usu.", "orig."
_ABBREVIATION_WORDS = {"esp", "usu", "abbr", "abbrev", "orig", "obs", "viz", "aka", "ibid"}
# a last word that leaves the sentence hanging: a quotation cut short ("... within a")
_DANGLING_LAST_WORDS = {"a", "an", "the", "and", "or", "nor"}
_MAX_WORD_LETTERS = 20
_MIN_DISTINCT = 0.4  # distinct words / words, for four words or more: "yo baby yo baby yo"


def _lower_vocabulary(pieces: Iterable[str]) -> frozenset[str]:
    """The words a source writes in lower case (or capitalised: "Jesus") at least once."""
    return frozenset(w.lower() for w in set(_RE_LOWER_WORD.findall("\n".join(pieces))))


def _raw_ok(piece: str, vocabulary: frozenset[str]) -> bool:
    """Filters that need the text as written (case, symbols).  A word in capitals is an acronym
    (espeak-ng spells "IBM" out) unless the source also writes it otherwise ("LORD", "PLAN")."""
    if _RE_MARKUP.search(piece) or _RE_GLUED_QUESTION.search(piece):
        return False
    return all(w.lower() in vocabulary for w in _RE_CAPS_WORD.findall(piece))


def _words_ok(sentence: str, words: Sequence[str]) -> bool:
    """Filters on the normalised words."""
    if not _speakable(sentence) or words[-1] in _DANGLING_LAST_WORDS:
        return False
    for w in words:
        if w in _ABBREVIATION_WORDS:
            return False
        if len(w) == 1 and w not in _SINGLE_LETTERS:
            return False
        if len(w) > _MAX_WORD_LETTERS:
            return False
        if not _RE_VOWEL.search(w) and not _RE_NO_VOWEL_WORD.match(w.replace("'", "")):
            return False
    if " i o " in f" {sentence} ":  # "I/O", read as two letters
        return False
    if len(words) >= 4 and len(set(words)) < _MIN_DISTINCT * len(words):
        return False
    return all(words[i] != words[i + 1] or words[i] != words[i + 2] for i in range(len(words) - 2))


def _clean(piece: str, vocabulary: frozenset[str], min_words: int, max_words: int) -> str | None:
    """The normalised sentence of a raw piece, or ``None`` when a filter rejects it."""
    # Every token holding an ASCII letter or digit gives at least one word: a cheap, exact
    # rejection of long pieces before the normaliser, which is most of the time spent here.
    if sum(1 for t in piece.split() if _RE_ASCII_ALNUM.search(t)) > max_words:
        return None
    if not _raw_ok(piece, vocabulary):
        return None
    sentence = normalize_text(piece)
    if sentence is None:
        return None
    words = sentence.split(" ")
    if not min_words <= len(words) <= max_words or not _words_ok(sentence, words):
        return None
    return sentence


# ----------------------------------------------------------------------------------------------
# the union
# ----------------------------------------------------------------------------------------------


def source_sentences(source: str, path: str | Path | None = None, min_words: int = 3,
                     max_words: int = 25) -> list[str]:
    """Unique, normalised, filtered sentences of one source, sorted; cached per process."""
    s = _source(source)
    resolved = str(Path(path if path is not None else s.path).resolve())
    return list(_source_sentences(s.name, resolved, min_words, max_words))


@functools.lru_cache(maxsize=16)
def _source_sentences(name: str, path: str, min_words: int, max_words: int) -> tuple[str, ...]:
    pieces = list(SOURCES[name].read(Path(path)))
    vocabulary = _lower_vocabulary(pieces)
    sentences: set[str] = set()
    for piece in pieces:
        sentence = _clean(piece, vocabulary, min_words, max_words)
        if sentence is not None:
            sentences.add(sentence)
    return tuple(sorted(sentences))


def english_sentences(sources: Sequence[str] = DEFAULT_SOURCES,
                      caps: Mapping[str, int] | None = DEFAULT_CAPS, min_words: int = 3,
                      max_words: int = 25, seed: int = 0,
                      paths: Mapping[str, str | Path] | None = None,
                      strict: bool = False) -> list[tuple[str, str]]:
    """``(sentence, source)`` pairs, sorted by sentence, each sentence once.

    A sentence found in several sources is attributed to the first in :data:`SOURCES` order
    (whatever the order of ``sources``); ``caps`` then keeps at most ``caps[name]`` of a source's
    sentences, a choice fixed by ``seed``.  ``paths`` overrides sources' default files.  A source
    that cannot be read is skipped with a warning, or raises FileNotFoundError when ``strict``.
    """
    wanted = set(sources)
    for name in wanted | set(caps or {}) | set(paths or {}):
        _source(name)
    for name, cap in (caps or {}).items():
        if cap < 0:
            raise ValueError(f"negative cap for sentence source {name}: {cap}")
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for name in SOURCES:
        if name not in wanted:
            continue
        path = (paths or {}).get(name, SOURCES[name].path)
        reason = unavailable(name, path)
        if reason is not None:
            if strict:
                raise FileNotFoundError(reason)
            log.warning("skipping sentence source %s", reason)
            continue
        fresh = [s for s in source_sentences(name, path, min_words, max_words) if s not in seen]
        seen.update(fresh)
        cap = (caps or {}).get(name)
        if cap is not None and len(fresh) > cap:
            fresh = sorted(random.Random(f"{seed}/{name}").sample(fresh, cap))
        pairs.extend((s, name) for s in fresh)
    pairs.sort()
    return pairs


def source_counts(pairs: Iterable[tuple[str, str]]) -> dict[str, int]:
    """How many of ``pairs`` each source contributed, in :data:`SOURCES` order."""
    counts = Counter(name for _, name in pairs)
    return {name: counts[name] for name in SOURCES if counts[name]} | {
        name: n for name, n in counts.items() if name not in SOURCES}
