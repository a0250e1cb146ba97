"""Drift tests detect real shifts: perturbed digits through the demo CNN, and text from another
domain embedded by the real MiniLM checkpoint. Both use 500 rows per side and require p < 0.01,
which with the default 200 permutations means at most one permutation reaches the observed
statistic.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from latentlens.scores import OutlierScorer, drift_test

ROWS_PER_SIDE = 500


@pytest.fixture(scope="module")
def digits_model():
    torch = pytest.importorskip("torch")
    from latentlens.demo import load_digits_split, train_digits_cnn

    split = load_digits_split(seed=0)
    with torch.random.fork_rng():
        model = train_digits_cnn(split, epochs=3, seed=0).eval()
    images = np.concatenate([split.train_images, split.validation_images])
    order = np.random.default_rng(0).permutation(len(images))
    reference_images = images[order[:ROWS_PER_SIDE]]
    current_images = images[order[ROWS_PER_SIDE : 2 * ROWS_PER_SIDE]]

    def penultimate(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            hidden = model.penultimate(model.features(torch.from_numpy(batch)))
        return hidden.numpy().astype(np.float64)

    return penultimate, reference_images, current_images


def add_noise(images, scale, seed):
    noise = np.random.default_rng(seed).normal(scale=scale, size=images.shape)
    return np.clip(images + noise, 0.0, 1.0).astype(np.float32)


def rotate(images, degrees):
    rotated = ndimage.rotate(images, degrees, axes=(2, 3), reshape=False, order=1, mode="constant")
    return np.clip(rotated, 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("method", ["mmd", "ks"])
def test_digits_unperturbed_is_not_flagged(digits_model, method):
    penultimate, reference_images, current_images = digits_model
    result = drift_test(
        penultimate(reference_images), penultimate(current_images), method=method, random_state=0
    )
    assert result.p_value > 0.05


@pytest.mark.parametrize("method", ["mmd", "ks"])
@pytest.mark.parametrize(
    "perturb",
    [lambda images: add_noise(images, 0.15, seed=1), lambda images: rotate(images, 15.0)],
    ids=["noise_0.15", "rotation_15deg"],
)
def test_digits_perturbation_is_detected(digits_model, method, perturb):
    penultimate, reference_images, current_images = digits_model
    reference = penultimate(reference_images)
    current = penultimate(perturb(current_images))
    result = drift_test(reference, current, method=method, random_state=0)
    assert result.n_reference == result.n_current == ROWS_PER_SIDE
    assert result.p_value < 0.01


def test_digits_out_of_distribution_rows_are_flagged(digits_model):
    """Inverted digits and uniform-noise images are unlike any training image row by row."""
    penultimate, reference_images, current_images = digits_model
    scorer = OutlierScorer(penultimate(reference_images), random_state=0)
    clean = scorer.score(penultimate(current_images)).flags(0.05).mean()
    inverted = scorer.score(penultimate(1.0 - current_images)).flags(0.05).mean()
    noise_images = np.random.default_rng(3).uniform(size=current_images.shape).astype(np.float32)
    noise = scorer.score(penultimate(noise_images)).flags(0.05).mean()
    # 125 calibration rows: the clean flag rate varies by about 0.02 around 0.05.
    assert clean < 0.12
    assert inverted > 0.5
    assert noise > 0.5


# Standard-library modules present from Python 3.10 to 3.13 whose import has no side effects.
DOCSTRING_MODULES = (
    "abc argparse ast asyncio.streams asyncio.tasks base64 bisect bz2 calendar cmd code codecs "
    "collections collections.abc colorsys compileall concurrent.futures configparser "
    "contextlib contextvars copy copyreg csv dataclasses datetime decimal difflib dis doctest "
    "email.message email.utils enum filecmp fileinput fnmatch fractions ftplib functools "
    "getopt gettext glob graphlib gzip hashlib heapq hmac html.parser http.client "
    "http.cookiejar http.server imaplib importlib.metadata inspect io ipaddress itertools json "
    "json.decoder keyword locale logging logging.handlers lzma mailbox mimetypes "
    "modulefinder netrc numbers operator optparse os pathlib pdb pickle pkgutil platform "
    "plistlib poplib pprint pstats py_compile pyclbr queue quopri random re reprlib runpy "
    "sched secrets selectors shelve shlex shutil signal smtplib socket socketserver sqlite3 "
    "stat statistics string struct subprocess symtable sysconfig tarfile tempfile textwrap "
    "threading timeit token tokenize trace traceback types typing unittest unittest.mock "
    "urllib.parse urllib.request uuid warnings wave weakref wsgiref.simple_server "
    "xml.dom.minidom xmlrpc.client zipfile zipimport zoneinfo"
).split()


def stdlib_docstrings() -> list[str]:
    """First paragraphs of public docstrings in the standard library, 40-400 characters."""
    found: dict[str, None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in DOCSTRING_MODULES:
            module = importlib.import_module(name)
            documented = [module]
            for attribute, value in sorted(vars(module).items()):
                if attribute.startswith("_") or getattr(value, "__module__", None) != name:
                    continue
                if inspect.isfunction(value) or inspect.isclass(value):
                    documented.append(value)
                if inspect.isclass(value):
                    documented += [
                        member
                        for member_name, member in sorted(vars(value).items())
                        if not member_name.startswith("_") and inspect.isfunction(member)
                    ]
            for value in documented:
                if not isinstance(value.__doc__, str):
                    continue
                paragraph = " ".join(inspect.cleandoc(value.__doc__).split("\n\n")[0].split())
                if 40 <= len(paragraph) <= 400:
                    found[paragraph] = None
    return list(found)


def licence_sentences() -> list[str]:
    """Sentences of licence texts: Python's own LICENSE.txt and Debian's common licences."""
    paths = [Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"]
    paths += sorted(Path("/usr/share/common-licenses").glob("*"))
    found: dict[str, None] = {}
    for path in paths:
        if not path.is_file():
            continue
        text = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
            if 40 <= len(sentence) <= 400:
                found[sentence] = None
    return list(found)


def embed(texts, model_path):
    """Mean-pooled MiniLM embeddings (attention-masked), truncated to 24 tokens per text."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path)
    model = transformers.AutoModel.from_pretrained(model_path).eval()
    rows = []
    # Batches of similar length waste less work on padding.
    order = np.argsort([len(text) for text in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), 100):
            batch = [texts[i] for i in order[start : start + 100]]
            encoded = tokenizer(
                batch, padding=True, truncation=True, max_length=24, return_tensors="pt"
            )
            hidden = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            rows.append(((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)).numpy())
    embeddings = np.empty((len(texts), rows[0].shape[1]))
    embeddings[order] = np.concatenate(rows)
    return embeddings


def test_minilm_detects_other_domain(minilm_path):
    docstrings = stdlib_docstrings()
    sentences = licence_sentences()
    if len(sentences) < ROWS_PER_SIDE:
        pytest.skip(
            f"found {len(sentences)} licence sentences, need {ROWS_PER_SIDE}; install Debian's "
            "base-files (/usr/share/common-licenses)"
        )
    assert len(docstrings) >= ROWS_PER_SIDE
    rng = np.random.default_rng(0)
    chosen_docstrings = [
        docstrings[i] for i in rng.choice(len(docstrings), ROWS_PER_SIDE, replace=False)
    ]
    chosen_sentences = [
        sentences[i] for i in rng.choice(len(sentences), ROWS_PER_SIDE, replace=False)
    ]
    embeddings = embed(chosen_docstrings + chosen_sentences, minilm_path)
    reference, current = embeddings[:ROWS_PER_SIDE], embeddings[ROWS_PER_SIDE:]
    assert reference.shape == (ROWS_PER_SIDE, 384)

    for method in ("mmd", "ks"):
        result = drift_test(reference, current, method=method, random_state=0)
        assert result.p_value < 0.01, method
