"""English sentence sources: each on its Debian files (skipped when its package is missing), and the
union's attribution, caps, warnings and determinism on tiny files written here."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from omnisparse.data.sentences import (
    DEFAULT_CAPS,
    SOURCES,
    english_sentences,
    source_counts,
    source_sentences,
    unavailable,
)
from omnisparse.data.sentences import _clean, _gcide_markup
from omnisparse.data.text import normalize_text

WORDS = re.compile(r"^[a-z]+(?:'[a-z]+)*(?: [a-z]+(?:'[a-z]+)*)*$")
MIN_SENTENCES = {"fortunes": 15_000, "wordnet": 35_000, "jargon": 3_000, "gcide": 20_000,
                 "bible": 10_000}


@pytest.mark.parametrize("name", list(SOURCES))
def test_source_sentences_are_normalised_unique_and_bounded(name):
    reason = unavailable(name)
    if reason:
        pytest.skip(reason)
    sentences = source_sentences(name)
    assert len(sentences) >= MIN_SENTENCES[name]
    assert sentences == sorted(set(sentences))
    for s in sentences:
        assert WORDS.match(s), s
        assert 3 <= s.count(" ") + 1 <= 25, s
        assert normalize_text(s) == s
        assert all(len(w) > 1 or w in "aio" for w in s.split()), s


def test_default_union_is_sorted_unique_capped_and_deterministic():
    if all(unavailable(name) for name in SOURCES):
        pytest.skip("none of the sentence sources is installed")
    pairs = english_sentences()
    assert pairs == sorted(pairs)
    sentences = [s for s, _ in pairs]
    assert len(sentences) == len(set(sentences))
    counts = source_counts(pairs)
    assert sum(counts.values()) == len(pairs)
    for name, cap in DEFAULT_CAPS.items():
        assert counts.get(name, 0) <= cap
    assert english_sentences() == pairs
    # attribution: every fortunes sentence that survives the filters stays a fortune
    if not unavailable("fortunes"):
        assert counts["fortunes"] == len(source_sentences("fortunes"))


def test_unavailable_names_the_package(tmp_path):
    line = unavailable("jargon", tmp_path / "nothing.dict.dz")
    assert line is not None and "dict-jargon" in line and "\n" not in line
    assert "wordnet-base" in (unavailable("wordnet", tmp_path) or "")
    (tmp_path / "bible.data").write_bytes(b"not the bible")
    assert "bible-kjv-text" in (unavailable("bible", tmp_path / "bible.data") or "")
    with pytest.raises(ValueError, match="unknown sentence source"):
        unavailable("shakespeare")


# ----------------------------------------------------------------------------------------------
# tiny sources
# ----------------------------------------------------------------------------------------------

def _fortunes(root: Path, entries: list[str]) -> Path:
    root.mkdir()
    (root / "tiny").write_text("\n%\n".join(entries) + "\n")
    return root


def _wordnet(root: Path, examples: list[str]) -> Path:
    root.mkdir()
    lines = [f'{i:08d} 03 n 01 thing 0 000 | a gloss; "{e}"  ' for i, e in enumerate(examples)]
    (root / "data.noun").write_text("\n".join(lines) + "\n")
    for name in ("data.verb", "data.adj", "data.adv"):
        (root / name).write_text("  1 licence header line\n")
    return root


def test_a_sentence_in_two_sources_belongs_to_the_first(tmp_path):
    fortunes = _fortunes(tmp_path / "f", ["The cat sat on the mat.", "Only a fortune has this."])
    wordnet = _wordnet(tmp_path / "w", ["the cat sat on the mat", "only wordnet has this one"])
    pairs = english_sentences(("wordnet", "fortunes"), caps=None,
                              paths={"fortunes": fortunes, "wordnet": wordnet})
    assert pairs == [("only a fortune has this", "fortunes"),
                     ("only wordnet has this one", "wordnet"),
                     ("the cat sat on the mat", "fortunes")]
    assert source_counts(pairs) == {"fortunes": 2, "wordnet": 1}


def test_caps_are_respected_and_deterministic(tmp_path):
    examples = [f"example sentence number {w}" for w in
                ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")]
    paths = {"wordnet": _wordnet(tmp_path / "w", examples)}
    capped = english_sentences(("wordnet",), caps={"wordnet": 4}, paths=paths, seed=1)
    assert len(capped) == 4 and capped == sorted(capped)
    assert english_sentences(("wordnet",), caps={"wordnet": 4}, paths=paths, seed=1) == capped
    choices = {tuple(english_sentences(("wordnet",), caps={"wordnet": 4}, paths=paths, seed=s))
               for s in range(6)}
    assert len(choices) > 1  # the seed decides
    assert len(english_sentences(("wordnet",), caps=None, paths=paths)) == 10
    with pytest.raises(ValueError, match="cap"):
        english_sentences(("wordnet",), caps={"wordnet": -1}, paths=paths)


def test_a_missing_source_is_skipped_with_a_warning(tmp_path, caplog):
    paths = {"wordnet": _wordnet(tmp_path / "w", ["a sentence of wordnet"]),
             "jargon": tmp_path / "missing.dict.dz"}
    with caplog.at_level(logging.WARNING, logger="omnisparse.data.sentences"):
        pairs = english_sentences(("wordnet", "jargon"), paths=paths)
    assert pairs == [("a sentence of wordnet", "wordnet")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dict-jargon" in warnings[0]
    with pytest.raises(FileNotFoundError, match="dict-jargon"):
        english_sentences(("wordnet", "jargon"), paths=paths, strict=True)
    with pytest.raises(ValueError, match="unknown sentence source"):
        english_sentences(("wordnet", "koran"), paths=paths)


# ----------------------------------------------------------------------------------------------
# filters
# ----------------------------------------------------------------------------------------------

VOCABULARY = frozenset({"lord", "plan", "dental"})


@pytest.mark.parametrize("raw, kept", [
    ("The LORD is my shepherd.", "the lord is my shepherd"),
    ("I have a very good DENTAL PLAN.", "i have a very good dental plan"),
    ("Don't panic, it's 5 o'clock and/or later!", "don't panic it's five o'clock and or later"),
    ("IBM makes computers for everybody.", None),  # an acronym: spelled out by espeak-ng
    ("See {bit bucket} for details.", None),
    ("Mail rod@example.org or visit http://example.org today", None),
    ("Q: Why did the chicken cross the road?", None),
    ("Solve for x in this equation.", None),
    ("Fast serial I/O for everyone.", None),
    ("It was a dull job with co-workers.", None),  # "co": not read as written
    ("He rm'd and cp'd the files.", None),  # no vowel: spelled out
    ("Grovel, grovel, grovel, every night.", None),
    ("An exclamation of surprised disgust, esp.", None),
    ("Too short.", None),
    ("Calculations so difficult as to have baffled until within a", None),
    (" ".join(["word"] * 13 + ["other"] * 13), None),
])
def test_clean(raw, kept):
    assert _clean(raw, VOCABULARY, 3, 25) == kept


def test_gcide_markup():
    assert _gcide_markup("She avoided t[^e]te-[`a]-t[^e]te walks, C[ae]sar.") == \
        "She avoided tete-a-tete walks, Caesar."
    assert _gcide_markup("As if God [were] deducible.") == "As if God were deducible."
    assert _gcide_markup("She [the nightingale] all night long.") == "She all night long."
    assert _gcide_markup("I 'll see; they could n't; 't is done.") == \
        "I'll see; they couldn't; 'tis done."
