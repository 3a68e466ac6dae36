"""torch.hub entrypoints and factory callables -> ModelSpec -> meta-device model.

DINOv3's README builds its backbones and heads with
`torch.hub.load(REPO_DIR, "dinov3_vit7b16_dd", source="local", weights=..., backbone_weights=...)`.
`vramplan estimate --hub-repo REPO_DIR --entrypoint dinov3_vit7b16_dd` makes the same call with
`pretrained=False` and the meta device as default device, so a 7B backbone with its head costs
no memory and no download. `--factory module:callable` does the same for any function that returns
an `nn.Module`.

Naming a hubconf.py or a factory runs that code, in this process, with your permissions: that is
what asking for it means. vramplan never runs code that you did not name.

hubconf.py is imported as torch.hub's local loader imports it (its folder first on `sys.path`, its
`dependencies` checked), not through `torch.hub.load`: `torch.hub.list` only reads GitHub repos,
and the entrypoint's signature is needed to turn `pretrained` off, while `torch.hub.load` keeps
some keyword names (`verbose`, `source`, ...) for itself.

Known limitations:
    - An entrypoint without a `pretrained` parameter is called as given: weights it loads by default
      cannot be turned off. Downloads through `torch.hub.load_state_dict_from_url` are refused.
    - An entrypoint that moves its model to a device (`.to("cuda")`, `.cpu()`) fails on meta tensors,
      unless it takes a `device` parameter: vramplan passes `device="meta"` when it is not given.
    - An entrypoint may fetch files that are not weights: DINOv3's dino.txt entrypoint downloads its
      tokenizer vocabulary unless `--kwarg bpe_path_or_url=PATH` names a local copy. A parameter whose
      default is a URL is taken for such a file: with HF_HUB_OFFLINE=1 the build is refused before it
      starts, naming the --kwarg; online, a failed `urllib` download names it too.
    - A module the code imports that is not installed is named, with the repository's requirements
      file (requirements.txt, pyproject.toml, ...) when it has one.
    - Tensors created on an explicit device (`torch.zeros(3, device="cpu")`) are real while the model
      is built; vramplan moves them to meta afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ..errors import BuildError, ModelNotFoundError, UsageError, one_line
from ..spec import ModelSpec

if TYPE_CHECKING:
    import torch.nn as nn

LIBRARY_HUB = "torch.hub"
LIBRARY_FACTORY = "factory"
HUBCONF = "hubconf.py"
_VAR_DEPENDENCIES = "dependencies"  # the list torch.hub checks before calling an entrypoint


def parse_kwarg(text: str) -> tuple[str, Any]:
    """Parse `--kwarg key=value`: a JSON literal (1, 0.5, true, null, [1, 2]) if it is one, else the string.

    Raises:
        UsageError: not `key=value`, or the key is not a Python identifier.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise UsageError(f"--kwarg `{text}` is not key=value with a Python name as key, e.g. --kwarg img_size=512")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def hub_entrypoint_spec(repo_dir: str, entrypoint: str, kwargs: dict[str, Any]) -> ModelSpec:
    """Describe a torch.hub entrypoint of a local repository (a clone of facebookresearch/dinov3, say).

    Nothing is imported here; the hubconf runs when the model is built.

    Raises:
        ModelNotFoundError: the folder or its hubconf.py does not exist.
    """
    folder = Path(repo_dir).expanduser().resolve()
    model_id = f"hub:{folder.name}:{entrypoint}"
    if not folder.is_dir():
        raise ModelNotFoundError(
            model_id,
            f"`{repo_dir}` is not a folder: pass --hub-repo the folder of a clone holding hubconf.py "
            "(git clone https://github.com/facebookresearch/dinov3)",
        )
    if not (folder / HUBCONF).is_file():
        raise ModelNotFoundError(
            model_id, f"`{folder}` has no {HUBCONF}: --hub-repo takes the top folder of a torch.hub repository"
        )
    return ModelSpec(
        reference=model_id,
        model_id=model_id,
        library=LIBRARY_HUB,
        source="torch.hub",
        config={"repo_dir": str(folder), "entrypoint": entrypoint, "kwargs": dict(kwargs)},
        location=str(folder),
    )


def factory_spec(target: str, kwargs: dict[str, Any]) -> ModelSpec:
    """Describe a factory: `package.module:callable` or `path/to/file.py:callable`.

    Raises:
        UsageError: the target is not of either form.
        ModelNotFoundError: the file does not exist.
    """
    location, _, name = target.rpartition(":")
    model_id = f"factory:{target}"
    if not location or not name.isidentifier():
        raise UsageError(f"--factory `{target}` is not `package.module:callable` or `path/to/file.py:callable`")
    if _is_file_target(location):
        path = Path(location).expanduser().resolve()
        if not path.is_file():
            raise ModelNotFoundError(model_id, f"there is no file `{location}`")
        location = str(path)
    elif not all(part.isidentifier() for part in location.split(".")):
        raise UsageError(f"--factory `{target}`: `{location}` is neither a module name nor a .py file")
    return ModelSpec(
        reference=model_id,
        model_id=model_id,
        library=LIBRARY_FACTORY,
        source="factory",
        config={"target": f"{location}:{name}", "kwargs": dict(kwargs)},
    )


def build_torch_hub(spec: ModelSpec) -> "nn.Module":
    """Call the spec's hubconf entrypoint with weights off, on the meta device.

    Raises:
        ModelNotFoundError: hubconf.py has no such entrypoint (the message lists those it has).
        BuildError: hubconf.py fails to import, needs missing packages, or the entrypoint fails
            or returns no nn.Module.
    """
    folder = spec.config["repo_dir"]
    entrypoint = spec.config["entrypoint"]
    with _first_on_sys_path(folder):
        hubconf = _import_file("hubconf", Path(folder, HUBCONF), spec, LIBRARY_HUB, register=False)
        available = sorted(n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_"))
        if entrypoint not in available:
            raise ModelNotFoundError(
                spec.model_id, f"{folder}/{HUBCONF} has no entrypoint `{entrypoint}`; it has: {', '.join(available)}"
            )
        missing = [d for d in getattr(hubconf, _VAR_DEPENDENCIES, None) or [] if importlib.util.find_spec(d) is None]
        if missing:
            raise BuildError(
                spec.model_id, LIBRARY_HUB, f"{HUBCONF} needs packages that are not installed: {', '.join(missing)}"
            )
        return _build_on_meta(spec, LIBRARY_HUB, getattr(hubconf, entrypoint), spec.config["kwargs"])


def build_factory(spec: ModelSpec) -> "nn.Module":
    """Call the spec's factory with weights off, on the meta device.

    Raises:
        ModelNotFoundError: the module, or the callable in it, does not exist.
        BuildError: the module fails to import, or the factory fails or returns no nn.Module.
    """
    location, _, name = spec.config["target"].rpartition(":")
    if _is_file_target(location):
        path = Path(location)
        with _first_on_sys_path(str(path.parent)):
            module = _import_file(f"vramplan_factory_{path.stem}", path, spec, LIBRARY_FACTORY, register=True)
    else:
        module = _import_module(location, spec)
    factory = getattr(module, name, None)
    if not callable(factory):
        available = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ModelNotFoundError(
            spec.model_id, f"`{location}` has no callable `{name}`; it has: {', '.join(available) or 'none'}"
        )
    return _build_on_meta(spec, LIBRARY_FACTORY, factory, spec.config["kwargs"])


def _build_on_meta(spec: ModelSpec, library: str, factory: Callable[..., Any], kwargs: dict[str, Any]) -> "nn.Module":
    """Call a user factory with weights off and `meta` as default device; return its nn.Module."""
    import torch

    call_kwargs = _weightless_kwargs(factory, kwargs, spec)
    name = getattr(factory, "__name__", repr(factory))
    url_defaults = _url_defaults(factory, call_kwargs)
    if url_defaults and os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise BuildError(spec.model_id, library, _url_advice(name, url_defaults, "HF_HUB_OFFLINE is set"))
    failed_urls: list[str] = []
    with torch.device("meta"), _refuse_weight_downloads(spec, library), _watch_url_opens(failed_urls):
        try:
            result = factory(**call_kwargs)
        except _WeightDownloadRefused as refused:
            raise refused.error from None
        except ModuleNotFoundError as exc:
            raise _missing_module(spec, library, f"{name}()", exc) from exc
        except Exception as exc:  # the user's code raises anything; the CLI needs one line
            failed = {k: url for k, url in url_defaults.items() if url in failed_urls}
            if failed:
                raise BuildError(spec.model_id, library, _url_advice(name, failed, "the download failed")) from exc
            raise BuildError(spec.model_id, library, f"{name}() raised {type(exc).__name__}: {one_line(exc)}") from exc
    model = _the_module(result, spec, library, name)
    _move_leftovers_to_meta(model)
    return model


def _weightless_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """Add `pretrained=False` (and `device="meta"`) where the factory's signature names them."""
    if kwargs.get("pretrained"):
        raise UsageError(f"{spec.model_id}: vramplan never loads weights; leave out --kwarg pretrained")
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        parameters = {}
    call_kwargs = dict(kwargs)
    if "pretrained" in parameters:
        call_kwargs["pretrained"] = False
    if "device" in parameters and "device" not in call_kwargs:
        call_kwargs["device"] = "meta"
    return call_kwargs


def _url_defaults(factory: Callable[..., Any], call_kwargs: dict[str, Any]) -> dict[str, str]:
    """Parameters left at a default that is a URL: files the code will fetch (dino.txt's tokenizer vocabulary)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {
        p.name: p.default for p in parameters
        if p.name not in call_kwargs and isinstance(p.default, str) and p.default.startswith(("http://", "https://"))
    }


def _url_advice(name: str, urls: dict[str, str], why: str) -> str:
    """Say which --kwarg names a local copy of each file the code would download."""
    kwargs = " ".join(f"--kwarg {key}=PATH" for key in urls)
    sources = ", ".join(f"`{key}` from {url}" for key, url in urls.items())
    return f"{name}() downloads {sources} and {why}: download it once and pass {kwargs} (after its --entrypoint)"


@contextlib.contextmanager
def _watch_url_opens(failed: list[str]) -> Iterator[None]:
    """Record the URLs the code fails to open with urllib while the model is built."""
    import urllib.request

    original = urllib.request.urlopen

    def watched(url: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(url, *args, **kwargs)
        except Exception:
            failed.append(getattr(url, "full_url", url))
            raise

    urllib.request.urlopen = watched
    try:
        yield
    finally:
        urllib.request.urlopen = original


class _WeightDownloadRefused(Exception):
    """Raised inside the user's code when it asks torch.hub for weights; carries the error to report."""

    def __init__(self, error: BuildError) -> None:
        super().__init__(error.message)
        self.error = error


@contextlib.contextmanager
def _refuse_weight_downloads(spec: ModelSpec, library: str) -> Iterator[None]:
    """Make `torch.hub.load_state_dict_from_url` raise while the model is built."""
    import torch.hub

    original = torch.hub.load_state_dict_from_url

    def refuse(url: str, *args: Any, **kwargs: Any) -> Any:
        raise _WeightDownloadRefused(
            BuildError(
                spec.model_id,
                library,
                f"it asked for weights from {url}; vramplan builds without weights: leave out the kwarg that names them",
            )
        )

    torch.hub.load_state_dict_from_url = refuse
    try:
        yield
    finally:
        torch.hub.load_state_dict_from_url = original


def _the_module(result: Any, spec: ModelSpec, library: str, name: str) -> "nn.Module":
    """Return the nn.Module a factory returned, alone or in a tuple (dino.txt returns (model, tokenizer))."""
    import torch.nn as nn

    if isinstance(result, nn.Module):
        return result
    if isinstance(result, (tuple, list)):
        modules = [item for item in result if isinstance(item, nn.Module)]
        if len(modules) == 1:
            return modules[0]
    raise BuildError(spec.model_id, library, f"{name}() returned {type(result).__name__}, not one torch.nn.Module")


def _move_leftovers_to_meta(model: "nn.Module") -> None:
    """Move parameters and buffers created on an explicit device onto meta, freeing them."""
    import torch.nn as nn

    moved: dict[int, Any] = {}  # keeps tied tensors tied, so they are still counted once
    for module in model.modules():
        for key, param in module._parameters.items():
            if param is not None and not param.is_meta:
                if id(param) not in moved:
                    moved[id(param)] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
                module._parameters[key] = moved[id(param)]
        for key, buffer in module._buffers.items():
            if buffer is not None and not buffer.is_meta:
                module._buffers[key] = moved.setdefault(id(buffer), buffer.to("meta"))


def _import_file(name: str, path: Path, spec: ModelSpec, library: str, register: bool) -> ModuleType:
    """Execute a .py file as module `name`; `register` puts it in sys.modules first, as `import` does."""
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    if register:
        sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # the user's module raises anything while importing
        if register:
            sys.modules.pop(name, None)
        if isinstance(exc, ModuleNotFoundError):
            raise _missing_module(spec, library, f"importing {path}", exc) from exc
        raise BuildError(spec.model_id, library, f"importing {path} raised {type(exc).__name__}: {one_line(exc)}") from exc
    return module


_REQUIREMENT_FILES = ("requirements.txt", "pyproject.toml", "setup.py", "environment.yml", "environment.yaml")


def _missing_module(spec: ModelSpec, library: str, doing: str, exc: ModuleNotFoundError) -> BuildError:
    """A BuildError naming the module that is not installed and where the code lists what it needs."""
    folder = _code_folder(spec)
    found = [folder / name for name in _REQUIREMENT_FILES if folder is not None and (folder / name).is_file()]
    if found and found[0].name == "requirements.txt":
        step = f"install the repository's requirements: pip install -r {found[0]}"
    elif found:
        step = f"install what {found[0]} lists"
    else:
        step = "install the package that provides it"
    missing = exc.name or one_line(exc)
    return BuildError(spec.model_id, library, f"{doing} needs the module `{missing}`, which is not installed: {step}")


def _code_folder(spec: ModelSpec) -> Path | None:
    """The folder of the code a spec runs: the torch.hub repository, or the factory file's folder."""
    if spec.library == LIBRARY_HUB:
        return Path(spec.config["repo_dir"])
    location = spec.config["target"].rpartition(":")[0]
    return Path(location).parent if _is_file_target(location) else None


def _import_module(name: str, spec: ModelSpec) -> ModuleType:
    """Import `package.module` as `python -m` would find it: the working folder first."""
    with _first_on_sys_path(os.getcwd()):
        try:
            found = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # a parent package is missing
            found = None
        if found is None:
            raise ModelNotFoundError(
                spec.model_id, f"no module `{name}` on the Python path; run from its folder or pass path/to/file.py:callable"
            )
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            raise _missing_module(spec, LIBRARY_FACTORY, f"importing {name}", exc) from exc
        except Exception as exc:  # the user's module raises anything while importing
            raise BuildError(
                spec.model_id, LIBRARY_FACTORY, f"importing {name} raised {type(exc).__name__}: {one_line(exc)}"
            ) from exc


@contextlib.contextmanager
def _first_on_sys_path(folder: str) -> Iterator[None]:
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)


def _is_file_target(location: str) -> bool:
    return location.endswith(".py") or "/" in location or os.sep in location

