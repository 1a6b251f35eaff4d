"""Numbers as a paper prints them: exact value, printed precision and the interval of true values it admits.

"84.90" keeps its two decimals, "98.34%" is a percentage, "6.24e-7" keeps three significant digits, "p < 0.05"
is a bound. Checks ask "could k/N have been printed like this?" exactly, with fractions, no floating-point fuzz.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from reports.errors import ReportInputError

_NUM_RE = re.compile(r"^([+-]?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$")


@dataclass(frozen=True)
class Num:
    """A number as printed: exact value (a fraction; percentages divided by 100) and its printed unit."""

    text: str
    value: Fraction
    ulp: Fraction          # one unit in the last printed place, on the same scale as value
    percent: bool = False

    def interval(self, rounding: str = "round") -> tuple[Fraction, Fraction, bool]:
        """(lo, hi, hi_open): true values that print as this text. round: [v-u/2, v+u/2] (ties either way);
        truncate: [v, v+u) (toward zero, for non-negative values); either: the union [v-u/2, v+u)."""
        half = self.ulp / 2
        if self.ulp == 0:
            return self.value, self.value, False
        if rounding == "round":
            return self.value - half, self.value + half, False
        if rounding == "truncate":
            return self.value, self.value + self.ulp, True
        if rounding == "either":
            return self.value - half, self.value + self.ulp, True
        raise ValueError(f"unknown rounding {rounding!r}")

    def admits(self, x: Fraction, rounding: str = "round") -> bool:
        lo, hi, hi_open = self.interval(rounding)
        return lo <= x and (x < hi if hi_open else x <= hi)

    @property
    def decimals(self) -> int:
        """Decimal places of the printed value on its printed scale (percent points for percentages)."""
        u = self.ulp * (100 if self.percent else 1)
        d = 0
        while u and u < 1:
            u *= 10
            d += 1
        return d

    def __float__(self) -> float:
        return float(self.value)

    def show(self, x: Fraction | float, extra: int = 2) -> str:
        """x on this number's printed scale, with `extra` more decimals than printed."""
        scale = 100 if self.percent else 1
        s = f"{float(x) * scale:.{self.decimals + extra}f}"
        return s + ("%" if self.percent else "")


_MAX_EXP = 300      # printed numbers beyond ~1e300 (float's range) are typos or hostile input
_MAX_DIGITS = 60


def _shown(raw) -> str:
    r = repr(raw)
    return r if len(r) <= 40 else r[:36] + "..." + (r[-1] if r[0] in "'\"" else "")


def parse_num(raw: Any, path, key: str, decimals: int | None = None) -> Num:
    """A printed number: int (exact), or a string like "84.90", "98.34%", "1,267", "6.24e-7"."""
    if isinstance(raw, bool) or raw is None:
        raise ReportInputError(path, key, f"expected a number as printed, got {raw!r}")
    if isinstance(raw, int):
        if abs(raw) > 10 ** _MAX_EXP or (decimals or 0) > _MAX_DIGITS:
            raise ReportInputError(path, key, f"{_shown(raw)} is out of range for a printed statistic")
        return Num(str(raw), Fraction(raw), Fraction(0) if decimals is None else Fraction(1, 10 ** decimals))
    if isinstance(raw, float):
        if decimals is not None and decimals > _MAX_DIGITS:
            raise ReportInputError(path, key, f"decimals {decimals} is out of range for a printed statistic")
        if decimals is None:
            raise ReportInputError(path, key, f"bare float {raw!r} loses its printed precision: quote it "
                                   f"(e.g. '{raw}') or give {{value: ..., decimals: N}}")
        raw = f"{raw:.{decimals}f}"
    if not isinstance(raw, str):
        raise ReportInputError(path, key, f"expected a number as printed, got {type(raw).__name__}")
    text = raw.strip()
    s = text.replace(",", "").replace(" ", "")
    percent = s.endswith("%")
    if percent:
        s = s[:-1]
    m = _NUM_RE.match(s)
    if not m:
        raise ReportInputError(path, key, f"not a number as printed: {raw!r}")
    sign, whole, frac, exp = m.groups()
    frac = frac or ""
    exp = int(exp or 0) if len(exp or "") < 12 else 10 ** 12
    if (decimals or 0) > _MAX_DIGITS:
        raise ReportInputError(path, key, f"decimals {decimals} is out of range for a printed statistic")
    if abs(exp + len(whole)) > _MAX_EXP or len(whole + frac) > _MAX_DIGITS:
        # before 10 ** exp and int() are built: "1e999999999" would take minutes, 5,000 digits raise ValueError
        raise ReportInputError(path, key, f"{_shown(raw)} is out of range for a printed statistic")
    mant = Fraction(int(whole + frac), 10 ** len(frac)) * (-1 if sign == "-" else 1)
    places = len(frac) if decimals is None else decimals
    value = mant * Fraction(10) ** exp
    ulp = Fraction(1, 10 ** places) * Fraction(10) ** exp
    if percent:
        value, ulp = value / 100, ulp / 100
    return Num(text, value, ulp, percent)


@dataclass(frozen=True)
class Bound:
    """A printed bound on a probability, such as `p < 0.05`: the threshold is exact, not rounded.

    Quacks like a Num for the checks: `interval` is [0, t) / [0, t] for < / <=, and [t, 1] for > and >= (the
    open end of `>` is not represented; `admits` honours it exactly).
    """

    text: str
    op: str                # one of <, <=, >, >=
    value: Fraction
    percent: bool = False

    def interval(self, rounding: str = "round") -> tuple[Fraction, Fraction, bool]:
        if self.op in ("<", "<="):
            return Fraction(0), self.value, self.op == "<"
        return self.value, Fraction(1), False

    def admits(self, x: Fraction, rounding: str = "round") -> bool:
        return {"<": x < self.value, "<=": x <= self.value, ">": x > self.value, ">=": x >= self.value}[self.op]

    def __float__(self) -> float:
        return float(self.value)


_BOUND_RE = re.compile(r"^\s*(?:p\s*)?(<=|>=|<|>|\u2264|\u2265)\s*(.+)$")


def parse_p(raw: Any, path, key: str) -> Num | Bound:
    """A printed p-value: a number as printed ("6.24e-7") or a bound ("< 0.05", "p <= 0.001", "> 0.05")."""
    if isinstance(raw, str):
        m = _BOUND_RE.match(raw)
        if m:
            op = {"\u2264": "<=", "\u2265": ">="}.get(m.group(1), m.group(1))
            num = parse_num(m.group(2), path, key)
            if not 0 <= num.value <= 1:
                raise ReportInputError(path, key, f"a p-value bound must lie in [0, 1], got {raw!r}")
            return Bound(raw.strip(), op, num.value, num.percent)
    return num_field(raw, path, key)


def num_field(raw: Any, path, key: str) -> Num:
    if isinstance(raw, dict):
        if "value" not in raw:
            raise ReportInputError(path, key, "a number given as a mapping needs 'value'")
        dec = raw.get("decimals")
        if dec is not None and (not isinstance(dec, int) or dec < 0):
            raise ReportInputError(path, f"{key}.decimals", "must be a non-negative integer")
        return parse_num(raw["value"], path, f"{key}.value", dec)
    return parse_num(raw, path, key)


def count_field(raw: Any, path, key: str) -> int:
    if isinstance(raw, str) and re.fullmatch(r"\d{1,3}(,\d{3})+|\d+", raw.strip()):
        raw = int(raw.replace(",", ""))
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ReportInputError(path, key, f"expected a non-negative integer count, got {raw!r}")
    return raw


def looks_like_number(x: Any) -> bool:
    """Is x a number as printed (an int, a float, or a string such as "1,267" or "98.34%")?"""
    return isinstance(x, (int, float)) or (isinstance(x, str) and bool(
        _NUM_RE.match(x.strip().replace(",", "").replace(" ", "").rstrip("%"))))
