"""Omniglot on disk: the official archives, their checksums, and the tensors the book trains on.

Omniglot (Lake, Salakhutdinov & Tenenbaum, 2015) holds 1,623 handwritten characters from 50 alphabets; every
character was drawn once by each of 20 different people ("drawers"), so each character is a class with
exactly 20 example images. Few-shot learning uses it the other way round from ordinary classification: the
*characters* are split between meta-training and meta-testing, and a test task asks to tell apart N
characters never seen in training from K drawings of each.

This module does three things, and touches the network only when asked to (``download=True`` or
:func:`download_archive`):

1. :func:`find_archive` locates one of the official zip files (:data:`ARCHIVES`) and checks its sha256.
2. :func:`load_omniglot` decodes the PNGs of one or more image archives, inverts them (ink = 1), shrinks them
   from 105×105 to ``size``×``size`` pixels, removes characters present in two archives, and caches the
   result in a ``.pt`` file so that the next call takes milliseconds.
3. :func:`load_oneshot_runs` and :func:`score_oneshot` give the 20 official one-shot runs of the paper and
   score any classifier on them exactly as the paper did.

>>> images = load_omniglot()                       # doctest: +SKIP
>>> images.images.shape                            # doctest: +SKIP
torch.Size([242, 20, 28, 28])
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from .errors import ConfigError, DataError, check_positive_int

__all__ = [
    "ArchiveInfo",
    "ARCHIVES",
    "IMAGE_ARCHIVES",
    "SMALL_ARCHIVES",
    "OFFICIAL_URL_PREFIX",
    "DATA_ENV_VAR",
    "RESAMPLE",
    "archive_info",
    "search_dirs",
    "repo_data_dir",
    "user_cache_dir",
    "verify_archive",
    "find_archive",
    "download_archive",
    "OmniglotImages",
    "load_omniglot",
    "OneShotRun",
    "OneShotScore",
    "load_oneshot_runs",
    "score_oneshot",
]

#: Where the official release keeps its archives; an archive's URL is ``f"{OFFICIAL_URL_PREFIX}/{name}"``.
OFFICIAL_URL_PREFIX = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"

#: Environment variable naming a folder that holds the archives (searched after an explicit ``data_dir``).
DATA_ENV_VAR = "METALEARN_DATA"

#: The PIL filter used to shrink the 105×105 drawings. ``BOX`` averages the source pixels that each output
#: pixel covers, so a shrunk pixel's value is exactly the fraction of its area covered by ink.
RESAMPLE = "BOX"

#: Number of drawers (people who drew every character) in Omniglot: each character has 20 images.
N_DRAWERS = 20

# Bumped whenever the preprocessing changes, so that old cache files are never reused.
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class ArchiveInfo:
    """One official Omniglot archive.

    Attributes:
        name: its file name, e.g. ``"images_background_small1.zip"``.
        sha256: the SHA-256 checksum of the official file (what :func:`verify_archive` checks).
        size: its size in bytes (checked first: a file of the wrong size is rejected without hashing).
        contents: what it holds, in words.
        md5: torchvision's MD5 of the file where torchvision lists it (kept for reference, not checked).
    """

    name: str
    sha256: str
    size: int
    contents: str
    md5: str | None = None

    @property
    def url(self) -> str:
        """The official download address."""
        return f"{OFFICIAL_URL_PREFIX}/{self.name}"

    @property
    def holds_images(self) -> bool:
        """True for the image sets (``<set>/<Alphabet>/characterNN/*.png``), False for ``all_runs.zip``."""
        return self.name.startswith("images_")


#: Every archive the loader accepts, by file name. The sha256 and sizes of the three small archives are those
#: of data/omniglot/README.md (measured on the official files). For the two full sets, torchvision stores only
#: an MD5 (``torchvision.datasets.Omniglot.zips_md5``, kept below as ``md5``); their sha256 and sizes come from
#: TensorFlow Datasets' record of the same official URLs (``tensorflow_datasets/url_checksums/omniglot.txt``),
#: whose entries for the two small archives agree with our own measurements.
ARCHIVES: dict[str, ArchiveInfo] = {a.name: a for a in (
    ArchiveInfo("images_background_small1.zip",
                "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4", 1_319_022,
                "5 background alphabets (Balinese, Early_Aramaic, Greek, Korean, Latin): 136 characters x 20"),
    ArchiveInfo("images_background_small2.zip",
                "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f", 1_580_917,
                "5 background alphabets (Greek, Japanese_(katakana), Latin, Sanskrit, Tagalog): 156 characters x 20"),
    ArchiveInfo("all_runs.zip",
                "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325", 352_787,
                "the 20 official 20-way one-shot classification runs (evaluation alphabets)"),
    ArchiveInfo("images_background.zip",
                "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640", 9_464_212,
                "the full background set: 30 alphabets, 964 characters x 20",
                md5="68d2efa1b9178cc56df9314c21c6e718"),
    ArchiveInfo("images_evaluation.zip",
                "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee", 6_462_886,
                "the full evaluation set: 20 alphabets, 659 characters x 20",
                md5="6b91aef0f799c5bb55b94e3f2daec811"),
)}

#: The archives that hold character images (everything but ``all_runs.zip``).
IMAGE_ARCHIVES = tuple(name for name, a in ARCHIVES.items() if a.holds_images)

#: The two minimal background sets shipped with the book (242 distinct characters from 8 alphabets).
SMALL_ARCHIVES = ("images_background_small1.zip", "images_background_small2.zip")


def archive_info(name: str) -> ArchiveInfo:
    """The :class:`ArchiveInfo` of ``name``; a :class:`~metalearn_core.errors.ConfigError` if it is not official."""
    if not isinstance(name, str) or name not in ARCHIVES:
        raise ConfigError(f"unknown Omniglot archive {name!r}: choose one of {', '.join(ARCHIVES)}")
    return ARCHIVES[name]


# ---- where archives are looked for ---------------------------------------------------------------------------

def repo_data_dir() -> Path | None:
    """The repository's ``data/omniglot`` folder, or ``None`` when the package is not inside the repository.

    The repository root is the parent of the package folder when a ``_toc.yml`` (the book's table of
    contents) sits there; an installed copy of the package has no such parent.
    """
    root = Path(__file__).resolve().parent.parent
    return root / "data" / "omniglot" if (root / "_toc.yml").is_file() else None


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/metalearn``, or ``~/.cache/metalearn`` when ``XDG_CACHE_HOME`` is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "metalearn"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders :func:`find_archive` looks in, in order (the first folder holding the archive wins).

    1. ``data_dir`` and ``data_dir/omniglot``, when ``data_dir`` is given;
    2. ``$METALEARN_DATA`` and ``$METALEARN_DATA/omniglot``, when that variable is set;
    3. the repository's ``data/omniglot`` (see :func:`repo_data_dir`);
    4. the user cache (see :func:`user_cache_dir`) and its ``omniglot`` subfolder, where downloads go.

    A folder reached twice (e.g. ``$METALEARN_DATA`` pointing at the repository's folder) is listed once.
    """
    roots: list[Path] = []
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        roots += [d, d / "omniglot"]
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        d = Path(env).expanduser()
        roots += [d, d / "omniglot"]
    repo = repo_data_dir()
    if repo is not None:
        roots.append(repo)
    cache = user_cache_dir()
    roots += [cache, cache / "omniglot"]
    out, seen = [], set()
    for d in roots:
        key = os.path.normcase(os.path.abspath(d))
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


# ---- checksums -----------------------------------------------------------------------------------------------

# Files already verified in this process, keyed by (absolute path, size, modification time in ns): a file that
# has not changed since it was hashed is not hashed again.
_VERIFIED: set[tuple[str, int, int]] = set()


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_archive(path: str | os.PathLike, name: str | None = None) -> Path:
    """Check that the file at ``path`` is the official archive ``name`` (default: the file's own name).

    The size is compared first, then the sha256, then that the file opens as a zip. A file that passed and has
    not changed since (same size and modification time) is not hashed again in this process.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: the file has the wrong size or checksum, or is not a zip; the message names the file and
            the expected sha256.
    """
    path = Path(path)
    info = archive_info(path.name if name is None else name)
    key = _stat_key(path)
    if key in _VERIFIED:
        return path
    fix = f"delete it and download {info.name} again from {info.url}"
    if key[1] != info.size:
        raise DataError(f"{path} is not the official {info.name}: it has {key[1]} bytes instead of {info.size} "
                        f"(expected sha256 {info.sha256}); {fix}")
    digest = _sha256(path)
    if digest != info.sha256:
        raise DataError(f"{path} is corrupt or not the official {info.name}: its sha256 is {digest}, expected "
                        f"{info.sha256}; {fix}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a zip file (expected the official {info.name}, sha256 {info.sha256}); {fix}")
    _VERIFIED.add(key)
    return path


def find_archive(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = False) -> Path:
    """The path of the official archive ``name``, verified by its sha256.

    Looks in the folders of :func:`search_dirs` in order and returns the first file called ``name``; that file
    must pass :func:`verify_archive` (a corrupt file is reported, never skipped in favour of a later one).

    Args:
        name: one of :data:`ARCHIVES`, e.g. ``"images_background_small1.zip"``.
        data_dir: a folder to search before all others.
        download: when the archive is found nowhere, download it from the official release into ``data_dir``
            (or into the user cache's ``omniglot`` folder when ``data_dir`` is not given). Needs internet.

    Raises:
        ConfigError: ``name`` is not an official archive.
        DataError: the archive is missing (the message lists every folder searched and where to get it), or
            the file found is corrupt.
    """
    info = archive_info(name)
    dirs = search_dirs(data_dir)
    for d in dirs:
        candidate = d / info.name
        if candidate.is_file():
            return verify_archive(candidate, info.name)
    if download:
        dest = Path(data_dir).expanduser() if data_dir is not None else user_cache_dir() / "omniglot"
        return download_archive(info.name, dest)
    searched = ", ".join(str(d) + ("" if d.is_dir() else " (no such folder)") for d in dirs)
    raise DataError(f"Omniglot archive {info.name} was not found; searched: {searched}; download it from "
                    f"{info.url} into one of these folders (or set ${DATA_ENV_VAR} to the folder holding it), "
                    f"or pass download=True on a machine with internet access")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def download_archive(name: str, dest_dir: str | os.PathLike, url: str | None = None, *,
                     timeout: float = 60.0) -> Path:
    """Download the official archive ``name`` into ``dest_dir`` and return its path.

    The file is fetched with :mod:`urllib` into a temporary file in ``dest_dir``, its sha256 is checked, and
    only then is it renamed to ``dest_dir/name``: an interrupted or wrong download never leaves a file that
    looks like the archive.

    Args:
        name: one of :data:`ARCHIVES`.
        dest_dir: the folder to put it in (created if needed).
        url: where to fetch it from (default: the official release, :attr:`ArchiveInfo.url`); any URL urllib
            opens works, including ``file://`` URLs to a local copy.
        timeout: seconds to wait for the server.

    Raises:
        DataError: the download failed, or what arrived is not the official archive (wrong sha256).
    """
    info = archive_info(name)
    dest = Path(dest_dir).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    url = info.url if url is None else str(url)
    fd, tmp = tempfile.mkstemp(prefix=f".{info.name}.", suffix=".part", dir=dest)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                h.update(chunk)
        if h.hexdigest() != info.sha256:
            raise DataError(f"the file downloaded from {url} is not the official {info.name}: its sha256 is "
                            f"{h.hexdigest()}, expected {info.sha256}; nothing was saved, check the URL")
        target = dest / info.name
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; give it ordinary permissions
        os.replace(tmp, target)
    except DataError:
        raise
    except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors; a malformed URL is a ValueError
        reason = getattr(e, "reason", None) or e
        raise DataError(f"could not download {info.name} from {url} ({reason}); check the URL and the network, "
                        f"or download {info.url} by hand into {dest}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _VERIFIED.add(_stat_key(target))
    return target


# ---- image preprocessing ---------------------------------------------------------------------------------------

def _decode(png: bytes, size: int) -> np.ndarray:
    """One drawing as a ``[size, size]`` uint8 array with ink = 255 and background = 0.

    Omniglot PNGs are 1-bit images, white background (1) and black strokes (0); they are converted to 8-bit
    grey, inverted so that the strokes are bright, then shrunk with :data:`RESAMPLE`.
    """
    with Image.open(io.BytesIO(png)) as im:
        grey = im.convert("L")
    ink = Image.fromarray(255 - np.asarray(grey, dtype=np.uint8))
    if ink.size != (size, size):
        ink = ink.resize((size, size), getattr(Image.Resampling, RESAMPLE))
    return np.asarray(ink, dtype=np.uint8)


def _drawer_key(filename: str):
    """Sort key of ``<id>_<drawer>.png`` files: by drawer number (then by name)."""
    m = re.search(r"_(\d+)\.png$", filename)
    return (int(m.group(1)) if m else 0, filename)


def _characters_in(zf: zipfile.ZipFile, archive: str) -> dict[tuple[str, str], list[str]]:
    """``{(alphabet, character): [member names sorted by drawer]}`` of an image archive."""
    chars: dict[tuple[str, str], list[str]] = {}
    for member in zf.namelist():
        parts = member.split("/")
        if not member.lower().endswith(".png") or parts[0].startswith("__MACOSX"):
            continue
        if len(parts) != 4:
            raise DataError(f"{archive} holds {member}, not laid out as <set>/<Alphabet>/characterNN/<file>.png; "
                            f"use an official Omniglot image archive")
        chars.setdefault((parts[1], parts[2]), []).append(member)
    for (alphabet, character), members in chars.items():
        if len(members) != N_DRAWERS:
            raise DataError(f"{archive} holds {len(members)} drawings of {alphabet}/{character} instead of "
                            f"{N_DRAWERS}; use an official Omniglot image archive")
        members.sort(key=lambda m: _drawer_key(m.rsplit("/", 1)[1]))
    return dict(sorted(chars.items()))


@dataclass
class OmniglotImages:
    """Omniglot characters as one tensor, plus who is who.

    Attributes:
        images: ``[n_characters, 20, size, size]`` uint8, one row per character and one column per drawer;
            **255 is ink and 0 is background** (the PNGs are inverted), so ``images.float() / 255`` (or
            :meth:`as_float`) gives strokes 1.0 on a 0.0 background.
        alphabets: the alphabet of each character, e.g. ``"Greek"``.
        characters: each character's name ``"<Alphabet>/characterNN"``, e.g. ``"Greek/character01"``.
        archives: the archive each character was read from (the first of the archives that hold it).
        size: side of the square images in pixels.
        resample: the PIL filter that shrank them from 105×105 (:data:`RESAMPLE`).
    """

    images: torch.Tensor
    alphabets: list[str]
    characters: list[str]
    archives: list[str]
    size: int
    resample: str = RESAMPLE

    def __post_init__(self):
        n = self.images.shape[0]
        if self.images.dim() != 4 or tuple(self.images.shape[2:]) != (self.size, self.size):
            raise ConfigError(f"OmniglotImages.images must be [n_characters, drawers, {self.size}, {self.size}], "
                              f"got {list(self.images.shape)}")
        for label in ("alphabets", "characters", "archives"):
            if len(getattr(self, label)) != n:
                raise ConfigError(f"OmniglotImages.{label} names {len(getattr(self, label))} characters but "
                                  f"images holds {n}; give one entry per character")

    @property
    def n_characters(self) -> int:
        return self.images.shape[0]

    @property
    def n_drawers(self) -> int:
        """Drawings per character (20 in Omniglot)."""
        return self.images.shape[1]

    def __len__(self) -> int:
        return self.n_characters

    def alphabet_names(self) -> list[str]:
        """The distinct alphabets, sorted by name."""
        return sorted(set(self.alphabets))

    def as_float(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``images`` scaled to [0, 1] (ink 1.0, background 0.0)."""
        return self.images.to(dtype) / 255

    def __repr__(self) -> str:
        return (f"OmniglotImages({self.n_characters} characters x {self.n_drawers} drawers, "
                f"{len(self.alphabet_names())} alphabets, {self.size}x{self.size}, resample={self.resample})")


def _cache_key(archives: Sequence[str], size: int) -> str:
    text = "|".join([f"format={_CACHE_FORMAT}", f"size={size}", f"resample={RESAMPLE}"]
                    + [f"{a}:{ARCHIVES[a].sha256}" for a in archives])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_cache(path: Path, key: str) -> dict | None:
    """The cached dict at ``path`` if it is readable and was made with ``key``; else None (rebuild)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True)
    except Exception:  # a truncated or foreign file is simply rebuilt
        return None
    if not isinstance(blob, dict) or blob.get("key") != key:
        return None
    return blob


def _write_cache(path: Path, blob: dict) -> None:
    """Save atomically (temporary file, then rename); a read-only cache folder only costs a warning."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        try:
            torch.save(blob, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        warnings.warn(f"could not write the Omniglot cache {path} ({e}); the images will be decoded again next "
                      f"time", stacklevel=3)


def _check_size(size) -> int:
    return check_positive_int("size", size, hint="the side in pixels of the shrunk images, e.g. 28")


def load_omniglot(archives: str | Iterable[str] = SMALL_ARCHIVES, size: int = 28,
                  data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None, *,
                  download: bool = False) -> OmniglotImages:
    """Load Omniglot image archives as one :class:`OmniglotImages`, shrunk to ``size``×``size``.

    Each archive is found and verified with :func:`find_archive`. Every 105×105 drawing is inverted (ink = 255,
    background = 0) and shrunk with PIL's ``BOX`` filter (:data:`RESAMPLE`; ``size=105`` keeps the originals).
    Characters are ordered by archive, then alphabet, then character name. A character that appears in an
    earlier archive under the same ``<Alphabet>/characterNN`` name is skipped when its 20 PNG files are
    byte-identical (Greek and Latin are in both small sets: their union is 242 characters, not 292).

    The result is cached in ``cache_dir`` (default: :func:`user_cache_dir`\\ ``/preprocessed``) as a ``.pt``
    file named after the archives' checksums and ``size``; later calls load it with
    ``torch.load(weights_only=True)`` in a few milliseconds.

    Args:
        archives: one name or several from :data:`IMAGE_ARCHIVES`; default the two small background sets.
        size: side of the output images in pixels (28 in the MAML paper).
        data_dir: a folder to search for the archives first (see :func:`search_dirs`).
        cache_dir: where to keep the preprocessed tensor.
        download: fetch missing archives from the official release (needs internet).

    Raises:
        ConfigError: an unknown or non-image archive name, no archive, or a bad ``size``.
        DataError: an archive is missing or corrupt, or two archives disagree about a character.
    """
    names = [archives] if isinstance(archives, str) else list(archives)
    if not names:
        raise ConfigError("load_omniglot needs at least one archive, e.g. archives=('images_background_small1.zip',)")
    for name in names:
        if not archive_info(name).holds_images:
            raise ConfigError(f"{name} holds no character images: choose archives among {', '.join(IMAGE_ARCHIVES)} "
                              f"(the one-shot runs are read by load_oneshot_runs)")
    if len(set(names)) != len(names):
        raise ConfigError(f"archives lists the same archive twice ({names}); name each archive once")
    size = _check_size(size)
    paths = [find_archive(name, data_dir, download=download) for name in names]

    key = _cache_key(names, size)
    cache_path = (Path(cache_dir).expanduser() if cache_dir is not None
                  else user_cache_dir() / "preprocessed") / f"omniglot_{key}_{size}px.pt"
    blob = _read_cache(cache_path, key)
    if blob is None:
        blob = _preprocess(names, paths, size)
        blob["key"] = key
        _write_cache(cache_path, blob)
    return OmniglotImages(images=blob["images"], alphabets=list(blob["alphabets"]),
                          characters=list(blob["characters"]), archives=list(blob["archives"]),
                          size=int(blob["size"]), resample=str(blob["resample"]))


def _preprocess(names: Sequence[str], paths: Sequence[Path], size: int) -> dict:
    """Decode, invert, shrink and de-duplicate the characters of the given archives."""
    seen: dict[str, tuple[str, str]] = {}      # "Alphabet/characterNN" -> (archive, digest of its 20 files)
    arrays, alphabets, characters, origin = [], [], [], []
    for name, path in zip(names, paths):
        with zipfile.ZipFile(path) as zf:
            for (alphabet, character), members in _characters_in(zf, name).items():
                pngs = [zf.read(m) for m in members]
                digest = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in pngs)).hexdigest()
                label = f"{alphabet}/{character}"
                if label in seen:
                    first, first_digest = seen[label]
                    if first_digest != digest:
                        raise DataError(f"{first} and {name} both hold {label} but with different drawings; "
                                        f"load these archives separately")
                    continue
                seen[label] = (name, digest)
                arrays.append(np.stack([_decode(p, size) for p in pngs]))
                alphabets.append(alphabet)
                characters.append(label)
                origin.append(name)
    if not arrays:
        raise DataError(f"no character images found in {', '.join(names)}; use official Omniglot image archives")
    return {"format": _CACHE_FORMAT, "images": torch.from_numpy(np.stack(arrays)), "alphabets": alphabets,
            "characters": characters, "archives": origin, "size": size, "resample": RESAMPLE}


# ---- the 20 one-shot runs ---------------------------------------------------------------------------------------

@dataclass
class OneShotRun:
    """One official 20-way one-shot run: 20 training images (one per class) and 20 test images.

    Attributes:
        name: ``"run01"`` … ``"run20"``.
        train: ``[20, 1, size, size]`` float in [0, 1], ink 1: ``train[j]`` is ``runNN/training/class{j+1}.png``.
        test: ``[20, 1, size, size]`` float: ``test[i]`` is ``runNN/test/item{i+1}.png``.
        answers: ``[20]`` long: ``answers[i]`` is the index of the training image of the same character as
            test item ``i`` (from ``class_labels.txt``).
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    answers: torch.Tensor


@dataclass
class OneShotScore:
    """What :func:`score_oneshot` measured.

    Attributes:
        run_errors: error rate (fraction of wrong picks, 0..1) of each run.
        mean_error: their mean, the number the paper reports (as a percentage).
        predictions: the predicted training index of every test item, one ``[n_test]`` tensor per run.
    """

    run_errors: list[float]
    mean_error: float
    predictions: list[torch.Tensor] = field(default_factory=list)

    @property
    def error_percent(self) -> float:
        """``mean_error`` in percent (Lake et al. report e.g. 3.3% for people, 4.5% for BPL)."""
        return 100.0 * self.mean_error

    def __repr__(self) -> str:
        return f"OneShotScore(mean error {self.error_percent:.1f}% over {len(self.run_errors)} runs)"


def _index_by_number(names: Iterable[str], stem: str, where: str) -> dict[str, int]:
    """``{member: number-1}`` for members named ``.../<stem>NN.png``."""
    out = {}
    for m in names:
        match = re.fullmatch(rf"{stem}(\d+)\.png", m.rsplit("/", 1)[1])
        if match is None:
            raise DataError(f"{where} holds {m}, not named {stem}NN.png; use the official all_runs.zip")
        out[m] = int(match.group(1)) - 1
    if sorted(out.values()) != list(range(len(out))):
        raise DataError(f"{where} holds {stem}NN.png files that are not numbered 01..{len(out):02d}; "
                        f"use the official all_runs.zip")
    return out


def load_oneshot_runs(data_dir: str | os.PathLike | None = None, size: int = 28, *,
                      download: bool = False) -> list[OneShotRun]:
    """The 20 official one-shot runs of ``all_runs.zip`` as :class:`OneShotRun` objects, images ``size``×``size``.

    Inside the archive, run ``NN`` is the folder ``runNN/`` with ``training/class01.png`` … ``class20.png``,
    ``test/item01.png`` … ``item20.png`` and ``class_labels.txt``, whose 20 lines read
    ``runNN/test/itemII.png runNN/training/classJJ.png``: test item II shows the same character as training
    image JJ. Images are preprocessed exactly as in :func:`load_omniglot` (inverted, ``BOX``-shrunk).

    Raises:
        DataError: ``all_runs.zip`` is missing or corrupt, or its answer files are inconsistent.
    """
    size = _check_size(size)
    path = find_archive("all_runs.zip", data_dir, download=download)
    runs: list[OneShotRun] = []
    with zipfile.ZipFile(path) as zf:
        members = zf.namelist()
        run_names = sorted({m.split("/")[0] for m in members if re.fullmatch(r"run\d+", m.split("/")[0])})
        for run in run_names:
            train_idx = _index_by_number([m for m in members if m.startswith(f"{run}/training/")
                                          and m.endswith(".png")], "class", f"{path}:{run}/training")
            test_idx = _index_by_number([m for m in members if m.startswith(f"{run}/test/")
                                         and m.endswith(".png")], "item", f"{path}:{run}/test")
            answers = torch.full((len(test_idx),), -1, dtype=torch.long)
            for line in zf.read(f"{run}/class_labels.txt").decode().splitlines():
                if not line.strip():
                    continue
                fields = line.split()
                if len(fields) != 2 or fields[0] not in test_idx or fields[1] not in train_idx:
                    raise DataError(f"{path}:{run}/class_labels.txt has the line {line!r}, which does not pair a "
                                    f"test item of {run} with a training image; use the official all_runs.zip")
                answers[test_idx[fields[0]]] = train_idx[fields[1]]
            if (answers < 0).any():
                raise DataError(f"{path}:{run}/class_labels.txt gives no answer for some test items; use the "
                                f"official all_runs.zip")

            def stack(index: dict[str, int]) -> torch.Tensor:
                ordered = sorted(index, key=index.get)
                arr = np.stack([_decode(zf.read(m), size) for m in ordered])
                return torch.from_numpy(arr).float().div_(255).unsqueeze(1)

            runs.append(OneShotRun(run, stack(train_idx), stack(test_idx), answers))
    if not runs:
        raise DataError(f"{path} holds no runNN/ folders; use the official all_runs.zip")
    return runs


def score_oneshot(runs: Sequence[OneShotRun], predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                  ) -> OneShotScore:
    """Score a one-shot classifier on the runs, as in Lake et al. (2015).

    For each run, ``predict(run.train, run.test)`` must return one training-image index per test item (a
    ``[n_test]`` integer tensor with values in ``0..n_train-1``, e.g. the nearest training image). A pick is
    correct when it equals ``run.answers``; a run's error rate is its share of wrong picks, and the reported
    error is the mean over runs.

    Raises:
        ConfigError: no runs, or ``predict`` returned something other than ``n_test`` valid indices.
    """
    runs = list(runs)
    if not runs:
        raise ConfigError("score_oneshot needs at least one run: pass the list returned by load_oneshot_runs()")
    errors, predictions = [], []
    for run in runs:
        n_train, n_test = run.train.shape[0], run.test.shape[0]
        with torch.no_grad():
            pred = torch.as_tensor(predict(run.train, run.test))
        wanted = (f"predict must return one training-image index per test item, a [{n_test}] integer tensor "
                  f"with values in 0..{n_train - 1}")
        if pred.is_floating_point() or pred.is_complex() or pred.dtype == torch.bool:
            raise ConfigError(f"{wanted}, but for {run.name} it returned dtype {pred.dtype} (use .argmin/.argmax)")
        if tuple(pred.shape) != (n_test,):
            raise ConfigError(f"{wanted}, but for {run.name} it returned shape {list(pred.shape)}")
        if pred.numel() and (pred.min() < 0 or pred.max() >= n_train):
            raise ConfigError(f"{wanted}, but for {run.name} it returned values from {int(pred.min())} to "
                              f"{int(pred.max())}")
        pred = pred.long().cpu()
        predictions.append(pred)
        errors.append(float((pred != run.answers.cpu()).float().mean()))
    return OneShotScore(run_errors=errors, mean_error=float(np.mean(errors)), predictions=predictions)
