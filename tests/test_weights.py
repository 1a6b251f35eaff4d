"""Offline weights: torch-hub-cache lookup, explicit files, key reports, clear errors, and no download calls."""
from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision

from models import create_feature_extractor, create_model
from models.cbam import cbam_modules
from models.hub import imagenet_sources
from models.registry import get_spec
from models.weights import load_state_dict_into
from protocols.errors import BadInput

RESNET_FILE = "resnet50-0676ba61.pth"  # torchvision's IMAGENET1K_V1 file name


@pytest.fixture(scope="module")
def fake_resnet_file(tmp_path_factory):
    """A randomly initialised 1000-class torchvision resnet50 saved where torchvision would cache it."""
    home = tmp_path_factory.mktemp("torch_home")
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.manual_seed(7)
    sd = torchvision.models.resnet50(weights=None).state_dict()
    torch.save(sd, ckpt / RESNET_FILE)
    return home, ckpt / RESNET_FILE, sd


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to download fails the test."""
    def boom(*a, **k):
        raise AssertionError("a download was attempted")

    import huggingface_hub
    import timm.models._hub

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", boom)
    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", boom)


@pytest.fixture
def torch_home(fake_resnet_file, monkeypatch):
    home, path, sd = fake_resnet_file
    monkeypatch.setenv("TORCH_HOME", str(home))
    return path, sd


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def _backbone_equal(model, sd):
    own = model.state_dict()
    keys = [k for k in sd if not k.startswith("fc.")]
    return all(torch.equal(own[k], sd[k]) for k in keys)


def test_imagenet_from_hub_cache(torch_home):
    path, sd = torch_home
    m = create_model("resnet50", pretrained="imagenet")
    w = m.fibro_weights
    assert {"requested", "source", "missing_keys", "unexpected_keys", "random_init"} <= set(w)
    assert w["requested"] == "imagenet" and w["source"] == str(path.resolve()) and w["random_init"] is False
    assert w["missing_keys"] == ["fc.bias", "fc.weight"]  # the new 5-class head
    assert w["unexpected_keys"] == ["fc.bias", "fc.weight"] == w["shape_mismatch_keys"]  # the 1000-class head
    assert w["backbone_missing_keys"] == []
    assert w["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert _backbone_equal(m, sd)
    assert m.fc.weight.shape == (5, 2048)


@pytest.mark.parametrize("name", ["resnet50_cbam", "resnet50_cbam_post", "resnet50_cbam_woo"])
def test_cbam_variants_load_backbone_only(torch_home, name):
    _, sd = torch_home
    m = create_model(name, pretrained="imagenet", input_size=64)
    w = m.fibro_weights
    # BatchNorm fills a missing num_batches_tracked itself and does not report it
    cbam_keys = {k for k in m.state_dict() if "cbam" in k and not k.endswith("num_batches_tracked")}
    assert cbam_keys and set(w["missing_keys"]) == cbam_keys | {"fc.weight", "fc.bias"}
    assert w["backbone_missing_keys"] == [] and not w["random_init"]
    assert _backbone_equal(m, sd)
    fresh = [mod for _, mod in cbam_modules(m)]
    assert fresh and all(bool((mod.spatial.bn.weight == 0).all()) for mod in fresh)  # CBAM kept its own init


def test_explicit_path_with_wrapper_and_module_prefix(tmp_path, fake_resnet_file):
    _, _, sd = fake_resnet_file
    f = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in sd.items()}}, f)
    m = create_model("resnet50", pretrained=str(f))
    assert m.fibro_weights["source"] == str(f.resolve()) and _backbone_equal(m, sd)


def test_missing_imagenet_file_names_expected_path(empty_torch_home):
    with pytest.raises(BadInput) as err:
        create_model("resnet50_cbam", pretrained="imagenet", allow_random_init=False)
    msg = str(err.value)
    assert str(empty_torch_home / "hub" / "checkpoints" / RESNET_FILE) in msg
    assert "pretrained" in msg and "fibrobench weights fetch resnet50_cbam" in msg


def test_missing_imagenet_file_random_init_is_recorded(empty_torch_home, caplog):
    m = create_model("efficientnet_b0", pretrained="imagenet", input_size=32)
    w = m.fibro_weights
    assert w["random_init"] is True and w["source"] is None and w["requested"] == "imagenet"
    assert imagenet_sources(get_spec("efficientnet_b0"))[0].where() in w["note"]
    assert "fibrobench weights fetch efficientnet_b0" in w["note"]
    assert any("not found offline" in r.message for r in caplog.records)


def test_no_pretrained_is_recorded_as_random():
    w = create_model("resnet50", pretrained=None, input_size=32).fibro_weights
    assert w["random_init"] is True and w["requested"] is None and w["source"] is None


def test_explicit_missing_path_always_errors(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        create_model("resnet50", pretrained=str(tmp_path / "nope.pth"), allow_random_init=True)


def test_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInput, match="not a readable weights-only weights file"):
        create_model("resnet50", pretrained=str(bad))
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, foreign)
    with pytest.raises(BadInput, match="no tensor in the file matches"):
        create_model("resnet50", pretrained=str(foreign))


def test_densenet_legacy_key_names_are_remapped(tmp_path):
    torch.manual_seed(3)
    sd = torchvision.models.densenet121(weights=None).state_dict()
    legacy = {k.replace(".norm1.", ".norm.1.").replace(".conv1.", ".conv.1.")
               .replace(".norm2.", ".norm.2.").replace(".conv2.", ".conv.2."): v for k, v in sd.items()}
    assert legacy.keys() != sd.keys()
    f = tmp_path / "densenet121-a639ec97.pth"
    torch.save(legacy, f)
    m = create_model("densenet121", pretrained=str(f), input_size=32)
    assert m.fibro_weights["missing_keys"] == ["classifier.bias", "classifier.weight"]
    own = m.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in sd if not k.startswith("classifier"))


def test_vit_position_embeddings_are_interpolated(tmp_path):
    torch.manual_seed(0)
    m = create_model("vit_b_16", input_size=32)
    sd = dict(m.state_dict())
    sd["encoder.pos_embedding"] = torch.randn(1, 197, 768)  # a 224-px checkpoint: 14x14 patches + class
    rep = load_state_dict_into(m, sd, "vit_b_16", tmp_path / "vit.pth")
    assert rep["shape_mismatch_keys"] == [] and rep["missing_keys"] == []
    pe = m.encoder.pos_embedding
    assert pe.shape == (1, 5, 768)
    torch.testing.assert_close(pe[:, 0], sd["encoder.pos_embedding"][:, 0])  # class token copied as is


def test_feature_extractor_uses_pretrained_backbone(torch_home):
    _, sd = torch_home
    fx, d = create_feature_extractor("resnet50", pretrained="imagenet", input_size=32)
    assert d == 2048 and not fx.fibro_weights["random_init"]
    assert torch.equal(fx.state_dict()["layer4.2.conv3.weight"], sd["layer4.2.conv3.weight"])
