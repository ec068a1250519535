"""
Regenerate gatewayd/protos/ from protos/ (run by C{make protos}).

Why a script and not one protoc line: the descriptor file names must stay
C{plugin/v1/plugin.proto} and C{plugin/v1/struct.proto}, exactly as in
gatewayd-plugin-sdk (reflection clients and a second copy of the same file in
one descriptor pool rely on it), so protoc runs with C{-Iprotos}.  protoc then
writes top-level imports (C{from plugin.v1 import struct_pb2}); this script
rewrites them to C{gatewayd.protos.plugin.v1...} and adds the C{__init__.py}
files.  The C{-Igatewayd/protos=protos} trick would fix the imports but rename
the descriptors to C{gatewayd/protos/plugin/v1/...}.

Outputs per file: C{_pb2.py}, C{_pb2.pyi}, C{_pb2_grpc.py} (grpcio, the host)
and C{_grpc.py} (grpclib, the plugin SDK: it can do go-plugin's P-521 AutoMTLS).
For the health service only the grpclib stub is generated; its messages come
from grpcio-health-checking's C{grpc_health.v1.health_pb2}.

Usage: C{python protos/generate.py} from the repository root, with
C{grpcio-tools==1.85.1} and C{grpclib} installed in the same environment.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "protos"
OUT = ROOT / "gatewayd" / "protos"
PACKAGE = "gatewayd.protos"

#: Our own protos: every output kind.
OWN = [
    "plugin/v1/struct.proto",
    "plugin/v1/plugin.proto",
    "goplugin/grpc_controller.proto",
    "goplugin/grpc_stdio.proto",
    "goplugin/grpc_broker.proto",
    "api/v1/api.proto",
]
#: Protos whose messages live in another package: grpclib stub only.
STUB_ONLY = ["grpc_health/v1/health.proto"]


def _protoc(args: list[str]) -> None:
    plugin = shutil.which("protoc-gen-grpclib_python",
                          path=os.pathsep.join([str(Path(sys.executable).parent),
                                                os.environ.get("PATH", "")]))
    if plugin is None:
        raise SystemExit("protos/generate.py: protoc-gen-grpclib_python not found: pip install grpclib")
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{SRC}",
           f"--plugin=protoc-gen-grpclib_python={plugin}", *args]
    subprocess.run(cmd, check=True, cwd=ROOT)


def _modules() -> set[str]:
    """Dotted module names (relative to gatewayd.protos) protoc produced for OWN."""
    mods = set()
    for proto in OWN:
        base = proto[:-len(".proto")].replace("/", ".")
        mods.update({base + "_pb2", base + "_pb2_grpc", base + "_grpc"})
    return mods


def _rewrite(path: Path, modules: set[str]) -> None:
    text = path.read_text()
    # "from plugin.v1 import struct_pb2" -> "from gatewayd.protos.plugin.v1 import struct_pb2"
    def from_import(m: re.Match[str]) -> str:
        pkg, name = m.group(1), m.group(2)
        if f"{pkg}.{name}" in modules:
            return f"from {PACKAGE}.{pkg} import {name}"
        return m.group(0)
    text = re.sub(r"^from ([\w.]+) import (\w+)", from_import, text, flags=re.M)
    # grpclib style: "import plugin.v1.struct_pb2" and uses "plugin.v1.struct_pb2.Struct"
    for mod in sorted(modules, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.]){re.escape(mod)}(?=\W)", f"{PACKAGE}.{mod}", text)
    path.write_text(text)


def main() -> int:
    for old in OUT.rglob("*"):
        if old.is_file() and old.name != "__init__.py" and old.suffix in (".py", ".pyi"):
            old.unlink()
    OUT.mkdir(parents=True, exist_ok=True)
    out = str(OUT)
    _protoc([f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}",
             f"--grpclib_python_out={out}", *OWN])
    _protoc([f"--grpclib_python_out={out}", *STUB_ONLY])
    for stub in [*OUT.rglob("*_grpc.py")]:
        if "class " not in stub.read_text():  # a file without services
            stub.unlink()
    modules = _modules()
    for path in OUT.rglob("*.py*"):
        if path.suffix in (".py", ".pyi") and path.name != "__init__.py":
            _rewrite(path, modules)
    for directory in [OUT, *(p for p in OUT.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("" if directory != OUT else
                            '"""Generated gRPC/protobuf code; regenerate with C{make protos}."""\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())
