"""`gatewayd config init|lint` (gatewayd.config.commands), called through argparse in-process."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gatewayd.config import load
from gatewayd.config import files
from gatewayd.config.commands import add_commands
from gatewayd.config.render import render_global


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gatewayd")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_init_creates_then_refuses_then_overwrites(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "gw.yaml"
    assert run(["config", "init", "-c", str(target)]) == 0
    assert capsys.readouterr().out == f"Config file '{target}' was created successfully.\n"
    assert target.read_text() == render_global()

    target.write_text("# mine\n")
    assert run(["config", "init", "--config", str(target), "--example", "multi-pool"]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"Config file '{target}' already exists "
                              "(use --force to overwrite it)\n")
    assert target.read_text() == "# mine\n"

    assert run(["config", "init", "-c", str(target), "-f", "--example", "multi-pool"]) == 0
    assert capsys.readouterr().out == f"Config file '{target}' was overwritten successfully.\n"
    assert target.read_text() == render_global("multi-pool")
    plugins = tmp_path / "p.yaml"
    plugins.write_text("")
    assert load(str(target), str(plugins), env={}).blocks("default") == ["writes", "reads"]


def test_init_defaults_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["config", "init"]) == 0
    assert capsys.readouterr().out == "Config file './gatewayd.yaml' was created successfully.\n"
    assert (tmp_path / "gatewayd.yaml").read_text() == render_global()


def test_init_into_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "no" / "such" / "gatewayd.yaml"
    assert run(["config", "init", "-c", str(target)]) == 1
    assert capsys.readouterr().err == (f"Config file '{target}' could not be written: "
                                       "No such file or directory\n")


def test_init_rejects_unknown_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        run(["config", "init", "--example", "huge"])
    assert caught.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_lint_valid_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    glob, plugins = tmp_path / "g.yaml", tmp_path / "p.yaml"
    glob.write_text(render_global())
    plugins.write_text("defaultPolicy: terminate\n")
    assert run(["config", "lint", "-c", str(glob), "-p", str(plugins)]) == 0
    assert capsys.readouterr().out == "global config is valid\nplugins config is valid\n"


def test_lint_reports_every_problem_on_stderr(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    glob, plugins = tmp_path / "g.yaml", tmp_path / "p.yaml"
    glob.write_text("pools: {default: {writes: {size: 0}}}\nservers: {default: {adress: x}}\n")
    plugins.write_text("plugins: [{name: x}]\n")
    assert run(["config", "lint", "--config", str(glob), "--plugin-config", str(plugins)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{glob}: servers.default.adress: unknown key (did you mean 'address'?)",
        f"{glob}: pools.default.writes.size: must be >= 1 (got 0)",
        f"{plugins}: plugins[0]: needs localPath and checksum (out-of-process plugin) "
        "or module (in-process plugin)",
    ]


def test_lint_one_good_one_bad(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    glob, plugins = tmp_path / "g.yaml", tmp_path / "p.yaml"
    glob.write_text("")
    plugins.write_text("defaultPolicy: 1\n")
    assert run(["config", "lint", "-c", str(glob), "-p", str(plugins)]) == 1
    out, err = capsys.readouterr()
    assert out == "global config is valid\n"
    assert err == f"{plugins}: defaultPolicy: expected a string, got integer 1 (quote it)\n"


def test_lint_looks_files_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(files, "SEARCH_DIRS", (str(tmp_path),))
    assert run(["config", "lint"]) == 1
    assert capsys.readouterr().err == "gatewayd.yaml: not found in ./ or /etc/ (pass --config)\n"
    (tmp_path / "gatewayd.yaml").write_text("")
    assert run(["config", "lint"]) == 0
    assert capsys.readouterr().out == "global config is valid\n"  # no plugins file: not linted
    (tmp_path / "gatewayd_plugins.yaml").write_text("")
    assert run(["config", "lint"]) == 0
    assert capsys.readouterr().out == "global config is valid\nplugins config is valid\n"


def test_lint_missing_given_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    assert run(["config", "lint", "-c", str(missing)]) == 1
    assert capsys.readouterr().err == f"{missing}: file not found\n"


def test_config_without_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config"]) == 2
    assert "choose a subcommand: init or lint" in capsys.readouterr().err
