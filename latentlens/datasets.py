"""Real text that every Python installation carries, for examples, tests and benchmarks.

The docstrings of standard-library modules are natural English about code, labelled by module.
Python's own license file is English of another domain (legal prose), useful as a drift target.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sysconfig
from pathlib import Path

#: Modules whose docstrings make a corpus with distinct topics: text, numbers, files, networking,
#: concurrency and data formats.
DEFAULT_MODULES = (
    "string",
    "re",
    "textwrap",
    "decimal",
    "fractions",
    "statistics",
    "pathlib",
    "shutil",
    "tarfile",
    "http.client",
    "urllib.request",
    "smtplib",
    "threading",
    "asyncio",
    "concurrent.futures",
    "json",
    "csv",
    "xml.etree.ElementTree",
)


def docstring_corpus(
    modules: tuple[str, ...] | list[str] = DEFAULT_MODULES,
    *,
    min_characters: int = 30,
    max_characters: int = 400,
) -> tuple[list[str], list[str]]:
    """Collect the first paragraph of each public docstring in ``modules``.

    Parameters
    ----------
    modules : sequence of str, default=DEFAULT_MODULES
        Importable standard-library module names; each text is labelled with its module.
    min_characters : int, default=30
        Shorter paragraphs are skipped.
    max_characters : int, default=400
        Longer paragraphs are cut at a word boundary.

    Returns
    -------
    texts : list of str
    labels : list of str
        The module each text comes from. Order is deterministic and texts are unique.

    Raises
    ------
    ValueError
        If a module cannot be imported.

    Examples
    --------
    >>> texts, labels = docstring_corpus(["json"])
    >>> len(texts) > 5 and set(labels) == {"json"}
    True
    """
    texts: list[str] = []
    labels: list[str] = []
    seen: set[str] = set()
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(
                f"cannot import module {module_name!r} for the corpus: {error}"
            ) from None
        for paragraph in _module_paragraphs(module):
            paragraph = _normalise(paragraph, max_characters)
            if len(paragraph) < min_characters or paragraph in seen:
                continue
            seen.add(paragraph)
            texts.append(paragraph)
            labels.append(module_name)
    return texts, labels


def license_paragraphs(*, min_characters: int = 40, max_characters: int = 400) -> list[str]:
    """Return the paragraphs of Python's LICENSE file, or an empty list where it is missing."""
    path = Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"
    if not path.is_file():
        return []
    paragraphs = re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace"))
    result = []
    for paragraph in paragraphs:
        paragraph = _normalise(paragraph, max_characters)
        if len(paragraph) >= min_characters and not set(paragraph) <= set("=-_ "):
            result.append(paragraph)
    return result


def _module_paragraphs(module: object) -> list[str]:
    objects = [module]
    for name in sorted(getattr(module, "__all__", None) or dir(module)):
        if name.startswith("_"):
            continue
        value = getattr(module, name, None)
        if inspect.isfunction(value) or inspect.isclass(value):
            if getattr(value, "__module__", "").split(".")[0] == module.__name__.split(".")[0]:
                objects.append(value)
        if inspect.isclass(value):
            for member_name, member in sorted(vars(value).items()):
                if not member_name.startswith("_") and inspect.isfunction(member):
                    objects.append(member)
    paragraphs = []
    for item in objects:
        doc = inspect.getdoc(item)
        if doc:
            paragraphs.append(doc.split("\n\n")[0])
    return paragraphs


def _normalise(text: str, max_characters: int) -> str:
    text = " ".join(text.split())
    if len(text) > max_characters:
        text = text[:max_characters].rsplit(" ", 1)[0]
    return text
