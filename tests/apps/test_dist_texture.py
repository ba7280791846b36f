"""DIST's texture rendering: the colour decoder (shapes, errors, gradients of the shaded colours w.r.t.
the colour code and the decoder's weights against float64 finite differences) and `run_texture` on
the tiny DeepSDF experiment of spheres of tests/apps/test_dist_app.py."""

import json

import pytest
import torch

from apps.dist.texture import (
    ColorModel,
    TextureConfig,
    TracedView,
    light_turntable,
    overlap_l1,
    run_texture,
    shaded_colors,
)
from taichi_sdf.mesh.shading import DirectionalLight, lambert
from taichi_sdf.models.texture import ColorDecoder, ColorDecoderConfig, build_color_decoder
from tests.apps import test_dist_app

experiment = test_dist_app.experiment  # the module-scoped tiny DeepSDF experiment fixture


def test_decoder_outputs_colours_for_one_or_per_point_codes():
    torch.manual_seed(0)
    dec = ColorDecoder(latent_size=4, hidden=32, layers=3, latent_in=(2,), num_frequencies=2)
    x = torch.rand(7, 3) * 2 - 1
    code = torch.randn(4)
    rgb = dec(code, x)
    assert rgb.shape == (7, 3) and bool(((rgb > 0) & (rgb < 1)).all())
    torch.testing.assert_close(dec(code.expand(7, 4), x), rgb)
    # input [code 4, xyz + sin/cos at 2 frequencies 15]; layer 1 gives up 15 outputs to the re-injection
    assert [m.in_features for m in dec.layers] == [19, 32, 17 + 19, 32]
    assert [m.out_features for m in dec.layers] == [32, 32 - 15, 32, 3]


def test_decoder_rejects_bad_inputs_naming_them():
    dec = ColorDecoder(latent_size=4, hidden=32, layers=3, latent_in=(2,), shape_latent_size=2)
    x = torch.zeros(5, 3)
    with pytest.raises(ValueError, match="points"):
        dec(torch.zeros(4), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="code"):
        dec(torch.zeros(3), x, torch.zeros(2))
    with pytest.raises(ValueError, match="shape_code"):
        dec(torch.zeros(4), x)
    with pytest.raises(TypeError, match="code"):
        dec([0.0] * 4, x, torch.zeros(2))
    with pytest.raises(ValueError, match="latent_in"):
        ColorDecoder(latent_size=4, hidden=32, layers=3, latent_in=(3,))
    with pytest.raises(ValueError, match="latent_size"):
        ColorDecoderConfig(latent_size=0)
    with pytest.raises(ValueError, match="fit_views"):
        TextureConfig(fit_views=0)


def test_config_builds_the_originals_sizes_by_default():
    # DIST: DeepSDF's 8 x 512 on [shape 256, colour 256, xyz], dims[3] widened by the colour code to 768
    dec = build_color_decoder(ColorDecoderConfig(), shape_latent_size=256)
    assert [m.in_features for m in dec.layers] == [515, 512, 512, 512, 768, 512, 512, 512, 512]
    assert [m.out_features for m in dec.layers] == [512, 512, 512, 253, 512, 512, 512, 512, 3]
    assert build_color_decoder(ColorDecoderConfig(use_shape_code=False), 256).shape_latent_size == 0


@pytest.mark.parametrize("shape_size", [0, 2])
def test_shaded_colour_gradients_match_finite_differences(shape_size):
    """d(Lambert-shaded decoded colours)/d(colour code, decoder weights, shape code) in float64."""
    torch.manual_seed(1)
    dec = ColorDecoder(latent_size=3, hidden=16, layers=3, latent_in=(2,), num_frequencies=1,
                       shape_latent_size=shape_size).double()  # fmt: skip
    n = torch.nn.functional.normalize(torch.randn(6, 3, dtype=torch.float64), dim=1)
    x = torch.rand(6, 3, dtype=torch.float64) * 2 - 1
    light = DirectionalLight(direction=(0.2, -1.0, -0.4))
    names = [name for name, _ in dec.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for p in dec.parameters()]
    code = torch.randn(3, dtype=torch.float64, requires_grad=True)
    shape_code = torch.randn(max(shape_size, 1), dtype=torch.float64, requires_grad=shape_size > 0)

    def f(code, shape_code, *weights):
        rgb = torch.func.functional_call(dec, dict(zip(names, weights)), (code, x, shape_code if shape_size else None))
        return lambert(rgb[None], n[None], light)[0]  # the decoder's albedo under the observations' shading

    assert torch.autograd.gradcheck(f, (code, shape_code, *params), eps=1e-6, atol=1e-7)


def test_shaded_colors_and_overlap_l1_follow_the_colour_model():
    torch.manual_seed(2)
    dec = ColorDecoder(latent_size=2, hidden=8, layers=2, latent_in=(1,)).requires_grad_(False)
    cm = ColorModel(dec, torch.randn(3, 2), torch.zeros(3, 1))
    mask = torch.tensor([[True, False], [True, True]])
    pts, nrm = torch.rand(3, 3), torch.nn.functional.normalize(torch.randn(3, 3), dim=1)
    rgb = shaded_colors(cm, cm.mean_code, pts, nrm, torch.zeros(1))
    torch.testing.assert_close(rgb, lambert(dec(cm.codes.mean(0), pts)[None], nrm[None], DirectionalLight())[0])
    tv = TracedView(mask, pts, nrm, -nrm)
    obs_rgb, obs_mask = torch.rand(2, 2, 3), torch.tensor([[True, True], [False, True]])
    # hits (0,0), (1,0), (1,1); observed at (0,0), (1,1): the L1 of those two
    want = torch.cat([(rgb[0] - obs_rgb[0, 0]).abs(), (rgb[2] - obs_rgb[1, 1]).abs()]).mean()
    torch.testing.assert_close(overlap_l1(rgb, tv, obs_rgb, obs_mask), want)


def test_light_turntable_circles_at_the_elevation():
    lights = light_turntable(8, 25.0)
    d = torch.tensor([lt.direction for lt in lights], dtype=torch.float64)
    assert torch.allclose(d.norm(dim=1), torch.ones(8, dtype=torch.float64))
    assert torch.allclose(-d[:, 1], torch.full((8,), 0.42261826174, dtype=torch.float64))  # sin 25 deg, shining down
    assert lights[0].color == DirectionalLight().color and lights[0].ambient == DirectionalLight().ambient


TINY_TEXTURE = ["views.views=3", "views.size=24", "render.march_steps=40"]


@pytest.mark.slow
def test_run_texture_fits_colour_codes_and_writes_the_run(experiment, tmp_path):
    from apps.dist.__main__ import prepare

    cfg = test_dist_app.dist_cfg(experiment, tmp_path, *TINY_TEXTURE)
    # a briefly trained decoder leaves a clear colour error that the held-out code can remove
    cfg.texture = TextureConfig(iterations=60, fit_views=2, fit_iterations=40, fit_lr=5e-2, demo_frames=3, demo_size=16)
    model, shapes, paths, _ = prepare(cfg, progress=False)
    out = tmp_path / "texture"
    summary = run_texture(cfg, model, shapes, paths, out, progress=False)
    assert summary["shapes"] == 1
    assert summary["fitted"]["psnr"] > summary["initial"]["psnr"] + 0.5, summary
    metrics = json.loads((out / "metrics.json").read_text())
    row = metrics["shapes"][0]
    assert row["fit_views"] == [0, 1] and row["eval_views"] == [2]
    assert row["fit_l1"]["final"] < row["fit_l1"]["initial"]
    for f in ("color_decoder.pt", "shapes/r50.json", "images/r50_views.png", "images/r50_lighting.gif",
              "images/r50_lighting/frame_002.png"):  # fmt: skip
        assert (out / f).is_file(), f
    # a rerun resumes: the decoder and the shape's row are read back, not recomputed
    assert run_texture(cfg, model, shapes, paths, out, progress=False) == summary
