"""`fibrobench weights fetch|where`: the explicit download, through torchvision's / timm's own functions, hash-checked.

The network layer (torch.hub.download_url_to_file, huggingface_hub's hf_hub_download as timm binds it) is
replaced by fakes that write into the caches what a download would; everything above it is the real code.
"""
from __future__ import annotations

import hashlib
import io
import json

import pytest
import torch
import torchvision

from bench.cli import main
from models.hub import Source
from tests.fake_caches import fake_hf_file


@pytest.fixture
def caches(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def _payload(seed=0) -> bytes:
    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), buf)
    return buf.getvalue()


@pytest.fixture
def fake_url_download(monkeypatch):
    """torch.hub.download_url_to_file writing PAYLOAD; records the hash prefix torch.hub asked to check."""
    calls = []

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append({"url": url, "hash_prefix": hash_prefix})
        with open(dst, "wb") as f:
            f.write(download.payload)

    download.payload = _payload()
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    return download, calls


def test_fetch_tv_downloads_through_torch_hub_and_checks_the_hash(caches, fake_url_download, monkeypatch, capsys):
    download, calls = fake_url_download
    digest = hashlib.sha256(download.payload).hexdigest()
    fname = f"resnet18-{digest[:8]}.pth"  # torchvision's naming: <arch>-<first sha256 hex digits>.pth
    src = Source("torchvision", "IMAGENET1K_V1", f"https://download.invalid/models/{fname}", None, fname)
    monkeypatch.setattr("models.hub._tv_sources", lambda arch: [src])
    out = caches / "w.json"
    assert main(["weights", "fetch", "tv/resnet18", "--json", str(out)]) == 0
    assert calls == [{"url": src.url, "hash_prefix": digest[:8]}]  # check_hash=True reached torch.hub
    rec = json.loads(out.read_text())["models"]["tv/resnet18"]
    assert rec["path"] == str(caches / "torch" / "hub" / "checkpoints" / fname)
    assert rec["sha256"] == digest and rec["published_hash"] == digest[:8] and rec["verified"]
    assert rec["already_cached"] is False
    assert "downloaded" in capsys.readouterr().out
    # a second fetch finds it and downloads nothing; `run` then uses it offline
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded twice"))
    assert main(["weights", "fetch", "tv/resnet18", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["models"]["tv/resnet18"]["already_cached"] is True
    from models import create_model
    m = create_model("tv/resnet18", num_classes=3, pretrained=True, input_size=32, allow_random_init=False)
    assert m.fibro_weights["sha256"] == digest


def test_fetch_with_a_hash_mismatch_fails_and_leaves_nothing(caches, fake_url_download, capsys):
    """The real torchvision resnet18 entry: our fake bytes do not match its published prefix."""
    out = caches / "w.json"
    assert main(["weights", "fetch", "tv/resnet18", "--json", str(out)]) == 1
    rec = json.loads(out.read_text())["models"]["tv/resnet18"]
    assert "does not match the published hash" in rec["error"]
    name = torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    assert not (caches / "torch" / "hub" / "checkpoints" / name).exists()
    assert "FAILED" in capsys.readouterr().err


@pytest.fixture
def fake_hf_download(caches, monkeypatch):
    """timm's hf_hub_download: writes a safetensors file into the HF cache layout (blob named by its sha256)."""
    import timm
    import timm.models._hub
    from safetensors.torch import save

    torch.manual_seed(3)
    sd = timm.create_model("test_resnet", num_classes=1000).state_dict()
    payload = save({k: v.contiguous() for k, v in sd.items()})
    calls = []

    def download(repo_id, filename, revision=None, cache_dir=None, **kw):
        calls.append((repo_id, filename))
        return str(fake_hf_file(caches / "hf", repo_id, filename, payload, blob_name=download.blob_name))

    download.blob_name = None
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", download)
    return download, calls, payload, sd


def test_fetch_timm_from_the_hub_and_run_uses_it_offline(fake_hf_download, monkeypatch):
    import timm.models._hub

    download, calls, payload, sd = fake_hf_download
    from models.hub import fetch
    from models.registry import get_spec

    rec = fetch(get_spec("timm/test_resnet"))
    assert calls == [("timm/test_resnet.r160_in1k", "model.safetensors")]
    assert rec["sha256"] == hashlib.sha256(payload).hexdigest() == rec["published_hash"] and rec["verified"]
    assert rec["library"] == "timm" and rec["tag"] == "r160_in1k" and not rec["already_cached"]
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", lambda *a, **k: pytest.fail("download at run time"))
    from models import create_model
    m = create_model("timm/test_resnet", num_classes=2, pretrained=True, input_size=32, allow_random_init=False)
    assert torch.equal(m.state_dict()["conv1.0.weight"], sd["conv1.0.weight"])


def test_fetch_timm_hash_mismatch_removes_link_and_blob(fake_hf_download, caches):
    download, _, _, _ = fake_hf_download
    download.blob_name = "f" * 64  # the blob's name (the LFS sha256 the hub published) disagrees with its bytes
    from models.hub import fetch
    from models.registry import get_spec
    from protocols.errors import BadInput

    with pytest.raises(BadInput, match="published hash ffff"):
        fetch(get_spec("timm/test_resnet"))
    assert not list((caches / "hf").rglob("model.safetensors")) and not list((caches / "hf").rglob("f" * 64))


def test_fetch_refuses_bad_names_before_downloading(caches, fake_url_download, capsys):
    _, calls = fake_url_download
    out = caches / "w.json"
    assert main(["weights", "fetch", "tv/resnet18", "resnet_nope", "--json", str(out)]) == 2
    assert calls == [] and not out.exists()
    assert "resnet_nope" in capsys.readouterr().err


def test_where_lists_expected_locations_without_network(caches, capsys):
    out = caches / "w.json"
    assert main(["weights", "where", "resnet50_cbam", "timm/test_resnet", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "fibrobench.weights/1" and doc["action"] == "where"
    srcs = doc["models"]["resnet50_cbam"]["sources"]
    assert [s["tag"] for s in srcs] == ["IMAGENET1K_V1", "IMAGENET1K_V2"] and all(s["cached"] is None for s in srcs)
    assert srcs[0]["expected"] == str(caches / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth")
    assert "models--timm--test_resnet.r160_in1k" in doc["models"]["timm/test_resnet"]["sources"][0]["expected"]


def test_fetch_timm_falls_through_to_the_pickle_file_when_no_safetensors(fake_hf_download, caches, monkeypatch):
    """An older HF repo with only pytorch_model.bin: timm's loader is asked for it after model.safetensors fails."""
    import timm.models._hub
    from huggingface_hub.errors import EntryNotFoundError

    _, calls, _, sd = fake_hf_download
    buf = io.BytesIO()
    torch.save(sd, buf)

    def only_bin(repo_id, filename, revision=None, cache_dir=None, **kw):
        calls.append((repo_id, filename))
        if filename.endswith(".safetensors"):
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(fake_hf_file(caches / "hf", repo_id, filename, buf.getvalue()))

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", only_bin)
    from models.hub import fetch
    from models.registry import get_spec

    rec = fetch(get_spec("timm/test_resnet"))
    assert rec["path"].endswith("pytorch_model.bin") and rec["verified"]
    assert ("timm/test_resnet.r160_in1k", "pytorch_model.bin") in calls
    from models import create_model
    m = create_model("timm/test_resnet", num_classes=2, pretrained=True, input_size=32, allow_random_init=False)
    assert torch.equal(m.state_dict()["conv1.0.weight"], sd["conv1.0.weight"])
