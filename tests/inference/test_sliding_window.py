import numpy as np
import pytest
import torch

from shdeconv.inference import (
    SlidingWindowInferer,
    blend_weights,
    sliding_window_inference,
    tile_starts,
)

CASES = [((2, 20, 17, 9), 8, 0.5), ((1, 5, 6, 7), 8, 0.25), ((3, 16, 16, 16), 16, 0.0), ((1, 33, 9, 12), (8, 8, 4), 0.5)]


@pytest.mark.parametrize("shape, roi, overlap", CASES)
def test_pointwise_predictor_is_reproduced_exactly(shape, roi, overlap):
    x = torch.randn(shape)
    out = sliding_window_inference(x, roi, lambda t: 2 * t + 1, overlap=overlap, sw_batch_size=3)
    torch.testing.assert_close(out, 2 * x + 1, rtol=1e-5, atol=1e-5)


def test_channels_may_change():
    x = torch.randn(2, 10, 10, 10)
    out = SlidingWindowInferer(8, overlap=0.5)(x, lambda t: t.sum(1, keepdim=True).repeat(1, 3, 1, 1, 1))
    assert out.shape == (3, 10, 10, 10)
    torch.testing.assert_close(out[1], x.sum(0), rtol=1e-5, atol=1e-5)


def test_tiles_cover_and_blend_weights():
    for size, roi, ov in [(20, 8, 0.5), (8, 8, 0.5), (9, 8, 0.25), (100, 16, 0.5)]:
        s = tile_starts(size, roi, ov)
        covered = np.zeros(size, bool)
        for a in s:
            covered[a : a + roi] = True
        assert covered.all() and s[-1] + roi == max(size, roi)
    w = blend_weights((8, 8, 8))
    assert w.max() == 1 and w.min() > 0 and w[0, 0, 0] < w[4, 4, 4]


def test_seams_vanish_for_a_translation_invariant_network():
    """A conv net is exact away from tile borders; blended tiles stay close to the direct output."""
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 1, 3, padding=1)
    x = torch.randn(1, 24, 24, 24)
    with torch.no_grad():
        direct = net(x[None])[0]
        tiled = sliding_window_inference(x, 12, net, overlap=0.5)
    err = (tiled - direct).abs()
    assert float(err[:, 1:-1, 1:-1, 1:-1].mean()) < 0.02 * float(direct.abs().mean())


def test_bad_arguments():
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_inference(torch.zeros(1, 4, 4, 4), 4, lambda t: t, overlap=1.0)
    with pytest.raises(ValueError, match=r"\[C, X, Y, Z\]"):
        sliding_window_inference(torch.zeros(4, 4, 4), 4, lambda t: t)


def test_roi_mask_skips_empty_tiles_and_keeps_the_rest():
    x = torch.randn(2, 20, 20, 12)
    mask = torch.zeros(20, 20, 12, dtype=torch.bool)
    mask[2:6, 3:7, 1:5] = True  # touches only the first tile(s) of each axis
    calls = []

    def predictor(t):
        calls.append(len(t))
        return t * 2.0

    full = sliding_window_inference(x, 8, lambda t: t * 2.0, overlap=0.25, sw_batch_size=1)
    got = sliding_window_inference(x, 8, predictor, overlap=0.25, sw_batch_size=1, roi_mask=mask)
    n_all = len(tile_starts(20, 8, 0.25)) ** 2 * len(tile_starts(12, 8, 0.25))
    assert 0 < sum(calls) < n_all
    torch.testing.assert_close(got[:, mask], full[:, mask])
    assert (got[:, 12:, 12:, :] == 0).all()
    with pytest.raises(ValueError, match="roi_mask shape"):
        sliding_window_inference(x, 8, predictor, roi_mask=mask[:10])


def test_prune_drops_only_edge_tiles_whose_mask_voxels_other_tiles_cover():
    g = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (30, 26, 22)), indexing="ij"))
    mask = ((g - torch.tensor([15.0, 13, 11])[:, None, None, None]) ** 2 / torch.tensor([144.0, 100, 64])[:, None,
            None, None]).sum(0) <= 1  # an ellipsoid: edge tiles overlap it a little
    x = torch.randn(3, 30, 26, 22)
    calls = {True: 0, False: 0}

    def run(prune):
        def predictor(t):
            calls[prune] += len(t)
            return 2 * t + 1

        return sliding_window_inference(x, 8, predictor, overlap=0.25, sw_batch_size=4, roi_mask=mask, prune=prune)

    pruned, full = run(True), run(False)
    assert 0 < calls[True] < calls[False]
    # a pointwise predictor is reproduced wherever any tile ran: every mask voxel is still covered
    torch.testing.assert_close(pruned[:, mask], (2 * x + 1)[:, mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pruned[:, mask], full[:, mask], rtol=1e-5, atol=1e-5)
    # each dropped tile straddles the mask's edge and its mask voxels lie in some kept tile;
    # kept tiles keep their grid order
    from shdeconv.inference._sliding_window import _prune_redundant_tiles

    starts = [(a, b, c) for a in tile_starts(30, 8, 0.25) for b in tile_starts(26, 8, 0.25)
              for c in tile_starts(22, 8, 0.25) if mask[a:a + 8, b:b + 8, c:c + 8].any()]
    kept = _prune_redundant_tiles(starts, (8, 8, 8), mask)
    assert kept == sorted(kept) and set(kept) < set(starts) and len(kept) == calls[True]
    cover = torch.zeros_like(mask)
    for a, b, c in kept:
        cover[a:a + 8, b:b + 8, c:c + 8] = True
    assert cover[mask].all()
    assert all(not mask[a:a + 8, b:b + 8, c:c + 8].all() for a, b, c in set(starts) - set(kept))


def test_prune_keeps_the_requested_overlap_inside_the_mask():
    """At 50% overlap on a full mask no tile is dropped (dropping every tile that other tiles
    cover would keep the 27 tiles of a non-overlapping grid out of 125, undoing the overlap)."""
    from shdeconv.inference._sliding_window import _prune_redundant_tiles

    starts = [(a, b, c) for a in tile_starts(24, 8, 0.5) for b in tile_starts(24, 8, 0.5)
              for c in tile_starts(24, 8, 0.5)]
    assert len(starts) == 125
    assert _prune_redundant_tiles(starts, (8, 8, 8), torch.ones(24, 24, 24, dtype=torch.bool)) == starts


def test_worker_threads_stitch_the_same_volume_in_the_callers_grad_mode():
    """workers > 1 runs tiles in threads; the result is the one-worker result, bit for bit."""
    torch.manual_seed(0)
    x = torch.randn(2, 21, 17, 13)
    mask = torch.rand(21, 17, 13) > 0.3
    modes = []

    def predictor(t):
        modes.append(torch.is_grad_enabled())
        return torch.cat([t.sum(1, keepdim=True) ** 2, t], 1)

    kw = {"overlap": 0.25, "sw_batch_size": 2, "roi_mask": mask, "prune": True}
    with torch.no_grad():
        one = sliding_window_inference(x, 8, predictor, workers=1, **kw)
        many = SlidingWindowInferer(8, overlap=0.25, sw_batch_size=2, prune=True, workers=3)(x, predictor, roi_mask=mask)
    assert torch.equal(one, many)
    assert len(modes) > 6 and not any(modes)  # worker threads kept the caller's no_grad
    with pytest.raises(ValueError, match="workers"):
        sliding_window_inference(x, 8, predictor, workers=0)


def test_an_error_in_a_worker_reaches_the_caller():
    calls = []

    def predictor(t):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("tile failed")
        return t

    with pytest.raises(RuntimeError, match="tile failed"):
        sliding_window_inference(torch.randn(1, 40, 40, 40), 8, predictor, overlap=0.0, sw_batch_size=1, workers=2)
    assert len(calls) < 125  # the pending tiles were cancelled, not all run
