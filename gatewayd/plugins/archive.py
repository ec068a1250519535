# -*- test-case-name: tests.integration.test_plugin_cli -*-
"""
Safe extraction of plugin release archives (C{.tar.gz}, C{.zip}) for
C{gatewayd plugin install}.

An archive downloaded from the internet must not write outside the directory
it is extracted into ("zip slip"), plant links, devices or set-uid files, or
fill the disk.  Every member is checked before anything is written, and each
file's bytes are counted while they are copied (a zip header's size can lie).
Unlike GatewayD there is no switch to skip these checks.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Iterator

#: GatewayD's per-file cap.
MAX_FILE_BYTES = 100 * 1024 * 1024
_CHUNK = 1024 * 1024


class ArchiveError(Exception):
    """The archive is unusable or unsafe; the message names the member and why."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _safe_name(name: str) -> str | None:
    """
    The member's relative POSIX path, C{None} for the archive's root entry.

    @raise ArchiveError: absolute, drive-qualified or escaping with C{..}.
    """
    if "\x00" in name:
        raise ArchiveError(f"member {name!r} has a NUL byte in its name")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise ArchiveError(f"member {name!r} has an absolute path")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"member {name!r} escapes the output directory with '..'")
    return "/".join(parts) or None


def _copy_capped(source: IO[bytes], target: Path, name: str, limit: int) -> None:
    written = 0
    with open(target, "xb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > limit:
                raise ArchiveError(f"member {name!r} is larger than {limit // (1024 * 1024)} MB")
            out.write(chunk)


def _members(archive: str) -> Iterator[tuple[str, str, int, int, IO[bytes] | None]]:
    """(name, kind, size, mode, opener) for every member; kind is 'dir' or 'file'."""
    if archive.endswith((".tar.gz", ".tgz")):
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    if member.issym() or member.islnk():
                        raise ArchiveError(f"member {member.name!r} is a link "
                                           f"(to {member.linkname!r}); links are not installed")
                    if member.isdir():
                        yield member.name, "dir", 0, member.mode, None
                    elif member.isfile():
                        yield member.name, "file", member.size, member.mode, tar.extractfile(member)
                    else:
                        raise ArchiveError(f"member {member.name!r} is not a regular file "
                                           "(device, FIFO...)")
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise ArchiveError(f"not a readable .tar.gz archive: {e}") from None
    elif archive.endswith(".zip"):
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    mode = (info.external_attr >> 16) & 0xFFFF
                    if stat.S_ISLNK(mode):
                        raise ArchiveError(f"member {info.filename!r} is a link; "
                                           "links are not installed")
                    if info.is_dir():
                        yield info.filename, "dir", 0, mode, None
                    else:
                        with zf.open(info) as source:
                            yield info.filename, "file", info.file_size, mode, source
        except (zipfile.BadZipFile, OSError, zlib.error) as e:
            raise ArchiveError(f"not a readable .zip archive: {e}") from None
    else:
        raise ArchiveError("unsupported archive type (expected .tar.gz, .tgz or .zip)")


def check_archive(archive: str, limit: int = MAX_FILE_BYTES) -> list[str]:
    """
    Validate every member's name, type and declared size without writing.

    @return: the relative paths of the regular files.
    @raise ArchiveError: on the first unsafe member.
    """
    files = []
    for name, kind, size, _mode, _source in _members(archive):
        relative = _safe_name(name)
        if kind == "file":
            if relative is None:
                raise ArchiveError(f"member {name!r} has no file name")
            if size > limit:
                raise ArchiveError(f"member {name!r} is larger than {limit // (1024 * 1024)} MB")
            files.append(relative)
    if not files:
        raise ArchiveError("the archive holds no files")
    if len(set(files)) != len(files):
        raise ArchiveError("the archive holds the same file twice")
    return files


def extract(archive: str, destination: str | os.PathLike[str],
            limit: int = MAX_FILE_BYTES) -> list[Path]:
    """
    Extract C{archive} into the new directory C{destination}: all of it or nothing.

    Members are written into a staging directory next to C{destination}, which is
    renamed into place at the end; on any problem the staging directory is removed.
    Permissions keep only the owner/group/other rwx bits.

    @return: the extracted files.
    @raise ArchiveError: unsafe or unreadable archive.
    @raise FileExistsError: C{destination} exists.
    """
    check_archive(archive, limit)
    target = Path(destination)
    if target.exists():
        raise FileExistsError(str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    written: list[Path] = []
    try:
        root = staging.resolve()
        for name, kind, _size, mode, source in _members(archive):
            relative = _safe_name(name)
            if relative is None:
                continue
            path = staging / relative
            # Defence in depth: nothing may resolve outside the staging directory.
            if root not in path.resolve().parents:
                raise ArchiveError(f"member {name!r} escapes the output directory")
            if kind == "dir":
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            assert source is not None
            try:
                _copy_capped(source, path, name, limit)
            except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
                raise ArchiveError(f"member {name!r} is corrupt: {e}") from None
            path.chmod((mode & 0o777 or 0o644) & 0o755)
            written.append(Path(posixpath.join(str(target), relative)))
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written
