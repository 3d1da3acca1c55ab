"""Mixed supervision: task mixtures (captions and questions, with weights) in the data layer and the trainer."""

from __future__ import annotations

from collections import Counter

import pytest

from test_training_utils import build_hypernetwork, one_torch_thread, toy_world_rows  # noqa: F401
from transformers_v2l.errors import InvalidArgumentError
from transformers_v2l.training.data import (
    TaskMixture,
    TaskMixtureSampler,
    Video2LoraDataset,
    example_task_types,
)

TYPES = ["caption"] * 10 + ["qa"] * 90


def test_mixture_text_forms_and_probabilities():
    assert TaskMixture.parse("caption=1,qa=3").weights == {"caption": 1.0, "qa": 3.0}
    assert TaskMixture.parse("caption:1 qa:3") == TaskMixture({"caption": 1, "qa": 3})
    assert TaskMixture.parse({"caption": 2, "qa": 2}).probabilities() == {"caption": 0.5, "qa": 0.5}
    mixture = TaskMixture.parse("caption=1,qa=0")
    assert TaskMixture.parse(mixture) is mixture and mixture.probabilities()["qa"] == 0.0


@pytest.mark.parametrize("spec", ["caption", "caption=x", "=2", "caption=-1,qa=1", "caption=0", "qa=nan", {}])
def test_bad_mixtures_are_refused_with_an_example(spec):
    with pytest.raises(InvalidArgumentError, match="caption=1,qa=3"):
        TaskMixture.parse(spec)


def test_check_counts_types_and_names_missing_or_unknown_ones():
    assert TaskMixture.parse("caption=1,qa=1").check(TYPES) == {"caption": 10, "qa": 90}
    with pytest.raises(InvalidArgumentError, match=r"does not name: \{'qa': 90\}"):
        TaskMixture.parse("caption=1").check(TYPES)
    with pytest.raises(InvalidArgumentError, match=r"draws \['summary'\]"):
        TaskMixture.parse("caption=1,qa=1,summary=1").check(TYPES)
    weights = TaskMixture.parse("caption=1,qa=1,summary=0").check(TYPES)
    assert weights["summary"] == 0  # weight 0: may be absent


def test_sampler_follows_the_weights_not_the_row_counts():
    sampler = TaskMixtureSampler(TYPES, "caption=1,qa=1", num_samples=4000, seed=0)
    drawn = Counter(TYPES[i] for i in sampler)
    assert len(sampler) == 4000 and sum(drawn.values()) == 4000
    assert 0.46 < drawn["caption"] / 4000 < 0.54  # the rows are 10% captions; the mixture draws half
    only_captions = TaskMixtureSampler(TYPES, "caption=1,qa=0", seed=0)
    assert len(only_captions) == 100 and {TYPES[i] for i in only_captions} == {"caption"}


def test_sampler_uses_every_example_of_a_type_before_repeating_it():
    sampler = TaskMixtureSampler(TYPES, "caption=1,qa=1", num_samples=200, seed=3)
    captions = [i for i in sampler if TYPES[i] == "caption"]
    assert len(captions) >= 20
    assert sorted(captions[:10]) == list(range(10)) and sorted(captions[10:20]) == list(range(10))


def test_sampler_is_a_function_of_seed_and_epoch():
    a, b = (
        TaskMixtureSampler(TYPES, "caption=1,qa=1", seed=0),
        TaskMixtureSampler(TYPES, "caption=1,qa=1", seed=0),
    )
    assert list(a) == list(b) and list(a) == list(a)  # same seed, same order, every time it is iterated
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(TaskMixtureSampler(TYPES, "caption=1,qa=1", seed=1)) != first


def test_task_types_are_read_from_lists_datasets_and_hf_datasets():
    rows = [{"task_type": "caption"}, {"task_type": "qa"}, {}]
    assert example_task_types(rows) == ["caption", "qa", None]
    assert example_task_types(Video2LoraDataset(rows)) == ["caption", "qa", None]
    datasets = pytest.importorskip("datasets")
    table = datasets.Dataset.from_list([{"id": "a", "task_type": "qa"}, {"id": "b", "task_type": "caption"}])
    assert example_task_types(Video2LoraDataset(table)) == ["qa", "caption"]
    assert example_task_types(datasets.Dataset.from_list([{"id": "a"}])) == [None]


def test_training_arguments_refuse_a_bad_mixture_before_training(tmp_path):
    from transformers_v2l.training import Video2LoraTrainingArguments

    with pytest.raises(InvalidArgumentError, match="task mixture"):
        Video2LoraTrainingArguments(output_dir=str(tmp_path), task_mixture="caption=", report_to="none")


def test_trainer_draws_batches_from_the_mixture(tmp_path, tiny_vlm_path):
    from transformers_v2l.training import Video2LoraTrainer, Video2LoraTrainingArguments

    captions = toy_world_rows(tmp_path, count=2)
    questions = [{**row, "id": f"{row['id']}-q{k}", "task_type": "qa", "prompt": "How many objects are there?",
                  "target_text": "two"} for row in captions for k in range(6)]  # fmt: skip
    examples = Video2LoraDataset(captions + questions, data_root=tmp_path)
    args = Video2LoraTrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, max_steps=3, save_strategy="no",
        report_to="none", disable_tqdm=True, seed=0, task_mixture="caption=3,qa=1", learning_rate=1e-3,
    )  # fmt: skip
    trainer = Video2LoraTrainer(model=build_hypernetwork(tiny_vlm_path), args=args, train_dataset=examples)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, TaskMixtureSampler) and sampler.mixture.weights == {"caption": 3.0, "qa": 1.0}
    seen = []
    original = trainer.data_collator

    def recording_collator(rows):
        seen.extend(row["task_type"] for row in rows)
        return original(rows)

    trainer.data_collator = recording_collator
    trainer.train()
    drawn = seen[:12]  # three steps of four (the data loader may prepare one batch more)
    assert len(seen) >= 12 and drawn.count("caption") > drawn.count("qa")  # 2 of the 14 rows are captions
    assert trainer.state.global_step == 3
