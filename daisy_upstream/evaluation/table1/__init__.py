"""The paper's Table 1 on any data: four MiniSUPERB tasks x (full / rho x span / fixed exit).

* :mod:`.plan` - the rows (:func:`default_rows`), the trainings they need, the cells of work;
* :mod:`.tasks` - the task configs (CPU sizes, learning rates, data paths) and test audio;
* :mod:`.table` - :class:`Table1`: run the cells resumably through s3prl's runner
  (:mod:`daisy_upstream.integration.runner_io`) and write ``table1.md`` / ``table1.json``;
* :mod:`.timing` - the time column (:func:`time_rows`);
* :mod:`.report` - the Markdown layout;
* :mod:`.lock` - one process per cell when several share a folder.
"""

from daisy_upstream.integration.runner_io import exit_counts, parse_metric, word_errors

from .plan import CORPUS_LAYOUT, TASKS, TEST_SPLIT, Cell, Row, default_rows, holds_table, training_configs
from .report import format_markdown, format_metric
from .table import Table1
from .tasks import (
    PAPER_LR,
    SMALL_LR,
    SMALL_SCHEDULES,
    SMALL_SIZES,
    SMALL_STEPS,
    fill_data_paths,
    prepare_task_config,
    read_task_config,
    test_audio_files,
)
from .timing import time_rows

__all__ = [
    "CORPUS_LAYOUT",
    "PAPER_LR",
    "SMALL_LR",
    "SMALL_SCHEDULES",
    "SMALL_SIZES",
    "SMALL_STEPS",
    "TASKS",
    "TEST_SPLIT",
    "Cell",
    "Row",
    "Table1",
    "default_rows",
    "exit_counts",
    "fill_data_paths",
    "format_markdown",
    "format_metric",
    "holds_table",
    "parse_metric",
    "prepare_task_config",
    "read_task_config",
    "test_audio_files",
    "time_rows",
    "training_configs",
    "word_errors",
]
