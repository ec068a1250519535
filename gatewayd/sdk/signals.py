"""
Signals a plugin puts in its result (C{result["__signals__"]}), shaped like
the Go SDK's C{act.Terminate()}, C{act.Log()} and C{act.Passthrough()}.

    result["__signals__"] = [signals.terminate(), signals.log("warn", "blocked", table=t)]
"""

from gatewayd.act.signals import SIGNALS_KEY, log, passthrough, terminate

__all__ = ["SIGNALS_KEY", "log", "passthrough", "terminate"]
