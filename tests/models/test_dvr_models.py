"""DVR's networks (models/dvr.py): the decoder against its definition (DVR's im2mesh/dvr/models/decoder.py
and im2mesh/layers.py), the encoders' topology and parameter counts, loading torchvision-style weights,
the config section and the builder."""

import pytest
import torch

from taichi_sdf.models.dvr import (
    ConvEncoder,
    DVRDecoder,
    DVRModelConfig,
    ResNet18Encoder,
    build_dvr_networks,
)


def n_params(module, skip=()):
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith(skip))


# ----------------------------------------------------------------------------------------- decoder


def test_decoder_parameter_count_is_dvrs():
    # DVR's Decoder(dim=3, c_dim, hidden_size, n_blocks=5, out_dim=4): fc_p, 5 x fc_c, 5 ResnetBlockFC
    # (fc_0 and fc_1, both hidden x hidden with bias), fc_out.
    def dvr_count(h, c, blocks=5, out=4):
        return (3 * h + h) + blocks * (c * h + h if c else 0) + blocks * 2 * (h * h + h) + (h * out + out)

    assert dvr_count(512, 256) == 3_288_580
    assert n_params(DVRDecoder(c_dim=256, hidden_size=512)) == dvr_count(512, 256)
    assert n_params(DVRDecoder(c_dim=0, hidden_size=128)) == dvr_count(128, 0)


def test_decoder_state_dict_uses_dvrs_names():
    keys = set(DVRDecoder(c_dim=4, hidden_size=8, n_blocks=2).state_dict())
    want = {"fc_p.weight", "fc_p.bias", "fc_out.weight", "fc_out.bias"}
    want |= {f"fc_c.{i}.{p}" for i in range(2) for p in ("weight", "bias")}
    want |= {f"blocks.{i}.fc_{j}.{p}" for i in range(2) for j in (0, 1) for p in ("weight", "bias")}
    assert keys == want


def test_blocks_start_as_identity_plus_bias():
    # ResnetBlockFC zero-initialises fc_1.weight only: block(x) = x + fc_1.bias at initialisation.
    dec = DVRDecoder(c_dim=0, hidden_size=16)
    x = torch.randn(5, 16)
    for block in dec.blocks:
        assert torch.count_nonzero(block.fc_1.weight) == 0
        assert torch.allclose(block(x), x + block.fc_1.bias, atol=1e-6)
        assert torch.count_nonzero(block.fc_0.weight) > 0


@pytest.mark.parametrize("leaky", [False, True])
def test_decoder_matches_its_definition(leaky):
    torch.manual_seed(0)
    dec = DVRDecoder(c_dim=3, hidden_size=6, n_blocks=2, leaky=leaky)
    for p in dec.parameters():  # non-zero everywhere, so every term of the formula matters
        torch.nn.init.normal_(p, 0.0, 0.5)
    p, c = torch.randn(2, 4, 3), torch.randn(2, 3)
    lin = lambda layer, x: x @ layer.weight.T + layer.bias  # noqa: E731
    net = lin(dec.fc_p, p)
    for i in range(2):
        net = net + lin(dec.fc_c[i], c)[:, None, :]
        blk = dec.blocks[i]
        net = net + lin(blk.fc_1, lin(blk.fc_0, net.clamp_min(0)).clamp_min(0))
    act = torch.where(net > 0, net, 0.2 * net) if leaky else net.clamp_min(0)
    expected = lin(dec.fc_out, act)
    assert torch.allclose(dec(p, c), expected, atol=1e-5)
    assert torch.allclose(dec.rgb(p, c), torch.sigmoid(expected[..., 1:4]), atol=1e-6)


def test_batched_per_point_and_field_forms_agree():
    torch.manual_seed(1)
    dec = DVRDecoder(c_dim=5, hidden_size=16, n_blocks=2)
    p, c = torch.randn(3, 7, 3), torch.randn(3, 5)
    out = dec(p, c)
    assert out.shape == (3, 7, 4)
    assert not torch.allclose(out[0], out[1])  # each batch element gets its own code
    for b in range(3):
        assert torch.allclose(dec(p[b], c[b]), out[b], atol=1e-6)
        assert torch.allclose(dec(p[b], c[b].expand(7, 5)), out[b], atol=1e-6)
        assert torch.allclose(dec.field(c[b])(p[b]), out[b], atol=1e-6)
        assert torch.allclose(dec.field(c[b : b + 1])(p[b]), out[b], atol=1e-6)


def test_unconditioned_decoder_and_field():
    dec = DVRDecoder(c_dim=0, hidden_size=8, n_blocks=1, out_dim=1)
    p = torch.randn(4, 3)
    assert dec(p).shape == (4, 1)
    assert torch.equal(dec(p, torch.empty(4, 0)), dec(p))  # DVR's encode_inputs gives an empty [B, 0] code
    assert torch.equal(dec.field()(p), dec(p))
    with pytest.raises(ValueError, match="out_dim=1"):
        dec.rgb(p)


def test_decoder_rejects_bad_inputs():
    dec = DVRDecoder(c_dim=4, hidden_size=8, n_blocks=1)
    with pytest.raises(ValueError, match="c: .*c_dim=4"):
        dec(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"c: expected shape \[2, 4\]"):
        dec(torch.randn(2, 5, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="points: expected shape"):
        dec(torch.randn(5, 2), torch.randn(4))
    with pytest.raises(ValueError, match="c: expected one code"):
        dec.field(torch.randn(2, 4))
    with pytest.raises(ValueError, match="c: the decoder is unconditioned"):
        DVRDecoder(c_dim=0, hidden_size=8)(torch.randn(5, 3), torch.randn(5, 2))
    with pytest.raises(ValueError, match="hidden_size"):
        DVRDecoder(hidden_size=0)


# ----------------------------------------------------------------------------------------- encoders


def torchvision_resnet18_keys():
    """The state_dict keys of torchvision.models.resnet18() (written out from its BasicBlock / ResNet)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "fc.weight", "fc.bias"} | {f"bn1.{k}" for k in bn}
    for stage in range(1, 5):
        for block in range(2):
            pre = f"layer{stage}.{block}"
            keys |= {f"{pre}.conv1.weight", f"{pre}.conv2.weight"} | {f"{pre}.bn{i}.{k}" for i in (1, 2) for k in bn}
            if stage > 1 and block == 0:
                keys |= {f"{pre}.downsample.0.weight"} | {f"{pre}.downsample.1.{k}" for k in bn}
    return keys


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(2)
    return ResNet18Encoder(c_dim=8)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory, resnet):
    """A stand-in for resnet18-f37072fd.pth: torchvision's keys and shapes, a 1000-class fc, new values."""
    g = torch.Generator().manual_seed(3)
    state = {k: torch.randn(v.shape, generator=g) for k, v in resnet.state_dict().items() if v.is_floating_point()}
    state |= {k: torch.tensor(7) for k in resnet.state_dict() if k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512, generator=g), torch.randn(1000, generator=g)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_resnet18_has_torchvisions_names_and_size(resnet):
    assert set(resnet.state_dict()) == torchvision_resnet18_keys()
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in the 1000-class fc
    assert n_params(resnet, skip=("fc.",)) == 11_689_512 - 513_000
    assert resnet.fc.weight.shape == (8, 512)


def test_resnet18_forward_and_normalisation(resnet):
    resnet.eval()
    x = torch.rand(2, 3, 40, 48)
    with torch.no_grad():
        c = resnet(x)
        mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        resnet.normalize = False
        try:
            c_pre = resnet((x - mean[:, None, None]) / std[:, None, None])
        finally:
            resnet.normalize = True
    assert c.shape == (2, 8)
    assert torch.allclose(c, c_pre, atol=1e-5)
    with pytest.raises(ValueError, match=r"images: expected shape \[B, 3, H, W\]"):
        resnet(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize("with_counters", [True, False])  # older torchvision files lack num_batches_tracked
def test_resnet18_loads_torchvision_weights_except_fc(tmp_path, torchvision_file, with_counters):
    path, state = torchvision_file
    if not with_counters:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        path = tmp_path / "old.pth"
        torch.save(state, path)
    enc = ResNet18Encoder(c_dim=8, weights_path=path)
    own = enc.state_dict()
    for key in ("conv1.weight", "bn1.running_var", "layer3.0.downsample.0.weight", "layer4.1.bn2.bias"):
        assert torch.equal(own[key], state[key]), key
    assert enc.fc.weight.shape == (8, 512)  # the classifier is not loaded


def test_resnet18_weight_errors(tmp_path, torchvision_file):
    path, state = torchvision_file
    with pytest.raises(FileNotFoundError, match="weights_path"):
        ResNet18Encoder(c_dim=8, weights_path=tmp_path / "absent.pth")
    partial = {k: v for k, v in state.items() if k != "layer2.1.conv2.weight"}
    partial["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    partial["features.extra"] = torch.zeros(1)
    torch.save(partial, tmp_path / "bad.pth")
    with pytest.raises(
        ValueError, match=r"missing keys: layer2\.1\.conv2\.weight.*unexpected keys: features\.extra.*layer1\.0\.conv1"
    ):
        ResNet18Encoder(c_dim=8, weights_path=tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable torch state_dict"):
        ResNet18Encoder(c_dim=8, weights_path=tmp_path / "junk.pth")


def test_conv_encoder_is_dvrs():
    enc = ConvEncoder(c_dim=16)
    widths = (3, 32, 64, 128, 256, 512)
    dvr_count = sum(widths[i] * widths[i + 1] * 9 + widths[i + 1] for i in range(5)) + 512 * 16 + 16
    assert n_params(enc) == dvr_count
    assert {k.split(".")[0] for k in enc.state_dict()} == {"conv0", "conv1", "conv2", "conv3", "conv4", "fc_out"}
    assert enc(torch.rand(2, 3, 64, 70)).shape == (2, 16)
    with pytest.raises(ValueError, match="H, W >= 63"):
        enc(torch.rand(1, 3, 62, 80))


# ----------------------------------------------------------------------------------------- config + builder


def test_config_defaults_build_dvrs_single_view_model():
    cfg = DVRModelConfig()
    assert (cfg.hidden_size, cfg.n_blocks, cfg.c_dim, cfg.out_dim, cfg.encoder) == (512, 5, 256, 4, "resnet18")
    dec, enc = build_dvr_networks(DVRModelConfig(hidden_size=32, c_dim=16, encoder="conv"))
    assert isinstance(dec, DVRDecoder) and isinstance(enc, ConvEncoder)
    images, points = torch.rand(2, 3, 64, 64), torch.rand(2, 10, 3) - 0.5
    out = dec(points, enc(images))
    assert out.shape == (2, 10, 4)
    out[..., 0].sum().backward()
    assert enc.conv0.weight.grad is not None and enc.conv0.weight.grad.abs().sum() > 0  # gradients reach the encoder


def test_config_for_multi_view_has_no_encoder():
    dec, enc = build_dvr_networks(DVRModelConfig(hidden_size=16, c_dim=0, encoder="none"))
    assert enc is None and dec.c_dim == 0 and dec.fc_c is None


def test_builder_passes_the_weights_path(torchvision_file):
    path, state = torchvision_file
    _, enc = build_dvr_networks(DVRModelConfig(hidden_size=8, c_dim=4, encoder_weights=str(path)))
    assert torch.equal(enc.conv1.weight, state["conv1.weight"])


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"encoder": "vgg"}, "encoder"),
        ({"c_dim": 0}, "c_dim"),  # the resnet18 default needs a code length
        ({"c_dim": 8, "encoder": "none"}, "c_dim"),
        ({"encoder": "conv", "encoder_weights": "w.pth"}, "encoder_weights"),
        ({"out_dim": 0}, "out_dim"),
    ],
)
def test_config_refuses_bad_values(kwargs, key):
    with pytest.raises(ValueError) as info:
        DVRModelConfig(**kwargs)
    assert info.value.config_key == key
