"""The on-disk format of a teacher job (`v2l teacher`): parquet shards and `teacher_config.json`.

`training.teacher` writes it; `training.data.load_examples` and `load_teacher_dataset` read it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import require

__all__ = ["CONFIG_FILE", "load_teacher_dataset", "shard_path", "teacher_features"]

#: The job's settings, written first; a rerun with other settings is refused.
CONFIG_FILE = "teacher_config.json"


def teacher_features():
    """The `datasets.Features` of a teacher shard (fixed, so shards always concatenate).

    Returns:
        A `datasets.Features`: the example columns, the teacher's `target_token_ids`, its top-k ids
        and log-probabilities, and `error` for examples whose video could not be read.

    Raises:
        MissingDependencyError: `datasets` is not installed (the `training` extra).

    Example:
        ```python
        datasets.Dataset.from_list(rows, features=teacher_features())
        ```
    """
    datasets = require("datasets", "training", "The teacher job")
    from datasets import List, Value

    return datasets.Features(
        {
            "id": Value("string"),
            "video_path": Value("string"),
            "task_type": Value("string"),
            "prompt": Value("string"),
            "target_text": Value("string"),
            "dataset": Value("string"),
            "split": Value("string"),
            "metadata": Value("string"),  # JSON
            "start": Value("float64"),
            "end": Value("float64"),
            "target_token_ids": List(Value("int32")),
            "teacher_topk_ids": List(List(Value("int32"))),
            "teacher_topk_logprobs": List(List(Value("float32"))),
            "error": Value("string"),
        }
    )


def shard_path(output_dir: Path, shard: int, num_shards: int) -> Path:
    """The file of one shard of a teacher job.

    Args:
        output_dir: the job's folder.
        shard: the shard index.
        num_shards: the number of shards.

    Returns:
        `output_dir / "shard-00003-of-00008.parquet"`.

    Example:
        ```python
        shard_path(Path("teacher-out"), 3, 8).name  # 'shard-00003-of-00008.parquet'
        ```
    """
    return output_dir / f"shard-{shard:05d}-of-{num_shards:05d}.parquet"


def load_teacher_dataset(output_dir: str | os.PathLike, include_errors: bool = False):
    """Load a finished teacher job as one `datasets.Dataset` (shards in order).

    Args:
        output_dir: the job's folder.
        include_errors: keep the rows of videos that could not be decoded (`error` set).

    Returns:
        A `datasets.Dataset` with the columns of `teacher_features()`.

    Raises:
        FileNotFoundError: when shards are missing (the job has not finished; rerun it).

    Example:
        ```python
        train = load_teacher_dataset("teacher-out")
        ```
    """
    require("datasets", "training", "Loading teacher targets")
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset
    from datasets.table import InMemoryTable

    output_dir = Path(output_dir)
    config = json.loads((output_dir / CONFIG_FILE).read_text())
    paths = [shard_path(output_dir, j, config["num_shards"]) for j in range(config["num_shards"])]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"The teacher job in {output_dir} is not finished: {len(missing)} shard(s) missing "
            f"({', '.join(missing[:3])}...). Rerun `v2l teacher` with the same arguments to complete it."
        )
    table = pa.concat_tables([pq.read_table(p) for p in paths])
    dataset = Dataset(InMemoryTable(table))
    if not include_errors:
        dataset = dataset.filter(lambda error: error is None, input_columns="error")
    return dataset
