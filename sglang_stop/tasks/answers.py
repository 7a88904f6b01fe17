"""Answer extraction and comparison for natural-language tasks: the final answer a reasoning path
states, its canonical text, and numeric-aware equality."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

_NUM = r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:/\d+)?"
_NUM_RE = re.compile(_NUM)
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")
_LEADING_NUM_RE = re.compile(rf"^({_NUM})(?![\w^{{])")
_ANSWER_IS_RE = re.compile(r"answer\s+is\s*[:=]?\s*", re.IGNORECASE)
_ANSWER_COLON_RE = re.compile(r"answer\s*:\s*", re.IGNORECASE)


def _last_boxed(text: str) -> tuple[int, str] | None:
    """Content of the last ``\\boxed{...}`` (nested braces allowed) and its position."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return start, text[i + 1 : j]
    return None  # unclosed (truncated path)


def _after_marker(rest: str) -> str | None:
    """The answer written after 'The answer is': a leading number, else the phrase up to the sentence end."""
    line = rest.split("\n", 1)[0]
    boxed = _last_boxed(line)
    if boxed is not None:
        return boxed[1]
    line = line.strip().strip("*").strip()
    line = re.sub(r"^\$+|^\\\(", "", line).strip()
    m = _LEADING_NUM_RE.match(line)
    if m:
        return m.group(1)
    phrase = re.split(r"\.(?:\s|$)|\$|\\\)", line, maxsplit=1)[0].strip().strip("*").strip()
    if "\\" not in phrase and "^" not in phrase:  # prose, not LaTeX: "indeed 7", "x = 5"
        num = _NUM_RE.search(phrase)
        if num:
            return num.group(0)
    if not phrase or phrase == "N" or phrase.startswith("N "):  # the prompt's placeholder copied
        return None
    return phrase


def extract_answer(text: str, *, last_number_fallback: bool = False) -> str | None:
    """The final answer in a reasoning path, normalised; None when there is none.

    Order: whichever comes last of 'the answer is X' and ``\\boxed{X}``; else the last 'Answer: X';
    else (``last_number_fallback``, as mmath's own post-processing does) the last number in the text.
    The fallback is off by default: a truncated path's last number is a guess that votes, and on the
    default mix it lowered majority@8 (0.27 -> 0.20, docs/tasks.md).
    """
    candidates: list[tuple[int, str]] = []
    marks = list(_ANSWER_IS_RE.finditer(text))
    if marks:
        got = _after_marker(text[marks[-1].end() :])
        if got is not None:
            candidates.append((marks[-1].start(), got))
    boxed = _last_boxed(text)
    if boxed is not None and boxed[1].strip():
        candidates.append(boxed)
    if not candidates:
        colon = list(_ANSWER_COLON_RE.finditer(text))
        if colon:
            got = _after_marker(text[colon[-1].end() :])
            if got is not None:
                candidates.append((colon[-1].start(), got))
    if not candidates and last_number_fallback:
        nums = _NUM_RE.findall(text)
        if nums:
            candidates.append((0, nums[-1]))
    if not candidates:
        return None
    return normalize_answer(max(candidates, key=lambda c: c[0])[1])


def normalize_answer(s: str) -> str:
    """Canonical text of an answer: numbers lose commas, '+', trailing '.', leading zeros, '.0'."""
    s = s.strip().strip("$").strip()
    s = re.sub(r"^\\\(|\\\)$", "", s).strip()
    s = s.rstrip(".").strip()
    num = _as_number_text(s)
    return num if num is not None else s


def _strip_thousands(s: str) -> str:
    return s.replace(",", "") if _THOUSANDS_RE.fullmatch(s) else s


def _as_number_text(s: str) -> str | None:
    t = _strip_thousands(s.replace(" ", ""))
    if not re.fullmatch(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)", t):
        return None
    try:
        d = Decimal(t)
    except InvalidOperation:
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


_LATEX_DROP = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\ |\^\{?\\circ\}?|\\%|%|\s|\$")


def _latex_canon(s: str) -> str:
    s = re.sub(r"\\text\{([^}]*)\}", r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return _LATEX_DROP.sub("", s).rstrip(".")


def _as_fraction(s: str) -> Fraction | None:
    t = _strip_thousands(_latex_canon(s))
    m = re.fullmatch(r"(-?)\\frac\{?(-?\d+)\}?\{?(-?\d+)\}?", t)
    if m:
        t = f"{m.group(1)}{m.group(2)}/{m.group(3)}"
    try:
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(pred: str | None, gold: str) -> bool:
    """Numeric-aware equality: 1,000 == 1000.0, 0.5 == 1/2 == \\frac{1}{2}; else canonical LaTeX text."""
    if pred is None:
        return False
    p, g = normalize_answer(pred), normalize_answer(gold)
    if p == g:
        return True
    fp, fg = _as_fraction(p), _as_fraction(g)
    if fp is not None and fg is not None:
        return fp == fg or math.isclose(float(fp), float(fg), rel_tol=1e-9, abs_tol=0.0)
    return _latex_canon(p) == _latex_canon(g)
