"""The rule condition language (gatewayd.config.rules)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, strategies as st

from gatewayd.config.rules import ConditionError, parse_condition


@dataclass
class Client:
    database: str = "app"
    user: str = "alice"
    application_name: str = "psql"
    source_ip: str = "192.168.1.10"


def matches(condition: str, **facts: str) -> bool:
    return parse_condition(condition).matches(Client(**facts))


@pytest.mark.parametrize("text", ["DEFAULT", "default", "  Default  "])
def test_default_matches_everyone(text: str) -> None:
    condition = parse_condition(text)
    assert condition.is_default and condition.clauses == ()
    assert condition.matches(Client()) and condition.matches(Client(source_ip=""))


@pytest.mark.parametrize("field", ["database", "user", "application_name"])
def test_equality_on_each_field(field: str) -> None:
    assert matches(f'{field} == "x"', **{field: "x"})
    assert not matches(f'{field} == "x"', **{field: "y"})
    assert not matches(f'{field} == "x"', **{field: "X"})  # values are case-sensitive
    assert matches(f'{field} != "x"', **{field: "y"})
    assert not matches(f'{field} != "x"', **{field: "x"})


def test_single_and_double_quotes_and_escapes() -> None:
    assert matches("user == 'alice'")
    assert matches('application_name == "it\'s"', application_name="it's")
    assert matches(r"application_name == 'it\'s'", application_name="it's")
    assert matches(r'application_name == "say \"hi\""', application_name='say "hi"')
    assert matches(r'application_name == "back\\slash"', application_name="back\\slash")
    assert matches('application_name == "pgAdmin 4"', application_name="pgAdmin 4")


def test_membership() -> None:
    condition = 'application_name in ("psql", "pgAdmin 4", \'dbeaver\')'
    for name in ("psql", "pgAdmin 4", "dbeaver"):
        assert matches(condition, application_name=name)
    assert not matches(condition, application_name="pgadmin 4")
    assert matches('user in ("alice")')


def test_regex_is_a_full_match_and_keeps_backslashes() -> None:
    assert matches('user ~ "report_.*"', user="report_daily")
    assert not matches('user ~ "report_.*"', user="my_report_daily")  # fullmatch, not search
    assert not matches('user ~ "report"', user="report_daily")
    assert matches(r'database ~ "db\d+"', database="db42")
    assert not matches(r'database ~ "db\d+"', database="dbx")
    assert matches('user ~ "(?i)ALICE"')
    assert matches('user ~ "etl|report_.*"', user="etl")


@pytest.mark.parametrize("condition, inside, outside", [
    ("source_ip in 10.0.0.0/8", ["10.0.0.1", "10.255.255.255", "::ffff:10.1.2.3"],
     ["11.0.0.1", "fd00::1", "", "not-an-ip"]),
    ("source_ip in fd00::/8", ["fd12:3456::1"], ["fe80::1", "10.0.0.1"]),
    ('source_ip in ("10.0.0.0/8", "2001:db8::/32", "192.0.2.7")',
     ["10.9.9.9", "2001:db8:1::5", "192.0.2.7"], ["192.0.2.8", "2001:db9::1"]),
    ('source_ip in "172.16.0.0/12"', ["172.16.5.4"], ["172.32.0.1"]),
    ("source_ip in 192.168.1.10", ["192.168.1.10"], ["192.168.1.11"]),
    ("source_ip in 10.1.2.3/8", ["10.200.0.1"], []),  # host bits are forgiven
])
def test_source_ip_networks(condition: str, inside: list[str], outside: list[str]) -> None:
    for ip in inside:
        assert matches(condition, source_ip=ip), ip
    for ip in outside:
        assert not matches(condition, source_ip=ip), ip


def test_source_ip_equality_compares_addresses() -> None:
    assert matches('source_ip == "2001:db8::1"', source_ip="2001:0db8:0:0::1")
    assert matches('source_ip == "10.0.0.1"', source_ip="::ffff:10.0.0.1")
    assert not matches('source_ip == "10.0.0.1"', source_ip="10.0.0.2")
    assert not matches('source_ip == "10.0.0.1"', source_ip="")  # Unix socket
    assert matches('source_ip != "10.0.0.1"', source_ip="")


def test_and_needs_every_clause() -> None:
    condition = 'database == "sales" AND user != "batch" and source_ip in 10.0.0.0/8'
    assert matches(condition, database="sales", user="alice", source_ip="10.0.0.1")
    assert not matches(condition, database="sales", user="batch", source_ip="10.0.0.1")
    assert not matches(condition, database="hr", user="alice", source_ip="10.0.0.1")
    assert not matches(condition, database="sales", user="alice", source_ip="11.0.0.1")
    assert len(parse_condition(condition).clauses) == 3


def test_keywords_and_fields_are_case_insensitive_and_spacing_free() -> None:
    assert matches('USER=="alice"And DATABASE IN("app")')
    assert matches("Source_IP In 192.168.0.0/16")


def test_missing_attributes_count_as_empty() -> None:
    class Bare:
        pass

    assert parse_condition('user != "x"').matches(Bare())
    assert not parse_condition('user == "x"').matches(Bare())


def test_parsed_clauses_are_inspectable() -> None:
    clause = parse_condition('user in ("a", "b")').clauses[0]
    assert (clause.field, clause.op, clause.values) == ("user", "in", ("a", "b"))


@pytest.mark.parametrize("text, message", [
    ("", "empty condition (use DEFAULT to match every client)"),
    ("   ", "empty condition (use DEFAULT to match every client)"),
    ('user = "x"', "unknown operator '=' at column 6 (use ==, !=, in or ~)"),
    ('user !~ "x"', "unknown operator '!' at column 6 (use ==, !=, in or ~)"),
    ('user < "x"', "expected an operator (==, !=, in, ~) at column 6, got '<'"),
    ("database == x", "expected a quoted string at column 13, got 'x'"),
    ('user == "abc', "unterminated string starting at column 9"),
    ("user == 'abc", "unterminated string starting at column 9"),
    ('foo == "x"', "expected a field (database, user, application_name, source_ip) "
                   "at column 1, got 'foo'"),
    ('user == "x" AND', "expected a field (database, user, application_name, source_ip) "
                        "at column 16, got end of condition"),
    ("user", "expected an operator (==, !=, in, ~) at column 5, got end of condition"),
    ('user == "a" user == "b"', "expected AND or end of condition at column 13, got 'user'"),
    ('user == "x" OR user == "y"', "OR is not supported (column 13): write one rule per alternative"),
    ('DEFAULT AND user == "x"', "DEFAULT cannot be combined with other clauses (column 1)"),
    ('user == "x" AND DEFAULT', "DEFAULT cannot be combined with other clauses (column 17)"),
    ('user in "a"', "expected '(' starting a list of strings at column 9, got string \"a\""),
    ('user in ("a",)', "expected a quoted string at column 14, got ')'"),
    ('user in ("a" "b")', "expected ',' or ')' at column 14, got string \"b\""),
    ('user in ("a"', "expected ',' or ')' at column 13, got end of condition"),
    ("user in ()", "expected a quoted string at column 10, got ')'"),
    ('user ~ "("', "bad regular expression at column 8: "
                   "missing ), unterminated subpattern at position 0"),
    ("source_ip in 10.0.0.0/33", "bad network '10.0.0.0/33' at column 14 "
                                 "(expected an address or CIDR such as 10.0.0.0/8 or fd00::/8)"),
    ('source_ip in ("10.0.0.0/8", "nope")', "bad network 'nope' at column 29 "
                                            "(expected an address or CIDR such as 10.0.0.0/8 or fd00::/8)"),
    ('source_ip == "nope"', "bad IP address 'nope' at column 14"),
    ("source_ip in", "expected a network such as 10.0.0.0/8 at column 13, got end of condition"),
    ('user == "x" ;', "expected AND or end of condition at column 13, got ';'"),
])
def test_syntax_errors_say_where(text: str, message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text)
    assert str(caught.value) == message


def test_condition_error_is_a_value_error() -> None:
    assert issubclass(ConditionError, ValueError)


@given(st.text(alphabet=st.sampled_from(list('dbuser_ipn =!~()",\'.:/0123456789ADNORT\\')),
               max_size=40))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        condition = parse_condition(text)
    except ConditionError as e:
        assert str(e) and "\n" not in str(e)
    else:
        condition.matches(Client())
