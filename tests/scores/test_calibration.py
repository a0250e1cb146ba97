"""False-alarm rates under no drift, and conformal flag rates with no outliers.

Each case draws both windows from one distribution many times and counts how often the test
reports drift at alpha = 0.05. A calibrated test lands near 0.05; the accepted band
[0.02, 0.08] is about +-2 binomial standard deviations at 200 trials and +-2.8 at 400.

Seeds are fixed, so every case is deterministic. Even a perfectly calibrated test leaves the
band in about 3 % of cases at 200 trials, so when a case fails after a change of seed or
settings, rerun it with 2,000 trials before calling it miscalibrated.

Most MMD cases use B = 20 permutations to stay fast: with ``drift = p < alpha`` the exact level
is then 1 / 21 = 0.048, while B = 19 would give 0 because alpha * (B + 1) = 1 is a whole
number and p = 1 / 20 is not below it.
"""

from __future__ import annotations

import numpy as np
import pytest

from latentlens.scores import OutlierScorer, drift_test

ALPHA = 0.05
LOW, HIGH = 0.02, 0.08
WIDTH = 6
SHAPES = ("gaussian", "heavy_tailed", "clustered", "anisotropic")


def draw(shape, size, rng):
    """Draw ``size`` rows of width 6 from one of four fixed distributions."""
    if shape == "gaussian":
        return rng.normal(size=(size, WIDTH))
    if shape == "heavy_tailed":
        # Student t with 2 degrees of freedom has infinite variance.
        return rng.standard_t(2, size=(size, WIDTH))
    if shape == "clustered":
        centers = np.zeros((3, WIDTH))
        centers[1, 0] = centers[2, 1] = 4.0
        return centers[rng.integers(0, 3, size)] + 0.5 * rng.normal(size=(size, WIDTH))
    if shape == "anisotropic":
        rotation, _ = np.linalg.qr(np.random.default_rng(99).normal(size=(WIDTH, WIDTH)))
        return (rng.normal(size=(size, WIDTH)) * np.geomspace(1.0, 100.0, WIDTH)) @ rotation
    raise ValueError(shape)


def false_alarm_rate(shape, n_reference, n_current, trials, seed, **options):
    rng = np.random.default_rng(seed)
    alarms = 0
    for trial in range(trials):
        result = drift_test(
            draw(shape, n_reference, rng),
            draw(shape, n_current, rng),
            alpha=ALPHA,
            random_state=seed * 100_003 + trial,
            **options,
        )
        alarms += result.drift
    return alarms / trials


SIZES_SMALL = [(50, 50), (50, 500), (500, 500)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("n_reference", "n_current"), SIZES_SMALL)
def test_rff_mmd_calibrated(shape, n_reference, n_current):
    seed = 1000 * SHAPES.index(shape) + SIZES_SMALL.index((n_reference, n_current))
    rate = false_alarm_rate(
        shape, n_reference, n_current, 400, seed, n_permutations=20, n_features=64
    )
    assert LOW <= rate <= HIGH, f"false-alarm rate {rate:.4f}"


@pytest.mark.parametrize("shape", SHAPES)
def test_rff_mmd_calibrated_at_5000(shape):
    rate = false_alarm_rate(
        shape, 5000, 5000, 200, 50 + SHAPES.index(shape), n_permutations=20, n_features=64
    )
    assert LOW <= rate <= HIGH, f"false-alarm rate {rate:.4f}"


@pytest.mark.parametrize("shape", ["gaussian", "heavy_tailed"])
def test_rff_mmd_calibrated_with_defaults(shape):
    """The default 512 features and 200 permutations, on 32 of 64 input dimensions."""
    rng = np.random.default_rng(71 + SHAPES.index(shape))
    alarms = 0
    trials = 200
    for trial in range(trials):
        reference = np.hstack([draw(shape, 200, rng) for _ in range(11)])[:, :64]
        current = np.hstack([draw(shape, 200, rng) for _ in range(11)])[:, :64]
        alarms += drift_test(reference, current, random_state=trial).drift
    assert LOW <= alarms / trials <= HIGH, f"false-alarm rate {alarms / trials:.4f}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("n_reference", "n_current"), [(50, 50), (120, 80)])
def test_exact_mmd_calibrated(shape, n_reference, n_current):
    rate = false_alarm_rate(
        shape,
        n_reference,
        n_current,
        400,
        200 + SHAPES.index(shape),
        method="mmd_exact",
        n_permutations=20,
    )
    assert LOW <= rate <= HIGH, f"false-alarm rate {rate:.4f}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("n_reference", "n_current"), [(50, 500), (500, 500), (5000, 5000)])
def test_ks_calibrated(shape, n_reference, n_current):
    trials = 200 if n_reference == 5000 else 400
    rate = false_alarm_rate(
        shape,
        n_reference,
        n_current,
        trials,
        310 + SHAPES.index(shape) + n_reference,
        method="ks",
    )
    assert LOW <= rate <= HIGH, f"false-alarm rate {rate:.4f}"


OUTLIER_CASES = [
    ("knn", "euclidean"),
    ("lof", "euclidean"),
    ("knn", "cosine"),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("method", "metric"), OUTLIER_CASES)
def test_conformal_flags_near_alpha(shape, method, metric):
    """Share of new inliers flagged at 0.05, pooled over 20 scorers of 1,000 reference rows.

    Each scorer has 250 calibration rows, so its own flag rate varies by about 0.014 around
    0.05; pooling 20 scorers x 500 new rows brings the spread down to about 0.004.
    """
    rng = np.random.default_rng(400 + SHAPES.index(shape))
    flagged = 0
    total = 0
    for repeat in range(20):
        scorer = OutlierScorer(
            draw(shape, 1000, rng), method=method, metric=metric, random_state=repeat
        )
        result = scorer.score(draw(shape, 500, rng))
        flagged += int(result.flags(ALPHA).sum())
        total += len(result)
    assert 0.03 <= flagged / total <= 0.07, f"flag rate {flagged / total:.4f}"
