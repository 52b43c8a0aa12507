"""Find, verify, download and load model weights.

Official checkpoints are BasicSR dicts (``{'params_ema': state_dict, 'params': ...}``), sometimes
wrapped differently by other tools (``state_dict``, ``model``, ``module.`` prefixes). Everything
is loaded without executing pickled code (``torch.load(weights_only=True)``) or from
``.safetensors``. Nothing here touches the network except :func:`download` and :func:`download_auxiliary`.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from restorer.errors import CheckpointError, WeightsNotFoundError
from restorer.zoo import ZooEntry

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
# "icnn": the public RRFormer / ERRNet checkpoints
CONTAINER_KEYS = ("params_ema", "params", "state_dict", "model", "net_g", "generator", "icnn")
BUNDLED_WEIGHTS_DIR = Path(__file__).resolve().parent / "bundled"
"""The weights this project trained and ships inside the package (package data: wheels carry them)."""
PROJECT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
"""A clone's weights/ folder, where official checkpoints go (absent in an installed wheel)."""


def user_weights_dir() -> Path:
    """Where downloads go outside a clone: ``$XDG_CACHE_HOME/restorer/weights`` (``~/.cache/...``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "restorer" / "weights"


def default_download_dir() -> Path:
    """The clone's weights/ when running from a clone, else :func:`user_weights_dir`."""
    return PROJECT_WEIGHTS_DIR if PROJECT_WEIGHTS_DIR.is_dir() else user_weights_dir()


def weight_dirs() -> list[Path]:
    """Folders searched for weight files, first match wins: $RESTORER_WEIGHTS_DIR, ./weights, the
    clone's weights/, the user cache (downloads outside a clone), then the shipped files."""
    dirs: list[Path] = []
    env = os.environ.get("RESTORER_WEIGHTS_DIR")
    if env:
        dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    dirs += [Path.cwd() / "weights", PROJECT_WEIGHTS_DIR, user_weights_dir(), BUNDLED_WEIGHTS_DIR]
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def _candidate_names(entry: ZooEntry) -> list[str]:
    stem = Path(entry.weight_file).stem
    return [entry.weight_file] + [stem + s for s in WEIGHT_SUFFIXES if stem + s != entry.weight_file]


def find_weights(entry: ZooEntry) -> Path | None:
    """The first weight file for ``entry`` found in :func:`weight_dirs` (any accepted suffix)."""
    for folder in weight_dirs():
        for name in _candidate_names(entry):
            path = folder / name
            if path.is_file():
                return path
    return None


def is_shipped(entry: ZooEntry) -> bool:
    """Whether ``entry``'s weights ship with the package (in :data:`BUNDLED_WEIGHTS_DIR`)."""
    return (BUNDLED_WEIGHTS_DIR / entry.weight_file).is_file()


def is_available(entry: ZooEntry) -> bool:
    return find_weights(entry) is not None


def missing_weights_message(entry: ZooEntry) -> str:
    where = default_download_dir()
    if entry.url:
        how = f"To get it, run `restorer weights download {entry.model} --scale {entry.scale}`"
    else:  # published pages, or "not published: train it with ..." for models nobody can download
        how = f"Where it comes from: {entry.published}. Put it in {where}/"
    return (
        f"Weights for {entry.display_name} x{entry.scale} not found: the file '{entry.weight_file}' "
        f"is in none of {', '.join(str(d) for d in weight_dirs())}. {how} "
        "(or pass --weights PATH, or set RESTORER_WEIGHTS_DIR)."
    )


def require_weights(entry: ZooEntry, explicit: str | os.PathLike | None = None) -> Path:
    """The weight file to use: ``explicit`` when given (it must exist), else one found on disk."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"Weight file not found: {path}")
        return path
    found = find_weights(entry)
    if found is None:
        raise WeightsNotFoundError(missing_weights_message(entry))
    return found


def save_safetensors(
    tensors: Mapping[str, Any], target: str | os.PathLike, metadata: Mapping[str, str]
) -> Path:
    """Write ``tensors`` (contiguous CPU tensors) as a ``.safetensors`` file with ``metadata``, atomically
    (:func:`restorer.io.write_atomically`) and world-readable (it is shipped); returns the path."""
    from safetensors.torch import save

    from restorer.io import write_atomically

    target = write_atomically(target, save(dict(tensors), metadata=dict(metadata)))
    os.chmod(target, 0o644)
    return target


def training_iteration(checkpoint: str | os.PathLike) -> str:
    """The iteration a BasicSR checkpoint (``models/net_g_<N>.pth``) was saved at; for ``net_g_latest``
    the newest ``training_states/<N>.state`` of the same run, when there is one."""
    checkpoint = Path(checkpoint)
    iteration = checkpoint.stem.rsplit("_", 1)[-1]
    states = checkpoint.parent.parent / "training_states"
    if iteration == "latest" and states.is_dir():
        done = sorted(int(p.stem) for p in states.glob("*.state") if p.stem.isdigit())
        iteration = str(done[-1]) if done else iteration
    return iteration


def read_checkpoint(path: str | os.PathLike) -> Mapping[str, Any]:
    """Read a checkpoint file without executing code: ``.safetensors`` or a weights-only pickle."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        import torch

        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoder error means "not a checkpoint we can read"
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise CheckpointError(
            f"Cannot read weight file {path}: {type(exc).__name__}: {first_line}"
            " (expected a .pth/.pt state dict saved with torch.save, or a .safetensors file)"
        ) from exc


def unwrap_state_dict(checkpoint: Mapping[str, Any], param_key: str | None = None) -> dict[str, Any]:
    """The bare state dict inside a checkpoint.

    Prefers ``param_key`` when present, then ``params_ema`` > ``params`` > ``state_dict`` > ``model``
    (and other common containers); strips a leading ``module.`` (DataParallel/DDP) from every key.
    """
    return unwrap_state_dict_with_source(checkpoint, param_key)[0]


def unwrap_state_dict_with_source(
    checkpoint: Mapping[str, Any], param_key: str | None = None
) -> tuple[dict[str, Any], str | None, bool]:
    """:func:`unwrap_state_dict`, plus the container key it took (None for a bare state dict) and
    whether it stripped ``module.`` prefixes."""
    import torch

    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"Checkpoint is a {type(checkpoint).__name__}, not a dict of tensors.")
    state: Any = checkpoint
    taken: str | None = None
    for _ in range(3):  # containers can nest, e.g. {'state_dict': {'params_ema': ...}}
        keys = ([param_key] if param_key else []) + list(CONTAINER_KEYS)
        found = next((k for k in keys if k in state and isinstance(state[k], Mapping)), None)
        if found is None:
            break
        state, taken = state[found], found
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(
            "Checkpoint holds no tensors under any of the keys "
            f"{', '.join(CONTAINER_KEYS)} (top-level keys: {', '.join(list(checkpoint)[:8])})."
        )
    prefixed = all(k.startswith("module.") for k in tensors)
    if prefixed:
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors, taken, prefixed


def _short_list(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def signature_of(model) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter and persistent buffer, as a state dict would hold them."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _key_pattern(keys: Iterable[str]) -> frozenset[str]:
    """Key names with block indices blanked: equal for every depth of one architecture."""
    return frozenset(re.sub(r"\.\d+\.", ".#.", k) for k in keys)


_SIGNATURES: dict[str, dict[str, tuple[int, ...]]] = {}


def zoo_signature(entry: ZooEntry) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the entry's network (built once per configuration on the meta device, then
    remembered: detection compares a file against many variants)."""
    import torch

    from restorer.archs import build_network

    config = repr(entry.network_g)
    if config not in _SIGNATURES:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # compressai's torch.jit.script notice
            _SIGNATURES[config] = signature_of(build_network(entry.network_options()))
    return _SIGNATURES[config]


def buildable_signature(entry: ZooEntry) -> dict[str, tuple[int, ...]] | None:
    """:func:`zoo_signature`, or None when the entry's network needs an extra that is not installed
    (S2LIC without compressai): detection then passes over that architecture instead of failing
    for every file (:func:`missing_extras` says which were passed over)."""
    from restorer.errors import MissingExtraError

    try:
        return zoo_signature(entry)
    except MissingExtraError:
        return None


def missing_extras(candidates: Iterable[ZooEntry]) -> list[str]:
    """One message per architecture among ``candidates`` that cannot be built here (its extra is
    missing), naming the install command."""
    from restorer.errors import MissingExtraError

    messages: dict[str, str] = {}
    for entry in candidates:
        if entry.arch in messages:
            continue
        try:
            zoo_signature(entry)
        except MissingExtraError as exc:
            messages[entry.arch] = str(exc)
    return list(messages.values())


def fitting_variants(state: Mapping[str, Any], candidates: Iterable[ZooEntry]) -> list[ZooEntry]:
    """Zoo entries whose networks have exactly these names and shapes (built on the meta device).

    Architectures whose key pattern differs are ruled out from one network each, so a mismatch
    message costs a few meta-device builds, not one per variant. Architectures whose optional
    extra is not installed are passed over (see :func:`buildable_signature`).
    """
    wanted = {k: tuple(v.shape) for k, v in state.items()}
    pattern = _key_pattern(wanted)
    by_arch: dict[str, list[ZooEntry]] = {}
    for entry in candidates:
        by_arch.setdefault(entry.arch, []).append(entry)
    fits: list[ZooEntry] = []
    for entries_of_arch in by_arch.values():
        first = buildable_signature(entries_of_arch[0])
        if first is None or _key_pattern(first) != pattern:
            continue
        fits += [entry for entry in entries_of_arch if zoo_signature(entry) == wanted]
    return fits


def load_into(model, state: Mapping[str, Any], entry: ZooEntry | None = None, source: str = "checkpoint"):
    """Load ``state`` into ``model`` with ``strict=True``; a mismatch names the keys and what fits."""
    from restorer import zoo

    own = signature_of(model)
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    wrong_shape = {k for k in set(own) & set(state) if tuple(state[k].shape) != own[k]}
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short_list(unexpected)}")
        if wrong_shape:
            details = [f"{k} {tuple(state[k].shape)} vs {own[k]}" for k in sorted(wrong_shape)[:4]]
            parts.append(f"shape mismatches: {'; '.join(details)}")
        fits = fitting_variants(state, zoo.ZOO.values())
        target = f"{entry.display_name} x{entry.scale}" if entry else type(model).__name__
        hint = (
            f" These weights fit {', '.join(f'--model {e.model} (x{e.scale})' for e in fits)}."
            if fits
            else " No model in the zoo has this layout."
        )
        raise CheckpointError(f"{source} does not fit {target}: {'; '.join(parts)}.{hint}")
    for key, value in state.items():
        if value.is_floating_point() and not bool(value.isfinite().all()):
            bad = int((~value.isfinite()).sum())
            raise CheckpointError(
                f"{source} holds {bad} NaN or infinite value(s) in {key}: the file is damaged, or comes "
                "from a training run that diverged."
            )
    model.load_state_dict(state, strict=True)
    return model


def load_checkpoint(model, path: str | os.PathLike, entry: ZooEntry | None = None):
    """Read ``path``, unwrap it with the entry's checkpoint key and load it strictly into ``model``."""
    state = unwrap_state_dict(read_checkpoint(path), entry.param_key if entry else None)
    return load_into(model, state, entry, source=f"Weight file {path}")


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class AuxiliaryWeights:
    """A published file that a model needs besides its own checkpoint (a frozen feature extractor).

    ``sha256_prefix`` is what the publisher guarantees: torch.hub's file names end in the first hex
    digits of the file's sha256, and ``torch.hub`` checks exactly that prefix.
    """

    name: str  # what `restorer weights download NAME` takes
    file: str
    url: str
    sha256_prefix: str
    size: str
    used_by: str


AUXILIARY_WEIGHTS: Mapping[str, AuxiliaryWeights] = MappingProxyType(
    {
        "vgg19": AuxiliaryWeights(
            name="vgg19",
            file="vgg19-dcbb9e9d.pth",
            url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            sha256_prefix="dcbb9e9d",
            size="548 MB",
            used_by="RRFormer (hypercolumn input, VGG loss and discriminator features when training)",
        )
    }
)
"""Files some models need besides their checkpoints, by name (torchvision's ImageNet VGG19)."""


def find_auxiliary(name: str) -> Path | None:
    """The auxiliary file ``name`` (or its ``.safetensors`` / ``.pt`` twin) in :func:`weight_dirs`."""
    aux = AUXILIARY_WEIGHTS[name]
    stem = Path(aux.file).stem
    for folder in weight_dirs():
        for candidate in [aux.file] + [stem + s for s in WEIGHT_SUFFIXES if stem + s != aux.file]:
            if (folder / candidate).is_file():
                return folder / candidate
    return None


def _fetch(url: str, target: Path, check: Callable[[str], str | None], progress: bool) -> Path:
    """Download ``url`` to a temporary file beside ``target``, let ``check(path)`` veto it (it returns
    a reason), and rename it over ``target``. The temporary file never outlives the call."""
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    bar.update(len(block))
        problem = check(tmp_name)
        if problem:
            raise CheckpointError(f"Downloaded {target.name} {problem}; the file was discarded.")
        os.replace(tmp_name, target)
    except OSError as exc:
        raise WeightsNotFoundError(f"Download of {url} failed: {exc}") from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def download(entry: ZooEntry, dest_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Fetch ``entry``'s weights from its published URL, check sha256, and place them atomically."""
    if not entry.url:
        raise WeightsNotFoundError(
            f"{entry.display_name} x{entry.scale} has no direct download link: its weights are published "
            f"on {entry.published}. Download '{entry.weight_file}' by hand and put it in "
            f"{default_download_dir()}/ (or pass --weights PATH)."
        )

    def check(path: str) -> str | None:
        if not entry.sha256:
            return None
        actual = sha256_of(path)
        return None if actual == entry.sha256 else f"has sha256 {actual}, expected {entry.sha256}"

    folder = Path(dest_dir) if dest_dir else default_download_dir()
    return _fetch(entry.url, folder / entry.weight_file, check, progress)


def download_auxiliary(name: str, dest_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Fetch the auxiliary file ``name`` (:data:`AUXILIARY_WEIGHTS`), check its sha256 prefix, place it
    atomically in ``dest_dir`` (default: :func:`default_download_dir`)."""
    aux = AUXILIARY_WEIGHTS[name]

    def check(path: str) -> str | None:
        actual = sha256_of(path)
        return (
            None
            if actual.startswith(aux.sha256_prefix)
            else f"has sha256 {actual}, not {aux.sha256_prefix}..."
        )

    folder = Path(dest_dir) if dest_dir else default_download_dir()
    return _fetch(aux.url, folder / aux.file, check, progress)
