"""Where a model's published ImageNet weights live offline, and `fetch`, the one explicit download.

torchvision weights (built-in names, `tv/<name>`) are the `Weights` enum's files, cached by torch.hub
under `$TORCH_HOME/hub/checkpoints/<file>`; their file names carry the first hex digits of the file's
sha256 (torch.hub.HASH_REGEX), which is the published hash we check. timm weights (`timm/<name>`) come
from the model's pretrained config (timm's default tag unless the name gives one): a Hugging Face Hub
repo (`hf_hub_id`), cached under `$HF_HUB_CACHE/models--<org>--<repo>/`, whose LFS blobs are named by
their sha256 (checked), or else a URL in the torch hub cache as above.
Nothing here downloads except `fetch`, which goes through torchvision's / timm's own download functions.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from models.errors import BadInput
from models.names import BUILTIN, FACTORY, TIMM, TV

log = logging.getLogger("fibrobench.models")

# built-in architectures: torchvision weights accepted offline, in order of preference (the first is fetched)
_BUILTIN_PREFERENCE = {
    "resnet50": ["IMAGENET1K_V1", "IMAGENET1K_V2"],
    "vit_b_16": ["IMAGENET1K_V1", "IMAGENET1K_SWAG_LINEAR_V1"],
}
_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's HF file names, safetensors first (as timm)
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Source:
    """One published weights file: where it is downloaded from and where its library caches it."""
    library: str          # "torchvision" | "timm"
    tag: str              # torchvision Weights name or timm pretrained tag
    url: str | None       # download URL (torch hub cache), or None for a Hugging Face repo
    hf_repo: str | None   # Hugging Face repo id (revision after '@'), or None
    filename: str

    def cache_path(self) -> Path | None:
        """The cached file if it exists, else None (no network)."""
        if self.url is not None:
            p = hub_checkpoint_dir() / self.filename
            return p if p.is_file() else None
        from huggingface_hub import try_to_load_from_cache

        repo, _, rev = self.hf_repo.partition("@")
        found = try_to_load_from_cache(repo, self.filename, revision=rev or None)
        return Path(found) if isinstance(found, str) and os.path.isfile(found) else None

    def where(self) -> str:
        """Where this file is expected, for messages."""
        if self.url is not None:
            return str(hub_checkpoint_dir() / self.filename)
        from huggingface_hub import constants

        repo, _, rev = self.hf_repo.partition("@")
        return f"{constants.HF_HUB_CACHE}/models--{repo.replace('/', '--')}/snapshots/<{rev or 'main'}>/{self.filename}"


def hub_checkpoint_dir() -> Path:
    """Where torchvision (and timm's URL weights) cache downloads: $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _tv_sources(arch: str) -> list[Source]:
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    tags = _BUILTIN_PREFERENCE.get(arch) or [enum.DEFAULT.name]
    return [Source("torchvision", t, enum[t].url, None, enum[t].url.rsplit("/", 1)[-1]) for t in tags]


def _timm_sources(ident: str) -> list[Source]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(ident)
    if cfg is None:
        return []
    out = []
    if cfg.hf_hub_id:
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else list(_HF_FILES)
        out += [Source("timm", cfg.tag or "", None, cfg.hf_hub_id, f) for f in files]
    if cfg.url:
        out.append(Source("timm", cfg.tag or "", cfg.url, None, cfg.url.rsplit("/", 1)[-1].split("?")[0]))
    return out


def imagenet_sources(spec) -> list[Source]:
    """Published ImageNet weights of a model spec (models.spec.ModelSpec), preferred first; [] if none."""
    if spec.kind in (BUILTIN, TV):
        return _tv_sources(spec.arch)
    if spec.kind == TIMM:
        return _timm_sources(spec.arch)
    return []  # a user's factory: its own business (pretrained= argument) or a weights file


def find_cached(spec) -> tuple[Source, Path] | None:
    """The first published file already in its cache, else None."""
    for src in imagenet_sources(spec):
        p = src.cache_path()
        if p is not None:
            return src, p
    return None


def missing_message(spec) -> str:
    srcs = imagenet_sources(spec)
    if not srcs:
        return (f"no published ImageNet weights are known for {spec.name}; pass a weights file path as "
                f"pretrained (or let the factory take pretrained=)")
    return (f"ImageNet weights for {spec.name} not found offline; expected one of: "
            f"{', '.join(s.where() for s in srcs)}; run `fibrobench weights fetch {spec.name}` "
            f"(downloads them, hash-checked) or pass a weights file path")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def published_hash(src: Source, path: Path) -> str | None:
    """The hash the library publishes for this file: torch.hub's file-name prefix, or the HF LFS blob name."""
    if src.url is not None:
        m = torch.hub.HASH_REGEX.search(src.filename)
        return m.group(1) if m else None
    blob = Path(os.path.realpath(path)).name
    return blob if _SHA256.fullmatch(blob) else None


def verify(src: Source, path: Path) -> dict:
    """sha256 of the cached file against the published hash (prefix or full); BadInput on a mismatch."""
    digest = file_sha256(path)
    expected = published_hash(src, path)
    if expected is not None and not digest.startswith(expected):
        raise BadInput(path, "sha256", f"{digest} does not match the published hash {expected}; "
                                       f"delete the file and fetch again")
    return {"sha256": digest, "published_hash": expected, "verified": expected is not None}


def _download(src: Source) -> None:
    """One file through its library's own download: torch.hub for URLs (what torchvision's
    Weights.get_state_dict and timm's URL weights use, hash prefix checked), timm's HF loader for the hub."""
    if src.url is not None:
        torch.hub.load_state_dict_from_url(src.url, progress=True, check_hash=True, weights_only=True)
    else:
        from timm.models import load_state_dict_from_hf

        load_state_dict_from_hf(src.hf_repo, src.filename)


def _download_first(srcs: list[Source]) -> None:
    """Download the preferred file; a Hugging Face repo without that file name falls through to the next."""
    from huggingface_hub.errors import EntryNotFoundError

    for i, src in enumerate(srcs):
        try:
            return _download(src)
        except EntryNotFoundError:
            if i == len(srcs) - 1:
                raise


def fetch(spec) -> dict:
    """Download (if not cached) and hash-check the preferred published ImageNet weights of `spec`."""
    if spec.kind == FACTORY:
        raise BadInput("models", "name", f"{spec.name} is a user factory: fibrobench knows no published "
                                         f"weights for it; pass a weights file path as pretrained")
    srcs = imagenet_sources(spec)
    if not srcs:
        raise BadInput("models", "name", f"{spec.name}: its library publishes no pretrained weights for it")
    have = find_cached(spec)
    already = have is not None
    if have is None:
        log.info("downloading %s weights %s for %s", srcs[0].library, srcs[0].tag, spec.name)
        _download_first(srcs)
        have = find_cached(spec)
        if have is None:
            raise RuntimeError(f"{spec.name}: download finished but no file at {', '.join(s.where() for s in srcs)}")
    src, path = have
    try:
        check = verify(src, path)
    except BadInput:
        if not already:  # a fresh download that fails its hash is not left behind (HF: link and blob)
            real = Path(os.path.realpath(path))
            Path(path).unlink(missing_ok=True)
            real.unlink(missing_ok=True)
        raise
    return {"model": spec.name, "library": src.library, "tag": src.tag, "url": src.url, "hf_repo": src.hf_repo,
            "path": str(path), "already_cached": already, **check}
