"""Math answers with structure: relations, assignments, tuples, intervals, sets and units.

An answer is read (after `forms.plain_latex`) into one of:
- a value: an expression `mathexpr` reads, optionally with a unit (`5 cm`, `5个`);
- a relation: `x = 5`, `3 < x`, `1 < x \\le 4` (a chain), with `=` as an assignment;
- a sequence: `(1, 2)`, `[0, \\infty)` (tuple or interval: brackets and order count);
- a set: `\\{1, 2\\}`, `\\varnothing`, or a solution list: `1, 2`, `x = 1, x = 2`, `-1 \\text{ and } 4`,
  `x = 1 \\text{ or } x = 2`, `\\pm 2` (two values), `1 \\pm \\sqrt{3}` (order does not count);
- a union of intervals, also written as inequalities joined by "or" (`x < -2 \\text{ or } x > 3`);
- a ratio: `2 : 3` (the same ratio scaled, `4 : 6`, agrees; a two-part ratio is also its quotient).

Two answers agree when their structures agree part by part, with these allowances, as
Math-Verify's and GLM-V's reward tests expect:
- an assignment's right-hand side is the value (`x = 5` answers `5`, `AB = 4, CD = 5` answers `4, 5`,
  `(x, y) = (2, -1)` answers `(2, -1)`, and the reverse);
- a relation may be written from either side (`3 < x` is `x > 3`);
- a unit on one side only is ignored (`5 cm` answers `5`); two different units disagree.
A hedge is a list, so it never answers one value: `1 or 2` and `1, 2` are not `1`.

>>> same("x = \\\\frac{1}{2}", "0.5"), same("3 < x", "x > 3"), same("(2, 1)", "(1, 2)")
(True, True, False)
>>> same("\\\\{2, 1\\\\}", "\\\\{1,2\\\\}"), same("5 cm", "5"), same("5 cm", "5 m"), same("1 or 2", "1")
(True, True, False, False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from model_src.rewards.forms import plain_latex, split_unit
from model_src.rewards.mathexpr import equivalent, proportional

MAX_PARTS = 16
_RELATIONS = ("<=", ">=", "!=", "<", ">", "=")
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "=": "=", "!=": "!="}
# `\\in` (an interval) and `\\approx` read as `=`; a whole command only (`\\infty` is not `\\in`)
_LATEX_RELATION = re.compile(r"\\(in|le|ge|ne|approx)(?![a-zA-Z])")
_RELATION_WORDS = {"in": "=", "le": "<=", "ge": ">=", "ne": "!=", "approx": "="}
_SYMBOL_RELATIONS = (("≤", "<="), ("≥", ">="), ("=<", "<="), ("=>", ">="), ("≈", "="))
_ALTERNATIVES = (" or ", " OR ", " Or ", " and/or ", "或")  # `x = 1 or x = 2`: a solution list
_LIST_SEPARATORS = (",", ";", " and ")
# what may decorate a name without making it a value: `\\angle ABC`, `\\overline{AB}`, `f^{-1}(x)`, `f'(x)`
_NAME_DECORATION = re.compile(r"^\\(?:angle|measuredangle|triangle|overline|widehat|overarc|arc)\s*|\^\{-1\}|'|\^\{?\\prime\}?")
_ELLIPSES = ("...", "\\ldots", "\\cdots", "\\dots", "…")
_OR_WORD = re.compile(r"(?<![A-Za-z])or(?![A-Za-z])|或", re.IGNORECASE)
_EMPTY_SET = ("\\varnothing", "\\emptyset", "∅", "{{}}", "{}")
_PAIRS = {"(": ")", "[": "]", "{{": "}}"}


@dataclass(frozen=True)
class Answer:
    kind: str  # value | relation | sequence | set | union | ratio
    parts: tuple  # value: (text,); relation: (operand, op, operand, op, ...); sequence: (open, close, *items)


def _split_top(text: str, separators: tuple[str, ...]) -> list[str]:
    """Split at separators outside brackets; the separators are kept as their own items."""
    out, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0:
            hit = next((s for s in separators if text.startswith(s, i)), None)
            if hit:
                out += [text[start:i], hit]
                i += len(hit)
                start = i
                continue
        i += 1
    out.append(text[start:])
    return out


def _closing(text: str, opener: str) -> int:
    """Index of the bracket that closes the one at 0 (any kind), or -1."""
    depth = 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return -1


def _signs(text: str) -> list[str]:
    """`1 \\pm \\sqrt{3}` -> [`1 + \\sqrt{3}`, `1 - \\sqrt{3}`]; every `\\pm` takes one sign and every
    `\\mp` the other, as the notation means; text without them is itself."""
    if "\\pm" not in text and "\\mp" not in text:
        return [text]
    return [text.replace("\\pm", a).replace("\\mp", b) for a, b in (("+", "-"), ("-", "+"))]


def _solution_list(items: list[str]) -> Answer:
    items = [re.sub(r"^(?:and|or)\s+", "", item.strip()) for item in items]  # `19, 46, and 82`
    return Answer("set", tuple(v.strip() for item in items for v in _signs(item) if v.strip())[:MAX_PARTS])


def _interval_text(interval: Answer) -> str:
    opening, closing, low, high = interval.parts
    return f"{opening}{low}, {high}{closing}"


def read(text: str) -> Answer:
    text = plain_latex(text)
    text = _LATEX_RELATION.sub(lambda m: _RELATION_WORDS[m.group(1)], text)
    for a, b in _SYMBOL_RELATIONS:
        text = text.replace(a, b)
    text = text.strip()
    text = text if text.endswith(_ELLIPSES) else text.rstrip(".").strip()
    if text.startswith("=") and not text.startswith("=="):  # `= 5`, `\\approx 3.14`: a value, its relation left implicit
        text = text[1:].strip()
    if text.replace(" ", "") in _EMPTY_SET:
        return Answer("set", ())
    if any(dots in text for dots in _ELLIPSES):  # `1, 2, 3, ...` goes on: no list of three, no value
        return Answer("value", (text,))
    while text[:1] == "(" and _closing(text, "(") == len(text) - 1 and text[1:2] in "([" \
            and _closing(text[1:-1].strip(), text[1]) == len(text[1:-1].strip()) - 1:
        text = text[1:-1].strip()  # `([[1, 2], [3, 4]])`: brackets around one bracketed whole
    items = _split_top(text, _LIST_SEPARATORS)[::2]
    if len(items) > 1 or len(_signs(text)) > 1:
        return _solution_list(items)
    for word in _ALTERNATIVES[1:]:
        text = text.replace(word, " or ")
    alternatives = [a.strip() for a in _split_top(text, (" or ",))[::2]]
    if len(alternatives) > 1:  # inequalities joined by "or" are a union of intervals, else a solution list
        relations = [read(a) for a in alternatives[:MAX_PARTS]]
        intervals = [as_interval(r.parts) if r.kind == "relation" else None for r in relations]
        if all(intervals):
            return Answer("union", tuple(_interval_text(i) for i in intervals))
        return _solution_list(alternatives)
    unions = _split_top(text, ("\\cup", "∪"))
    if len(unions) > 1:
        return Answer("union", tuple(p.strip() for p in unions[::2][:MAX_PARTS]))
    pieces = _split_top(text, _RELATIONS)
    if len(pieces) > 1:
        return Answer("relation", tuple(p.strip() for p in pieces[:2 * MAX_PARTS]))
    if text.startswith("{{") and text.endswith("}}"):
        return _solution_list(_split_top(text[2:-2], (",", ";"))[::2])
    if text[:1] == "{" and text[-1:] == "}" and _closing(text, "{") == len(text) - 1 \
            and len(_split_top(text[1:-1], (",",))) > 1:  # `{-1, 1}`: set braces written bare
        return _solution_list(_split_top(text[1:-1], (",", ";"))[::2])
    if text[:1] in "([" and text[-1:] in ")]" and _closing(text, text[0]) == len(text) - 1:
        items = [p.strip() for p in _split_top(text[1:-1], (",", ";"))[::2]]
        if len(items) > 1 or text[0] + text[-1] == "[]":  # `[x]`: a matrix row of one entry
            return Answer("sequence", (text[0], text[-1], *items[:MAX_PARTS]))
    terms = _split_top(text, (":",))[::2]
    if len(terms) > 1:
        return Answer("ratio", tuple(t.strip() for t in terms[:MAX_PARTS]))
    return Answer("value", (text,))


def _unit(unit: str) -> str:
    return unit.lower().rstrip("s") if unit.isascii() else unit


def value_equal(pred: str, ref: str) -> bool:
    """Expressions agree (numerically or at sample points), or agree once a unit is set aside."""
    if not pred or not ref or _OR_WORD.search(pred):  # `1 (or 0)`: a hedge, wherever it sits, is no value
        return False
    if _numbers_equal(pred, ref):
        return True
    (pv, pu), (rv, ru) = split_unit(pred), split_unit(ref)
    if not (pu or ru) or (pu and ru and _unit(pu) != _unit(ru)):
        return False
    return _numbers_equal(pv, rv)


def _numbers_equal(pred: str, ref: str) -> bool:
    """Equivalent as written (`50%` is 0.5), or, when the reference is a percentage, the bare
    number answers it (`45` for `45%`, as Math-Verify and GLM-V's tests expect); a percentage
    answer to a plain reference means its value over 100."""
    return equivalent(pred, ref) or ("%" in ref and equivalent(pred.replace("%", ""), ref.replace("%", "")))


def _is_name(text: str) -> bool:
    """A variable an assignment gives a value to: `x`, `x_1`, `AB`, `f(2)`, or names for a tuple or
    a ratio: `(x, y)`, `a : b`."""
    text = _NAME_DECORATION.sub("", text).strip()
    if text[:1] == "(" and text[-1:] == ")" and "," in text:
        return all(_is_name(part) for part in text[1:-1].split(",")[:MAX_PARTS])
    if ":" in text:
        return all(_is_name(part) for part in text.split(":")[:MAX_PARTS])
    core = text.replace("_", "").replace("{", "").replace("}", "").replace("(", "").replace(")", "")
    return 0 < len(core) <= 8 and core[0].isalpha() and core.isalnum()


def _assigned(answer: Answer) -> str | None:
    """The value of `name = value` (the last side of `a = b = value`), else None."""
    parts = answer.parts
    if answer.kind == "relation" and set(parts[1::2]) == {"="} and _is_name(parts[0]):
        return parts[-1]
    return None


def _difference_form(parts: tuple) -> tuple[str, str]:
    """`l op r` as (`<`, `<=`, `=` or `!=`, an expression d) with `d op 0`: `x > 3` is (`<`, `(3)-(x)`)."""
    left, op, right = parts
    if op in (">", ">="):
        return _FLIP[op], f"({right})-({left})"
    return op, f"({left})-({right})"


def _same_parts(a: tuple, b: tuple) -> bool:
    """The same relations in order, and each operand the same value (or the same text)."""
    return all(x == y for x, y in zip(a[1::2], b[1::2])) and all(
        value_equal(x, y) or x.replace(" ", "") == y.replace(" ", "") for x, y in zip(a[::2], b[::2]))


def _relation_equal(a: tuple, b: tuple) -> bool:
    if len(a) != len(b):
        return False
    if len(a) == 3:  # one relation: the same after moving everything to one side (`-x < -3` is `x > 3`)
        (op_a, da), (op_b, db) = _difference_form(a), _difference_form(b)
        symmetric = op_a in ("=", "!=")
        # or with both sides scaled: an equation by any factor, an inequality by a positive one
        if op_a == op_b and (equivalent(da, db) or (symmetric and equivalent(da, f"-({db})"))
                             or proportional(da, db, positive=not symmetric)):
            return True
    flipped = tuple(_FLIP[p] if i % 2 else p for i, p in enumerate(reversed(b)))  # `b` read right to left
    return _same_parts(a, b) or _same_parts(a, flipped)


def as_interval(relation: tuple) -> Answer | None:
    """`-2 <= x < 7` as `[-2, 7)`, `x > 3` as `(3, \\infty)`: the set a one-variable inequality
    describes; None for other relations."""
    if len(relation) == 3:
        left, op, right = relation
        if _is_name(left) and op in ("<", "<=", ">", ">="):
            relation = ("-\\infty", "<", left, op, right) if op in ("<", "<=") else \
                       (right, _FLIP[op], left, "<", "\\infty")
        elif _is_name(right) and op in ("<", "<=", ">", ">="):
            return as_interval((right, _FLIP[op], left))
        else:
            return None
    if len(relation) != 5 or not _is_name(relation[2]):
        return None
    low, op1, _, op2, high = relation
    if {op1, op2} <= {">", ">="}:
        low, op1, op2, high = high, _FLIP[op2], _FLIP[op1], low
    if not {op1, op2} <= {"<", "<="}:
        return None
    return Answer("sequence", ("[" if op1 == "<=" else "(", "]" if op2 == "<=" else ")", low, high))


def _bag_equal(a: list[Answer], b: list[Answer]) -> bool:
    if len(a) != len(b):
        return False
    left = list(b)
    for item in a:
        match = next((i for i, other in enumerate(left) if _equal(item, other)), None)
        if match is None:
            return False
        left.pop(match)
    return True


def _ratio_equal(a: tuple, b: tuple) -> bool:
    """`a1 : a2 : ...` and `b1 : b2 : ...` name the same ratio: every a_i * b_1 = b_i * a_1, with no
    term zero (`1:00` and `12:00` are clock times, not one ratio); else term by term."""
    if len(a) != len(b):
        return False
    if any(equivalent(term, "0") for term in a + b):
        return all(value_equal(x, y) for x, y in zip(a, b))
    return all(equivalent(f"({x})*({b[0]})", f"({y})*({a[0]})") for x, y in zip(a[1:], b[1:]))


def _equal(p: Answer, r: Answer) -> bool:
    if {p.kind, r.kind} == {"relation", "sequence"}:  # an interval and an inequality, either way round
        relation, sequence = (p, r) if p.kind == "relation" else (r, p)
        interval = as_interval(relation.parts)
        if interval is not None:
            return _equal(sequence, interval)
    if p.kind == "relation" and r.kind != "relation":
        value = _assigned(p)
        return value is not None and _equal(read(value), r)
    if r.kind == "relation" and p.kind != "relation":
        value = _assigned(r)
        return value is not None and _equal(p, read(value))
    if {p.kind, r.kind} == {"set", "sequence"}:  # `x = 2, y = -1` names the point `(2, -1)`, in order
        named, point = (p, r) if p.kind == "set" else (r, p)
        values = [_assigned(read(item)) for item in named.parts]
        return point.parts[0] == "(" and None not in values and len(values) == len(point.parts) - 2 and all(
            _equal(read(v), read(x)) for v, x in zip(values, point.parts[2:]))
    if {p.kind, r.kind} == {"ratio", "value"}:  # a two-part ratio is its quotient: `2 : 3` is 2/3
        ratio, value = (p, r) if p.kind == "ratio" else (r, p)
        return len(ratio.parts) == 2 and equivalent(f"({ratio.parts[0]})/({ratio.parts[1]})", value.parts[0])
    if p.kind != r.kind:
        return False
    if p.kind == "value":
        return value_equal(p.parts[0], r.parts[0])
    if p.kind == "ratio":
        return _ratio_equal(p.parts, r.parts)
    if p.kind == "relation":
        for a, b in ((p, r), (r, p)):  # x \\in [-2, 7] and -2 <= x <= 7, either way round
            value = _assigned(a)
            if value is not None and read(value).kind == "sequence":
                interval = as_interval(b.parts)
                if interval is not None:
                    return _equal(read(value), interval)
        if _assigned(p) is not None and _assigned(r) is not None and p.parts[0] == r.parts[0] \
                and (len(p.parts) > 3 or len(r.parts) > 3):  # `x = 5+6 = 11` assigns x the last value
            return _equal(read(_assigned(p)), read(_assigned(r)))
        return _relation_equal(p.parts, r.parts)
    if p.kind == "sequence":
        return p.parts[:2] == r.parts[:2] and len(p.parts) == len(r.parts) and all(
            _equal(read(x), read(y)) for x, y in zip(p.parts[2:], r.parts[2:]))
    return _bag_equal([read(x) for x in p.parts], [read(x) for x in r.parts])  # set, union


def same(pred: str, ref: str) -> bool:
    """Whether the boxed `pred` states the same mathematical answer as `ref`. Never raises."""
    try:
        return _equal(read(pred), read(ref))
    except (ValueError, IndexError, KeyError, RecursionError):
        return False
