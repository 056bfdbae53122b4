"""Model zoo: loading architectures, RS checkpoint layouts, clear errors, zoo entries, downloads."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from terrascribe.models.checkpoints import CheckpointError, extract_state_dict
from terrascribe.models.zoo import (
    LoadedModel,
    ModelError,
    ZooEntry,
    download_weights,
    load_model,
    register_entry,
    zoo_entries,
)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def source() -> LoadedModel:
    """A ts-tiny with other weights than the seed-0 default, to write checkpoints from."""
    return load_model("ts-tiny", seed=123)


def test_random_init_is_seeded_and_fingerprinted(tiny_model: LoadedModel) -> None:
    model, preprocess, tokenizer = tiny_model
    again = load_model("ts-tiny", seed=0)
    other = load_model("ts-tiny", seed=1)
    assert not model.training
    assert _same(_weights(model), _weights(again.model))
    assert not _same(_weights(model), _weights(other.model))
    assert tiny_model.fingerprint == again.fingerprint != other.fingerprint
    assert (tiny_model.embed_dim, tiny_model.image_size) == (64, 64)
    assert tiny_model.device == torch.device("cpu")
    assert tokenizer(["a satellite image"]).shape == (1, 77)
    assert callable(preprocess)


def test_load_model_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_model("ts-tiny", seed=0)
    assert torch.equal(torch.rand(3), expected)


def _plain(sd: dict, path: Path) -> Path:
    torch.save(sd, path)
    return path


def _open_clip_train(sd: dict, path: Path) -> Path:
    # open_clip_train's layout: epoch/name/optimizer beside a DDP-prefixed state dict.
    torch.save(
        {
            "epoch": 20,
            "name": "skyclip-like",
            "state_dict": {f"module.{k}": v for k, v in sd.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0, 1]}]},
        },
        path,
    )
    return path


def _safetensors(sd: dict, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("writer", "filename"),
    [(_plain, "plain.pt"), (_open_clip_train, "epoch_20.pt"), (_safetensors, "w.safetensors")],
)
def test_checkpoint_layouts_load(source: LoadedModel, tmp_path: Path, writer, filename) -> None:
    path = writer(_weights(source.model), tmp_path / filename)
    loaded = load_model("ts-tiny", pretrained=str(path))
    assert _same(_weights(loaded.model), _weights(source.model))
    assert loaded.weights_path == path
    assert not loaded.model.training
    # the fingerprint follows the file content, not the seed
    assert loaded.fingerprint == load_model("ts-tiny", pretrained=str(path), seed=5).fingerprint


def test_wrong_architecture_names_the_keys(source: LoadedModel, tmp_path: Path) -> None:
    sd = _weights(source.model)
    sd.pop("text_projection")
    sd["visual.extra_head.weight"] = torch.zeros(3)
    path = _plain(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_model("ts-tiny", pretrained=str(path))
    msg = str(err.value)
    assert "bad.pt" in msg and "'ts-tiny'" in msg
    assert "text_projection" in msg and "visual.extra_head.weight" in msg
    assert "QuickGELU" in msg and "architecture" in msg


def test_shape_mismatch_is_reported(source: LoadedModel, tmp_path: Path) -> None:
    sd = _weights(source.model)
    sd["text_projection"] = torch.zeros(64, 32)
    path = _plain(sd, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"text_projection: file \(64, 32\)"):
        load_model("ts-tiny", pretrained=str(path))


def test_resnet_weights_in_a_vit(tmp_path: Path) -> None:
    # ts-tiny's text tower with a (tiny) ModifiedResNet image tower: an RN checkpoint in a ViT.
    cfg = open_clip.get_model_config("ts-tiny")
    cfg["vision_cfg"] = {"layers": [1, 1, 1, 1], "width": 8, "image_size": 64}
    rn = open_clip.model.CLIP(**cfg)
    path = _plain(rn.state_dict(), tmp_path / "rn.pt")
    with pytest.raises(CheckpointError, match=r"Missing .* keys.*Unexpected.*image encoder"):
        load_model("ts-tiny", pretrained=str(path))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_model("ts-tiny", pretrained=str(path))


def test_broken_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"broken\.pt"):
        load_model("ts-tiny", pretrained=str(broken))
    with pytest.raises(ModelError, match="neither a file"):
        load_model("ts-tiny", pretrained=str(tmp_path / "nope.pt"))
    with pytest.raises(CheckpointError, match="no tensors"):
        extract_state_dict({"epoch": 3}, source="x.pt")


def test_unknown_names_and_bad_options() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'ViT-Q-99'.*remoteclip-vit-b-32"):
        load_model("ViT-Q-99")
    with pytest.raises(ModelError, match="precision"):
        load_model("ts-tiny", precision="fp8")
    with pytest.raises(ModelError, match="names its own weights"):
        load_model("hf-hub:org/repo", pretrained="x.pt")


def test_zoo_entries_are_complete_and_loadable_architectures() -> None:
    entries = zoo_entries()
    expected = {
        "remoteclip-rn50",
        "remoteclip-vit-b-32",
        "remoteclip-vit-l-14",
        "skyclip-vit-b-32",
        "skyclip-vit-l-14",
        "georsclip-vit-b-32",
        "georsclip-vit-l-14",
    }
    assert expected <= entries.keys()
    archs = set(open_clip.list_models())
    for entry in entries.values():
        assert entry.arch in archs, entry.name
        assert entry.arch.startswith(entry.base)
        # OpenAI-initialised weights must be loaded with QuickGELU (same keys: silent otherwise)
        assert entry.quick_gelu == (entry.initialised_from == "openai"), entry.name
        assert len(entry.mean) == len(entry.std) == 3
        assert entry.licence and entry.location
        assert entry.sha256 is None or len(entry.sha256) == 64
    assert entries["remoteclip-vit-b-32"].source == {
        "hf_hub": "chendelong/RemoteCLIP",
        "filename": "RemoteCLIP-ViT-B-32.pt",
    }


def _zip_of(path: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(path, "SkyCLIP_tiny/epoch_2.pt")
        zf.writestr("SkyCLIP_tiny/epoch_10.pt", path.read_bytes())
        zf.writestr("SkyCLIP_tiny/params.txt", "lr: 1e-9\n")
    return buf.getvalue()


def _entry(url: str, sha256: str | None) -> ZooEntry:
    return ZooEntry(
        name="test-skyclip-tiny",
        family="test",
        arch="ts-tiny",
        base="ts-tiny",
        initialised_from="random",
        source={"url": url, "archive_member": "*.pt"},
        layout="open_clip_train checkpoint inside a zip",
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        sha256=sha256,
        licence="test",
    )


def test_zoo_url_download_zip_and_hash(source: LoadedModel, tmp_path: Path, httpserver) -> None:
    ckpt = _open_clip_train(_weights(source.model), tmp_path / "epoch.pt")
    httpserver.expect_request("/ckpt/tiny.zip").respond_with_data(_zip_of(ckpt))
    url = httpserver.url_for("/ckpt/tiny.zip")

    from terrascribe.models.checkpoints import file_sha256

    good = _entry(url, file_sha256(ckpt))
    path = download_weights(good, cache_dir=tmp_path / "cache")
    assert path.name == "epoch_10.pt"  # the last epoch, by natural order

    register_entry(good)
    loaded = load_model("test-skyclip-tiny", cache_dir=tmp_path / "cache")
    assert _same(_weights(loaded.model), _weights(source.model))
    assert loaded.entry == good and loaded.preprocess_cfg["mean"] == (0.5, 0.5, 0.5)

    bad = _entry(url, "0" * 64)
    with pytest.raises(CheckpointError, match="differs from the expected"):
        download_weights(bad, cache_dir=tmp_path / "cache2")


def test_zoo_name_with_a_local_copy(source: LoadedModel, tmp_path: Path) -> None:
    register_entry(_entry("http://127.0.0.1:9/never-used.zip", None))
    ckpt = _plain(_weights(source.model), tmp_path / "mine.pt")
    loaded = load_model("test-skyclip-tiny", pretrained=str(ckpt))
    assert _same(_weights(loaded.model), _weights(source.model))
    with pytest.raises(ModelError, match="not found"):
        load_model("test-skyclip-tiny", pretrained=str(tmp_path / "missing.pt"))


def test_hub_entries_use_hf_hub_download(source: LoadedModel, tmp_path: Path, monkeypatch) -> None:
    import huggingface_hub

    ckpt = _plain(_weights(source.model), tmp_path / "RemoteCLIP-tiny.pt")
    calls = []

    def fake_download(repo_id: str, filename: str, **kwargs) -> str:
        calls.append((repo_id, filename))
        return str(ckpt)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    entry = ZooEntry(
        **{**_entry("x", None).__dict__, "source": {"hf_hub": "org/repo", "filename": "f.pt"}}
    )
    assert download_weights(entry) == ckpt
    loaded = load_model("ts-tiny", pretrained="hf-hub:org/repo/sub/f.pt")
    assert calls == [("org/repo", "f.pt"), ("org/repo", "sub/f.pt")]
    assert _same(_weights(loaded.model), _weights(source.model))
