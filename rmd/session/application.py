"""``rmd application start --jar ... [--class ...]``: the job's jar, checked before anything
is created.

The JobManager runs the jar with Flink's ``--jars <uri>``. The image needs a ``local://`` URI
naming a file inside the image (``local:///opt/flink/usrlib/job.jar``, as Flink's native
application mode); a plain path is taken as ``local://<absolute path>``, which only pods that
see this machine's files can read (the local cluster, whose node emulator runs pods as local
processes). A file that is on this machine is checked: a jar, holding ``--class`` or naming
a main class in its manifest. A ``local://`` URI to a file not on this machine is in the
image and cannot be checked here.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from rmd.session.manifests import ApplicationProgram

__all__ = ["ApplicationError", "application_program", "manifest_main_class"]

LOCAL_SCHEME = "local"
_JAVA_CLASS = re.compile(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*")
# Flink's PackagedProgram reads program-class first, then Main-Class.
_MAIN_CLASS_ATTRIBUTES = ("program-class", "Main-Class")


class ApplicationError(ValueError):
    """Bad ``--jar``/``--class``: one line naming the option and the fix."""


def application_program(
    jar: str, *, main_class: str | None, arguments: Sequence[str], cwd: Path | None = None
) -> tuple[ApplicationProgram, str | None]:
    """The checked program, and a note to print when the jar could not be checked here."""
    if main_class is not None and not _JAVA_CLASS.fullmatch(main_class):
        raise ApplicationError(
            f"--class: {main_class!r} is no Java class name; give it with its package, "
            "e.g. com.example.MyJob"
        )
    path, uri = _jar_location(jar, cwd=cwd or Path.cwd())
    note = None
    if path.is_file():
        _check_jar(path, main_class=main_class, given=jar)
    elif jar.startswith(f"{LOCAL_SCHEME}:"):
        note = f"{uri} is not on this machine: not checked; it must be in the image"
    else:
        raise ApplicationError(
            f"--jar: no file {jar} ({path}); give the path of the job's jar, or a "
            f"{LOCAL_SCHEME}:// URI of a jar in the image"
        )
    return ApplicationProgram(jar_uri=uri, main_class=main_class, arguments=tuple(arguments)), note


def _jar_location(jar: str, *, cwd: Path) -> tuple[Path, str]:
    """(the file on this machine, the URI the JobManager gets)."""
    if not jar.strip():
        raise ApplicationError("--jar: empty; give the path of the job's jar")
    parts = urlsplit(jar)
    if parts.scheme == LOCAL_SCHEME:
        if parts.netloc or not parts.path.startswith("/"):
            raise ApplicationError(
                f"--jar: {jar!r} is no {LOCAL_SCHEME}:// URI of an absolute path; write "
                f"{LOCAL_SCHEME}:///path/in/the/image/job.jar (three slashes)"
            )
        return Path(parts.path), jar
    if parts.scheme and len(parts.scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise ApplicationError(
            f"--jar: the scheme {parts.scheme}:// is not supported; give a path, or a "
            f"{LOCAL_SCHEME}:// URI of a jar in the image (e.g. "
            f"{LOCAL_SCHEME}:///opt/flink/usrlib/job.jar)"
        )
    path = (cwd / jar).resolve()
    return path, f"{LOCAL_SCHEME}://{path}"


def _check_jar(path: Path, *, main_class: str | None, given: str) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            manifest = (
                archive.read("META-INF/MANIFEST.MF").decode("utf-8", errors="replace")
                if "META-INF/MANIFEST.MF" in names
                else ""
            )
    except (zipfile.BadZipFile, OSError) as error:
        raise ApplicationError(
            f"--jar: {given} is not a jar file ({error}); give the job's jar"
        ) from None
    if main_class is not None:
        entry = main_class.replace(".", "/") + ".class"
        if entry not in names:
            raise ApplicationError(
                f"--class: the jar {given} holds no class {main_class} (no {entry}); check "
                "the name, package included"
            )
        return
    if manifest_main_class(manifest) is None:
        raise ApplicationError(
            f"--jar: {given} names no main class in its manifest (Main-Class); give the "
            "class to run with --class"
        )


def manifest_main_class(manifest: str) -> str | None:
    """The main class a jar manifest names (``program-class`` first, as Flink reads it)."""
    attributes: dict[str, str] = {}
    last = ""
    for line in manifest.splitlines():
        if line.startswith(" ") and last:  # a continuation line
            attributes[last] += line[1:]
        elif ":" in line:
            key, value = line.split(":", 1)
            last = key.strip()
            attributes[last] = value.strip()
    for attribute in _MAIN_CLASS_ATTRIBUTES:
        if attributes.get(attribute):
            return attributes[attribute]
    return None
