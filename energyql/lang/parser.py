"""Text -> syntax tree. The only module that imports lark.

The grammar lives in ``energyql.lark`` next to this file (a link to ``grammar/energyql.lark``
in a checkout, a plain file in the wheel). Every failure becomes a :class:`ParseError` with the
span of the offending text and a hint for the common slips.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import lark
from lark import Lark, Token, Tree

from energyql.errors import ParseError, Span
from energyql.lang import ast

#: Deepest syntax tree accepted; deeper nesting is refused before any recursive pass runs.
MAX_DEPTH = 100

_Tree = Tree[Token]

_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


@lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = Path(__file__).with_name("energyql.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True,
                maybe_placeholders=True)


def parse(source: str) -> ast.Root:
    """Return the syntax tree of a whole program (bindings, then stages)."""
    if not source.strip() or not _scan(source):
        raise ParseError("empty expression", source=source, span=Span(0, len(source)),
                         hint='write a term, e.g. clip("a photo of a face") or smiling')
    try:
        tree = _lark().parse(source)
    except lark.UnexpectedInput as error:
        raise _friendly(source, error) from None
    _check_depth(source, tree)
    return _Builder(source).root(tree)


# --- tree -> AST --------------------------------------------------------------------------------


def _span(node: _Tree | Token) -> Span:
    if isinstance(node, Token):
        return Span(node.start_pos or 0, node.end_pos or 0)
    return Span(node.meta.start_pos, node.meta.end_pos)


def _token(node: _Tree | Token) -> Token:
    """Return ``node`` as the token the grammar puts there."""
    if not isinstance(node, Token):  # only a changed grammar gets here
        raise TypeError(f"expected a token, found the rule {node.data!r}")
    return node


def _rule(node: _Tree | Token) -> _Tree:
    """Return ``node`` as the rule the grammar puts there."""
    if not isinstance(node, Tree):  # only a changed grammar gets here
        raise TypeError(f"expected a rule, found the token {node.type}")
    return node


def _check_depth(source: str, tree: _Tree) -> None:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ParseError(f"expression nested too deeply (more than {MAX_DEPTH} levels)",
                             source=source, span=_span(node),
                             hint="split it with let bindings or remove redundant nesting")
        stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tree))


class _Builder:
    """Turns lark's parse tree into :mod:`energyql.lang.ast` nodes (one method per alias)."""

    def __init__(self, source: str):
        self.text = source

    def root(self, tree: _Tree) -> ast.Root:
        *bindings, pipeline = tree.children
        lets = tuple(self.binding(_rule(b)) for b in bindings)
        stages = tuple(self.expr(child) for child in _rule(pipeline).children)
        return ast.Root(_span(tree), lets, stages)

    def binding(self, tree: _Tree) -> ast.Let:
        name, value = tree.children
        return ast.Let(_span(tree), self.ident(name), self.expr(value))

    def ident(self, node: _Tree | Token) -> ast.Ident:
        token = _token(node)
        return ast.Ident(_span(token), str(token))

    def expr(self, node: _Tree | Token) -> ast.Expr:
        method: Callable[[_Tree], ast.Expr] | None = (
            getattr(self, f"_{node.data}", None) if isinstance(node, Tree) else None)
        if method is None:  # the grammar guarantees every alias has a method
            raise ParseError("unsupported construct", source=self.text, span=_span(node))
        return method(_rule(node))

    def _name(self, tree: _Tree) -> ast.Expr:
        return ast.NameRef(_span(tree), self.ident(tree.children[0]))

    def _product(self, tree: _Tree) -> ast.Expr:
        return ast.Product(_span(tree), tuple(self.ident(t) for t in tree.children))

    def _let_names(self, tree: _Tree) -> ast.Expr:
        if len(tree.children) == 1:
            return self._name(tree)
        return self._product(tree)

    def _eq(self, tree: _Tree, negated: bool = False) -> ast.Expr:
        attr, value = tree.children
        return ast.Compare(_span(tree), self.ident(attr), self.ident(value), negated)

    def _ne(self, tree: _Tree) -> ast.Expr:
        return self._eq(tree, negated=True)

    def _string(self, tree: _Tree) -> ast.Expr:
        token = tree.children[0]
        return ast.StringLit(_span(tree), self._unescape(_token(token)))

    def _number(self, tree: _Tree) -> ast.Expr:
        return self.number(tree.children[0])

    def number(self, node: _Tree | Token) -> ast.NumberLit:
        token = _token(node)
        value = float(token)
        if not math.isfinite(value):
            raise ParseError(f"number '{token}' is too large", source=self.text, span=_span(token))
        return ast.NumberLit(_span(token), value)

    def _slider(self, tree: _Tree) -> ast.Expr:
        name, low, high = tree.children
        return ast.SliderLit(_span(tree), self.ident(name), self.number(low), self.number(high))

    def _not_(self, tree: _Tree) -> ast.Expr:
        return ast.NotExpr(_span(tree), self.expr(tree.children[0]))

    def _mul(self, tree: _Tree) -> ast.Expr:
        return ast.MulExpr(_span(tree), tuple(self.expr(c) for c in tree.children))

    def _and_(self, tree: _Tree) -> ast.Expr:
        return ast.AndExpr(_span(tree), tuple(self.expr(c) for c in tree.children))

    def _or_(self, tree: _Tree) -> ast.Expr:
        return ast.OrExpr(_span(tree), tuple(self.expr(c) for c in tree.children))

    def _call(self, tree: _Tree) -> ast.Expr:
        func, args = tree.children
        parsed = (tuple(self.arg(_rule(a)) for a in _rule(args).children if a is not None)
                  if args else ())
        return ast.Call(_span(tree), self.ident(func), parsed)

    def arg(self, tree: _Tree) -> ast.Arg:
        if tree.data == "pos_arg":
            value = self.expr(tree.children[0])
            if isinstance(value, ast.SliderLit):  # a control's parameter range
                return ast.RangeArg(value.span, value.name, value.low, value.high)
            return ast.PosArg(_span(tree), value)
        if tree.data == "kw_arg":
            key, given = tree.children
            return ast.KwArg(_span(tree), tuple(self.ident(t) for t in _rule(key).children),
                             self.expr(given))
        raise ParseError("unsupported argument", source=self.text, span=_span(tree))

    def _unescape(self, token: Token) -> str:
        body, out, i = str(token)[1:-1], [], 0
        while i < len(body):
            char = body[i]
            if char == "\\":
                code = body[i + 1]
                if code not in _ESCAPES:
                    at = (token.start_pos or 0) + 1 + i
                    raise ParseError(f"unknown escape '\\{code}' in a string", source=self.text,
                                     span=Span(at, at + 2),
                                     hint='strings know \\" \\\\ \\n \\t and \\r')
                out.append(_ESCAPES[code])
                i += 2
            else:
                out.append(char)
                i += 1
        return "".join(out)


# --- friendly syntax errors ---------------------------------------------------------------------

@lru_cache(maxsize=1)
def _scanner() -> tuple[re.Pattern[str], frozenset[str]]:
    """Return a token regex built from the grammar's own terminals, and its keywords.

    The friendly messages look at the tokens around a failure; reading the patterns from the
    parser keeps them from drifting apart from the grammar. Two additions: an unterminated
    string still scans as one token, and ';' (part of the line-end terminal) is an operator.
    """
    patterns = {t.name: t.pattern for t in _lark().terminals}
    literals = [p.value for p in patterns.values() if p.type == "str"]
    keywords = frozenset(v for v in literals if v.isalpha())
    symbols = sorted((v for v in literals if not v.isalpha()), key=len, reverse=True)
    string = patterns["STRING"].to_regexp()
    if not string.endswith('"'):
        raise RuntimeError("the grammar's STRING terminal no longer ends with a quote")
    regex = re.compile(
        f"(?P<ws>{patterns['WS'].to_regexp()})|(?P<comment>{patterns['COMMENT'].to_regexp()})"
        f'|(?P<string>{string}?)|(?P<number>{patterns["NUMBER"].to_regexp()})'
        f"|(?P<name>{patterns['NAME'].to_regexp()})"
        f"|(?P<op>{'|'.join(re.escape(v) for v in [*symbols, ';'])})|(?P<other>.)",
        re.S,
    )
    return regex, keywords


_BINARY = {"&", "or", "*", "==", "!=", "x", "=", "in", "..", "not"}
_DESCRIBE = {
    "NAME": "a name", "STRING": "a string", "NUMBER": "a number", "_LET_END": "a line end or ';'",
    "$END": "the end",
}


def _scan(source: str, end: int | None = None) -> list[tuple[str, str, int]]:
    """Return ``(kind, text, start)`` of the significant tokens before ``end``."""
    regex, keywords = _scanner()
    tokens = []
    for match in regex.finditer(source, 0, len(source) if end is None else end):
        kind = match.lastgroup or "other"
        if kind in ("ws", "comment"):
            continue
        text = match.group()
        if kind == "name" and text in keywords:
            kind = "op"
        tokens.append((kind, text, match.start()))
    return tokens


def _open_parens(tokens: list[tuple[str, str, int]]) -> list[int]:
    """Return the indices of the '(' tokens still open at the end of ``tokens``."""
    stack: list[int] = []
    for index, (_kind, text, _start) in enumerate(tokens):
        if text == "(":
            stack.append(index)
        elif text == ")" and stack:
            stack.pop()
    return stack


def _describe_expected(expected: set[str]) -> str:
    terminals = {t.name: t for t in _lark().terminals}
    names = []
    for name in sorted(expected):
        if name in _DESCRIBE:
            names.append(_DESCRIBE[name])
        elif name in terminals and terminals[name].pattern.type == "str":
            names.append(f"'{terminals[name].pattern.value}'")
    return ", ".join(dict.fromkeys(names))


def _friendly(source: str, error: lark.UnexpectedInput) -> ParseError:
    """Map lark's failure to a short message, a span and a hint."""
    pos = max(0, min(getattr(error, "pos_in_stream", None) or 0, len(source)))
    if isinstance(error, lark.UnexpectedCharacters):
        return _bad_character(source, pos)
    token = getattr(error, "token", None)
    at_end = isinstance(error, lark.UnexpectedEOF) or (token is not None and token.type == "$END")
    if at_end or token is None:
        return _unexpected_end(source, error)
    before = _scan(source, token.start_pos)
    span = Span(token.start_pos, max(token.end_pos or 0, token.start_pos + 1))
    text = str(token)
    expected = set(getattr(error, "expected", ()) or ())

    def fail(message: str, hint: str | None = None, where: Span = span) -> ParseError:
        return ParseError(message, source=source, span=where, hint=hint)

    prev = before[-1] if before else None
    if prev and prev[1] == "|" and text != "then":
        return fail("expected 'then' after '|'",
                    "'A | then B' starts a new stage; for a soft OR write 'A or B'",
                    Span(prev[2], prev[2] + 1))
    if text == ")" and not _open_parens(before):
        return fail("unmatched ')'", "remove it or add the '(' it closes")
    if prev and prev[1] == "let":
        return fail("expected a name after 'let'", "e.g. let bias = gender x age")
    if text == "=":
        return fail("unexpected '='", "compare an attribute with '==', e.g. gender == female")
    let_hint = _let_line_hint(source, before, token.start_pos)
    if prev and prev[1] in _scanner()[1] - {"not"} and token.type in _TERM_START:
        # lark read the keyword as a name because no keyword fits there
        earlier = before[-2] if len(before) > 1 else None
        where = Span(prev[2], prev[2] + len(prev[1]))
        if earlier is None or earlier[1] in _BINARY | {"(", ",", "|", "then"}:
            after = f"after '{earlier[1]}'" if earlier else "at the start"
            return fail(f"expected a term {after}, found '{prev[1]}'", let_hint or
                        f"'{prev[1]}' is a keyword; remove it or write a term there", where)
        return fail(f"unexpected '{prev[1]}'", let_hint, where)
    calls = _open_calls(before)
    if calls and calls[-1] == "clip" and token.type in ("NAME", "NUMBER") and prev \
            and prev[0] in ("name", "number"):
        start = next(t[2] for t in reversed(before) if t[1] == "(") + 1
        stop = _find_close(source, start)
        words = source[start:stop].strip()
        first = len(source[start:stop]) - len(source[start:stop].lstrip())
        return fail("the prompt of clip() must be quoted", f'write clip("{words}")',
                    Span(start + first, start + first + len(words)))
    term_end = prev is not None and (prev[0] in ("name", "string", "number") or prev[1] == ")")
    term_start = token.type in _TERM_START
    if term_end and term_start:
        return fail(f"missing operator before '{text}'",
                    "join terms with '&' (both), 'or' (either) or '| then' (a new stage)")
    if token.type not in _TERM_START and \
            (prev is None or prev[1] in _BINARY | {"(", ",", "|", "then"}):
        place = f"after '{prev[1]}'" if prev else "at the start"
        return fail(f"expected a term {place}, found '{text}'", "write a term such as smiling "
                    'or clip("...") there, or remove the operator')
    if not _open_parens(before):
        expected -= {"RPAR", "COMMA"}
    described = _describe_expected(expected)
    return fail(f"unexpected '{text}'", let_hint or (f"expected {described}" if described
                                                     else None))


_TERM_START = ("NAME", "STRING", "NUMBER", "LPAR", "NOT")


def _let_line_hint(source: str, before: list[tuple[str, str, int]], pos: int) -> str | None:
    """Explain a let binding cut short by its line end, when that is what probably happened."""
    lets = [t for t in before if t[1] == "let"]
    if lets and "\n" in source[lets[-1][2]:pos] and not _open_parens(before):
        return ("a let binding ends at the end of its line; keep its value on one line or wrap "
                "it in parentheses")
    return None


def _open_calls(tokens: list[tuple[str, str, int]]) -> list[str]:
    """Return the function names of the calls still open at the end of ``tokens``."""
    names = []
    for index in _open_parens(tokens):
        before = tokens[index - 1] if index else None
        names.append(before[1] if before and before[0] == "name" else "")
    return names


def _find_close(source: str, start: int) -> int:
    for index in range(start, len(source)):
        if source[index] in "),":
            return index
    return len(source)


def _unexpected_end(source: str, error: lark.UnexpectedInput) -> ParseError:
    tokens = _scan(source)
    end = Span(len(source), len(source) + 1)
    last = tokens[-1] if tokens else None
    expected = set(getattr(error, "expected", ()) or ())
    if last and last[1] in _BINARY | {"|", "then"} and last[1] not in ("(", ","):
        span = Span(last[2], last[2] + len(last[1]))
        if last[1] == "|":
            return ParseError("expected 'then' after '|'", source=source, span=span,
                              hint="'A | then B' starts a new stage; for a soft OR write 'A or B'")
        return ParseError(f"expected a term after '{last[1]}'", source=source, span=span,
                          hint=f"remove the trailing '{last[1]}' or add a term after it")
    open_parens = _open_parens(tokens)
    if open_parens:
        start = tokens[open_parens[-1]][2]
        return ParseError("unclosed '('", source=source, span=Span(start, start + 1),
                          hint="add ')' to close it")
    if "_LET_END" in expected or (tokens and tokens[0][1] == "let"):
        return ParseError("a program needs an expression after its let bindings", source=source,
                          span=end, hint="end each binding with a new line or ';', then write "
                          "the expression, e.g. let b = gender; clip(\"a face\") & uniform(b)")
    return ParseError("unexpected end of expression", source=source, span=end)


def _bad_character(source: str, pos: int) -> ParseError:
    char = source[pos] if pos < len(source) else ""
    if char == '"':
        line_end = source.find("\n", pos)
        stop = len(source) if line_end == -1 else line_end
        return ParseError("unterminated string", source=source, span=Span(pos, max(stop, pos + 1)),
                          hint="close it with '\"' on the same line")
    if char == "'":
        return ParseError("strings use double quotes", source=source, span=Span(pos, pos + 1),
                          hint='write clip("a smiling man")')
    shown = char if char.isprintable() else ascii(char)[1:-1]
    return ParseError(f"unexpected character '{shown}'", source=source, span=Span(pos, pos + 1),
                      hint="names are letters, digits and '_'; operators are & or not * == != "
                           "x | then")
