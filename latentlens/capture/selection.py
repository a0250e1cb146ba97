"""Choose the modules to hook: unwrap parallel and compile wrappers, match layer specs."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

from torch import nn

__all__ = ["LayerSpec", "canonical_name", "resolve_layers", "unwrap_model"]

LayerSpec = Union[
    str,
    "re.Pattern[str]",
    nn.Module,
    type,
    tuple,
    Callable[[str, nn.Module], bool],
    Sequence[Any],
]

# Attribute names that wrappers insert between a parent and the wrapped module:
# FSDP (v1), activation checkpointing's CheckpointWrapper and torch.compile's OptimizedModule.
_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the user's module inside DistributedDataParallel, FSDP and compile wrappers.

    Parameters
    ----------
    model : torch.nn.Module
        A model, possibly wrapped (several times) by ``DistributedDataParallel``,
        ``FullyShardedDataParallel`` or ``torch.compile``.

    Returns
    -------
    torch.nn.Module
        The innermost module. Hooks installed on it and its children fire when the
        wrapper is called.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module`` or is wrapped in ``nn.DataParallel``, whose
        per-device replicas run hooks concurrently from several threads.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module, got {type(model).__name__}; "
            "pass the model object itself, not its output or state_dict"
        )
    while True:
        if isinstance(model, nn.DataParallel):
            raise TypeError(
                "model is wrapped in torch.nn.DataParallel, whose replicas run hooks from "
                "several threads at once; wrap it in DistributedDataParallel instead, or pass "
                "model.module and run on one device"
            )
        name = type(model).__name__
        if name in ("DistributedDataParallel", "FullyShardedDataParallel") and hasattr(
            model, "module"
        ):
            model = model.module
        elif name == "OptimizedModule" and hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def canonical_name(name: str) -> str:
    """Drop the segments that wrappers add to dotted module names.

    ``"layer1._fsdp_wrapped_module.conv"`` and ``"_orig_mod.layer1.conv"`` both become
    ``"layer1.conv"``, so names stay the same with and without the wrappers.
    """
    if not any(segment in name for segment in _WRAPPER_SEGMENTS):
        return name
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_SEGMENTS)


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Translate a dotted-name glob: ``*`` stays within one segment, ``**`` spans segments."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^.]*")
        elif char == "?":
            out.append("[^.]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


def _matches(pattern: re.Pattern[str], name: str) -> bool:
    # The root module's name is empty; only the exact name "" selects it, not "*" or ".*".
    return bool(name) and pattern.fullmatch(name) is not None


def _wrapped_chain(module: nn.Module) -> set[int]:
    """Return the ids of ``module`` and, when it is a wrapper, of the modules it wraps."""
    ids = {id(module)}
    current: nn.Module | None = module
    while current is not None:
        inner = None
        for attribute in _WRAPPER_SEGMENTS:
            candidate = getattr(current, attribute, None)
            if isinstance(candidate, nn.Module):
                inner = candidate
                ids.add(id(inner))
                break
        current = inner
    return ids


def _matcher(spec: Any) -> tuple[Callable[[str, nn.Module], bool], str]:
    """Turn one spec into a predicate over (canonical name, module) and a description."""
    if isinstance(spec, nn.Module):
        # Checked before callables, since every module is callable.
        targets = _wrapped_chain(spec)
        return (lambda name, module: id(module) in targets), f"module {type(spec).__name__}"
    if isinstance(spec, re.Pattern):
        return (lambda name, module: _matches(spec, name)), f"regex {spec.pattern!r}"
    if isinstance(spec, str):
        if spec.startswith("re:"):
            try:
                regex = re.compile(spec[3:])
            except re.error as error:
                raise ValueError(
                    f"layers entry {spec!r} is not a valid regular expression ({error}); "
                    "fix the pattern after 're:'"
                ) from error
            return (lambda name, module: _matches(regex, name)), f"regex {spec!r}"
        if any(char in spec for char in "*?["):
            regex = _glob_to_regex(spec)
            return (lambda name, module: _matches(regex, name)), f"glob {spec!r}"
        return (lambda name, module: name == spec), f"name {spec!r}"
    if isinstance(spec, type) or (
        isinstance(spec, tuple) and spec and all(isinstance(t, type) for t in spec)
    ):
        if not all(
            issubclass(t, nn.Module) for t in (spec if isinstance(spec, tuple) else (spec,))
        ):
            raise TypeError(
                f"layers entry {spec!r} is a type that is not a torch.nn.Module subclass; "
                "pass module classes such as torch.nn.Linear"
            )
        return (lambda name, module: isinstance(module, spec)), f"type {spec!r}"
    if callable(spec):
        return (lambda name, module: bool(spec(name, module))), f"callable {spec!r}"
    raise TypeError(
        f"layers entry {spec!r} of type {type(spec).__name__} is not supported; use a dotted "
        "name, a glob such as 'encoder.layer.*', a regex ('re:...' or re.compile), a module "
        "of the model, an nn.Module subclass or a callable(name, module) -> bool"
    )


def _runs_forward(module: nn.Module) -> bool:
    """Return whether ``module`` has a forward of its own (ModuleList and ModuleDict do not)."""
    return type(module).forward is not nn.Module.forward


def _describe_containers(description: str, hits: list[tuple[int, str, nn.Module]]) -> str:
    """Build the message for a spec that matched only modules that never run."""
    found = ", ".join(f"{name!r} ({type(module).__name__})" for _, name, module in hits[:3])
    example = hits[0][1]
    return (
        f"layers entry {description} matched only containers without a forward of their own "
        f"({found}); they never run, so a hook on them never fires. Select the modules inside "
        f"instead, for example {example + '.*'!r}"
    )


def _describe_miss(spec: Any, description: str, names: list[str], model: nn.Module) -> str:
    """Build the message for a spec that matched nothing, listing the closest names."""
    if isinstance(spec, str):
        key = spec[3:] if spec.startswith("re:") else spec
        close = difflib.get_close_matches(key, names, n=5, cutoff=0.3)
        if not close:
            close = [n for n in names if n and "." not in n][:5]
        return (
            f"layers entry {description} matched no module of {type(model).__name__}; "
            f"closest names: {close}. Use one of model.named_modules() names, "
            "a glob ('*' stays within one dotted segment, '**' spans several) or 're:<regex>'"
        )
    if isinstance(spec, nn.Module):
        return (
            f"layers entry {description} is not a submodule of {type(model).__name__}; pass a "
            "module object taken from this model (model.encoder), or its dotted name"
        )
    if isinstance(spec, (type, tuple)):
        present = sorted({type(m).__name__ for _, m in model.named_modules()})
        return (
            f"layers entry {description} matched no module of {type(model).__name__}; "
            f"module types present: {present[:20]}"
        )
    return (
        f"layers entry {description} matched no module of {type(model).__name__}; "
        f"first names: {names[:10]}"
    )


def resolve_layers(model: nn.Module, spec: LayerSpec) -> list[tuple[str, nn.Module]]:
    """Find the modules chosen by ``spec``, in the order of ``model.named_modules()``.

    Parameters
    ----------
    model : torch.nn.Module
        The model; DistributedDataParallel, FSDP and ``torch.compile`` wrappers are
        unwrapped and their name segments dropped.
    spec : str, re.Pattern, nn.Module, type, callable or a sequence of these
        Each entry selects modules by

        - dotted name, exactly as in ``named_modules()`` (``"encoder.layer.5"``);
        - glob (``"encoder.layer.*"``): ``*`` matches within one dotted segment,
          ``**`` across segments, ``?`` one character, ``[...]`` a character class;
        - regex: a compiled ``re.Pattern`` or a string starting with ``"re:"``,
          matched against the whole name;
        - a module object of the model (``model.encoder``);
        - module type, or a tuple of types (``torch.nn.Linear``);
        - callable ``(name, module) -> bool``.

        The root module (name ``""``) is chosen only by the exact name ``""``, the module
        itself, a type or a callable, never by a glob or regex. Containers without a
        forward of their own (``ModuleList``, ``ModuleDict``) are left out, since their
        hooks never fire.
        A sequence selects the union; a module matched twice is listed once.

    Returns
    -------
    list of (str, torch.nn.Module)
        Dotted names without wrapper segments, and the modules, in model order.

    Raises
    ------
    ValueError
        If an entry matches no module (the message lists the closest names), matches only
        containers without a forward, or ``spec`` is empty.
    TypeError
        If an entry has an unsupported type or ``model`` is not an ``nn.Module``.

    Examples
    --------
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> [name for name, _ in resolve_layers(model, "*")]
    ['0', '1', '2']
    >>> [name for name, _ in resolve_layers(model, nn.Linear)]
    ['0', '2']
    """
    root = unwrap_model(model)
    entries: Iterable[Any]
    if isinstance(spec, (str, re.Pattern, type, nn.Module)) or callable(spec):
        entries = [spec]
    elif isinstance(spec, tuple) and spec and all(isinstance(t, type) for t in spec):
        entries = [spec]
    elif isinstance(spec, (list, tuple)):
        entries = list(spec)
    else:
        raise TypeError(
            "layers must be a name, glob, regex, module, module type, callable or a list of "
            f"these, got {type(spec).__name__}"
        )
    if not entries:
        raise ValueError("layers is empty; pass at least one layer name, glob, regex or type")

    # A wrapper and the module it wraps share one canonical name; keep the inner module,
    # whose output is the layer's own, at the wrapper's position.
    by_name: dict[str, nn.Module] = {}
    for name, module in root.named_modules():
        by_name[canonical_name(name)] = module
    modules = list(by_name.items())
    names = [name for name, _ in modules]
    chosen: dict[int, tuple[int, str, nn.Module]] = {}
    for entry in entries:
        predicate, description = _matcher(entry)
        hits = [
            (position, name, module)
            for position, (name, module) in enumerate(modules)
            if predicate(name, module)
        ]
        if not hits:
            raise ValueError(_describe_miss(entry, description, names, root))
        runnable = [hit for hit in hits if _runs_forward(hit[2])]
        if not runnable:
            raise ValueError(_describe_containers(description, hits))
        for position, name, module in runnable:
            chosen.setdefault(id(module), (position, name, module))
    return [(name, module) for _, name, module in sorted(chosen.values(), key=lambda t: t[0])]
