"""The normaliser (corpus text and WER scoring) and the fortunes sentence source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from omnisparse.data.text import (
    DEFAULT_FORTUNES_DIR,
    fortune_entries,
    fortune_sentences,
    normalize_for_scoring,
    normalize_text,
    number_to_words,
    ordinal_to_words,
    split_sentences,
)

WORDS = re.compile(r"^[a-z]+(?:'[a-z]+)*(?: [a-z]+(?:'[a-z]+)*)*$")
HAVE_FORTUNES = Path(DEFAULT_FORTUNES_DIR).is_dir()


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (21, "twenty one"), (100, "one hundred"),
    (101, "one hundred one"), (110, "one hundred ten"), (999, "nine hundred ninety nine"),
    (1000, "one thousand"), (1984, "one thousand nine hundred eighty four"), (2000, "two thousand"),
    (10_010, "ten thousand ten"), (1_000_000, "one million"),
    (123_456_789, "one hundred twenty three million four hundred fifty six thousand seven hundred eighty nine"),
    (999_999_999, "nine hundred ninety nine million nine hundred ninety nine thousand nine hundred ninety nine"),
    (1_000_000_000, "one zero zero zero zero zero zero zero zero zero"),
])
def test_number_to_words(n, words):
    assert number_to_words(n) == words


@pytest.mark.parametrize("n, words", [
    (1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (5, "fifth"), (8, "eighth"), (9, "ninth"),
    (12, "twelfth"), (20, "twentieth"), (21, "twenty first"), (100, "one hundredth"), (103, "one hundred third"),
])
def test_ordinal_to_words(n, words):
    assert ordinal_to_words(n) == words


@pytest.mark.parametrize("raw, norm", [
    ("Hello, World!", "hello world"),
    ("In 1984 there were 3 of them.", "in one thousand nine hundred eighty four there were three of them"),
    ("It costs $5 or 3.5%", "it costs five dollars or three point five percent"),
    ("R&D", "r and d"),
    ("1,000,000 people", "one million people"),
    ("the 1st, 2nd, 3rd and 21st", "the first second third and twenty first"),
    ("the 1980s and the '60s", "the one thousand nine hundred eighties and the sixties"),
    ("version 1.2.3", "version one point two point three"),
    ("Don't stop -- it's 5 o'clock!", "don't stop it's five o'clock"),
    ("'Quoted' \"twice\" and dogs' tails", "quoted twice and dogs tails"),
    ("\u2018Tis the \u201cseason\u201d \u2014 isn\u2019t it\u2026", "tis the season isn't it"),
    ("Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m", "cafe naive resume angstrom"),
    ("well-known x-ray", "well known x ray"),
    ("Mr. Smith and Dr. Who, etc.", "mister smith and doctor who et cetera"),
    ("  multiple \t\n spaces  ", "multiple spaces"),
    ("win32 mp3", "win thirty two mp three"),
    ("007", "zero zero seven"),
    ("b\x08bo\x08ol\x08ld\x08d", "bold"),  # nroff overstrike
])
def test_normalize_text(raw, norm):
    assert normalize_text(raw) == norm
    assert WORDS.match(norm)
    assert normalize_text(norm) == norm  # idempotent


@pytest.mark.parametrize("raw", ["", "   ", "---", "!!! ???", "\u20ac", "''", "\u4e2d\u6587"])
def test_normalize_text_nothing_left(raw):
    assert normalize_text(raw) is None
    assert normalize_for_scoring(raw) == ""


def test_normalize_for_scoring():
    assert normalize_for_scoring(None) == ""
    assert normalize_for_scoring("THE CAT, sat.") == "the cat sat"


def test_split_sentences():
    text = 'Mr. Smith met J. R. R. Tolkien.  He said "Hi." Then he\nleft! Did he? Yes, e.g. this one'
    assert split_sentences(text) == [
        "Mr. Smith met J. R. R. Tolkien.", 'He said "Hi."', "Then he left!", "Did he?", "Yes, e.g. this one",
    ]
    assert split_sentences("   ") == []


def test_fortune_parsing_rules(tmp_path):
    (tmp_path / "quotes").write_text(
        "The early bird gets the worm.  The second mouse gets the cheese!\n"
        "\t\t-- Somebody Famous,\n\t\t   in a book. With more words here.\n"
        "%\n"
        "Short.\n"
        "%\n"
        "   /\\_/\\    A cat says hello to you all.\n"
        "  ( o.o )\n"
        "%\n"
        "int main() { return 0; } is what the program says.\n"
        "%\n"
        "Is it 5 o'clock yet?  I'm *very* thirsty, my friend.\n"
        "%\n"
        "The early bird gets the worm.\n"
        "%\n"
        "World War III was not as bad as the second one.\n"
        "%\n"
        "He lives on St. Helena island with the birds.\n"
    )
    (tmp_path / "latin").write_bytes("Le caf\u00e9 est tr\u00e8s bon ce matin.\n%\n".encode("latin-1"))
    (tmp_path / "quotes.dat").write_bytes(bytes(range(256)))
    (tmp_path / "quotes.u8").write_text("This file must be skipped entirely.\n")
    (tmp_path / "off").mkdir()
    (tmp_path / "off" / "rude").write_text("This one is in a directory and skipped.\n")

    got = fortune_sentences(tmp_path)
    assert got == sorted([
        "the early bird gets the worm",
        "the second mouse gets the cheese",
        "is it five o'clock yet",
        "i'm very thirsty my friend",
        "le cafe est tres bon ce matin",
    ])
    entries = fortune_entries(tmp_path)
    assert not any("Somebody" in e for e in entries)  # attribution (and its continuation) dropped
    assert fortune_sentences(tmp_path, min_words=7) == ["le cafe est tres bon ce matin"]


@pytest.mark.skipif(not HAVE_FORTUNES, reason="Debian fortunes not installed (scripts/setup.sh)")
def test_fortune_sentences_debian():
    sentences = fortune_sentences()
    assert 12_000 <= len(sentences) <= 40_000
    assert sentences == sorted(set(sentences))
    for s in sentences:
        assert WORDS.match(s), s
        assert 3 <= len(s.split()) <= 25, s
        assert normalize_text(s) == s, s
    assert fortune_sentences() == sentences  # deterministic (and cached)
