"""`tft tasks` and `tft data check`: what tasks exist, and whether a data folder is valid for one."""

from __future__ import annotations

import json

import click

from tft.errors import TftError
from tft.tasks import SPLITS, TASKS, get_task

# the tasks `tft data sample` writes (tft/data/synthetic.py: SAMPLE_TASKS; named here so --help imports no writer)
SAMPLE_TASKS = ("afqmc", "cluener", "sst2")


@click.command("tasks")
@click.option("--json", "as_json", is_flag=True, help="Print the full catalog as JSON.")
def tasks_command(as_json):
    """List the built-in tasks: kind, files, labels, default model."""
    if as_json:
        click.echo(json.dumps({name: t.summary() for name, t in sorted(TASKS.items())}, ensure_ascii=False, indent=2))
        return
    width = max(len(n) for n in TASKS)
    for name, task in sorted(TASKS.items()):
        files = ", ".join(task.files[s] for s in SPLITS)
        click.echo(f"{name:<{width}}  {task.kind.name:<24}  {files:<40}  {task.description}")


@click.group("data")
def data_group():
    """Inspect and validate task data."""


@data_group.command("check")
@click.option("--task", "task_name", required=True, help="Task name (see `tft tasks`).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder with the split files (default: download).")
@click.option("--split", "splits", multiple=True, type=click.Choice(SPLITS), help="Splits to read (default: all present).")
@click.option("--text-field", help="Generic tasks: field/column with the text.")
@click.option("--text-pair-field", help="Generic tasks: field/column with the second text of a pair.")
@click.option("--label-field", help="Generic tasks: field/column with the label.")
@click.option("--multi-label", is_flag=True, help="Generic tasks: any number of labels per text (as `tft train`).")
@click.option("--label-separator", help="With --multi-label: what joins the labels in a CSV cell (default ',').")
def data_check(task_name, data_dir, splits, text_field, text_pair_field, label_field, multi_label, label_separator):
    """Read and validate a task's files; print example counts and labels.

    Exits non-zero with `file:line: problem` on the first invalid record.
    """
    from tft.data.dataset import load_dataset, resolve_data_dir

    task = get_task(task_name).with_fields(text_field, text_pair_field, label_field, multi_label=multi_label,
                                           label_separator=label_separator)
    root = resolve_data_dir(task, data_dir)
    if not splits:
        splits = tuple(s for s in SPLITS if (root / task.files[s]).exists())
    ds = load_dataset(task, root, splits)
    for name, split in ds.splits.items():
        state = "labelled" if split.labeled else "unlabelled"
        click.echo(f"{name}: {len(split.examples)} examples ({state}) from {split.path}")
    if ds.labels:
        click.echo(f"labels ({len(ds.labels)}): {', '.join(ds.labels)}")


@data_group.command("sample")
@click.option("--task", "task_name", type=click.Choice(sorted(SAMPLE_TASKS)), default="afqmc", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder to write the train/dev/test files into, in the task's own format.")
@click.option("--train", "n_train", default=3000, show_default=True, help="Training examples.")
@click.option("--dev", "n_dev", default=500, show_default=True, help="Dev examples.")
@click.option("--test", "n_test", default=200, show_default=True, help="Unlabelled test examples.")
@click.option("--seed", default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an earlier sample in --out (never a folder of other files).")
def data_sample(task_name, out, n_train, n_dev, n_test, seed, overwrite):
    """Write a deterministic, learnable synthetic dataset in the task's official format
    (offline demos and smoke tests)."""
    from tft.data.synthetic import write_sample

    if min(n_train, n_dev, n_test) < 1:
        raise TftError("--train, --dev and --test must each be at least 1")
    path = write_sample(task_name, out, n_train, n_dev, n_test, seed, overwrite=overwrite)
    click.echo(f"wrote {task_name} sample ({n_train}/{n_dev}/{n_test}) to {path}")
