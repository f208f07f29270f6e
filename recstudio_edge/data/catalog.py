"""Catalogue of downloadable datasets and the download / verify / unpack step.

:func:`ensure_dataset` returns the folder ``data_dir/<name>/`` holding a
dataset's files.  Files already there (raw GroupLens files or RecBole atomic
files) are used as they are; otherwise the dataset's zip is downloaded,
checked against its sha256, unpacked into a temporary folder next to the
target and renamed into place, so an interrupted run never leaves a half
written dataset folder.

MovieLens may not be redistributed: nothing here ships data, it only fetches
the official GroupLens archives.
"""

from __future__ import annotations

import difflib
import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from .errors import DataError

__all__ = ["DatasetInfo", "CATALOG", "ensure_dataset", "has_local_files", "local_files_hint"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60
# what a download may write before its checksum is known, and what its zip may unpack to: a
# server that sends more (or a zip bomb) is stopped there, not when the disk is full
MAX_DOWNLOAD_BYTES = 2 << 30
MAX_UNPACKED_BYTES = 8 << 30
MAX_MEMBERS = 10_000
UNVERIFIED = "unverified"  # data.sha256: unverified downloads a custom data.url without a checksum


@dataclass(frozen=True)
class DatasetInfo:
    """One downloadable dataset.

    Attributes:
        name: catalogue key and folder name under the data dir.
        url: the official archive.
        sha256: hex digest of the archive.
        archive_root: folder inside the zip that holds the files.
        raw_files: the files of the raw release that the readers use.
        source: a human readable name for error messages.
    """

    name: str
    url: str
    sha256: str
    archive_root: str
    raw_files: tuple[str, ...]
    source: str


# sha256 values: TensorFlow Datasets `tensorflow_datasets/url_checksums/movielens.txt`
# (which also records the sizes, 4924029 and 5917549 bytes), cross-checked with
# tensorflow/examples `lite/examples/recommendation/ml/data/example_generation_movielens.py`
# (ml-1m) and several independent download scripts (ml-100k).
CATALOG: dict[str, DatasetInfo] = {
    "ml-100k": DatasetInfo(
        name="ml-100k",
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        archive_root="ml-100k",
        raw_files=("u.data", "u.user", "u.item"),
        source="GroupLens ml-100k",
    ),
    "ml-1m": DatasetInfo(
        name="ml-1m",
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        archive_root="ml-1m",
        raw_files=("ratings.dat", "users.dat", "movies.dat"),
        source="GroupLens ml-1m",
    ),
}

# A folder counts as "already there" when it holds one of these files.
_MARKER_FILES = ("ratings.dat", "u.data")


def has_local_files(folder, name: str, spec: Mapping[str, Any] | None = None) -> bool:
    """True when ``folder`` already holds usable files for dataset ``name``.

    That is ``<name>.inter`` (RecBole atomic), ``ratings.dat`` / ``u.data``
    (GroupLens raw) or, for ``format: csv``, the configured inter file.
    """
    folder = Path(folder)
    candidates = [f"{name}.inter", *_MARKER_FILES]
    files = (spec or {}).get("files")
    if isinstance(files, Mapping) and files.get("inter"):
        candidates.append(str(files["inter"]))
    elif isinstance(files, str):
        candidates.append(files)
    return any((folder / c).is_file() for c in candidates)


def local_files_hint(name: str, folder: Path) -> str:
    """Say which files to put where to use ``name`` without downloading."""
    info = CATALOG.get(name)
    atomic = f"{name}.inter/.user/.item (RecBole atomic)"
    target = f"{Path(folder).resolve()}{os.sep}"
    if info is None:
        return f"put {atomic} into {target}"
    return f"put {', '.join(info.raw_files)} ({info.source}) or {atomic} into {target}"


def _unknown_dataset(name: str, folder: Path) -> DataError:
    """Error for a name with no catalogue entry, no url and no local files."""
    close = difflib.get_close_matches(name, list(CATALOG), n=3, cutoff=0.5)
    known = ", ".join(sorted(CATALOG))
    guess = f"did you mean {' or '.join(close)}? " if close else ""
    return DataError(None, None, None,
                     f"unknown dataset '{name}' and no files in {folder.resolve()}{os.sep}; "
                     f"{guess}known datasets: {known}; or set data.url, "
                     f"or {local_files_hint(name, folder)}")


def _progress_bar(total: int | None, name: str, enabled: bool):
    """A tqdm bar, or None when disabled or tqdm is missing."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a declared dependency
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"download {name}")


def _download(url: str, dest: Path, name: str, progress: bool, limit: int | None = None) -> str:
    """Stream ``url`` into ``dest``; return the sha256 hex digest. At most ``limit`` bytes
    (``MAX_DOWNLOAD_BYTES``) are written: a larger Content-Length, or a body that runs past it, is a
    ``DataError`` (and the part file is deleted by the caller).

    Network errors propagate (``URLError``, ``TimeoutError``,
    ``ConnectionError``, ``http.client.HTTPException``).
    """
    limit = MAX_DOWNLOAD_BYTES if limit is None else int(limit)
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "recstudio_edge"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response, open(dest, "wb") as out:
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise DataError(url, None, None, f"the server announces {int(length)} bytes, more than the "
                            f"{limit} a download may write before its checksum is checked; nothing was kept")
        bar = _progress_bar(int(length) if length and length.isdigit() else None, name, progress)
        written = 0
        try:
            while chunk := response.read(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise DataError(url, None, None, f"the download ran past {limit} bytes (the most written "
                                    f"before its checksum is checked); stopped, nothing was kept")
                out.write(chunk)
                digest.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    return digest.hexdigest()


def _safe_members(archive: zipfile.ZipFile, zip_path: Path) -> list[zipfile.ZipInfo]:
    """Return the members, refusing any whose path would leave the target folder."""
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise DataError(zip_path, None, None, f"the archive has {len(members)} members, more than "
                        f"{MAX_MEMBERS}; refusing to unpack")
    total = sum(info.file_size for info in members)
    if total > MAX_UNPACKED_BYTES:
        raise DataError(zip_path, None, None, f"the archive unpacks to {total} bytes, more than "
                        f"{MAX_UNPACKED_BYTES}; refusing to unpack")
    for info in members:
        p = PurePosixPath(info.filename.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]) or \
                any(not ch.isprintable() for ch in info.filename):
            raise DataError(zip_path, None, None,
                            f"unsafe archive member '{info.filename}' would escape the target folder; "
                            "refusing to unpack")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise DataError(zip_path, None, None,
                            f"archive member '{info.filename}' is a symbolic link; refusing to unpack")
    return members


def _unpack(zip_path: Path, into: Path, archive_root: str | None) -> Path:
    """Extract ``zip_path`` into ``into``; return the folder holding the files.

    ``archive_root`` names that folder inside the zip; ``None`` picks the
    single top-level folder if there is one, else the zip's root.
    """
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = _safe_members(archive, zip_path)
            root = into.resolve()
            for info in members:
                target = (root / info.filename).resolve()
                if root not in target.parents and target != root:
                    raise DataError(zip_path, None, None, f"unsafe archive member '{info.filename}' "
                                    "would escape the target folder; refusing to unpack")
            archive.extractall(into, members)
    except zipfile.BadZipFile as exc:
        raise DataError(zip_path, None, None, f"not a valid zip archive: {exc}") from None
    if archive_root is None:
        tops = [p for p in into.iterdir()]
        archive_root = tops[0].name if len(tops) == 1 and tops[0].is_dir() else ""
    src = into / archive_root if archive_root else into
    if not src.is_dir():
        found = ", ".join(sorted(p.name for p in into.iterdir())) or "nothing"
        raise DataError(zip_path, None, "archive_root",
                        f"folder '{archive_root}' not in the archive (top level holds: {found})")
    return src


def _move_into(src: Path, target: Path) -> None:
    """Move the unpacked folder ``src`` to ``target`` (a rename when possible)."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.replace(src, target)
        return
    for entry in src.iterdir():  # target holds unrelated files: move ours in beside them
        dest = target / entry.name
        if dest.is_dir():
            shutil.rmtree(dest)
        os.replace(entry, dest)


def _network_error(name: str, url: str, folder: Path, reason: Any) -> DataError:
    """The error raised when the archive cannot be fetched."""
    if isinstance(reason, urllib.error.URLError) and not isinstance(reason, urllib.error.HTTPError):
        reason = reason.reason
    return DataError(None, None, None,
                     f"cannot download {name} from {url} ({reason}); {local_files_hint(name, folder)}")


def _resolve_source(name: str, spec: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """``(url, sha256, archive_root)`` from the spec, falling back to the catalogue.

    Unset (missing or null) spec keys take the catalogue's values, but the
    catalogue checksum and root are used only with the catalogue URL: a spec
    pointing at another URL without ``sha256`` is an error (``sha256:
    unverified`` downloads it unchecked, with a warning), and without
    ``archive_root`` the zip's single top folder is used. A digest is 64 hex
    digits, as text.
    """
    info = CATALOG.get(name)
    url = spec.get("url") or (info.url if info else None)
    same = info is not None and url == info.url
    sha = spec.get("sha256")
    if sha is not None and not isinstance(sha, str):
        raise DataError(None, None, "sha256", f"data.sha256 must be the hex digest as text (quote it in "
                        f"YAML), got the {type(sha).__name__} {sha!r}")
    sha = sha or (info.sha256 if same else None)
    if sha is None and url is not None:
        raise DataError(None, None, "sha256", f"data.url {url} has no data.sha256: set the archive's sha256 "
                        f"(64 hex digits), or data.sha256: {UNVERIFIED} to download it unchecked")
    if sha is not None and sha.lower() != UNVERIFIED and \
            (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
        raise DataError(None, None, "sha256", f"data.sha256 {sha!r} is not a sha256 digest (64 hex digits)")
    root = spec.get("archive_root")
    if root is None and same:
        root = info.archive_root
    return url, (sha.lower() if sha else None), root


def ensure_dataset(name: str, data_dir, spec: Mapping[str, Any] | None = None,
                   download: bool = True, progress: bool = True) -> Path:
    """Return ``data_dir/<name>/``, downloading and unpacking the dataset if needed.

    Args:
        name: dataset name (catalogue key and folder name).
        data_dir: folder that holds one sub-folder per dataset.
        spec: the ``data:`` config section; its ``url``, ``sha256`` and
            ``archive_root`` override the catalogue.
        download: when False, never touch the network (raise instead).
        progress: show a tqdm progress bar while downloading.

    Raises:
        DataError: unknown dataset without local files (listing the closest
            known names), network failure or ``download=False`` (saying
            which files to put where), checksum mismatch (naming expected and
            got; nothing is left behind), or an unsafe / broken archive.
    """
    spec = spec or {}
    data_dir = Path(data_dir).resolve()
    target = data_dir / name
    if has_local_files(target, name, spec):
        return target
    url, sha, archive_root = _resolve_source(name, spec)
    if url is None:
        raise _unknown_dataset(name, target)
    if not download:
        raise _network_error(name, url, target, "download disabled")
    data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.download-", dir=data_dir))
    try:
        zip_path = work / f"{name}.zip.part"
        try:
            got = _download(url, zip_path, name, progress)
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            raise _network_error(name, url, target, exc) from None
        if sha == UNVERIFIED:
            logger.warning("%s: no sha256 configured, archive not verified (got %s)", name, got)
        elif got != sha:
            raise DataError(None, None, "sha256",
                            f"checksum mismatch for {name} from {url}: expected {sha}, got {got}; "
                            "the download was deleted")
        src = _unpack(zip_path, work / "unpacked", archive_root)
        if not has_local_files(src, name, spec):
            found = ", ".join(sorted(p.name for p in src.iterdir())) or "nothing"
            raise DataError(url, None, None, f"archive holds no {name} data files "
                            f"(found: {found}); {local_files_hint(name, target)}")
        if has_local_files(target, name, spec):  # another process finished first
            return target
        _move_into(src, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("%s: downloaded and unpacked into %s", name, target)
    return target
