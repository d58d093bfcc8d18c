"""CLIP through open_clip: specs, weights from the Hugging Face cache, ensembles, text features.

A CLIP spec names one model or a weighted ensemble of models:

- a key of :mod:`energyql.controls.registry` of kind ``clip``, e.g. ``"shapes-clip"``: the
  embedded shapes world's small CLIP (ships inside the package).
- ``"NAME:TAG"``: an open_clip architecture with a pretrained tag, e.g. ``"ViT-B-32:openai"``.
  The weights come through ``huggingface_hub`` and live in its cache (``HF_HUB_CACHE``,
  ``HF_HOME``); files that earlier releases put in ``<cache>/clip/NAME/TAG/`` (see
  :func:`energyql.hub.cache_dir`) are used first. See :func:`pretrained_path`.
- ``"NAME:PATH"``: an open_clip architecture with a local checkpoint (``.safetensors``,
  ``.bin``/``.pt`` state dict). OpenAI weights need the ``-quickgelu`` variant of the name.
- ``"local-dir:DIR"``: a folder with ``open_clip_config.json`` and its weights (any
  architecture, e.g. your own); ``"hf-hub:ORG/REPO"``: a Hugging Face open_clip repository.
- ``"A + 0.5*B"``: an ensemble; each member may carry a weight ``W*``. Its energy and
  zero-shot logits are the weighted mean of the members' (weights are normalised to sum 1).

``ENERGYQL_CLIP`` replaces a world's default CLIP (``ViT-B-32:openai`` for faces), e.g. with a
local checkpoint on a machine without network access.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import pickle
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from energyql import hub
from energyql.catalog import PROMPTGEN_CLIP
from energyql.controls import registry
from energyql.errors import CheckpointError, EnergyQLError, WeightsMissingError

ENV_CLIP = "ENERGYQL_CLIP"
_SCHEMES = ("local-dir", "hf-hub")
# Augmentation for photographs (see energyql.controls.augment): PromptGen's DiffAugment policy.
PHOTO_AUGMENT = PROMPTGEN_CLIP.augment_options


_Net = TypeVar("_Net", bound="OpenClipNet")


class OpenClipNet(Protocol):
    """What :class:`ClipModel` uses of an open_clip model (an ``nn.Module``)."""

    logit_scale: torch.Tensor

    def eval(self: _Net) -> _Net: ...

    def requires_grad_(self: _Net, requires_grad: bool = ...) -> _Net: ...

    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor: ...


class ClipModel(nn.Module):
    """A frozen open_clip model that encodes [0, 1] images and caches text features.

    Arguments:
        model: the open_clip model.
        tokenizer: its tokenizer.
        name: the spec it was loaded from.
        image_size: the side its image tower expects.
        mean, std: its input normalisation.
        augment_options: keyword options for :func:`energyql.controls.augment.augment` that
            suit the model's training augmentations.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: OpenClipNet, tokenizer, *, name: str, image_size: int,
                 mean, std, augment_options: dict | None = None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.augment_options = dict(PHOTO_AUGMENT if augment_options is None else augment_options)
        self._text_cache: dict[str, torch.Tensor] = {}

    @property
    def logit_scale(self) -> float:
        """The model's own cosine-to-logit scale (100 for OpenAI CLIP)."""
        return float(self.model.logit_scale.exp())

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Return unit-norm image embeddings ``(B, D)`` for images in [0, 1]."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size),
                                   mode="bilinear", align_corners=False, antialias=True)
        return F.normalize(self.model.encode_image((images - self.mean) / self.std).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Return unit-norm text embeddings ``(N, D)``, computed once per text and cached."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            tokens = self.tokenizer(missing).to(self.mean.device)
            features = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            self._text_cache.update(zip(missing, features))
        return torch.stack([self._text_cache[t] for t in texts]).to(self.mean.device)

    def _apply(self, fn, *args, **kwargs):
        # Keep cached text features on the model's device when it moves.
        module = super()._apply(fn, *args, **kwargs)
        self._text_cache = {k: fn(v) for k, v in self._text_cache.items()}
        return module


class ClipEnsemble(nn.Module):
    """Several CLIP models acting as one: the weighted mean of their logits.

    With member weights ``w_i`` (summing to 1) and logit scales ``s_i``, the ensemble's logit
    scale is ``S = Σ w_i s_i`` and its embeddings are the members' unit embeddings scaled by
    ``sqrt(w_i s_i / S)`` and concatenated. They have unit norm, and
    ``S · (1 − <img, txt>) = Σ w_i s_i (1 − cos_i)``: a CLIP energy (or a zero-shot logit)
    computed on the ensemble is the weighted mean of the members' own, exactly.
    """

    def __init__(self, members: list[ClipModel], weights: list[float], *, name: str):
        super().__init__()
        total = sum(weights)
        self.members = nn.ModuleList(members)
        self.clips = tuple(members)  # the same modules, typed (ModuleList yields nn.Module)
        self.weights = [w / total for w in weights]
        self.name = name
        self.image_size = max(m.image_size for m in members)
        self.augment_options = dict(members[0].augment_options)

    @property
    def logit_scale(self) -> float:
        return sum(w * m.logit_scale for w, m in zip(self.weights, self.clips))

    def _shares(self) -> list[float]:
        scale = self.logit_scale
        return [math.sqrt(w * m.logit_scale / scale) for w, m in zip(self.weights, self.clips)]

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([a * m.encode_image(images)
                          for a, m in zip(self._shares(), self.clips)], dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return torch.cat([a * m.encode_text(texts)
                          for a, m in zip(self._shares(), self.clips)], dim=-1)


# --- specs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipMember:
    """One model of a CLIP spec: ``weight * name:source``."""

    weight: float
    name: str
    source: str

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.source}" if self.source else self.name


_WEIGHTED = re.compile(r"^\s*(?P<w>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)\s*\*\s*(?P<spec>.+)$")


def parse_clip_spec(spec: str) -> tuple[ClipMember, ...]:
    """Return the members of a CLIP spec (one for a single model).

    Raises :class:`EnergyQLError` for an empty member, a bad weight or a member without weights.

    Example:
        >>> [m.spec for m in parse_clip_spec("ViT-B-32:openai + 0.5*RN50:openai")]
        ['ViT-B-32:openai', 'RN50:openai']
    """
    members = []
    for part in spec.split("+"):
        part = part.strip()
        weight = 1.0
        match = _WEIGHTED.match(part)
        if match:
            weight, part = float(match["w"]), match["spec"].strip()
        if not part:
            raise EnergyQLError(f"CLIP spec '{spec}' has an empty member",
                                hint="join models with '+', "
                                     "e.g. 'ViT-B-32:openai + 0.5*RN50:openai'")
        if not weight > 0:
            raise EnergyQLError(f"CLIP spec '{spec}': member weights must be positive")
        name, _, source = part.partition(":")
        name, source = name.strip(), source.strip()
        if not source and not registry.is_registered(part, kind="clip"):
            raise WeightsMissingError(
                f"CLIP spec '{part}' names no weights",
                hint="use NAME:TAG (e.g. 'ViT-B-32:openai'), NAME:PATH to a local checkpoint, "
                     "or local-dir:DIR")
        members.append(ClipMember(weight, name, source))
    return tuple(members)


def default_clip_spec(catalog) -> str:
    """Return the CLIP spec a world uses when neither an expression nor a ``clip=`` option
    names one: ``$ENERGYQL_CLIP``, else the world's ``clip_model`` (read once per
    :class:`~energyql.energies.ControlModels`)."""
    return os.environ.get(ENV_CLIP, "").strip() or catalog.clip_model


def load_clip(spec: str, device: str = "cpu"):
    """Return the CLIP model (or ensemble) a spec names; see the module docstring.

    A world's default CLIP (a ``clip=`` option, ``ENERGYQL_CLIP``) is chosen by the caller
    (:class:`~energyql.energies.ControlModels`); an explicit spec is always loaded as written.
    """
    return _load_cached(spec.strip(), str(device))


def _load_cached(spec: str, device: str):
    members = parse_clip_spec(spec)
    if len(members) == 1 and members[0].weight == 1.0:
        return _load_one(members[0].spec, device)
    return ClipEnsemble([_load_one(m.spec, device) for m in members],
                        [m.weight for m in members], name=spec)


def _load_one(spec: str, device: str) -> ClipModel:
    if registry.is_registered(spec, kind="clip"):
        # Cached by the loader too: a key registered again loads its new model, not the old.
        return _load_registered(spec, registry.resolve(spec, kind="clip").loader, device)
    return _load_open_clip(spec, device)


@functools.lru_cache(maxsize=8)
def _load_registered(key: str, loader: str, device: str) -> ClipModel:
    return registry.load(key, kind="clip", device=device)


@functools.lru_cache(maxsize=8)
def _load_open_clip(spec: str, device: str) -> ClipModel:
    import open_clip

    name, _, source = spec.partition(":")
    if name in _SCHEMES:
        return _load_scheme(open_clip, spec, device)
    name = name.replace("/", "-")  # open_clip spells "ViT-B/32" as "ViT-B-32"
    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        raise EnergyQLError(
            f"unknown CLIP architecture '{name}'",
            hint=(f"did you mean {', '.join(repr(c) for c in close)}? " if close else "")
            + "see open_clip.list_models(), or use local-dir:DIR for your own architecture")
    path = Path(source).expanduser()
    tag_cfg = None
    if not path.is_file():
        tag_cfg = open_clip.get_pretrained_cfg(name, source)
        if not tag_cfg:
            if os.sep in source or "/" in source or path.suffix:
                raise WeightsMissingError(f"CLIP checkpoint '{source}' not found",
                                          hint=f"check the path, or use a tag of '{name}'")
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise WeightsMissingError(
                f"no CLIP weights '{source}' for '{name}': not a file and not a known tag",
                hint="known tags: "
                     + (", ".join(tags) if tags else "none (give a checkpoint path)"))
        path = pretrained_path(name, source)
    options = {}
    if tag_cfg and tag_cfg.get("quick_gelu") and not name.endswith("-quickgelu"):
        # open_clip 3 only warns when a tag was trained with QuickGELU but the config uses GELU;
        # the activations would silently be wrong (OpenAI weights), so follow the tag.
        options["force_quick_gelu"] = True
    model = _create(open_clip, name, device, pretrained=str(path), **options)
    cfg = dict(model.visual.preprocess_cfg)
    if tag_cfg:
        cfg.update({k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg})
    return _wrap(open_clip, model, name, spec, cfg, device)


def _load_scheme(open_clip, spec: str, device: str) -> ClipModel:
    scheme, _, where = spec.partition(":")
    if scheme == "local-dir" and not (Path(where).expanduser() / "open_clip_config.json").is_file():
        raise WeightsMissingError(f"no open_clip_config.json in '{where}'",
                                  hint="local-dir:DIR needs DIR/open_clip_config.json "
                                       "and its weights")
    if scheme == "hf-hub" and hub.offline():
        raise WeightsMissingError(f"'{spec}' needs the network and downloads are off "
                                  "(ENERGYQL_OFFLINE)",
                                  hint="download the repository elsewhere and use local-dir:DIR")
    model = _create(open_clip, spec.replace(where, str(Path(where).expanduser()))
                    if scheme == "local-dir" else spec, device,
                    cache_dir=_hub_cache_dir(where if scheme == "hf-hub" else None))
    return _wrap(open_clip, model, spec, spec, dict(model.visual.preprocess_cfg), device)


def _wrap(open_clip, model, name: str, spec: str, cfg: dict, device: str) -> ClipModel:
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    # Tokenizers of hf-hub models and of HF-tokenizer architectures are fetched from the hub.
    failures: tuple[type[BaseException], ...] = (OSError, RuntimeError, ValueError,
                                                 *hub.transport_errors())
    try:
        tokenizer = open_clip.get_tokenizer(
            name, cache_dir=_hub_cache_dir(_tokenizer_repo(open_clip, name)))
    except failures as error:
        raise WeightsMissingError(
            f"could not load the tokenizer of CLIP '{spec}': {error}") from None
    return ClipModel(model, tokenizer, name=spec, image_size=size,
                     mean=cfg["mean"], std=cfg["std"]).to(device)


def _tokenizer_repo(open_clip, name: str) -> str | None:
    """Return the hub repository a CLIP's tokenizer is fetched from, if any."""
    scheme, _, where = name.partition(":")
    if scheme == "hf-hub":
        return where
    if scheme == "local-dir":
        return None
    return ((open_clip.get_model_config(name) or {}).get("text_cfg") or {}).get(
        "hf_tokenizer_name") or None


def _load_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [RuntimeError, OSError, ValueError, KeyError,
                                         pickle.UnpicklingError, *hub.transport_errors()]
    try:
        from safetensors import SafetensorError
        errors.append(SafetensorError)
    except ImportError:  # older safetensors
        pass
    return tuple(errors)


def _create(open_clip, name: str, device: str, **options):
    """Build an open_clip model with its weights, turning open_clip's failures into ours."""
    try:
        return open_clip.create_model(name, device=device, require_pretrained=True, **options)
    except StopIteration:  # open_clip reads the first tensor with next(): the file has none
        where = options.get("pretrained") or name
        raise CheckpointError(f"could not load CLIP '{name}' from {where}: the checkpoint holds "
                              "no tensors", hint="the file is empty or damaged; fetch it again "
                                                 "or point at the right file") from None
    except _load_errors() as error:
        where = options.get("pretrained") or name
        raise EnergyQLError(
            f"could not load CLIP '{name}' from {where}: {error}".splitlines()[0][:400],
            hint="the checkpoint must fit the named architecture (OpenAI weights need the "
                 "'-quickgelu' name); local-dir:DIR takes any architecture with its config",
        ) from None


# --- pretrained weights: the Hugging Face cache, energyql's cache for URL-only tags ----------


def _clip_dir() -> Path:
    return hub.cache_dir() / "clip"


def _hub_cache_dir(repo: str | None) -> str | None:
    """Return the Hugging Face cache open_clip is to fetch ``repo`` into.

    None, huggingface_hub's own cache (``HF_HUB_CACHE``, ``HF_HOME``), unless an earlier release
    fetched ``repo`` into energyql's ``<cache>/clip`` (it gave open_clip that folder for
    ``hf-hub:`` models and tokenizers): then that folder, so nothing is fetched again.
    """
    if repo and (_clip_dir() / f"models--{repo.replace('/', '--')}").is_dir():
        return str(_clip_dir())
    return None


@dataclass(frozen=True)
class PretrainedWeights:
    """Where the weights of open_clip's ``name:tag`` come from.

    Arguments:
        name, tag: the open_clip architecture and its pretrained tag.
        folder: energyql's own folder for them, ``<cache>/clip/NAME/TAG``. Earlier releases
            downloaded every tag there, and tags without a hub repository still go there.
        repo: the Hugging Face repository holding them, or None for a tag with only a URL.
        filenames: the candidate files in ``repo``, preferred first (safetensors first).
        url: the direct download of a tag without a repository, else None.
    """

    name: str
    tag: str
    folder: Path
    repo: str | None
    filenames: tuple[str, ...]
    url: str | None

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.tag}"

    def folder_files(self) -> list[Path]:
        """Return the files looked for in ``folder``, preferred first."""
        names = [*self.filenames, *([os.path.basename(self.url)] if self.url else [])]
        return [self.folder / n for n in names]


def pretrained_weights(name: str, tag: str) -> PretrainedWeights:
    """Return where the weights of open_clip's ``name:tag`` come from (see PretrainedWeights).

    A tag with a Hugging Face repository is fetched from it, even when open_clip also knows a
    URL (as open_clip does); the URL is used only by tags that have nothing else.
    """
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    repo: str | None = None
    filenames: tuple[str, ...] = ()
    if cfg.get("hf_hub"):
        # "org/repo/" names the repository's default weights; "org/repo/file" one file.
        repo, filename = os.path.split(cfg["hf_hub"])
        if filename:
            pickled = filename.endswith((".bin", ".pth"))
            filenames = (*([filename[:-4] + ".safetensors"] if pickled else []), filename)
        else:
            filenames = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    return PretrainedWeights(name, tag, _clip_dir() / name / tag, repo, filenames,
                             cfg.get("url") or None)


def pretrained_path(name: str, tag: str, *, download: bool = True) -> Path:
    """Return the local file of open_clip's ``name:tag``, fetching it if allowed.

    Looked for first in energyql's own folder (``<cache>/clip/NAME/TAG``, where earlier
    releases put them); then a tag with a Hugging Face repository comes through
    ``huggingface_hub`` and its cache (``HF_HUB_CACHE``, ``HF_HOME``, ``HF_HUB_OFFLINE`` and
    ``HF_ENDPOINT`` apply), a tag with only a URL through a checked download into that folder.

    Raises :class:`WeightsMissingError` naming where the file is expected and the command that
    puts it there when it is missing and cannot be fetched.
    """
    weights = pretrained_weights(name, tag)
    for file in weights.folder_files():
        if file.is_file():
            return file
    if weights.repo:
        return _from_hub(weights, weights.repo, download=download)
    if weights.url:
        return _from_url(weights, weights.url, download=download)
    raise WeightsMissingError(f"open_clip names no weights for '{weights.spec}'",
                              hint="use NAME:PATH to a local checkpoint, or local-dir:DIR")


def _checkpoint_hint(weights: PretrainedWeights) -> str:
    import open_clip

    quick = ((open_clip.get_pretrained_cfg(weights.name, weights.tag) or {}).get("quick_gelu")
             and not weights.name.endswith("-quickgelu"))
    return f"use '{weights.name}{'-quickgelu' if quick else ''}:/path/to/checkpoint'"


def _why_not_download(download: bool, hub_offline: bool = False) -> str | None:
    """Return why nothing may be downloaded (:func:`energyql.hub.why_not_download`, then
    ``HF_HUB_OFFLINE`` for the Hugging Face cache), or None if it may."""
    why = hub.why_not_download(download)
    if why is None and hub_offline:
        return "downloads are off (HF_HUB_OFFLINE)"
    return why


def _from_hub(weights: PretrainedWeights, repo: str, *, download: bool) -> Path:
    """Return the weights' file from the cache of ``repo``, downloading it there if allowed."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    first, *others = weights.filenames
    cache = Path(constants.HF_HUB_CACHE)  # what hf_hub_download uses: HF_HUB_CACHE, HF_HOME...
    what = f"CLIP weights '{weights.spec}' ({first} of {repo})"
    where = f"the Hugging Face cache {cache}"
    hint = (f"get it with: hf download {shlex.quote(repo)} {shlex.quote(first)} --cache-dir "
            f"{shlex.quote(str(cache))}  ("
            + (f"where the repository has no {first}, name {' or '.join(others)}; " if others
               else "")
            + f"or set HF_HUB_CACHE or HF_HOME to a cache that holds it, or "
              f"{_checkpoint_hint(weights)})")
    # Whatever the cache already holds, any candidate, before any network call. Not through
    # hf_hub_download(local_files_only=True): huggingface_hub 2.x still fetches a list of AI
    # agents from the Hub there, once per process, for its User-Agent header.
    for filename in weights.filenames:
        try:
            found = try_to_load_from_cache(repo, filename)
        except (OSError, ValueError):  # an unreadable cache folder counts as an empty one
            continue
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    why = _why_not_download(download, hub_offline=bool(constants.HF_HUB_OFFLINE))
    if why:
        raise WeightsMissingError(f"{what} are not in {where}; {why}", hint=hint)
    failures: tuple[type[BaseException], ...] = (OSError, ValueError, *hub.transport_errors())
    missing = []
    for filename in weights.filenames:
        try:
            return Path(hf_hub_download(repo, filename))
        except LocalEntryNotFoundError as error:  # raised online when the hub cannot be reached
            cause = error.__cause__
            reason = "the hub could not be reached" + (f" ({_first_line(cause)})" if cause else "")
        except EntryNotFoundError:  # the repository has no such file: try the next one
            missing.append(filename)
            continue
        except RepositoryNotFoundError:
            reason = f"no repository '{repo}' (or it is private or gated: 'hf auth login')"
        except HfHubHTTPError as error:
            reason = _first_line(error)
        except failures as error:
            reason = f"{type(error).__name__}: {_first_line(error)}"
        break
    else:
        reason = f"the repository has none of {', '.join(missing)}"
    raise WeightsMissingError(f"{what} are not in {where} and could not be downloaded: {reason}",
                              hint=hint)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _from_url(weights: PretrainedWeights, url: str, *, download: bool) -> Path:
    """Return the weights' file in energyql's folder, downloading it there (checked) if allowed."""
    file = weights.folder / os.path.basename(url)
    hub.check_cache(file.parent)  # a file or an unreadable folder: no mkdir -p hint for it
    hint = (f"get it with: mkdir -p '{file.parent}' && curl -L -o '{file}' '{url}'  "
            f"(or set ENERGYQL_CACHE to the folder that holds clip/, or "
            f"{_checkpoint_hint(weights)})")
    why = _why_not_download(download)
    if why:
        raise WeightsMissingError(
            f"CLIP weights '{weights.spec}' ({file.name}) are not at {file}; {why}", hint=hint)
    existing = file.parent  # the folders made for a failed download are removed again
    while not existing.exists():
        existing = existing.parent
    try:
        return _download(url, file)
    except WeightsMissingError as error:
        _remove_empty(file.parent, stop=existing)
        raise WeightsMissingError(
            f"CLIP weights '{weights.spec}' are not at {file} and could not be downloaded: "
            f"{error.message}", hint=hint) from None


def _remove_empty(folder: Path, *, stop: Path) -> None:
    """Remove ``folder`` and its parents up to ``stop`` while they are empty (failed downloads)."""
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def _download(url: str, file: Path) -> Path:
    """Download one checkpoint atomically; a safetensors file is checked by opening it."""
    is_safetensors = file.suffix == ".safetensors"
    # Only the hub entries that embed a digest in their URL (OpenAI's) can be checked by it.
    digest = url.split("/")[-2] if "openaipublic" in url and len(url.split("/")[-2]) == 64 else None
    hub.download_file(url, file, sha256=digest,
                      label=f"{file.parent.parent.name}:{file.parent.name}",
                      check_format=not is_safetensors)
    if is_safetensors:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as error:
            file.unlink(missing_ok=True)
            raise WeightsMissingError(
                f"{url} did not return a safetensors file ({error})") from None
    return file
