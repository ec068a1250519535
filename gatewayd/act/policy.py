# -*- test-case-name: tests.unit.test_act -*-
"""
Policies: named boolean expressions that decide whether a signal's action runs.

GatewayD writes policies in Expr (expr-lang), e.g.
C{Signal.terminate == true && Policy.terminate == "stop"}.  There is no Expr
for Python; its common subset (literals, C{== != < <= > >=}, C{&& || !},
C{in}, member access on maps, lists) is also valid CEL, the Common
Expression Language, which was designed for exactly this job: evaluating
untrusted expressions safely, in bounded time, without side effects.  We
compile policies with Google's C++ CEL runtime through C{cel-expr-python}
(about 4 us per evaluation, see docs/plugins.md for the comparison with
cel-python, the Rust binding and simpleeval).  Nothing is ever C{eval}'d.

Environment (GatewayD's C{act.Input}): C{Name} (the signal name),
C{Signal} (its metadata), C{Policy} (the policy's metadata), C{Sync}
(whether the action is synchronous) and C{Hook} with C{Name} (enum name,
e.g. C{HOOK_NAME_ON_TRAFFIC_FROM_CLIENT}), C{Priority}, C{Params} (what the
plugin received) and C{Result} (what it returned).

Expr compatibility details:
  - a missing map key reads as C{nil} in Expr but is an error in CEL; when
    an evaluation fails on a missing key we evaluate once more with the keys
    the expression names (C{Signal.x}, C{Policy.x}, C{Hook.Params.x},
    C{Hook.Result.x}) set to C{null}, which gives Expr's answer
    (C{null == true} is false, C{null != "x"} is true);
  - the verdict is converted to bool like Go's C{cast.ToBool} (numbers:
    non-zero; strings: C{strconv.ParseBool}; anything else: false);
  - Expr-only syntax (C{and}/C{or}/C{not} keywords, C{contains},
    C{startsWith} and C{matches} operators, C{??}) does not compile; write
    the CEL form (C{&&}, C{||}, C{!}, C{s.contains("x")}, ...).  The error
    names the policy at startup.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["Policy", "PolicyError", "PolicyInput", "compile_policy", "to_bool"]


class PolicyError(ValueError):
    """A policy failed to compile or to evaluate."""


@functools.cache
def _environment() -> Any:
    """The CEL environment shared by every policy (built on first use)."""
    from cel_expr_python import cel

    dyn_map = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
    return cel.NewEnv(variables={
        "Name": cel.Type.STRING,
        "Signal": dyn_map,
        "Policy": dyn_map,
        "Hook": dyn_map,
        "Sync": cel.Type.BOOL,
    })


@functools.cache
def _error_type() -> Any:
    from cel_expr_python import cel

    return cel.Type.ERROR


# String and bytes literals, removed before scanning for variable names so that
# a name inside a string is not mistaken for a reference.
_LITERAL = re.compile(
    r'''[rRbB]{0,2}(?:"""(?:\\.|[^\\])*?"""|\'\'\'(?:\\.|[^\\])*?\'\'\''''
    r'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')''', re.S)
_VARIABLE = re.compile(r"(?<![.\w])(Name|Signal|Policy|Hook|Sync)\b")
_MEMBER = re.compile(r"(?<![.\w])(Signal|Policy)\s*\.\s*([A-Za-z_]\w*)")
_HOOK_MEMBER = re.compile(r"(?<![.\w])Hook\s*\.\s*(Params|Result)\s*\.\s*([A-Za-z_]\w*)")
_CONSTANTS = {"true": True, "false": False}


@dataclass(frozen=True, slots=True)
class PolicyInput:
    """
    What a policy sees.  C{hook} is a callable building the C{Hook} map, so
    that the map (which holds the whole request) is only built for the
    policies that read it.
    """

    name: str
    signal: Mapping[str, Any]
    sync: bool
    hook: Any = None  # Callable[[], dict] | dict | None


def to_bool(value: Any) -> bool:
    """Go's C{cast.ToBool}: the only truthiness GatewayD knows."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        return value in ("1", "t", "T", "TRUE", "true", "True")
    return False


def _one_line(error: BaseException) -> str:
    """CEL's multi-line compiler message as one line."""
    text = str(error).strip()
    text = text.removeprefix("INVALID_ARGUMENT: ").removeprefix("ERROR: ")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0].replace("<input>:", "at ") if lines else "invalid expression"
    return first.replace(" [INVALID_ARGUMENT]", "")


class Policy:
    """
    A compiled policy.

    @ivar name: the signal/action name it guards.
    @ivar source: the expression text.
    @ivar metadata: what the expression sees as C{Policy}.
    """

    __slots__ = ("name", "source", "metadata", "_program", "_constant", "_variables",
                 "_members", "_hook_members")

    def __init__(self, name: str, source: str, metadata: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.source = source
        self.metadata: dict[str, Any] = dict(metadata or {})
        stripped = source.strip()
        self._constant: bool | None = _CONSTANTS.get(stripped)
        self._program: Any = None
        if self._constant is None:
            if not stripped:
                raise PolicyError("empty expression")
            try:
                self._program = _environment().compile(source)
            except RuntimeError as e:
                raise PolicyError(_one_line(e)) from None
        code = _LITERAL.sub('""', source)
        self._variables = frozenset(_VARIABLE.findall(code))
        members: dict[str, set[str]] = {}
        for var, key in _MEMBER.findall(code):
            members.setdefault(var, set()).add(key)
        self._members = {k: frozenset(v) for k, v in members.items()}
        hook_members: dict[str, set[str]] = {}
        for part, key in _HOOK_MEMBER.findall(code):
            hook_members.setdefault(part, set()).add(key)
        self._hook_members = {k: frozenset(v) for k, v in hook_members.items()}

    def __repr__(self) -> str:
        return f"Policy({self.name!r}, {self.source!r}, {self.metadata!r})"

    @property
    def constant(self) -> bool | None:
        """The verdict when the expression is the literal C{true}/C{false}, else None."""
        return self._constant

    def evaluate(self, given: PolicyInput, timeout: float = 0.0) -> bool:
        """
        The verdict for C{given}.

        @param timeout: seconds; a longer evaluation counts as failed, as
            GatewayD's C{policyTimeout} context would (0 = no limit).  CEL
            evaluation always terminates, so this only guards against huge
            inputs, but it keeps GatewayD's contract.
        @raise PolicyError: the expression failed (type error, overflow...).
        """
        if self._constant is not None:
            return self._constant
        started = time.perf_counter() if timeout > 0 else 0.0
        data = self._bind(given)
        value = self._eval(data)
        if value.type() == _error_type():
            message = str(value.value())
            if not message.startswith("NOT_FOUND") or not self._fill_missing(data):
                raise PolicyError(message)
            value = self._eval(data)
            if value.type() == _error_type():
                raise PolicyError(str(value.value()))
        if timeout > 0 and time.perf_counter() - started > timeout:
            raise PolicyError(f"evaluation took longer than the policy timeout ({timeout}s)")
        return to_bool(value.value())

    def _eval(self, data: dict[str, Any]) -> Any:
        try:
            return self._program.eval(data=data)
        except Exception as e:  # noqa: BLE001 - CEL reports most problems as values, not all
            raise PolicyError(f"cannot evaluate: {e}") from None

    def _bind(self, given: PolicyInput) -> dict[str, Any]:
        """The CEL variables, only those the expression names."""
        data: dict[str, Any] = {}
        variables = self._variables
        if "Name" in variables:
            data["Name"] = given.name
        if "Signal" in variables:
            data["Signal"] = given.signal
        if "Policy" in variables:
            data["Policy"] = self.metadata
        if "Sync" in variables:
            data["Sync"] = given.sync
        if "Hook" in variables:
            hook = given.hook() if callable(given.hook) else given.hook
            data["Hook"] = hook if hook is not None else {}
        return data

    def _fill_missing(self, data: dict[str, Any]) -> bool:
        """Set the named-but-missing keys to None (Expr's nil). @return: whether any was missing."""
        filled = False
        for var, keys in self._members.items():
            current = data.get(var)
            if isinstance(current, Mapping) and not keys <= current.keys():
                data[var] = {**{k: None for k in keys}, **current}
                filled = True
        hook = data.get("Hook")
        if isinstance(hook, Mapping) and self._hook_members:
            new_hook = dict(hook)
            for part, keys in self._hook_members.items():
                current = new_hook.get(part)
                if current is None:
                    current = {}
                if isinstance(current, Mapping) and not keys <= current.keys():
                    new_hook[part] = {**{k: None for k in keys}, **current}
                    filled = True
            data["Hook"] = new_hook
        return filled


def compile_policy(name: str, source: str, metadata: Mapping[str, Any] | None = None) -> Policy:
    """Compile C{source}. @raise PolicyError: with CEL's message on one line."""
    return Policy(name, source, metadata)
