"""The extra FID extractors (pytorch-fid, AdAM's torchvision Inception, FD-DINOv2) equal their
reference implementations, load their weight files offline, and fail clearly without them.

Each network is built with random weights by its library's own constructor, saved under the real
file name, loaded back through `build_extractor`, and compared with the reference computation
on the same 8-bit images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms as TF

from adaptscope.errors import RegistryError, WeightsError, WeightsNotFound
from adaptscope.metrics import weights
from adaptscope.track.backbones import FID_BACKBONES, build_extractor

FILES = {
    "pytorch-fid": "pt_inception-2015-12-05-6726825d.pth",
    "torchvision-inception": "inception_v3_google-0cc3c7bd.pth",
    "dinov2-vit-b14": "dinov2_vitb14_pretrain.pth",
}


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No download, no real cache: every file comes from the test's own folder."""
    monkeypatch.setenv("ADAPTSCOPE_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("ADAPTSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ADAPTSCOPE_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(weights, "_download", lambda *a: pytest.fail("download attempted"))


def uint8_images(n: int = 2, size: int = 64) -> np.ndarray:
    """(n, size, size, 3) uint8: smooth colour fields plus noise, as image files hold them."""
    g = torch.Generator().manual_seed(7)
    low = F.interpolate(torch.rand(n, 3, 6, 6, generator=g), size=(size, size), mode="bicubic")
    pixels = (low * 200 + 28 + torch.randn(n, 3, size, size, generator=g) * 12).round()
    return pixels.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def as_input(images: np.ndarray) -> torch.Tensor:
    """The extractor convention: (N, 3, S, S) floats holding the 8-bit values."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float()


def randomize_(net: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every entry of a net built on the meta device: He-normal convolutions and random
    batch-norm statistics keep activations O(1) through Inception, so equal features mean
    something (PyTorch's default init would shrink them towards 0 layer after layer)."""
    net = net.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.normal_(0, (2.0 / m.weight[0].numel()) ** 0.5, generator=g)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1, 0.1, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.num_batches_tracked.zero_()
            else:
                assert not list(m.parameters(recurse=False)), type(m)
    return net.eval()


def check_features(ours: torch.Tensor, theirs: torch.Tensor, dim: int) -> None:
    assert ours.shape == (2, dim) and ours.dtype == torch.float32 and ours.device.type == "cpu"
    assert theirs.abs().mean() > 1e-2  # features of a live network, not of a dead one
    assert (theirs[0] - theirs[1]).abs().max() > 1e-2  # and they depend on the image
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-4)


# pytorch-fid ------------------------------------------------------------------------------------


def random_fid_inception() -> nn.Module:
    """pytorch-fid's FID Inception with random weights, assembled as `fid_inception_v3` does
    (pytorch_fid/inception.py:206-217) minus the download."""
    from pytorch_fid import inception as pfi

    with torch.device("meta"):
        net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = pfi.FIDInceptionE_1(1280)
        net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return randomize_(net, seed=1)


def test_pytorch_fid_extractor_equals_pytorch_fid(tmp_path, monkeypatch):
    from pytorch_fid import inception as pfi

    net = random_fid_inception()
    torch.save(net.state_dict(), tmp_path / FILES["pytorch-fid"])
    ext = build_extractor("pytorch-fid", weights_dir=tmp_path)
    assert ext.input_size is None and ext.name == "inception-2015-12-05/pytorch-fid"

    monkeypatch.setattr(pfi, "fid_inception_v3", lambda: net)
    reference = pfi.InceptionV3([3]).eval()  # resize_input, normalize_input: its defaults
    images = uint8_images()
    # pytorch-fid reads files with ToTensor() (pytorch_fid/fid_score.py:121)
    batch = torch.stack([TF.ToTensor()(Image.fromarray(img)) for img in images])
    with torch.no_grad():
        theirs = reference(batch)[0].flatten(1)
    check_features(ext(as_input(images)), theirs, 2048)


# torchvision Inception, as AdAM / RICK ------------------------------------------------------------


def adam_features(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """AdAM's `InceptionV3([3])` forward (gan_training/metrics/inception.py:38-106 @ 6428e99) on
    a torchvision Inception, fed images in [-1, 1] as AdAM's evaluator feeds them."""
    blocks = [
        [net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(3, stride=2)],
        [net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(3, stride=2)],
        [net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c,
         net.Mixed_6d, net.Mixed_6e],
        [net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1))],
    ]
    x = F.interpolate(images, size=(299, 299), mode="bilinear")  # F.upsample's defaults
    x = x.clone()
    x[:, 0] = x[:, 0] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
    x[:, 1] = x[:, 1] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
    x[:, 2] = x[:, 2] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
    for block in blocks:
        x = nn.Sequential(*block)(x)
    return x.flatten(1)


def test_torchvision_inception_extractor_equals_adam(tmp_path):
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    net = randomize_(net, seed=2)
    # saved without BatchNorm's num_batches_tracked, as files from before PyTorch 0.4.1 are
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / FILES["torchvision-inception"])
    ext = build_extractor("torchvision-inception", weights_dir=tmp_path)
    assert ext.input_size is None and ext.name == "inception-v3-google-0cc3c7bd/adam"

    images = uint8_images()
    # AdAM's data: ToTensor() then Normalize((0.5,) * 3, (0.5,) * 3) (AdAM_main_adaptation.py:646)
    to_unit = TF.Compose([TF.ToTensor(), TF.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    batch = torch.stack([to_unit(Image.fromarray(img)) for img in images])
    with torch.no_grad():
        theirs = adam_features(net, batch)
    check_features(ext(as_input(images)), theirs, 2048)


# DINOv2 ViT-B/14, as dgm-eval -------------------------------------------------------------------


def random_dinov2() -> nn.Module:
    """timm's DINOv2 ViT-B/14 at its native 518 px (37x37 patches), random weights."""
    import timm

    with torch.device("meta"):
        net = timm.create_model("vit_base_patch14_dinov2.lvd142m", pretrained=False,
                                num_classes=0)
    net = net.to_empty(device="cpu")
    assert not list(net.buffers())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("gamma"):  # LayerScale
                p.uniform_(0.5, 1.5, generator=g)
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1, 0.1, generator=g)
            elif name in ("pos_embed", "cls_token"):  # large, so that positions matter
                p.normal_(0, 0.5, generator=g)
            else:
                p.normal_(0, 0.02, generator=g)
    return net.eval()


def facebook_state(net: nn.Module) -> dict:
    """The official checkpoint's layout: timm's names are DINOv2's, plus DINOv2's `mask_token`
    (dinov2/models/vision_transformer.py:169), at 518 px."""
    return {**net.state_dict(), "mask_token": torch.zeros(1, net.embed_dim)}


def dinov2_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`DinoVisionTransformer.forward` (dinov2/models/vision_transformer.py:180-233, 255-271,
    325-330 @ b8931f7) on the 518 px net's own modules: position embedding interpolated at each
    call (bicubic, scale factor (16 + 0.1) / 37, no antialiasing), CLS token after the norm."""
    tokens = F.conv2d(x, net.patch_embed.proj.weight, net.patch_embed.proj.bias, stride=14)
    tokens = torch.cat([net.cls_token.expand(len(x), -1, -1), tokens.flatten(2).transpose(1, 2)],
                       dim=1)
    m, dim, grid = 37, net.embed_dim, x.shape[-1] // 14
    patches = F.interpolate(net.pos_embed[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2),
                            scale_factor=((grid + 0.1) / m, (grid + 0.1) / m), mode="bicubic",
                            antialias=False)
    pos = torch.cat([net.pos_embed[:, :1], patches.permute(0, 2, 3, 1).reshape(1, -1, dim)], 1)
    tokens = tokens + pos
    for block in net.blocks:
        tokens = block(tokens)
    return net.norm(tokens)[:, 0]


def dgm_eval_input(img: np.ndarray) -> torch.Tensor:
    """dgm-eval's DINOv2 transform (dgm_eval/models/dinov2.py:46-59 @ 74c79f7, default resize)."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    image = TF.Compose([TF.Resize((224, 224), TF.InterpolationMode.BICUBIC),
                        TF.ToTensor()])(Image.fromarray(img))
    return TF.Normalize(mean, std)(image)


def test_dinov2_extractor_equals_dinov2_on_dgm_eval_inputs(tmp_path):
    net = random_dinov2()
    torch.save(facebook_state(net), tmp_path / FILES["dinov2-vit-b14"])
    ext = build_extractor("dinov2-vit-b14", weights_dir=tmp_path)
    assert ext.input_size is None and ext.name == "dinov2-vitb14-lvd142m/dgm-eval"

    images = uint8_images()
    with torch.no_grad():
        theirs = dinov2_forward(net, torch.stack([dgm_eval_input(img) for img in images]))
    check_features(ext(as_input(images)), theirs, 768)


# resolution and errors --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FILES))
def test_missing_file_offline_names_the_file(name, tmp_path):
    with pytest.raises(WeightsNotFound) as err:
        build_extractor(name, weights_dir=tmp_path)
    message = str(err.value)
    assert FILES[name] in message and str(tmp_path) in message
    assert "ADAPTSCOPE_OFFLINE" in message and "http" in message


@pytest.mark.parametrize("name", sorted(FILES))
def test_file_of_another_kind_names_the_file(name, tmp_path):
    path = tmp_path / FILES[name]
    torch.save({"conv.weight": torch.zeros(2, 3)}, path)
    with pytest.raises(WeightsError, match=FILES[name]) as err:
        build_extractor(name, weights_dir=tmp_path)
    assert str(path) in str(err.value)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(RegistryError) as err:
        build_extractor("nope")
    message = str(err.value)
    for name in ("inception", "toy", *FILES):
        assert name in message
    assert set(FILES) < set(FID_BACKBONES.names())


def test_extractor_names_are_distinct():
    names = {FID_BACKBONES.get(n).name for n in FILES} | {"inception-2015-12-05/clean-fid"}
    assert len(names) == len(FILES) + 1
