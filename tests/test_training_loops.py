"""The training loops learn (a loss that falls) and stop when cancelled."""

import numpy as np
import pytest

from lungview.core.jobs import Cancelled, CancelToken
from lungview.inference.device import resolve_device
from lungview.models.checkpoint import BOOK_KWARGS
from lungview.models.nets import LunaModel, UNetWrapper
from lungview.training.loops import train_classifier, train_segmentation

CPU = resolve_device("cpu", "fp32")


def test_segmentation_loss_falls_on_a_learnable_task():
    rng = np.random.default_rng(0)

    def sampler(n):
        x = rng.normal(-800, 50, size=(n, 7, 32, 32)).astype(np.float32)
        y = np.zeros((n, 1, 32, 32), np.float32)
        for k in range(n):
            r, c = rng.integers(8, 24, size=2)
            x[k, :, r - 3:r + 3, c - 3:c + 3] = 40.0
            y[k, 0, r - 3:r + 3, c - 3:c + 3] = 1.0
        return x, y

    losses = train_segmentation(UNetWrapper(**BOOK_KWARGS["UNetWrapper"]), sampler, 40, CPU, batch=8, lr=3e-3)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_classifier_loss_falls_and_cancel_stops_it():
    rng = np.random.default_rng(1)

    def sampler(n):
        labels = np.arange(n) % 2
        x = rng.normal(-800, 50, size=(n, 1, 32, 48, 48)).astype(np.float32)
        x[labels == 1, :, 12:20, 20:28, 20:28] = 50.0
        return x, labels.astype(np.int64)

    losses = train_classifier(LunaModel(), sampler, 25, CPU, batch=8, lr=1e-3)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    token = CancelToken()
    seen = []

    def progress(done, total, message):
        seen.append(done)
        if done == 3:
            token.cancel()

    with pytest.raises(Cancelled):
        train_classifier(LunaModel(), sampler, 50, CPU, batch=4, progress=progress, cancel=token)
    assert max(seen) == 3
