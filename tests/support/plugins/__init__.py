"""
Plugin programs for the plugin-host tests (owned by the plugin-host helper).

L{make_plugin_executable} writes an executable wrapper (shebang = this
interpreter) that runs L{ECHO_PLUGIN}; its SHA-256 is what a config's
C{checksum} must hold.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
ECHO_PLUGIN = HERE / "echo_plugin.py"


def make_plugin_executable(directory: str | os.PathLike[str], name: str = "echo-plugin") -> tuple[str, str]:
    """
    Write C{directory/name}, an executable running the echo plugin.

    @return: (path, sha256 hex).
    """
    path = Path(directory) / name
    path.write_text(
        f"#!{sys.executable}\n"
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        f"runpy.run_path({str(ECHO_PLUGIN)!r}, run_name='__main__')\n")
    path.chmod(0o755)
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()
