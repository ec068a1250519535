# -*- test-case-name: tests.unit.test_config_rules -*-
"""
The load-balancing rule condition language, in one place.

A rule's C{condition} is C{DEFAULT} (matches every client) or clauses joined
by C{AND}::

    database == "sales" AND user != 'batch'
    application_name in ("psql", "pgAdmin 4")
    user ~ "report_.*"                 (Python re.fullmatch)
    source_ip in 10.0.0.0/8            (also IPv6, and ("10.0.0.0/8", "::1"))

Keywords (C{DEFAULT}, C{AND}, C{in}) and field names are case-insensitive;
strings take single or double quotes, inside which a backslash escapes only
the quote and itself (so regular expressions keep their C{\\d}).

The validator parses every condition at load time; the load balancer keeps
the parsed L{Condition} and calls L{Condition.matches} per new client.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Protocol, Union

FIELDS = ("database", "user", "application_name", "source_ip")
OPERATORS = ("==", "!=", "in", "~")

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class ConditionError(ValueError):
    """A condition that does not parse; the message says where and why."""


class ClientFacts(Protocol):
    """What a condition can look at: the startup parameters and the peer address."""

    database: str
    user: str
    application_name: str
    source_ip: str


@dataclass(frozen=True)
class Clause:
    """C{<field> <op> <values>}."""

    field: str
    op: str
    values: tuple[str, ...]
    pattern: re.Pattern[str] | None = None
    networks: tuple[Network, ...] = ()

    def matches(self, client: ClientFacts) -> bool:
        actual = getattr(client, self.field, None) or ""
        if self.op == "~":
            assert self.pattern is not None
            return self.pattern.fullmatch(actual) is not None
        if self.field == "source_ip" and self.op == "in":
            return _in_networks(actual, self.networks)
        if self.field == "source_ip":
            equal = _same_ip(actual, self.values[0])
        else:
            equal = actual in self.values
        return equal if self.op in ("==", "in") else not equal


@dataclass(frozen=True)
class Condition:
    """A parsed condition: no clauses means C{DEFAULT}."""

    text: str
    clauses: tuple[Clause, ...]

    @property
    def is_default(self) -> bool:
        return not self.clauses

    def matches(self, client: ClientFacts) -> bool:
        """True when every clause matches C{client} (always, for C{DEFAULT})."""
        return all(clause.matches(client) for clause in self.clauses)


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|~)
  | (?P<punct>[(),])
  | (?P<word>[^\s"'(),=!~]+)
""", re.VERBOSE)


@dataclass(frozen=True)
class _Token:
    kind: str    # string, op, punct, word
    text: str    # unquoted for strings
    column: int  # 1-based


def _unquote(raw: str) -> str:
    quote = raw[0]
    return re.sub(r"\\([\\" + quote + "])", r"\1", raw[1:-1])


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos] in "\"'":
                raise ConditionError(f"unterminated string starting at column {pos + 1}")
            if text[pos] in "=!":
                raise ConditionError(f"unknown operator {text[pos]!r} at column {pos + 1}"
                                     " (use ==, !=, in or ~)")
            raise ConditionError(f"unexpected {text[pos]!r} at column {pos + 1}")
        kind = match.lastgroup
        if kind != "space":
            raw = match.group()
            tokens.append(_Token(kind, _unquote(raw) if kind == "string" else raw, pos + 1))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.end = len(text) + 1

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str) -> _Token:
        token = self.peek()
        if token is None:
            raise ConditionError(f"expected {expected} at column {self.end}, got end of condition")
        self.pos += 1
        return token

    def unexpected(self, token: _Token, expected: str) -> ConditionError:
        shown = repr(token.text) if token.kind != "string" else f'string "{token.text}"'
        return ConditionError(f"expected {expected} at column {token.column}, got {shown}")

    def clauses(self) -> tuple[Clause, ...]:
        result = [self.clause()]
        while (token := self.peek()) is not None:
            if token.kind == "word" and token.text.upper() == "AND":
                self.pos += 1
                result.append(self.clause())
                continue
            if token.kind == "word" and token.text.upper() == "OR":
                raise ConditionError(
                    f"OR is not supported (column {token.column}): write one rule per alternative")
            raise self.unexpected(token, "AND or end of condition")
        return tuple(result)

    def clause(self) -> Clause:
        token = self.take("a field (" + ", ".join(FIELDS) + ")")
        name = token.text.lower()
        if token.kind != "word" or name not in FIELDS:
            if token.kind == "word" and token.text.upper() == "DEFAULT":
                raise ConditionError(
                    f"DEFAULT cannot be combined with other clauses (column {token.column})")
            raise self.unexpected(token, "a field (" + ", ".join(FIELDS) + ")")
        op_token = self.take("an operator (==, !=, in, ~)")
        op = op_token.text.lower() if op_token.kind == "word" else op_token.text
        if op not in OPERATORS or op_token.kind not in ("word", "op"):
            raise self.unexpected(op_token, "an operator (==, !=, in, ~)")
        if op == "in":
            return self.membership(name)
        value = self.take("a quoted string")
        if value.kind != "string":
            raise self.unexpected(value, "a quoted string")
        if op == "~":
            try:
                pattern = re.compile(value.text)
            except re.error as e:
                raise ConditionError(
                    f"bad regular expression at column {value.column}: {e}") from None
            return Clause(name, op, (value.text,), pattern=pattern)
        if name == "source_ip":
            _address(value)  # validated now, compared as addresses later
        return Clause(name, op, (value.text,))

    def membership(self, name: str) -> Clause:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text == "(":
            self.pos += 1
            values = [self.take("a quoted string")]
            while True:
                if values[-1].kind != "string":
                    raise self.unexpected(values[-1], "a quoted string")
                sep = self.take("',' or ')'")
                if sep.kind == "punct" and sep.text == ")":
                    break
                if sep.kind != "punct" or sep.text != ",":
                    raise self.unexpected(sep, "',' or ')'")
                values.append(self.take("a quoted string"))
        elif name == "source_ip":
            values = [self.take("a network such as 10.0.0.0/8")]
            if values[0].kind not in ("word", "string"):
                raise self.unexpected(values[0], "a network such as 10.0.0.0/8")
        else:
            raise self.unexpected(self.take("("), "'(' starting a list of strings")
        texts = tuple(v.text for v in values)
        if name == "source_ip":
            return Clause(name, "in", texts, networks=tuple(_network(v) for v in values))
        return Clause(name, "in", texts)


def _network(token: _Token) -> Network:
    try:
        return ipaddress.ip_network(token.text, strict=False)
    except ValueError:
        raise ConditionError(
            f"bad network {token.text!r} at column {token.column}"
            " (expected an address or CIDR such as 10.0.0.0/8 or fd00::/8)") from None


def _address(token: _Token) -> None:
    try:
        ipaddress.ip_address(token.text)
    except ValueError:
        raise ConditionError(
            f"bad IP address {token.text!r} at column {token.column}") from None


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d
    return address


def _in_networks(actual: str, networks: tuple[Network, ...]) -> bool:
    address = _parse_ip(actual)
    if address is None:  # e.g. a Unix-socket client
        return False
    return any(address.version == n.version and address in n for n in networks)


def _same_ip(actual: str, expected: str) -> bool:
    mine = _parse_ip(actual)
    return mine is not None and mine == _parse_ip(expected)


def parse_condition(text: str) -> Condition:
    """
    Parse a rule condition.

    @raise ConditionError: a one-line explanation with the column.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("empty condition (use DEFAULT to match every client)")
    if text.strip().upper() == "DEFAULT":
        return Condition(text, ())
    parser = _Parser(text)
    return Condition(text, parser.clauses())
