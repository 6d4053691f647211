"""Lung-RADS v2022 categories at and around every boundary of the ACR's table (baseline
screening), sizes as Lung-RADS takes them: the mean of long and short axis to 0.1 mm."""

import pytest

from lungview.core.findings import mean_diameter
from lungview.review.lungrads import lung_rads, worst


@pytest.mark.parametrize("mean_mm, category", [
    (3.0, "2"), (5.9, "2"), (6.0, "3"), (7.9, "3"), (8.0, "4A"), (14.9, "4A"), (15.0, "4B"), (40.0, "4B")])
def test_solid(mean_mm, category):
    assert lung_rads("solid", mean_mm) == category


@pytest.mark.parametrize("mean_mm, category", [(5.0, "2"), (29.9, "2"), (30.0, "3"), (45.0, "3")])
def test_ground_glass(mean_mm, category):
    assert lung_rads("ground-glass", mean_mm) == category


@pytest.mark.parametrize("total, solid, category", [
    (5.9, 3.0, "2"), (6.0, 3.0, "3"), (12.0, 5.9, "3"), (12.0, 6.0, "4A"), (12.0, 7.9, "4A"),
    (12.0, 8.0, "4B"), (5.9, None, "2"), (6.0, None, None)])
def test_part_solid(total, solid, category):
    assert lung_rads("part-solid", total, solid) == category


def test_calcified_is_benign_and_unknown_types_refused():
    assert lung_rads("calcified", 25.0) == "1"
    with pytest.raises(ValueError, match="unknown nodule type"):
        lung_rads("spiculated", 10.0)


def test_size_is_the_mean_of_the_axes_rounded_to_a_tenth():
    # 6.4 x 5.5 mm: mean 5.95 rounds to 6.0 -> category 3; 6.3 x 5.5 mm: 5.9 -> 2
    assert lung_rads("solid", mean_diameter(6.4, 5.5)) == "3"
    assert lung_rads("solid", mean_diameter(6.3, 5.5)) == "2"


def test_scan_category_is_the_worst():
    assert worst(["2", "4A", "3"]) == "4A"
    assert worst(["4B", "4A"]) == "4B"
    assert worst([None, "2"]) == "2"
    assert worst([]) == "1"
