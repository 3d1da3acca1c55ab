"""Adapters and hypernetwork checkpoints through a local Hub-compatible server, with the real client."""

import pytest
import torch
import yaml

from transformers_v2l import HubUnavailableError, SmolVLMBackbone
from transformers_v2l.hub import (
    HubPushError,
    atomic_folder,
    push_folder_to_hub,
    push_hypernetwork_to_hub,
    resolve_commit_hash,
)
from transformers_v2l.lora import GeneratedLora

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")

PROVENANCE = {
    "video_sha256": "9" * 64,
    "frame_indices": [0, 3, 6, 9],
    "resolution": [270, 480],
    "hypernetwork": "tester/video2lora-tiny",
    "hypernetwork_revision": "fedcba9876543210fedcba9876543210fedcba98",
    "instruction": "Internalize this video for later captioning.",
}


def make_adapter(vlm, rank=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    (d_in, d_out) = SmolVLMBackbone.module_shapes(vlm.config, ["down_proj"])["down_proj"]
    layers = vlm.config.text_config.num_hidden_layers
    return GeneratedLora(
        {"down_proj": torch.randn(layers, rank, d_in, generator=generator)},
        {"down_proj": torch.randn(layers, rank, d_out, generator=generator)},
        scaling=16.0,
        base_model_name_or_path="HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
        metadata=dict(PROVENANCE),
    )


def front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


def assert_same(a: GeneratedLora, b: GeneratedLora) -> None:
    assert a.target_modules == b.target_modules and a.scaling == b.scaling
    for m in a.target_modules:
        assert torch.equal(a.lora_A[m], b.lora_A[m]) and torch.equal(a.lora_B[m], b.lora_B[m])


def test_push_then_pull_gives_identical_tensors_and_the_provenance_card(tiny_vlm, local_hub):
    adapter = make_adapter(tiny_vlm)
    info = adapter.push_to_hub("tester/lecture-adapter", private=True, commit_message="Add the lecture")
    repo = local_hub.repos["tester/lecture-adapter"]
    assert repo.private and local_hub.commit_log[-1]["summary"] == "Add the lecture"
    files = local_hub.files("tester/lecture-adapter")
    assert set(files) == {".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors"}
    assert repo.commits[info.oid].files["adapter_model.safetensors"].lfs, "safetensors went through LFS"
    card = front_matter(files["README.md"].decode())
    assert card["library_name"] == "peft" and card["base_model"] == adapter.base_model_name_or_path
    assert {"video2lora", "lora"} <= set(card["tags"])
    assert {k: card["video2lora"][k] for k in PROVENANCE} == PROVENANCE
    assert b"9999999999" not in files["adapter_config.json"]

    pulled = GeneratedLora.from_pretrained("tester/lecture-adapter")
    assert_same(pulled, adapter)
    assert pulled.metadata == PROVENANCE
    assert_same(GeneratedLora.from_pretrained("tester/lecture-adapter", revision=info.oid), adapter)


def test_revisions_and_pull_requests(tiny_vlm, local_hub):
    first, second, third = (
        make_adapter(tiny_vlm, seed=1),
        make_adapter(tiny_vlm, seed=2),
        make_adapter(tiny_vlm, seed=3),
    )
    first.push_to_hub("tester/clip")
    second.push_to_hub("tester/clip", revision="pruned")  # a new branch
    pr = third.push_to_hub("tester/clip", create_pr=True)
    assert pr.pr_url.endswith("/discussions/1") and pr.pr_revision == "refs/pr/1"
    assert_same(GeneratedLora.from_pretrained("tester/clip"), first)
    assert_same(GeneratedLora.from_pretrained("tester/clip", revision="pruned"), second)
    assert_same(GeneratedLora.from_pretrained("tester/clip", revision="refs/pr/1"), third)


def test_a_refused_push_leaves_the_local_folder_intact_and_says_why(tiny_vlm, local_hub, tmp_path):
    adapter = make_adapter(tiny_vlm)
    folder = adapter.save_pretrained(tmp_path / "lecture-adapter")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    for status in (500, 403):
        local_hub.refuse_commits = status
        with pytest.raises(
            HubPushError,
            match=rf"could not upload and commit the files \(HTTP {status} .*refused the commit.*did not change the local folder",
        ):
            push_folder_to_hub(folder, "tester/lecture-adapter", commit_message="Upload")
        with pytest.raises(HubPushError, match="Nothing was written locally"):
            adapter.push_to_hub("tester/lecture-adapter")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()} == before
    with pytest.raises(HubPushError, match="HTTP 403"):  # save, then push: the saved folder is complete
        make_adapter(tiny_vlm, seed=7).save_pretrained(
            tmp_path / "other", push_to_hub=True, repo_id="tester/other"
        )
    assert_same(GeneratedLora.from_pretrained(tmp_path / "other"), make_adapter(tiny_vlm, seed=7))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "hf_home") == ["lecture-adapter", "other"]
    assert set(local_hub.files("tester/lecture-adapter")) == {".gitattributes"}, "no partial commit"
    local_hub.refuse_commits = None
    adapter.save_pretrained(folder, push_to_hub=True, repo_id="tester/lecture-adapter")
    assert_same(GeneratedLora.from_pretrained("tester/lecture-adapter"), adapter)


def test_pull_works_offline_from_the_cache_and_fails_clearly_otherwise(tiny_vlm, local_hub, monkeypatch):
    from huggingface_hub import constants

    adapter = make_adapter(tiny_vlm)
    adapter.push_to_hub("tester/cached")
    GeneratedLora.from_pretrained("tester/cached")  # fills the cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_same(GeneratedLora.from_pretrained("tester/cached"), adapter)
    with pytest.raises(HubUnavailableError, match="not in the cache"):
        GeneratedLora.from_pretrained("tester/never-pushed")
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE"):
        adapter.push_to_hub("tester/cached")


def test_private_repos_need_the_token(tiny_vlm, local_hub):
    from huggingface_hub.errors import RepositoryNotFoundError

    make_adapter(tiny_vlm).push_to_hub("tester/secret", private=True)
    with pytest.raises(RepositoryNotFoundError):
        GeneratedLora.from_pretrained("tester/secret", token=False)


def test_hypernetwork_checkpoint_round_trip_with_model_card(tiny_hypernet, tiny_vlm, local_hub):
    from transformers_v2l import Video2LoraHypernetwork

    card_kwargs = {
        "datasets": ["HuggingFaceFV/finevideo"],
        "training": {"steps": 9000, "learning_rate": 1e-4},
    }
    info = push_hypernetwork_to_hub(
        tiny_hypernet, "tester/video2lora-tiny", private=True, model_card_kwargs=card_kwargs
    )
    files = local_hub.files("tester/video2lora-tiny")
    assert set(files) == {".gitattributes", "README.md", "config.json", "model.safetensors"}, (
        "safetensors only"
    )
    card = front_matter(files["README.md"].decode())
    assert card["base_model"] == tiny_hypernet.config.base_model_name_or_path
    assert card["library_name"] == "transformers-v2l" and card["datasets"] == ["HuggingFaceFV/finevideo"]
    settings = card["video2lora"]["settings"]
    assert settings["lora_rank"] == 4 and settings["num_frames"] == 12 and settings["longest_edge"] == 384
    assert settings["target_modules"] == ["down_proj"] and card["video2lora"]["training"]["steps"] == 9000

    loaded = Video2LoraHypernetwork.from_pretrained(
        "tester/video2lora-tiny", revision=info.oid, base_model=tiny_vlm
    )
    expected = tiny_hypernet.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    assert loaded.config._name_or_path == "tester/video2lora-tiny"  # the provenance "hypernetwork"
    assert resolve_commit_hash("tester/video2lora-tiny") == info.oid  # the provenance "hypernetwork_revision"


def test_hypernetwork_push_to_hub_writes_safetensors_and_our_card(tiny_hypernet, local_hub):
    """Video2LoraHypernetwork.push_to_hub replaces transformers' generic card with the Video2LoRA one."""
    tiny_hypernet.push_to_hub("tester/plain-push", commit_message="plain")
    files = local_hub.files("tester/plain-push")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    assert "video2lora" in front_matter(files["README.md"].decode())["tags"]


def test_atomic_folder_never_leaves_half_written_folders(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("partial")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (target / "a.txt").read_text() == "one" and (target / "b.txt").read_text() == "two"


# ---- errors a newcomer meets: no Hub, no token ---------------------------------------------------------------
def _closed_port_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there: connections are refused


def _unreachable_hub(monkeypatch, tmp_path) -> str:
    from huggingface_hub import constants

    url = _closed_port_url()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return url


def test_an_uncached_repo_offline_says_how_to_work_locally(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from transformers_v2l import Video2LoraConfig, Video2LoraHypernetwork

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        HubUnavailableError,
        match=r"'me/adapter': it is not a local folder, HF_HUB_OFFLINE is set.*adapter_config.json is not in "
        r"the cache\. Pass the path of a local folder instead.*unset HF_HUB_OFFLINE",
    ):
        GeneratedLora.from_pretrained("me/adapter")
    for load in (
        lambda: Video2LoraHypernetwork.from_pretrained("org/does-not-exist"),
        lambda: Video2LoraConfig.from_base_model("org/does-not-exist"),
    ):
        with pytest.raises(
            HubUnavailableError,
            match=r"'org/does-not-exist': it is not a local folder.*Pass the path of a local folder.*"
            r"load_default_hypernetwork\(\)",
        ):
            load()


def test_a_push_to_an_unreachable_hub_says_so(tiny_vlm, monkeypatch, tmp_path):
    url = _unreachable_hub(monkeypatch, tmp_path)
    with pytest.raises(
        HubPushError,
        match=rf"at {url} failed: could not create the repository \(ConnectError.*Nothing was written locally\. "
        rf"The Hub at {url} could not be reached: check your network connection.*`save_pretrained`",
    ):
        make_adapter(tiny_vlm).push_to_hub("me/clip-adapter", token="hf_not_a_real_token")


def test_a_push_without_a_token_says_how_to_log_in(tiny_vlm, local_hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    for token in (None, False):
        with pytest.raises(
            HubPushError, match=r"HTTP 401 .*Log in with `hf auth login`, set HF_TOKEN, or pass token="
        ):
            make_adapter(tiny_vlm).push_to_hub("tester/clip-adapter", token=token)
    assert "tester/clip-adapter" not in local_hub.repos


@pytest.mark.slow  # huggingface_hub retries a refused connection for about 25 s before giving up
def test_an_unreachable_hub_says_so_and_points_to_local_folders(monkeypatch, tmp_path):
    url = _unreachable_hub(monkeypatch, tmp_path)
    with pytest.raises(
        HubUnavailableError,
        match=rf"'me/adapter': it is not a local folder, the Hugging Face Hub at {url} could not be reached "
        r"\(ConnectError.*not in the cache\. Pass the path of a local folder instead.*check your network",
    ):
        GeneratedLora.from_pretrained("me/adapter")
