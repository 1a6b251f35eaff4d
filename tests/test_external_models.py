"""Models beyond the built-in eight: the name grammar, timm/<name>, tv/<name>, package.module:factory, offline weights."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision

from models import create_feature_extractor, create_model
from models.names import parse_name
from protocols.errors import BadInput
from tests.fake_caches import fake_hf_file

SIZE = 32


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to download fails the test (torch hub, Hugging Face, timm's bound copy)."""
    import huggingface_hub
    import timm.models._hub

    def boom(*a, **k):
        raise AssertionError("a download was attempted")

    for mod, attr in ((torch.hub, "load_state_dict_from_url"), (torch.hub, "download_url_to_file"),
                      (huggingface_hub, "hf_hub_download"), (timm.models._hub, "hf_hub_download"),
                      (timm.models._hub, "download_url_to_file")):
        monkeypatch.setattr(mod, attr, boom)


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches."""
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


# ---------------------------------------------------------------- the name grammar

@pytest.mark.parametrize("name,kind", [("resnet50", "builtin"), ("timm/resnet18", "timm"),
                                       ("timm/resnet18.a1_in1k", "timm"), ("tv/vit_b_16", "tv"),
                                       ("my_pkg.nets:tiny", "factory"), ("mod:Net", "factory")])
def test_names_parse(name, kind):
    assert parse_name(name)[0] == kind


@pytest.mark.parametrize("name", ["", "../x", "timm/../x", "timm/a/b", "tv/", "tv/a.b", "timm/.x", "/abs",
                                  "pkg..mod:f", "pkg.mod:", ":f", "pkg.mod:f:g", "os:system", "subprocess:run",
                                  "torch.nn:Linear", "a b", "Résnet", "x\\y", "timm/a..b"])
def test_names_refused(name):
    with pytest.raises(ValueError):
        parse_name(name)
    with pytest.raises(BadInput):
        create_model(name, input_size=SIZE)


def test_protocol_refuses_a_name_escaping_the_run_directory(tmp_path):
    from protocols.config import load_protocol

    p = tmp_path / "p.yaml"
    smoke = Path(__file__).resolve().parent.parent / "protocols" / "smoke" / "protocol.yaml"
    p.write_text(f"include: {smoke}\nname: x\nmodels: [resnet50, 'timm/../../etc']\n")
    with pytest.raises(BadInput) as err:
        load_protocol(p)
    assert str(p) in str(err.value) and "models[1]" in str(err.value)


# ---------------------------------------------------------------- timm and torchvision

@pytest.mark.parametrize("name,head", [("timm/test_resnet", "fc"), ("timm/test_vit", "head"),
                                       ("tv/resnet18", "fc"), ("tv/squeezenet1_1", "classifier.1")])
def test_external_models_build_with_head_and_record(name, head):
    m = create_model(name, num_classes=3, input_size=SIZE)
    assert m.fibro_head == head and m.fibro_weights["random_init"] and m.fibro_weights["requested"] is None
    with torch.no_grad():
        assert m.eval()(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 3)


def test_timm_model_is_timms_own():
    import timm

    torch.manual_seed(0)
    ours = create_model("timm/test_resnet", num_classes=4, input_size=SIZE)
    torch.manual_seed(0)
    ref = timm.create_model("test_resnet", num_classes=4)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))


def test_fixed_size_models_follow_input_size():
    with torch.device("meta"):
        vit = create_model("timm/test_vit", num_classes=2, input_size=64)  # timm: img_size
        tv_vit = create_model("tv/vit_b_32", num_classes=2, input_size=64)  # torchvision: image_size
    assert vit.patch_embed.img_size == (64, 64)
    assert tv_vit.encoder.pos_embedding.shape == (1, 2 * 2 + 1, 768)
    with pytest.raises(BadInput, match="multiple of 32"):
        create_model("tv/vit_b_32", input_size=48)


def test_torchvision_aux_heads_are_off_so_training_sees_one_tensor():
    with torch.device("meta"):
        m = create_model("tv/inception_v3", num_classes=3, input_size=96).train()
        out = m(torch.empty(2, 3, 96, 96))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)


def test_feature_extractor_of_a_timm_model():
    fx, d = create_feature_extractor("timm/test_resnet", input_size=SIZE)
    with torch.no_grad():
        assert fx(torch.randn(2, 3, SIZE, SIZE)).shape == (2, d)


def test_unknown_timm_and_tv_names_say_how_to_search():
    for name in ("timm/resnet_nope", "tv/resnet_nope", "timm/resnet18.no_such_tag"):
        with pytest.raises(BadInput, match=name.split(".")[0] if "no_such" not in name else "tag"):
            create_model(name, input_size=SIZE)


# ---------------------------------------------------------------- package.module:factory

FACTORY_SRC = '''
import torch
from torch import nn

SEEN = {}

def tiny(num_classes, input_size=224):
    """A two-layer CNN for tests."""
    SEEN["input_size"] = input_size
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))

def with_pretrained(num_classes, pretrained=False):
    m = tiny(num_classes)
    SEEN["pretrained"] = pretrained
    return m

def plain(num_classes):
    return tiny(num_classes)

def not_a_module(num_classes):
    return "model"

def wrong_width(num_classes):
    return tiny(num_classes + 1)

def no_num_classes():
    return tiny(2)

NOT_CALLABLE = 3
'''


@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg_fb"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent(FACTORY_SRC))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    importlib.invalidate_caches()
    yield "userpkg_fb.nets"
    import sys
    for mod in ("userpkg_fb.nets", "userpkg_fb"):
        sys.modules.pop(mod, None)


def test_factory_model_builds_and_gets_input_size(user_pkg):
    import sys

    m = create_model(f"{user_pkg}:tiny", num_classes=3, input_size=48)
    assert m.fibro_head == "4" and sys.modules[user_pkg].SEEN["input_size"] == 48
    assert create_model(f"{user_pkg}:plain", num_classes=2, input_size=SIZE).fibro_weights["random_init"]


@pytest.mark.parametrize("attr,match", [("not_a_module", "not a torch.nn.Module"),
                                        ("wrong_width", r"\[2, 3\] logits tensor, got \(2, 4\)"),
                                        ("no_num_classes", "num_classes"),
                                        ("NOT_CALLABLE", "not a callable"),
                                        ("missing_attr", "no attribute 'missing_attr'")])
def test_factory_errors_name_the_spec(user_pkg, attr, match):
    with pytest.raises(BadInput, match=match) as err:
        create_model(f"{user_pkg}:{attr}", num_classes=3, input_size=SIZE)
    assert f"{user_pkg}:{attr}" in str(err.value)


def test_factory_not_importable_exits_2_with_one_line(capsys):
    from bench.cli import main

    assert main(["models", "--models", "no_such_pkg_fb.nets:tiny", "--input-size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_pkg_fb.nets:tiny" in err[0] and "cannot import" in err[0]


def test_factory_weights_from_file_and_factory_pretrained(user_pkg, tmp_path, caches):
    import sys

    torch.manual_seed(1)
    src = create_model(f"{user_pkg}:plain", num_classes=5, input_size=SIZE)
    f = tmp_path / "mine.pt"
    torch.save(src.state_dict(), f)
    m = create_model(f"{user_pkg}:plain", num_classes=3, pretrained=str(f), input_size=SIZE)
    w = m.fibro_weights
    assert not w["random_init"] and w["missing_keys"] == ["4.bias", "4.weight"] and w["backbone_missing_keys"] == []
    assert torch.equal(m.state_dict()["0.weight"], src.state_dict()["0.weight"])
    # pretrained=True: a factory that takes `pretrained` is asked for its own weights ...
    m = create_model(f"{user_pkg}:with_pretrained", num_classes=3, pretrained=True, input_size=SIZE)
    assert sys.modules[user_pkg].SEEN["pretrained"] is True and not m.fibro_weights["random_init"]
    # ... one that does not has no known weights: an error without fallback, random init (recorded) with it
    with pytest.raises(BadInput, match="no published ImageNet weights"):
        create_model(f"{user_pkg}:plain", pretrained=True, input_size=SIZE, allow_random_init=False)
    assert create_model(f"{user_pkg}:plain", pretrained=True, input_size=SIZE).fibro_weights["random_init"]


# ---------------------------------------------------------------- offline weights for timm / tv

@pytest.fixture
def timm_file(caches):
    """Random 1000-class test_resnet weights as model.safetensors in the HF cache, where timm would put them."""
    import timm
    from safetensors.torch import save

    torch.manual_seed(5)
    sd = timm.create_model("test_resnet", num_classes=1000).state_dict()
    payload = save({k: v.contiguous() for k, v in sd.items()})
    return fake_hf_file(caches / "hf", "timm/test_resnet.r160_in1k", "model.safetensors", payload), sd


@pytest.mark.parametrize("pretrained", [True, "imagenet"])
def test_timm_weights_from_the_hf_cache_offline(timm_file, pretrained):
    path, sd = timm_file
    m = create_model("timm/test_resnet", num_classes=3, pretrained=pretrained, input_size=SIZE,
                     allow_random_init=False)
    w = m.fibro_weights
    assert not w["random_init"] and w["weights_tag"] == "timm:r160_in1k" and w["requested"] == "imagenet"
    assert w["missing_keys"] == ["fc.bias", "fc.weight"] and w["backbone_missing_keys"] == []
    own = m.state_dict()
    assert all(torch.equal(own[k], v) for k, v in sd.items() if not k.startswith("fc."))
    assert m.fc.weight.shape == (3, own["fc.weight"].shape[1])


def test_timm_pretrained_false_is_random_init(timm_file):
    _, sd = timm_file
    m = create_model("timm/test_resnet", num_classes=3, pretrained=False, input_size=SIZE)
    assert m.fibro_weights["random_init"] and not torch.equal(m.state_dict()["conv1.0.weight"], sd["conv1.0.weight"])


def test_timm_missing_weights_name_the_fetch_command(caches):
    with pytest.raises(BadInput) as err:
        create_model("timm/test_resnet", pretrained=True, input_size=SIZE, allow_random_init=False)
    msg = str(err.value)
    assert "fibrobench weights fetch timm/test_resnet" in msg and "models--timm--test_resnet.r160_in1k" in msg


def test_timm_foreign_file_is_refused(caches, tmp_path):
    f = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, f)
    with pytest.raises(BadInput, match="foreign.pth"):
        create_model("timm/test_resnet", pretrained=str(f), input_size=SIZE)


def test_tv_weights_from_the_torch_hub_cache(caches):
    torch.manual_seed(2)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    name = torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    ckpt = caches / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(sd, ckpt / name)
    m = create_model("tv/resnet18", num_classes=3, pretrained=True, input_size=SIZE, allow_random_init=False)
    assert m.fibro_weights["weights_tag"] == "torchvision:IMAGENET1K_V1"
    assert m.fibro_weights["missing_keys"] == ["fc.bias", "fc.weight"]
    assert torch.equal(m.state_dict()["layer4.1.conv2.weight"], sd["layer4.1.conv2.weight"])


@pytest.mark.parametrize("value,expected", [("true", "imagenet"), ("false", None), ("imagenet", "imagenet"),
                                            ("null", None)])
def test_protocol_pretrained_takes_timm_spelling(tmp_path, value, expected):
    from protocols.config import load_protocol

    smoke = Path(__file__).resolve().parent.parent / "protocols" / "smoke" / "protocol.yaml"
    p = tmp_path / "p.yaml"
    p.write_text(f"include: {smoke}\nname: x\npretrained: {value}\n")
    assert load_protocol(p).pretrained == expected


# ---------------------------------------------------------------- `fibrobench models` for any model

def test_cli_models_covers_timm_and_tv(tmp_path, capsys):
    from bench.cli import main
    from models.facts import count_params

    out = tmp_path / "facts.json"
    assert main(["models", "--models", "timm/test_resnet,tv/resnet18", "--input-size", "64", "--num-classes", "3",
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    with torch.device("meta"):
        expected = count_params(create_model("tv/resnet18", num_classes=3, input_size=64))[0]
    assert doc["models"]["tv/resnet18"]["params_total"] == expected == 11_178_051
    assert doc["models"]["timm/test_resnet"]["flops"] > 0
    assert "timm/test_resnet" in capsys.readouterr().out


def test_cli_models_search_lists_both_libraries(capsys):
    from bench.cli import main

    assert main(["models", "--search", "resnet1*"]) == 0
    names = capsys.readouterr().out.split()
    assert "timm/resnet18" in names and "tv/resnet18" in names and "tv/resnet50" not in names


def test_factory_model_records_its_code(user_pkg):
    import hashlib
    import sys

    code = create_model(f"{user_pkg}:plain", num_classes=2, input_size=SIZE).fibro_code
    path = sys.modules[user_pkg].__file__
    assert code == {"factory": f"{user_pkg}:plain", "file": path,
                    "sha256": hashlib.sha256(open(path, "rb").read()).hexdigest()}


def test_timm_resampled_position_embeddings_are_adapted_not_missing(caches):
    """A 160-px test_vit checkpoint loaded into a 64-px model: timm's filter resamples pos_embed."""
    import timm
    from safetensors.torch import save

    torch.manual_seed(6)
    sd = timm.create_model("test_vit", num_classes=1000).state_dict()  # its pretrained size, 160 px
    fake_hf_file(caches / "hf", "timm/test_vit.r160_in1k", "model.safetensors",
                 save({k: v.contiguous() for k, v in sd.items()}))
    m = create_model("timm/test_vit", num_classes=3, pretrained=True, input_size=64, allow_random_init=False)
    w = m.fibro_weights
    assert w["adapted_keys"] == ["pos_embed"] and m.pos_embed.shape != sd["pos_embed"].shape
    assert w["missing_keys"] == ["head.bias", "head.weight"] and w["backbone_missing_keys"] == []
    assert torch.equal(m.state_dict()["blocks.0.attn.qkv.weight"], sd["blocks.0.attn.qkv.weight"])


def test_timm_custom_load_model_reads_its_hf_state_dict(caches):
    """flexivit's config names a .npz custom loader (its big_vision release); the HF copy is a plain state dict."""
    import timm
    from safetensors.torch import save

    from timm.models import get_pretrained_cfg

    assert get_pretrained_cfg("flexivit_small").custom_load
    torch.manual_seed(8)
    sd = timm.create_model("flexivit_small", num_classes=1000, img_size=32).state_dict()
    fake_hf_file(caches / "hf", get_pretrained_cfg("flexivit_small").hf_hub_id, "model.safetensors",
                 save({k: v.contiguous() for k, v in sd.items()}))
    m = create_model("timm/flexivit_small", num_classes=2, pretrained=True, input_size=32, allow_random_init=False)
    assert torch.equal(m.state_dict()["blocks.0.mlp.fc1.weight"], sd["blocks.0.mlp.fc1.weight"])
    assert m.fibro_weights["backbone_missing_keys"] == []
