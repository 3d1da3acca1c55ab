"""Adapters and hypernetwork checkpoints through a local Hub-compatible server, with the real client."""

import contextlib
import json
import os
import re
import shlex
import socket
import stat
import time

import pytest
import torch
import yaml

from transformers_v2l import HubUnavailableError
from transformers_v2l.cli import main
from transformers_v2l.families.smolvlm import SmolVLMFamily
from transformers_v2l.hub import (
    BaseModelIdError,
    HubPushError,
    InvalidRepoIdError,
    atomic_folder,
    push_adapter_to_hub,
    push_folder_to_hub,
    push_hypernetwork_to_hub,
    resolve_commit_hash,
)
from transformers_v2l.lora import GeneratedLora
from transformers_v2l.training.utils import atomic_write_text, current_umask

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")

PROVENANCE = {
    "video_sha256": "9" * 64,
    "frame_indices": [0, 3, 6, 9],
    "resolution": [270, 480],
    "hypernetwork": "tester/video2lora-tiny",
    "hypernetwork_revision": "fedcba9876543210fedcba9876543210fedcba98",
    "instruction": "Internalize this video for later captioning.",
}


def make_adapter(vlm, rank=4, seed=0, base="HuggingFaceTB/SmolVLM2-500M-Video-Instruct"):
    generator = torch.Generator().manual_seed(seed)
    (d_in, d_out) = SmolVLMFamily.module_shapes(vlm.config, ["down_proj"])["down_proj"]
    layers = vlm.config.text_config.num_hidden_layers
    return GeneratedLora(
        {"down_proj": torch.randn(layers, rank, d_in, generator=generator)},
        {"down_proj": torch.randn(layers, rank, d_out, generator=generator)},
        scaling=16.0,
        base_model_name_or_path=str(base),
        base_model_type=SmolVLMFamily.name,
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


def test_hypernetwork_checkpoint_round_trip_with_model_card(
    tiny_hypernet, tiny_vlm, hub_base_model, local_hub
):
    from transformers_v2l import Video2LoraHypernetwork

    card_kwargs = {
        "datasets": ["HuggingFaceFV/finevideo"],
        "training": {"steps": 9000, "learning_rate": 1e-4},
    }
    info = push_hypernetwork_to_hub(  # tiny_hypernet's base model is a folder: publish its Hub id
        tiny_hypernet,
        "tester/video2lora-tiny",
        base_model_id=hub_base_model,
        private=True,
        model_card_kwargs=card_kwargs,
    )
    files = local_hub.files("tester/video2lora-tiny")
    assert {"README.md", "config.json", "model.safetensors", "processor_config.json"} <= set(files)
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files), "safetensors only"
    card = front_matter(files["README.md"].decode())
    assert card["base_model"] == hub_base_model
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


def test_hypernetwork_push_to_hub_writes_safetensors_and_our_card(tiny_hypernet, hub_base_model, local_hub):
    """Video2LoraHypernetwork.push_to_hub replaces transformers' generic card with the Video2LoRA one."""
    local_hub.inject_fault("POST", r"/commit/", 500, times=1)
    with pytest.raises(HubPushError) as error:  # the retry hint names the call, not the temporary folder
        tiny_hypernet.push_to_hub(
            "tester/plain-push", base_model_id=hub_base_model, commit_message="plain", private=True
        )
    retry = (
        f"To retry: `hn.push_to_hub('tester/plain-push', base_model_id='{hub_base_model}', private=True)`."
    )
    assert retry in str(error.value) and "the hypernetwork is unchanged" in str(error.value)
    assert "v2l-push-" not in str(error.value)
    tiny_hypernet.push_to_hub("tester/plain-push", base_model_id=hub_base_model, commit_message="plain")
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
        match=r"'me/adapter': it is not a local folder \(nothing at .*me/adapter\), HF_HUB_OFFLINE is set.*"
        r"adapter_config.json is not in the cache\. Pass the path of a local folder instead.*unset HF_HUB_OFFLINE",
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
        match=rf"at {url} failed: could not create the repository \(ConnectError.*Nothing was written locally, and "
        rf"the adapter is unchanged\. The Hub at {url} could not be reached: check your network connection.*"
        r"`save_pretrained`.*To retry: `adapter.push_to_hub\('me/clip-adapter'\)`",
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


# ---- a typo in a local path, a URL: fast, clear errors ------------------------------------------------------
@contextlib.contextmanager
def _black_hole_url():
    """A port on 127.0.0.1 whose accept queue is full: the kernel drops new connections, as a firewall would."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    fillers = [socket.socket() for _ in range(4)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(address)
    time.sleep(0.2)
    with socket.socket() as check:
        check.settimeout(0.5)
        with pytest.raises(TimeoutError):  # the endpoint really drops connections
            check.connect(address)
    try:
        yield f"http://{address[0]}:{address[1]}"
    finally:
        for sock in [*fillers, server]:
            sock.close()


@pytest.mark.parametrize("network", ["connection refused", "connections dropped"])
def test_a_typo_in_a_local_path_without_a_hub_fails_within_seconds(network, monkeypatch, tmp_path):
    """`v2l ask out/nope` used to print six retry lines and take 28 s; now one connection attempt decides."""
    from huggingface_hub import constants

    from transformers_v2l import Video2LoraHypernetwork

    monkeypatch.chdir(tmp_path)
    (tmp_path / "out" / "nop").mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        url = _unreachable_hub(monkeypatch, tmp_path)
        if network == "connections dropped":
            url = stack.enter_context(_black_hole_url())
            monkeypatch.setattr(constants, "ENDPOINT", url)
            monkeypatch.setattr(
                constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}"
            )
        cause = "ConnectError" if network == "connection refused" else "ConnectTimeout"
        for load, filename in (
            (GeneratedLora.from_pretrained, "adapter_config.json"),
            (Video2LoraHypernetwork.from_pretrained, "config.json"),
        ):
            start = time.perf_counter()
            with pytest.raises(HubUnavailableError) as error:
                load("out/nope")
            seconds = time.perf_counter() - start
            assert seconds < 5, f"{load.__qualname__} took {seconds:.1f} s"
            assert re.search(
                rf"'out/nope': it is not a local folder \(nothing at {re.escape(str(tmp_path / 'out' / 'nope'))}\), "
                rf"the Hugging Face Hub at {url} could not be reached \({cause}.*{filename} is not in the cache.*"
                r"Did you mean out/nop\?",
                str(error.value),
            ), str(error.value)


def test_an_unreachable_hub_loads_cached_files_at_once(tiny_vlm, local_hub, monkeypatch, tmp_path):
    from huggingface_hub import constants

    adapter = make_adapter(tiny_vlm)
    info = adapter.push_to_hub("tester/cached")
    GeneratedLora.from_pretrained("tester/cached")  # fills the cache
    cache = constants.HF_HUB_CACHE
    _unreachable_hub(monkeypatch, tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
    start = time.perf_counter()
    assert_same(GeneratedLora.from_pretrained("tester/cached"), adapter)
    assert_same(GeneratedLora.from_pretrained("tester/cached", revision=info.oid), adapter)
    assert time.perf_counter() - start < 5
    assert (
        GeneratedLora.from_pretrained("tester/cached").metadata == PROVENANCE
    )  # the optional card, cached too
    with pytest.raises(HubUnavailableError, match="could not be reached"):
        GeneratedLora.from_pretrained("tester/cached", revision="not-cached")


def test_urls_are_refused_with_what_to_pass_instead(local_hub):
    from transformers_v2l import Video2LoraHypernetwork

    cases = {
        "https://example.com/adapter": "download them into a folder first",
        "https://huggingface.co/me/clip-adapter": "pass 'me/clip-adapter'.",
        "https://huggingface.co/me/clip-adapter/tree/pruned": "pass 'me/clip-adapter' with revision='pruned'",
        f"{local_hub.url}/tester/clip": "pass 'tester/clip'.",
    }
    for url, instead in cases.items():
        for load in (GeneratedLora.from_pretrained, Video2LoraHypernetwork.from_pretrained):
            with pytest.raises(InvalidRepoIdError, match="URLs are not supported") as error:
                load(url)
            assert instead in str(error.value) and "a Hub repo id (`namespace/name`" in str(error.value)
    assert local_hub.requests == [], "refused before any network call"


# ---- pushing: the base model's Hub id, and failures that say what to retry ---------------------------------
def _snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_mode) for p in folder.iterdir()}


def test_an_adapter_of_a_local_base_model_is_pushed_under_its_hub_id(
    tiny_vlm, tiny_vlm_path, hub_base_model, local_hub, tmp_path, capsys
):
    adapter = make_adapter(tiny_vlm, base=tiny_vlm_path)
    folder = adapter.save_pretrained(tmp_path / "clip-adapter")
    before = _snapshot(folder)
    with pytest.raises(
        BaseModelIdError, match=rf"the local path {re.escape(str(tiny_vlm_path))}.*base_model_id="
    ):
        push_adapter_to_hub(adapter, "tester/clip")
    refusals = {
        (): rf"BaseModelIdError: The adapter records the local path {re.escape(str(tiny_vlm_path))}, which nobody "
        r"who downloads it can load.*--base-model-id namespace/name",
        ("--base-model-id", str(tiny_vlm_path)): r"BaseModelIdError: base_model_id=.* is not a Hub repo id",
        (
            "--base-model-id",
            "tester/no-such-model",
        ): r"BaseModelIdError: .*'tester/no-such-model'.* no such model",
    }
    for options, message in refusals.items():
        assert main(["push", str(folder), "tester/clip", *options]) == 1
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err, err
    assert "tester/clip" not in local_hub.repos, "refused before anything was uploaded"

    assert main(["push", str(folder), "tester/clip", "--base-model-id", hub_base_model]) == 0
    files = local_hub.files("tester/clip")
    assert f'"base_model_name_or_path": "{hub_base_model}"'.encode() in files["adapter_config.json"]
    assert front_matter(files["README.md"].decode())["base_model"] == hub_base_model
    assert str(tiny_vlm_path).encode() not in files["adapter_config.json"] + files["README.md"]
    assert _snapshot(folder) == before, "the local adapter keeps its path"
    pulled = GeneratedLora.from_pretrained("tester/clip")
    assert_same(pulled, adapter)
    assert pulled.base_model_name_or_path == hub_base_model


def test_adapter_push_to_hub_needs_the_hub_id_of_a_local_base_model(
    tiny_vlm, tiny_vlm_path, hub_base_model, local_hub, tmp_path
):
    adapter = make_adapter(tiny_vlm, base=tiny_vlm_path)
    local_hub.requests.clear()
    with pytest.raises(BaseModelIdError, match=r"the local path .*push_to_hub\(repo_id, base_model_id="):
        adapter.push_to_hub("tester/clip", private=True)
    with pytest.raises(BaseModelIdError, match="the local path"):  # save and push: refused before the save
        adapter.save_pretrained(tmp_path / "clip-adapter", push_to_hub=True, repo_id="tester/clip")
    assert local_hub.requests == [] and "tester/clip" not in local_hub.repos, "refused before any upload"
    assert not (tmp_path / "clip-adapter").exists()

    info = adapter.push_to_hub("tester/clip", base_model_id=hub_base_model)
    files = local_hub.files("tester/clip", info.oid)
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == hub_base_model
    assert front_matter(files["README.md"].decode())["base_model"] == hub_base_model
    assert str(tiny_vlm_path).encode() not in files["adapter_config.json"] + files["README.md"]
    assert adapter.base_model_name_or_path == str(tiny_vlm_path), "the local adapter keeps its path"
    folder = adapter.save_pretrained(
        tmp_path / "clip-adapter", push_to_hub=True, repo_id="tester/clip", base_model_id=hub_base_model
    )
    local_config = json.loads((folder / "adapter_config.json").read_text())
    assert local_config["base_model_name_or_path"] == str(tiny_vlm_path)
    pushed = json.loads(local_hub.files("tester/clip")["adapter_config.json"])
    assert pushed == {**local_config, "base_model_name_or_path": hub_base_model}
    assert_same(GeneratedLora.from_pretrained("tester/clip"), adapter)


def test_a_hypernetwork_of_a_local_base_model_is_pushed_under_its_hub_id(
    tiny_hypernet, tiny_vlm_path, hub_base_model, local_hub, tmp_path
):
    hn, local = tiny_hypernet, str(tiny_vlm_path)
    assert hn.config.base_model_name_or_path == local
    listing = sorted(tmp_path.iterdir())
    local_hub.requests.clear()
    refusal = rf"The hypernetwork records the local path {re.escape(local)}.*`hn.push_to_hub\(repo_id, base_model_id="
    with pytest.raises(BaseModelIdError, match=refusal):
        hn.push_to_hub("tester/hn", private=True)
    with pytest.raises(BaseModelIdError, match=refusal):
        push_hypernetwork_to_hub(hn, "tester/hn")
    with pytest.raises(BaseModelIdError, match=refusal):  # save and push: refused before the save
        hn.save_pretrained(tmp_path / "hn", push_to_hub=True, repo_id="tester/hn")
    assert local_hub.requests == [] and "tester/hn" not in local_hub.repos, "refused before any upload"
    assert sorted(tmp_path.iterdir()) == listing, "nothing was written"
    with pytest.raises(BaseModelIdError, match="is not a Hub repo id"):
        hn.push_to_hub("tester/hn", base_model_id=local)
    with pytest.raises(BaseModelIdError, match=r"'tester/no-such-model'.* no such model"):
        hn.push_to_hub("tester/hn", base_model_id="tester/no-such-model")
    assert "tester/hn" not in local_hub.repos

    def assert_published(files):
        assert json.loads(files["config.json"])["base_model_name_or_path"] == hub_base_model
        assert front_matter(files["README.md"].decode())["base_model"] == hub_base_model
        assert not [name for name, data in files.items() if local.encode() in data], "no local path is pushed"

    info = hn.push_to_hub("tester/hn", base_model_id=hub_base_model)
    assert_published(local_hub.files("tester/hn", info.oid))
    assert hn.config.base_model_name_or_path == local, "the local config keeps its path"

    hn.save_pretrained(
        tmp_path / "hn", push_to_hub=True, repo_id="tester/hn-saved", base_model_id=hub_base_model
    )
    assert json.loads((tmp_path / "hn" / "config.json").read_text())["base_model_name_or_path"] == local
    pushed = local_hub.files("tester/hn-saved")
    assert_published(pushed)
    assert pushed["model.safetensors"] == (tmp_path / "hn" / "model.safetensors").read_bytes()
    assert hn.config.base_model_name_or_path == local


def test_a_push_that_fails_midway_keeps_the_adapter_and_says_what_to_retry(
    tiny_vlm, tiny_vlm_path, hub_base_model, local_hub, tmp_path, capsys
):
    adapter = make_adapter(tiny_vlm, base=tiny_vlm_path)
    folder = adapter.save_pretrained(tmp_path / "clip-adapter")
    before, listing = _snapshot(folder), sorted(tmp_path.iterdir())
    fault = local_hub.inject_fault("POST", r"^/api/models/tester/clip/commit/", 500, times=2)
    local_hub.requests.clear()
    assert main(["push", str(folder), "tester/clip", "--base-model-id", hub_base_model, "--private"]) == 1
    err = capsys.readouterr().err
    command = f"v2l push {folder} tester/clip --base-model-id {hub_base_model} --private"
    assert (
        "could not upload and commit the files (HTTP 500 from POST /api/models/tester/clip/commit/main" in err
    )
    assert f"The local adapter folder {folder} was not changed." in err and f"To retry: `{command}`" in err
    methods = [(method, path.split("/")[1]) for method, path in local_hub.requests]
    assert ("PUT", "_lfs_upload") in methods, "the weights were uploaded before the commit failed"
    assert set(local_hub.files("tester/clip")) == {".gitattributes"}, "no partial commit"
    assert _snapshot(folder) == before and sorted(tmp_path.iterdir()) == listing

    with pytest.raises(HubPushError) as error:  # the same from Python, from the adapter in memory
        push_adapter_to_hub(adapter, "tester/clip", base_model_id=hub_base_model, revision="v1")
    assert "Nothing was written locally, and the adapter is unchanged." in str(error.value)
    assert (
        f"To retry: `adapter.push_to_hub('tester/clip', base_model_id='{hub_base_model}', revision='v1')`"
        in str(error.value)
    )

    assert fault.failed == 2  # and the fault has cleared: the Hub is back
    retry = re.search(r"To retry: `(.*?)`", err)[1]
    assert main(shlex.split(retry)[1:]) == 0  # the command the message gave, as written
    assert local_hub.repos["tester/clip"].private
    assert_same(GeneratedLora.from_pretrained("tester/clip"), adapter)


# ---- permissions: what a plain write would give, whatever the umask ---------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o077], ids=lambda mask: f"umask-{mask:03o}")
def test_atomic_writes_have_the_permissions_of_plain_writes(umask, tmp_path):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        shared = tmp_path / "shared"  # a setgid folder: new folders inherit the bit
        shared.mkdir()
        os.chmod(shared, 0o2775)
        (shared / "plain").mkdir()
        (shared / "plain" / "a.json").write_text("{}")
        with atomic_folder(shared / "atomic") as tmp:
            (tmp / "a.json").write_text("{}")
        atomic_write_text(shared / "atomic.json", "{}")

        def mode(path):
            return stat.S_IMODE(path.stat().st_mode)

        assert mode(shared / "atomic") == mode(shared / "plain") == (0o2777 & ~umask)
        assert mode(shared / "atomic" / "a.json") == mode(shared / "plain" / "a.json") == 0o666 & ~umask
        assert mode(shared / "atomic.json") == 0o666 & ~umask
        # rewritten in place, a file or folder keeps its own permissions, as with open(path, "w")
        os.chmod(shared / "atomic.json", 0o600)
        os.chmod(shared / "atomic", 0o2750)
        atomic_write_text(shared / "atomic.json", "[]")
        with atomic_folder(shared / "atomic") as tmp:
            (tmp / "b.json").write_text("[]")
        assert mode(shared / "atomic.json") == 0o600 and mode(shared / "atomic") == 0o2750
        assert sorted(p.name for p in (shared / "atomic").iterdir()) == ["a.json", "b.json"]
    finally:
        os.umask(old)
