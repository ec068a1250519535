"""examples.cache.analysis: what may be cached, what is read, what is written (pglast ASTs)."""

from __future__ import annotations

import pytest

from examples.cache.analysis import analyse
from examples.cache.settings import CacheSettings, parse_duration, parse_size


@pytest.mark.parametrize("sql, reads", [
    ("select * from t where a = 1", [("public", "t")]),
    ("SELECT usage FROM page", [("public", "page")]),  # GatewayD refuses these (substring NOW/AGE)
    ("select * from s.t join u on true", [("s", "t"), ("public", "u")]),
    ("select * from t where id in (select id from s.u)", [("public", "t"), ("s", "u")]),
    ("with c as (select * from b) select * from c", [("public", "b")]),
    ("with c as (select * from public.c) select * from c", [("public", "c")]),
    ("select 1", []),
    ("select lower(v), count(*) from t group by 1", [("public", "t")]),
    ("select pg_catalog.lower(v) from t", [("public", "t")]),
    ("select * from t union select * from u", [("public", "t"), ("public", "u")]),
])
def test_cacheable_reads(sql: str, reads: list[tuple[str, str]]) -> None:
    result = analyse(sql)
    assert result.cacheable, result.why
    assert sorted(result.reads) == sorted(reads)
    assert result.writes == [] and not result.invalidate_all


@pytest.mark.parametrize("sql", [
    "select now()", "select random()", "select nextval('s')", "select x.nextval('s')",
    "select clock_timestamp()", "select statement_timestamp()", "select txid_current()",
    "select pg_backend_pid()", "select setval('s', 1)", "select currval('s')",
    "select gen_random_uuid()", "select current_timestamp", "select current_date",
    "select localtimestamp", "select * from t where at < NOW()", "select * from t for update",
    "select * from t for share", "select * from t tablesample system (10)",
    "select * from pg_class", "select * from pg_catalog.pg_class",
    "select * from information_schema.tables", "select * into n from t",
    "select 1; select 2", "insert into t values (1)", "begin", "show work_mem",
    "with x as (delete from t returning *) select * from x", "explain select 1",
    "select * from t where x = any(select pg_sleep(1))", "", "select app.touch(1)",
    "select * from app.items_of(3)",
])
def test_never_cacheable(sql: str) -> None:
    assert not analyse(sql).cacheable


def test_temporary_tables_of_the_session_are_not_cached() -> None:
    created = analyse("create temporary table tt (a int)")
    assert created.temp_tables == ["tt"]
    assert not analyse("select * from tt", temp_tables=frozenset({"tt"})).cacheable
    assert analyse("select * from tt").cacheable
    assert analyse("create temp table t2 as select 1").temp_tables == ["t2"]


def test_extra_volatile_functions() -> None:
    assert analyse("select my_clock()").cacheable
    assert not analyse("select my_clock()", extra_volatile=frozenset({"my_clock"})).cacheable


@pytest.mark.parametrize("sql, writes", [
    ("insert into t values (1)", [("public", "t")]),
    ("insert into s.t select * from u", [("s", "t")]),
    ("update t set a = 1 from u where u.id = t.id", [("public", "t")]),
    ("delete from s.t where a = 1", [("s", "t")]),
    ("merge into t using u on t.id = u.id when matched then delete", [("public", "t")]),
    ("truncate a, s.b", [("public", "a"), ("s", "b")]),
    ("alter table t add column c int", [("public", "t")]),
    ("alter table t rename to t2", [("public", "t")]),
    ("drop table a, s.b", [("public", "a"), ("s", "b")]),
    ("drop view v", [("public", "v")]),
    ("copy t from stdin", [("public", "t")]),
    ("with x as (delete from t returning *) select * from x", [("public", "t")]),
    ("with x as (update t set a = 1 returning *) insert into u select * from x",
     [("public", "t"), ("public", "u")]),
    ("refresh materialized view m", [("public", "m")]),
    ("create or replace view s.v as select 1", [("s", "v")]),
    ("create table t as select 1", [("public", "t")]),
    ("insert into t values (1); update u set a = 2", [("public", "t"), ("public", "u")]),
])
def test_writes(sql: str, writes: list[tuple[str, str]]) -> None:
    result = analyse(sql)
    assert not result.cacheable
    assert sorted(result.writes) == sorted(writes)


@pytest.mark.parametrize("sql", ["do $$ begin delete from t; end $$", "call p()", "execute s",
                                 "drop schema s cascade", "drop function f", "this is not sql",
                                 "revoke select on t from bob", "grant select on t to bob",
                                 "revoke reader from bob", "alter role bob nosuperuser",
                                 "create or replace function f() returns int language sql as 'select 1'",
                                 "create policy p on t using (owner = current_user)",
                                 "create trigger tr after insert on t execute function f()"])
def test_statements_that_may_write_anything_invalidate_the_database(sql: str) -> None:
    result = analyse(sql)
    assert result.invalidate_all and not result.cacheable


def test_reads_and_harmless_statements_write_nothing() -> None:
    for sql in ("copy t to stdout", "select * from t", "begin", "commit", "set work_mem = '1MB'",
                "show search_path", "create index on t (a)"):
        result = analyse(sql)
        assert result.writes == [] and not result.invalidate_all, sql


def test_search_path_changes_are_noticed() -> None:
    assert analyse("set search_path to s, public").sets_search_path
    assert analyse("set local search_path = s").sets_search_path
    assert not analyse("set work_mem = '4MB'").sets_search_path


def test_settings_from_environment_and_config() -> None:
    env = {"REDIS_URL": "redis://r:1/2", "EXPIRY": "30m", "MAX_RESPONSE_SIZE": "1MB",
           "DEFAULT_DB_NAME": "app", "SCAN_COUNT": "10"}
    settings = CacheSettings.load({"expiry": "90s"}, env)
    assert settings.redis_url == "redis://r:1/2"
    assert settings.expiry == 90.0  # config over environment
    assert settings.max_response_size == 1024 * 1024
    assert settings.default_db == "app"
    assert CacheSettings.load({}, {"EXPIRY": "-1s"}).expiry == 3600.0  # GatewayD: invalid -> 1h
    assert CacheSettings.load({}, {}).max_response_size == 8 * 1024 * 1024
    with pytest.raises(ValueError, match="maxResponseSize|size"):
        CacheSettings.load({"maxResponseSize": "lots"}, {})


def test_duration_and_size_parsing() -> None:
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration(2) == 2.0
    assert parse_duration("2.5") == 2.5
    with pytest.raises(ValueError):
        parse_duration("soon")
    assert parse_size("8MB") == 8 * 1024 * 1024
    assert parse_size("512k") == 512 * 1024
    assert parse_size(100) == 100
