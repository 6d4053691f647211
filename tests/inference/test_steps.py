import numpy as np
import pytest
import torch
from scipy import ndimage

from lungview.core import CtVolume
from lungview.core.jobs import Cancelled, CancelToken
from lungview.inference.candidates import erode6
from lungview.inference.classify import crop
from lungview.inference.device import resolve_device
from lungview.inference.lungmask import lung_mask
from lungview.inference.pipeline import STEPS, Pipeline
from lungview.inference.segmentation import _DeviceSlab, _input, segment
from lungview.models.checkpoint import BOOK_KWARGS, LoadedModel, ModelCard, book_card
from lungview.models.nets import LunaModel, UNetWrapper
from lungview.synthetic import make_phantom

CPU = resolve_device("cpu", "fp32")


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(21, size=256, slices=80, pixel_mm=1.4, slice_mm=3.0, nodules=4)


def test_lung_mask_matches_truth_and_keeps_juxtapleural_nodules(phantom):
    mask = lung_mask(phantom.volume)
    full = mask.full()
    truth = phantom.lung_mask
    dice = 2 * (full & truth).sum() / (full.sum() + truth.sum())
    assert dice > 0.9
    assert mask.contains_irc(np.array([n.center_irc for n in phantom.nodules])).all()
    jp = make_phantom(4, size=256, slices=80, pixel_mm=1.4, slice_mm=3.0, nodules=4,
                      kinds=("juxtapleural",), diameter_mm=(12, 20))
    assert jp.nodules and lung_mask(jp.volume).contains_irc(np.array([n.center_irc for n in jp.nodules])).all()


def test_no_lungs_means_empty_mask():
    vol = CtVolume(hu=np.full((10, 64, 64), 40, np.int16), spacing_xyz=(1, 1, 1), origin_xyz=(0, 0, 0))
    mask = lung_mask(vol)
    assert not mask.small.any() and mask.bbox() is None


def test_cropped_segmentation_equals_whole_slices_inside_the_lung(phantom):
    torch.manual_seed(0)
    net = UNetWrapper(**BOOK_KWARGS["UNetWrapper"]).eval()
    with torch.no_grad():  # a random but non-trivial network: batch norm statistics of real scale
        net.input_batchnorm.running_mean.fill_(-500.0)
        net.input_batchnorm.running_var.fill_(400.0**2)
    mask = lung_mask(phantom.volume)
    seg = segment(phantom.volume, net, CPU, mask)
    assert seg.pixels_run < 0.7 * seg.slices_run * 256 * 256  # cropping did save work
    lung = mask.full()
    with torch.no_grad():
        for k in np.flatnonzero(lung.any(axis=(1, 2)))[::7]:
            card = book_card("segmentation", "s")
            whole = net(_input(phantom.volume.hu, int(k), (0, 256, 0, 256), 4, card)[None])[0, 0].numpy()
            got = seg.prob[k].astype(np.float64)
            assert np.abs(np.rint(whole * 255) - got)[lung[k]].max() <= 1


def test_erode6_equals_scipy():
    rng = np.random.default_rng(1)
    m = ndimage.binary_dilation(rng.random((20, 30, 40)) > 0.9, iterations=2)
    np.testing.assert_array_equal(erode6(m), ndimage.binary_erosion(m, iterations=1))


def test_crop_is_shifted_inside_the_volume():
    hu = np.arange(40 * 60 * 60, dtype=np.int32).reshape(40, 60, 60).astype(np.int16)
    c = crop(hu, (1, 58, 30), (32, 48, 48))
    assert c.shape == (32, 48, 48)
    assert c[0, 0, 0] == hu[0, 12, 6]
    small = crop(np.zeros((20, 60, 60), np.int16), (10, 30, 30), (32, 48, 48))
    assert small.shape == (32, 48, 48) and small[-1, 0, 0] == -1000


def _tiny_pipeline():
    torch.manual_seed(0)
    seg = LoadedModel(UNetWrapper(**BOOK_KWARGS["UNetWrapper"]).eval(), ModelCard("s", "segmentation"), "-", "", "t")
    cls = LoadedModel(LunaModel().eval(), ModelCard("c", "nodule"), "-", "", "t")
    return Pipeline(seg, cls, CPU)


def test_pipeline_reports_steps_progress_and_detections(phantom):
    seen = []
    result = _tiny_pipeline().run(phantom.volume, progress=lambda d, t, m: seen.append(m.split(":")[0]))
    assert list(result.timings_s) == list(STEPS) and result.timings_s["resampling"] == 0.0
    assert {"segmentation", "classification"} <= set(seen)
    assert result.device.startswith("CPU")
    # no malignancy model: no made-up probability
    assert all(d.malignancy_source == "no malignancy model" and d.p_malignant is None for d in result.detections)
    assert [d.p_nodule for d in result.detections] == sorted((d.p_nodule for d in result.detections), reverse=True)


def test_cancel_mid_run_raises_and_returns_nothing(phantom):
    token = CancelToken()
    calls = []

    def progress(done, total, message):
        calls.append(message)
        if message.startswith("segmentation") and done >= 3:
            token.cancel()

    with pytest.raises(Cancelled):
        _tiny_pipeline().run(phantom.volume, progress, token)
    assert not any(m.startswith("classification") for m in calls)


def test_device_errors():
    from lungview.core import LungViewError

    assert resolve_device("cpu").is_cpu
    with pytest.raises(LungViewError, match="unknown device"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(LungViewError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_pipeline_matches_cpu(phantom):
    """The trained demo models (an untrained net's probabilities hover at the threshold, where
    any rounding difference adds or drops a crumb) on the GPU in fp32 and in bf16 against the CPU."""
    from lungview.models.registry import ModelCache, resolve_models

    cache = ModelCache()
    models = {role: cache.get(c.path, role) for role, c in resolve_models(use_user_dir=False).items()}
    run = lambda info: Pipeline(models["segmentation"], models["nodule"], info, models["malignancy"]).run(phantom.volume)
    cpu = run(CPU).above(0.5)
    assert cpu, "the demo models find the phantom's nodules"
    for precision in ("fp32", "bf16"):
        gpu = run(resolve_device("cuda", precision))
        assert gpu.device.endswith("(CUDA)")
        found = gpu.above(0.5)
        assert len(found) == len(cpu), precision
        for a, b in zip(sorted(cpu, key=lambda d: d.center_xyz), sorted(found, key=lambda d: d.center_xyz)):
            assert np.linalg.norm(np.subtract(a.center_xyz, b.center_xyz)) < 1.0, precision
            assert abs(a.p_nodule - b.p_nodule) < (1e-3 if precision == "fp32" else 0.05), precision
            assert abs(a.diameter_mm - b.diameter_mm) < 0.1 * a.diameter_mm, precision


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_out_of_memory_halves_the_batch(phantom, monkeypatch):
    """A real CUDA out-of-memory error (the allocator capped at 200 MB) in a 64-slice batch:
    segmentation retries with smaller batches and gives what small batches give."""
    import lungview.inference.segmentation as segmentation

    seg = _tiny_pipeline().seg.module
    info = resolve_device("cuda", "fp32")
    small = segment(phantom.volume, seg, info, batch_size=2).prob
    retries = []
    real = segmentation.smaller_batch

    def spy(exc, device, batch_size):
        retries.append((type(exc).__name__, batch_size))
        return real(exc, device, batch_size)

    monkeypatch.setattr(segmentation, "smaller_batch", spy)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(info.device).total_memory
    torch.cuda.set_per_process_memory_fraction(200e6 / total, info.device)
    try:
        big = segment(phantom.volume, seg, info, batch_size=64).prob
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, info.device)
    assert retries and retries[0] == ("OutOfMemoryError", 64)
    assert np.abs(big.astype(int) - small.astype(int)).max() <= 1


def test_deterministic_on_cpu(phantom):
    a = _tiny_pipeline().run(phantom.volume)
    b = _tiny_pipeline().run(phantom.volume)
    assert a.detections == b.detections
    np.testing.assert_array_equal(a.prob, b.prob)


def test_inputs_are_cut_as_the_model_card_says():
    from lungview.inference.classify import classifier_input
    from lungview.inference.segmentation import segmentation_input

    hu = np.random.default_rng(0).integers(-1500, 1500, size=(20, 30, 30)).astype(np.int16)
    card = ModelCard("narrow", "segmentation", hu_clip=(-500.0, 500.0), context_slices=1)
    x = segmentation_input(hu, 0, (5, 15, 0, 30), card)
    assert x.shape == (3, 10, 30) and x.min() == -500 and x.max() == 500
    np.testing.assert_array_equal(x[0], x[1])  # the slice above the first is the first (clamped)
    np.testing.assert_array_equal(x[2], np.clip(hu[1, 5:15], -500, 500))
    crop_card = ModelCard("small", "nodule", crop_irc=(8, 12, 12))
    c = classifier_input(hu, (10, 15, 15), crop_card)
    assert c.shape == (8, 12, 12) and c.min() >= -1000 and c.max() <= 1000
    np.testing.assert_array_equal(c, np.clip(hu[6:14, 9:21, 9:21], -1000, 1000))


def test_batches_cut_on_the_device_equal_the_cpu_crops():
    """The GPU path cuts its batches from one uploaded slab; they must be the CPU's `_input` crops
    (context clamped at the ends, HU clipped, zero padding to the U-Net's multiple)."""
    hu = np.random.default_rng(0).integers(-2048, 3000, (20, 70, 90)).astype(np.int16)
    card = book_card("segmentation", "x")
    box = (3, 61, 5, 83)  # 58 x 78: padded to 60 x 80
    ks = [0, 1, 7, 18, 19]
    slab = _DeviceSlab(hu, box, 4, card, CPU).batch(ks)
    assert slab.shape == (5, 7, 60, 80)
    assert torch.equal(slab, torch.stack([_input(hu, k, box, 4, card) for k in ks]))
