"""How released models write an answer, read back to one plain form the verifiers compare.

Models such as GLM-4.1V-Thinking box answers as LaTeX (`\\text{5 cm}`, `\\frac12`, `1\\,000`),
with Unicode math (`π`, `√2`, `≤`), with number words (`twenty-one`, `二十一`) and with units on
one side only. Everything here is bounded string work (inputs are cut to `MAX_CHARS`; no regex here
backtracks on model text), so it cannot hang and never raises.

>>> plain_latex("\\\\text{5 cm}")
'5 cm'
>>> plain_latex("\\\\dfrac12 + 1\\\\,000")
'\\\\frac{1}{2} + 1000'
>>> number_word("twenty-one"), number_word("二十一"), number_word("两"), number_word("一百零五"), number_word("二〇二三")
(21, 21, 2, 105, 2023)
>>> split_unit("12 cm^2"), split_unit("5个"), split_unit("5x")
(('12', 'cm^2'), ('5', '个'), ('5x', ''))
"""

from __future__ import annotations

import re

MAX_CHARS = 512

# LaTeX commands that only wrap or style their argument: the argument is the answer
_WRAPPERS = ("\\text", "\\textnormal", "\\textrm", "\\textbf", "\\textit", "\\mathrm", "\\mathbf", "\\mathit",
             "\\mbox", "\\operatorname", "\\boldsymbol", "\\mathsf", "\\texttt")
# spacing and sizing commands that carry no value
_SPACING = ("\\displaystyle", "\\left", "\\right", "\\big", "\\Big", "\\,", "\\;", "\\:", "\\!", "\\ ",
            "\\quad", "\\qquad")
_UNICODE = {"π": "\\pi", "√": "\\sqrt", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "×": "\\times ", "·": "\\cdot ",
            "⋅": "\\cdot ", "±": "\\pm ", "∓": "\\mp ", "−": "-", "–": "-", "÷": "/", "∞": "\\infty ", "²": "^{2}", "³": "^{3}",
            "，": ",", "：": ":", "（": "(", "）": ")", "．": ".", "％": "%", "＝": "=",
            "½": "(1/2)", "⅓": "(1/3)", "⅔": "(2/3)", "¼": "(1/4)", "¾": "(3/4)", "⅕": "(1/5)", "⅛": "(1/8)"}
CURRENCY = ("\\euro", "\\texteuro", "\\pounds", "\\yen", "\\textyen", "€", "£", "¥", "₹", "￥")
_COMMAND_ALIASES = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\cfrac", "\\frac"), ("\\leqslant", "\\le"), ("\\geqslant", "\\ge"),
                    ("\\leq", "\\le"), ("\\geq", "\\ge"), ("\\neq", "\\ne"), ("\\lt", "<"), ("\\gt", ">"),
                    ("\\{", "{{"), ("\\}", "}}"), ("\\%", "%"))
_PERCENT_WORDS = re.compile(r"\s*(?<![a-zA-Z])(?:percentage|percent|per cent|pct)\b")
# a number written with thousands gaps: 1,000 / 1 000 / 1~000 / 10,000,000 (a group of 1-3 digits
# first, then groups of exactly 3)
_GROUPED = re.compile(r"(?<![\d.])(\d{1,3})((?:(?:,|\s|~)\d{3})+)(?![\d])")
_MIXED = re.compile(r"^(-?)(\d+)\s*(?:\\frac\{(\d+)\}\{(\d+)\}|\s(\d+)/(\d+))\s*(%?)$")


_FULLWIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def ascii_width(text: str) -> str:
    """Full-width ASCII forms as ASCII (`２５９０` is `2590`, `Ｂ` is `B`, the ideographic space a
    space), and nothing else: `①` and `㎏` stay what they are (NFKC would make them `1` and `kg`).

    >>> ascii_width("ｂｏｔｈ\u3000ＳＩＤＥＳ２"), ascii_width("①㎏")
    ('both SIDES2', '①㎏')
    """
    return text.translate(_FULLWIDTH)


def _unwrap(text: str, command: str) -> str:
    """`\\cmd{inner}` -> `inner` (balanced braces), every occurrence."""
    out, i = [], 0
    while True:
        j = text.find(command + "{", i)  # `\\text{` never matches `\\textnormal{`
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        k, depth = j + len(command) + 1, 1
        start = k
        while k < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            k += 1
        out.append(text[start:k - 1] if depth == 0 else text[start:])
        i = k


def _braceless_args(text: str, command: str, nargs: int) -> str:
    """`\\frac12` / `\\frac1{2}` / `\\sqrt2` -> braced arguments (a bare argument is one character)."""
    out, i = [], 0
    while True:
        j = text.find(command, i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        k = j + len(command)
        if k < len(text) and text[k].isalpha():  # another command that starts the same (\fracx is not ours)
            out.append(text[i:k])
            i = k
            continue
        if text.startswith("[", k) and "]" in text[k:]:  # `\\sqrt[3]8`: the optional index stays as it is
            k = text.index("]", k) + 1
        out.append(text[i:k])
        for _ in range(nargs):
            while k < len(text) and text[k] == " ":
                k += 1
            if k >= len(text):
                break
            if text[k] == "{":
                depth, start = 0, k
                while k < len(text):
                    depth += {"{": 1, "}": -1}.get(text[k], 0)
                    k += 1
                    if depth == 0:
                        break
                out.append(text[start:k])
            elif text[k] == "\\":
                start = k
                k += 1
                while k < len(text) and text[k].isalpha():
                    k += 1
                out.append("{" + text[start:k] + "}")
            else:
                out.append("{" + text[k] + "}")
                k += 1
        i = k


_MATRIX = re.compile(r"(?:\\left\s*[\[(]\s*)?\\begin\{([pbvBV]?matrix|array)\}(?:\{[lcr|]*\})?(.*?)\\end\{\1\}"
                     r"(?:\s*\\right\s*[\])])?", re.DOTALL)


def _matrix(match: re.Match) -> str:
    """A matrix (any environment) as nested brackets, `[[1,2],[3,4]]`: rows of entries in order."""
    rows = [row for row in match.group(2).split("\\\\") if row.strip()]
    return "[" + ",".join("[" + ",".join(cell.strip() for cell in row.split("&")) + "]" for row in rows) + "]"


def plain_latex(text: str) -> str:
    """The answer with LaTeX styling, spacing, delimiters and Unicode math turned into the plain
    forms the expression reader knows. Set braces `\\{ \\}` become `{{ }}`."""
    text = text[:MAX_CHARS].strip()
    for a, b in (("\\$", ""), ("$$", ""), ("$", ""), ("\\(", ""), ("\\)", ""), ("\\[", ""), ("\\]", "")):
        text = text.replace(a, b)
    for currency in CURRENCY:  # a currency is a unit on one side: €30 answers 30
        text = text.replace(currency, "")
    for a, b in (("\\langle", "("), ("\\rangle", ")"), ("⟨", "("), ("⟩", ")")):  # a vector <1, 2> is a tuple
        text = text.replace(a, b)
    for reals in ("\\mathbb{R}", "\\mathbb R", "ℝ"):
        text = text.replace(reals, "(-\\infty, \\infty)")
    for symbol, latex in _UNICODE.items():
        text = text.replace(symbol, latex)
    # LaTeX's thousands idioms: 1{,}000, 1{, }000, 1,\\!000
    text = re.sub(r"\s*\{,\s*\}\s*|,\\!\s*", ",", text)
    for command in _WRAPPERS:
        text = _unwrap(text, command)
    text = _MATRIX.sub(_matrix, text)
    for spacing in _SPACING:
        text = text.replace(spacing, " " if spacing[1:].isalpha() else "")
    for a, b in _COMMAND_ALIASES:
        text = text.replace(a, b)
    for degree in ("^{\\circ}", "^\\circ", "\\circ", "\\degree", "°"):  # a unit: 30° answers 30
        text = text.replace(degree, "")
    text = _braceless_args(text, "\\frac", 2)
    text = _braceless_args(text, "\\sqrt", 1)
    text = _REPEATING.sub(_repeating, text)
    text = _PERCENT_WORDS.sub("%", text)
    text = _GROUPED.sub(_ungrouped, text)
    text = text.replace("~", " ")  # LaTeX's tie, `50 \\mathrm{~cm}`, once thousands gaps (1~000) are read
    text = " ".join(text.split()).rstrip(",").strip()
    mixed = _MIXED.match(text)  # a mixed number, 4\frac{4}{9} or 4 4/9: 4 + 4/9
    if mixed:
        sign, whole, a, b, c, d, percent = mixed.groups()
        numerator, denominator = a or c, b or d
        if 0 < int(numerator) < int(denominator):  # a proper fraction: 11 6/6 is no mixed number
            text = f"{sign}({whole}+{numerator}/{denominator}){percent}"
    return text


# a repeating decimal: 0.\\overline{3}, 0.1\\overline{6}, or its digits repeated then an ellipsis: 0.333...
_REPEATING = re.compile(r"(?<![\d.])(\d+)\.(\d*)(?:\\overline\{(\d+)\}|\\dot\{(\d)\}|(\.\.\.|\\ldots|\\dots|…))")


def _repeating(match: re.Match) -> str:
    """The repeating decimal as an exact fraction `(a/b)`; digits followed by an ellipsis count only
    when they end in a block repeated (one digit three times, a longer block twice): `0.333...` is
    1/3, `0.3...` is left alone (a truncated number is no value)."""
    whole, digits, block = match.group(1), match.group(2), match.group(3) or match.group(4)
    if block is None:
        for size in range(1, len(digits) // 2 + 1):
            times = 3 if size == 1 else 2
            candidate = digits[-size:]
            if len(digits) >= size * times and digits.endswith(candidate * times):
                block, digits = candidate, digits[:-size * times]
                while digits.endswith(block):  # 0.3333...: every repeat belongs to the block
                    digits = digits[:-size]
                break
        if block is None:
            return match.group(0)
    fixed = int(whole + digits) if digits or whole else 0
    numerator = int(whole + digits + block) - fixed
    denominator = (10 ** len(block) - 1) * 10 ** len(digits)
    return f"({numerator}/{denominator})"


def _ungrouped(match: re.Match) -> str:
    """`1,000` -> `1000`, unless the number opens a bracketed list (`(5,100)` is a pair) or follows
    a comma (`1, 100` lists two numbers)."""
    before = match.string[:match.start()].rstrip()
    if before.endswith(("(", "[", "{", ",")) or (match.group(2)[0] != "," and before.endswith(",")):
        return match.group(0)
    return match.group(1) + "".join(ch for ch in match.group(2) if ch.isdigit())


_UNITS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
          "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
          "seventeen": 17, "eighteen": 18, "nineteen": 19, "zero": 0, "none": 0, "no": 0}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_CJK_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CJK_POWERS = {"十": 10, "百": 100, "千": 1000}


def _english_number(words: list[str]) -> int | None:
    total, current = 0, 0
    for word in words:
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred" and 0 < current < 10:
            current *= 100
        elif word == "thousand" and 0 < current < 1000:
            total += current * 1000
            current = 0
        elif word == "and" and (total or current):
            continue
        else:
            return None
    return total + current


def _cjk_number(text: str) -> int | None:
    if len(text) > 1 and all(ch in _CJK_DIGITS for ch in text) and any(ch in "零〇" for ch in text):
        return int("".join(str(_CJK_DIGITS[ch]) for ch in text))  # 二〇二三: digit by digit, as years are read
    total, digit = 0, None
    for ch in text:
        if ch in "零〇" and total:  # 一百零五: 零 holds an empty place
            continue
        if ch in _CJK_DIGITS:
            if digit is not None:
                return None  # 二三: not a numeral
            digit = _CJK_DIGITS[ch]
        elif ch in _CJK_POWERS:
            total += (1 if digit is None else digit) * _CJK_POWERS[ch]
            digit = None
        else:
            return None
    return total + (digit or 0)


def number_word(text: str) -> int | None:
    """`seven`, `twenty-one`, `one hundred and five`, `三`, `十二`, `二十一`, `两` -> int, else None."""
    text = text.strip().lower()[:64]
    if not text:
        return None
    if all(ch in _CJK_DIGITS or ch in _CJK_POWERS for ch in text):
        return _cjk_number(text)
    words = text.replace("-", " ").split()
    return _english_number(words) if words else None


def cjk_numeral_prefix(text: str) -> int | None:
    """The numeral a CJK answer starts with: `三只猫` -> 3, `十二个` -> 12; None if it starts otherwise."""
    end = 0
    while end < min(len(text), 16) and (text[end] in _CJK_DIGITS or text[end] in _CJK_POWERS):
        end += 1
    return _cjk_number(text[:end]) if end else None


_CJK_RANGE = ("\u4e00", "\u9fff")
# one-letter SI units accepted after a number (a letter alone is otherwise a variable: 5x is not 5)
_ONE_LETTER_UNITS = set("mgsLNJWVKhl")


def _is_cjk(ch: str) -> bool:
    return _CJK_RANGE[0] <= ch <= _CJK_RANGE[1]


def split_unit(text: str) -> tuple[str, str]:
    """(value, unit) when `text` ends in a unit word (letters, `^2`/`/s` allowed, or CJK): `12 cm^2`,
    `5个`, `3.5 km/h`, `7 apples`; (text, '') when it does not (`5x` is a product, not a unit)."""
    text = text.strip()
    i = len(text)
    while i > 0 and (text[i - 1].isalpha() or _is_cjk(text[i - 1]) or text[i - 1] in "^/0123456789{}"):
        i -= 1
    # the unit starts at the first letter of that tail; digits before it belong to the value
    while i < len(text) and not (text[i].isalpha() or _is_cjk(text[i])):
        i += 1
    value, unit = text[:i].strip(), text[i:].strip()
    if not value or not unit or value[-1] in "^_\\":
        return text, ""
    letters = "".join(ch for ch in unit if ch.isalpha())
    if len(letters) == 1 and letters not in _ONE_LETTER_UNITS and not _is_cjk(letters):
        return text, ""
    if value[-1].isalpha():  # `x cm`: a unit after a variable is not ours to strip, but `24 square units` is
        words = _UNIT_WORDS.fullmatch(text)
        if words and not set(words.group(2).lower().split()) & {"or", "and", "nor", "to"}:
            return words.group(1), words.group(2)
        return text, ""
    return value, unit.replace("{", "").replace("}", "")


# a number, then two to four words of a unit: `24 square units`, `3 cubic feet`
_UNIT_WORDS = re.compile(r"(.*?[\d}])\s*([A-Za-z]+(?:\s+[A-Za-z]+){1,3})")
