"""The shipped demo models on unseen seeded phantoms (seeds the recipe never trained on)."""

import pytest

from lungview.inference.device import resolve_device
from lungview.models.registry import ModelCache, demo_model_dir, resolve_models
from lungview.training.demo import EVAL_SEED0, evaluate_models


@pytest.fixture(scope="module")
def demo():
    if not any(demo_model_dir().glob("*.pt")):
        pytest.fail("the demo models are missing from lungview/resources/models (scripts/train_demo_models.py)")
    choice = resolve_models(use_user_dir=False)
    cache = ModelCache()
    return {role: cache.get(c.path, role) for role, c in choice.items()}


def test_cards_say_what_they_were_trained_on(demo):
    for role, model in demo.items():
        assert model.card.trained_on_phantoms and "NOT real CT" in model.card.training_data
        assert model.card.role == role and "cpm" in model.card.metrics


def test_sensitivity_at_two_false_positives_per_scan(demo):
    seeds = [EVAL_SEED0 + 500 + i for i in range(10)]
    metrics = evaluate_models(demo["segmentation"], demo["nodule"], demo["malignancy"], resolve_device("cpu"), seeds)
    print(metrics)
    assert metrics["froc"]["2.0"] >= 0.9, metrics
    assert metrics["malignancy_auc"] is None or metrics["malignancy_auc"] > 0.7, metrics
