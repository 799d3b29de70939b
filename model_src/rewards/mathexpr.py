"""A small, safe arithmetic-expression reader for the math verifier.

It never evaluates model output as Python (no eval, no sympy `parse_expr`): a recursive-descent
parser over a fixed grammar builds a tiny tree, which is evaluated with floats. Two answers with
variables are equivalent when they agree at several fixed sample points (so `x+1` equals `1+x`).

Grammar: numbers (`3`, `0.5`, `1,000`, `1e3`), `%` (per cent), `+ - * / ^ **`, parentheses, implicit
multiplication (`2x`, `2(x+1)`), LaTeX `\\frac{a}{b}`, `\\sqrt{a}`, `\\sqrt[n]{a}`, `\\binom{n}{k}`, `\\cdot`,
`\\times`, `n!`, `\\pi`, `e` (Euler's number), `\\infty`, functions (`\\sin`, `\\cos`, `\\tan`, `\\sec`, `\\csc`, `\\cot`, `\\ln`,
`\\log_b`, `\\exp`, ... and their plain names; `\\sin 2x` is sin(2x)), one-letter variables and Greek
letters (`\\theta` and `θ` are one symbol). Input length, nesting depth and exponents are bounded, so
reading any input takes bounded time.

Numbers are exact: written numbers are fractions (`0.1` is 1/10), and `+ - * /` and integer powers
keep them exact; roots that are not exact, functions, `\\pi` and variables compute in floating point.
Two values are the same (`same_value`) when:
- both are exact integers: they are equal (`1000001` is not `1000000`, `2^{60}+1` is not `2^{60}`);
  (an integer against a fraction or decimal compares relatively: `2.0000001` is 2 to 1e-6);
- otherwise they agree to 1e-6 *relative* (`0.333333` is 1/3 to 1e-6; `1.6e-18` is not `1.6e-19`);
- zero is zero only when exact, or when a floating-point result is within 1e-12 of it (the
  rounding of `\\sin\\pi`); a written number such as `1e-13` is not zero.

>>> equivalent("1/2", "0.5")
True
>>> equivalent("\\\\frac{3}{4}", "75%")
True
>>> equivalent("x+1", "1+x")
True
>>> equivalent("2(x+1)", "2x+3")
False
"""

from __future__ import annotations

import math
import random
import re
from fractions import Fraction

MAX_CHARS = 200
MAX_DEPTH = 40
MAX_EXPONENT = 400.0  # 6.02e23 written as 6.02\\times10^{23}; float overflow is caught
MAX_FACTORIAL = 1000  # 1000! has 2,568 digits; larger ones compute in floating point (and overflow)
MAX_EXACT_BITS = 4096  # an exact power larger than this computes in floating point instead
REL_TOL = 1e-6
FLOAT_ZERO = 1e-12  # a floating-point result this close to 0 is 0 (rounding); exact values never are
# where symbols are sampled: the first range in which both sides are defined at every point decides
SAMPLE_RANGES = ((0.5, 2.5), (2.5, 4.5), (-2.5, -0.5))
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_SCIENTIFIC = re.compile(r"[eE][+-]?\d{1,3}(?![\d.])")


# functions an answer may use (LaTeX `\\sin` or plain `sin`); log is natural unless `\\log_b`
FUNCTIONS = {"sin": math.sin, "cos": math.cos, "tan": math.tan, "sec": lambda v: 1 / math.cos(v),
             "csc": lambda v: 1 / math.sin(v), "cot": lambda v: 1 / math.tan(v), "arcsin": math.asin,
             "arccos": math.acos, "arctan": math.atan, "ln": math.log, "log": math.log, "exp": math.exp}
# Greek letters an answer uses as symbols; variants of one letter read as one symbol (`\\pi` is a number)
GREEK = {"alpha": "α", "beta": "β", "gamma": "γ", "delta": "δ", "epsilon": "ε", "varepsilon": "ε",
         "zeta": "ζ", "eta": "η", "theta": "θ", "vartheta": "θ", "iota": "ι", "kappa": "κ", "lambda": "λ",
         "mu": "μ", "nu": "ν", "xi": "ξ", "rho": "ρ", "sigma": "σ", "tau": "τ", "upsilon": "υ", "phi": "φ",
         "varphi": "φ", "chi": "χ", "psi": "ψ", "omega": "ω", "Gamma": "Γ", "Delta": "Δ", "Theta": "Θ",
         "Lambda": "Λ", "Sigma": "Σ", "Phi": "Φ", "Psi": "Ψ", "Omega": "Ω"}


class ParseError(ValueError):
    pass


def _tokenize(text: str) -> list[str]:
    text = text.replace("\\left", "").replace("\\right", "").replace("\\cdot", "*").replace("\\times", "*")
    text = _THOUSANDS.sub("", text)  # 1,000 -> 1000 (input is bounded, so the regex is cheap)
    text = text.replace("\\div", "/").replace("**", "^").replace("−", "-").replace("×", "*").replace("÷", "/")
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch.isdigit() or (ch == "." and i + 1 < len(text) and text[i + 1].isdigit()):
            j = i
            while j < len(text) and (text[j].isdigit() or text[j] == "."):
                j += 1
            exponent = _SCIENTIFIC.match(text, j)  # 1e3, 2.5E-4: one number token
            if exponent:
                j = exponent.end()
            if tokens and tokens[-1][0].isdigit() and tokens[-2:-1] != ["_"]:  # `1 1` is no product; `\\log_2 8` is fine
                raise ParseError("two numbers in a row")
            tokens.append(text[i:j])
            i = j
        elif ch == "\\":
            j = i + 1
            while j < len(text) and text[j].isalpha():
                j += 1
            name = text[i:j]
            if name[1:] in FUNCTIONS:
                tokens.append("fn:" + name[1:])
            elif name[1:] in GREEK:
                tokens.append(GREEK[name[1:]])
            elif name in ("\\frac", "\\dfrac", "\\tfrac", "\\sqrt", "\\pi", "\\infty"):
                tokens.append("\\frac" if name.endswith("frac") else name)
            elif name in ("\\binom", "\\dbinom", "\\tbinom"):
                tokens.append("\\binom")
            else:
                raise ParseError(f"unsupported command {name}")
            i = j
        elif ch.isalpha():
            j = i
            while j < len(text) and text[j].isalpha():
                j += 1
            word = text[i:j]
            if word in FUNCTIONS or word == "sqrt":  # sin(x), sqrt(2) as plain text
                tokens.append("\\sqrt" if word == "sqrt" else "fn:" + word)
                i = j
            elif word == "pi":
                tokens.append("\\pi")
                i = j
            elif ch == "e":  # Euler's number, as Math-Verify reads it: `e^{2}`, `2e`
                tokens.append("\\e")
                i += 1
            else:
                tokens.append(ch)  # one-letter variables; "xy" reads as x*y
                i += 1
        elif ch in "+-*/^(){}[]%_!":
            tokens.append(ch)
            i += 1
        else:
            raise ParseError(f"unexpected character {ch!r}")
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise ParseError(f"expected {expected or 'a token'}, got {token}")
        self.pos += 1
        return token

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("nesting too deep")

    def expr(self):
        self.enter()
        node = self.term()
        while self.peek() in ("+", "-"):
            node = (self.take(), node, self.term())
        self.depth -= 1
        return node

    def term(self):
        node = self.unary()
        while True:
            token = self.peek()
            if token in ("*", "/"):
                node = (self.take(), node, self.unary())
            elif token is not None and (token[0].isdigit() or token[0] == "." or token.isalpha()
                                        or token in ("(", "\\frac", "\\sqrt", "\\binom", "\\pi", "\\e", "\\infty")
                                        or token.startswith("fn:")):
                right = self.unary()  # implicit multiplication: 2x, 2(x+1)
                if node[0] == "num" and right[0] == "group" and not variables(right):
                    raise ParseError("a number beside a bracketed number")  # `1 (7)` is no product of 7
                node = ("*", node, right)
            else:
                return node

    def unary(self):
        if self.peek() in ("+", "-"):
            sign = self.take()
            self.enter()
            operand = self.unary()
            self.depth -= 1
            return ("neg", operand) if sign == "-" else operand
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            self.enter()
            exponent = self.unary()
            self.depth -= 1
            return ("^", base, exponent)
        return base

    def postfix(self):
        node = self.atom()
        while self.peek() in ("%", "!"):
            node = ("/", node, ("num", Fraction(100))) if self.take() == "%" else ("factorial", node)
        return node

    def group(self, open_: str, close: str):
        self.take(open_)
        node = self.expr()
        self.take(close)
        return node

    def atom(self):
        token = self.peek()
        if token is None:
            raise ParseError("unexpected end")
        if token == "(":
            return ("group", self.group("(", ")"))
        if token == "{":
            return self.group("{", "}")
        if token == "\\frac":
            self.take()
            return ("/", self.group("{", "}"), self.group("{", "}"))
        if token == "\\sqrt":
            self.take()
            index = self.group("[", "]") if self.peek() == "[" else ("num", Fraction(2))
            return ("root", self.group("{", "}") if self.peek() == "{" else self.atom(), index)
        if token == "\\binom":
            self.take()
            return ("binom", self.group("{", "}"), self.group("{", "}"))
        if token == "\\pi":
            self.take()
            return ("num", math.pi)
        if token == "\\e":
            self.take()
            return ("num", math.e)
        if token == "\\infty":
            self.take()
            return ("num", math.inf)
        if token.startswith("fn:"):
            # \\sin x, \\sin(x), \\sin^2 x (the square of sin x), \\log_2 8
            self.take()
            base = None
            if token == "fn:log" and self.peek() == "_":
                self.take("_")
                base = self.atom()
            power = None
            if self.peek() == "^":
                self.take()
                power = self.atom()
            self.enter()
            argument = self.power()
            # `\\sin 2x` is sin(2x): a bare argument runs on through numbers and symbols, up to an
            # operator, a bracket or another function (`\\sin x \\cos x` is a product of two)
            while argument[0] != "group" and self.peek() is not None and (
                    self.peek()[0].isdigit() or self.peek().isalpha() or self.peek() in ("\\pi", "\\e")):
                argument = ("*", argument, self.power())
            self.depth -= 1
            node = ("fn", token[3:], argument, base)
            return node if power is None else ("^", node, power)
        if token[0].isdigit() or token[0] == ".":
            self.take()
            try:
                return ("num", Fraction(token))
            except ValueError as exc:
                raise ParseError(f"bad number {token}") from exc
        if token.isalpha():
            self.take()
            return ("var", token)
        raise ParseError(f"unexpected {token}")


def parse(text: str):
    """Text -> expression tree; raises ParseError on anything outside the grammar."""
    if len(text) > MAX_CHARS:
        raise ParseError("too long")
    parser = _Parser(_tokenize(text))
    node = parser.expr()
    if parser.peek() is not None:
        raise ParseError(f"trailing {parser.peek()}")
    return node


def variables(node) -> set[str]:
    kind = node[0]
    if kind == "var":
        return {node[1]}
    if kind == "num":
        return set()
    if kind == "fn":
        return set().union(*(variables(child) for child in node[2:] if child is not None))
    return set().union(*(variables(child) for child in node[1:]))


Number = Fraction | float  # exact, or computed in floating point


def _exact_integer(value: Number) -> int | None:
    return value.numerator if isinstance(value, Fraction) and value.denominator == 1 else None


def _exact_root(value: Fraction, n: int) -> Fraction | None:
    """The exact n-th root of a non-negative fraction, when there is one (`\\sqrt{9/4}` is 3/2)."""
    parts = []
    for whole in (value.numerator, value.denominator):
        guess = round(whole ** (1.0 / n)) if whole.bit_length() < 1000 else None
        match = next((c for c in (guess, (guess or 0) + 1, (guess or 0) - 1) if c is not None and c >= 0 and c ** n == whole),
                     None)
        if match is None:
            return None
        parts.append(match)
    return Fraction(parts[0], parts[1])


def _root(value: Number, index: Number) -> Number:
    n = _exact_integer(index)
    if n is None:  # `\\sqrt[n]{a}` with a symbol n: a^(1/n), for a >= 0
        return _power(value, 1 / float(index))
    if n < 1 or n > MAX_EXPONENT:
        raise ValueError("a root's index must be a whole number from 1 to 400")
    if value < 0:
        if n % 2 == 0:
            raise ValueError("even root of a negative number")
        return -_root(-value, index)
    exact = _exact_root(value, n) if isinstance(value, Fraction) else None
    return exact if exact is not None else float(value) ** (1.0 / n)


def _binomial(n: Number, k: Number) -> Number:
    """n choose k; a whole k gives the falling-factorial product (exact when n is), else Gamma."""
    whole_k = _exact_integer(k)
    if whole_k is not None and 0 <= whole_k <= MAX_EXPONENT:
        out: Number = Fraction(1)
        for i in range(whole_k):
            out = out * (n - i) / (i + 1)
        return out
    n, k = float(n), float(k)
    return math.gamma(n + 1) / (math.gamma(k + 1) * math.gamma(n - k + 1))


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError("exponent too large")
    whole = _exact_integer(exponent)
    if isinstance(base, Fraction) and whole is not None and (
            max(base.numerator.bit_length(), base.denominator.bit_length()) * abs(whole) <= MAX_EXACT_BITS):
        return base ** whole
    if base < 0 and isinstance(exponent, Fraction) and exponent.denominator % 2:  # (-8)^{1/3} is -2
        return (-1) ** exponent.numerator * math.pow(-float(base), float(exponent))
    return math.pow(float(base), float(exponent))


def evaluate(node, env: dict[str, float]) -> Number:
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "var":
        return env[node[1]]
    if kind == "group":
        return evaluate(node[1], env)
    if kind == "neg":
        return -evaluate(node[1], env)
    if kind == "fn":
        value = float(evaluate(node[2], env))
        if node[1] == "log" and node[3] is not None:
            return math.log(value, float(evaluate(node[3], env)))
        return FUNCTIONS[node[1]](value)
    if kind == "root":
        return _root(evaluate(node[1], env), evaluate(node[2], env))
    if kind == "factorial":
        value = evaluate(node[1], env)
        whole = _exact_integer(value)
        if whole is not None and 0 <= whole <= MAX_FACTORIAL:
            return Fraction(math.factorial(whole))
        return math.gamma(float(value) + 1)
    left, right = evaluate(node[1], env), evaluate(node[2], env)
    if kind == "binom":
        return _binomial(left, right)
    if kind == "+":
        return left + right
    if kind == "-":
        return left - right
    if kind == "*":
        return left * right
    if kind == "/":
        return left / right
    if kind == "^":
        return _power(left, right)
    raise AssertionError(kind)


def same_value(a: Number, b: Number) -> bool:
    """The module's rule (see the top): exact integers exactly, else 1e-6 relative; zero is exact
    zero or a floating-point result within 1e-12 of it.

    >>> same_value(Fraction(1000001), Fraction(1000000)), same_value(Fraction(1, 3), Fraction(3333333, 10**7))
    (False, True)
    >>> same_value(Fraction(16, 10**19), Fraction(16, 10**18)), same_value(math.sin(math.pi), Fraction(0))
    (False, True)
    """
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        if (a.denominator == 1 and b.denominator == 1) or a == 0 or b == 0:
            return a == b
        return abs(a - b) <= Fraction(REL_TOL).limit_denominator(10**9) * max(abs(a), abs(b))
    x, y = float(a), float(b)
    zero_x = x == 0 or (not isinstance(a, Fraction) and abs(x) <= FLOAT_ZERO)
    zero_y = y == 0 or (not isinstance(b, Fraction) and abs(y) <= FLOAT_ZERO)
    if zero_x or zero_y:
        return zero_x and zero_y
    return abs(x - y) <= REL_TOL * max(abs(x), abs(y))


def equivalent(pred: str, ref: str, num_points: int = 5) -> bool:
    """True when both parse and agree numerically (at sample points when they have variables)."""
    try:
        a, b = parse(pred), parse(ref)
        names = sorted(variables(a) | variables(b))
    except (ParseError, RecursionError):
        return False
    for low, high in SAMPLE_RANGES[:1] if not names else SAMPLE_RANGES:
        rng = random.Random(0)
        points = [{}] if not names else [{n: rng.uniform(low, high) for n in names} for _ in range(num_points)]
        try:
            values = [(evaluate(a, env), evaluate(b, env)) for env in points]
        except (ValueError, ZeroDivisionError, OverflowError, KeyError, RecursionError):
            continue  # outside one side's domain (`\\sqrt{x^2-2}` at x=1): try the next range
        return all((math.isinf(x) and x == y and not names)  # an interval's open end: \\infty on both sides
                   or (math.isfinite(x) and math.isfinite(y) and same_value(x, y)) for x, y in values)
    return False


def proportional(a: str, b: str, positive: bool, num_points: int = 5) -> bool:
    """True when `a` = c * `b` for one constant c != 0 (c > 0 with `positive`) at every sample
    point: the same equation (or, with c > 0, inequality) written with its sides scaled.

    >>> proportional("x/4 + y/2 - 1", "x + 2y - 4", True), proportional("x - 1", "1 - x", True)
    (True, False)
    """
    try:
        pa, pb = parse(a), parse(b)
        names = sorted(variables(pa) | variables(pb))
        if not names:
            return False
        rng = random.Random(1)
        ratios = []
        for _ in range(num_points):
            env = {n: rng.uniform(0.5, 2.5) for n in names}
            x, y = float(evaluate(pa, env)), float(evaluate(pb, env))
            if not (math.isfinite(x) and math.isfinite(y)) or abs(y) < FLOAT_ZERO:
                return False
            ratios.append(x / y)
        c = ratios[0]
        return abs(c) > FLOAT_ZERO and (c > 0 or not positive) and all(same_value(r, c) for r in ratios)
    except (ParseError, ValueError, ZeroDivisionError, OverflowError, KeyError, RecursionError):
        return False


def to_number(text: str) -> float | None:
    """A constant expression's value (`3/4`, `75%`, `\\\\frac{1}{2}`), or None."""
    try:
        node = parse(text)
        if variables(node):
            return None
        value = float(evaluate(node, {}))
        return value if math.isfinite(value) else None
    except (ParseError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None
