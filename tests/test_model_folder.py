"""An incomplete model folder is one error naming the missing part, never a download."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vrshq.errors import ModelError
from vrshq.model.clip_source import is_official
from vrshq.model.layout import check_model_folder
from vrshq.model.tiny import write_tiny_vrshq

# Any connection attempt ends the process with its own exit code and message, so a test can
# tell "tried the network" apart from "failed with our one-line error".
NO_NETWORK = """
import socket, sys
def refuse(*a, **k):
    sys.stderr.write("NETWORK ATTEMPT\\n"); sys.stderr.flush()
    import os; os._exit(97)
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from vrshq.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layout") / "models"
    write_tiny_vrshq(root, seed=0)
    return root


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst / "models")
    return dst / "models"


def _no_visual_model(root: Path) -> None:
    index = root / "vrshq" / "pytorch_model.bin.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {k: v for k, v in data["weight_map"].items()
                          if not k.startswith("model.visual_model.")}
    index.write_text(json.dumps(data))


def test_complete_tiny_folder(tiny):
    layout = check_model_folder(tiny)
    assert layout.checkpoint == tiny / "vrshq"
    assert layout.sam2_weights is None  # the tiny checkpoint holds model.visual_model.*
    assert layout.clip.config is not None and layout.clip.weights.suffix == ".pt"


@pytest.mark.parametrize("case, needle", [
    ("checkpoint_subfolder", "is the checkpoint folder itself"),
    ("no_vrshq", "no vrshq/"),
    ("no_config", "no config.json"),
    ("no_tokenizer", "no tokenizer.model"),
    ("no_weights", "no weights"),
    ("no_clip", "no clip/"),
    ("empty_clip", "no CLIP weights"),
    ("no_sam2", "no model.visual_model.* weights and there is no"),
])
def test_missing_part_is_named(tiny, tmp_path, case, needle):
    root = _copy(tiny, tmp_path)
    target = root
    if case == "checkpoint_subfolder":
        target = root / "vrshq"
    elif case == "no_vrshq":
        shutil.rmtree(root / "vrshq")
    elif case in ("no_config", "no_tokenizer"):
        (root / "vrshq" / ("config.json" if case == "no_config" else "tokenizer.model")).unlink()
    elif case == "no_weights":
        for f in (root / "vrshq").glob("pytorch_model*"):
            f.unlink()
    elif case == "no_clip":
        shutil.rmtree(root / "clip")
    elif case == "empty_clip":
        for f in (root / "clip").iterdir():
            f.unlink()
    elif case == "no_sam2":
        _no_visual_model(root)
        shutil.rmtree(root / "sam2")
    with pytest.raises(ModelError) as info:
        check_model_folder(target)
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert "vrshq download" in message  # says how to get the expected layout


def test_sam2_folder_is_used_when_the_checkpoint_has_no_sam2(tiny, tmp_path):
    root = _copy(tiny, tmp_path)
    _no_visual_model(root)
    assert check_model_folder(root).sam2_weights == root / "sam2" / "model.pt"


def test_hub_cache_nesting_of_earlier_downloads_is_found(tiny, tmp_path):
    root = _copy(tiny, tmp_path)
    for f in (root / "clip").iterdir():
        f.unlink()
    nested = root / "clip" / "models--timm--vit_large_patch14_clip_336.openai" / "snapshots" / "abc"
    nested.mkdir(parents=True)
    (nested / "open_clip_model.safetensors").write_bytes(b"x")
    assert check_model_folder(root).clip.weights == nested / "open_clip_model.safetensors"


@pytest.mark.parametrize("case", ["checkpoint_subfolder", "no_clip"])
def test_segment_fails_in_one_line_without_touching_the_network(tiny, tmp_path, make_video, case):
    root = _copy(tiny, tmp_path)
    if case == "no_clip":
        shutil.rmtree(root / "clip")
    model = root / "vrshq" if case == "checkpoint_subfolder" else root
    video = make_video("mp4", num_frames=4, width=64, height=48, fps=10.0)
    done = subprocess.run([sys.executable, "-c", NO_NETWORK, "segment", str(video), "--prompt",
                           "a dog", "--out", str(tmp_path / "out"), "--model", str(model),
                           "--device", "cpu", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert "NETWORK ATTEMPT" not in done.stderr
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vrshq: error: "), done.stderr[-2000:]
    assert ("checkpoint folder itself" if case == "checkpoint_subfolder" else "no clip/") in lines[0]


def test_downloaded_clip_lies_flat_where_the_loader_looks(tmp_path, monkeypatch):
    """``vrshq download --only clip`` keeps the file, not the Hub cache's nesting and links."""
    import open_clip.pretrained

    from vrshq.model.download import download
    from vrshq.model.layout import find_clip_weights

    def fake_hub(cfg, cache_dir=None):  # what hf_hub_download leaves: a link into blobs/
        assert cfg["hf_hub"].startswith("timm/vit_large_patch14_clip_336.openai")
        repo = Path(cache_dir) / "models--timm--vit_large_patch14_clip_336.openai"
        (repo / "blobs").mkdir(parents=True)
        (repo / "blobs" / "0123abcd").write_bytes(b"weights")
        snap = repo / "snapshots" / "abc"
        snap.mkdir(parents=True)
        (snap / "open_clip_model.safetensors").symlink_to(repo / "blobs" / "0123abcd")
        return str(snap / "open_clip_model.safetensors")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", fake_hub)
    done = download(tmp_path / "models", ("clip",), log=lambda _: None)
    flat = tmp_path / "models" / "clip" / "open_clip_model.safetensors"
    assert done["clip"] == flat and flat.read_bytes() == b"weights" and not flat.is_symlink()
    # The file and the download's record of it (issue 13 §4: what makes it the official CLIP).
    assert sorted(p.name for p in (tmp_path / "models" / "clip").iterdir()) == [flat.name, "source.json"]
    found = find_clip_weights(tmp_path / "models" / "clip")
    assert found.weights == flat
    record = json.loads((flat.parent / "source.json").read_text())
    assert record == {"model": "ViT-L-14-336-quickgelu", "pretrained": "openai", "file": flat.name,
                      "bytes": 7, "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert is_official(found)
