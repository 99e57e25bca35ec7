"""`tft export`: its flags come from the typed options in tft/export/options.py."""

from __future__ import annotations

import click

from tft.export.options import EXPORT


@click.command("export", context_settings={"max_content_width": 100})
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False), help="A `tft train` best/ folder.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML file whose keys mirror these flags; flags win.")
@EXPORT.click_options
def export_command(checkpoint, config_file, **options):
    """Export a checkpoint to ONNX (and TensorRT), proving each artifact against PyTorch.

    Every artifact is compared with PyTorch on dev examples and edge shapes (batch 1, the max batch,
    length 1, the max length, heavy padding), and again in serving batches (dev rows in a shuffled
    order, batch sizes 1..max, mixed lengths), where its batch invariance (answer alone vs in a batch)
    and speed are measured too. One that drifts beyond its threshold fails the command
    and nothing is written. The folder (model files, tokenizer, manifest.json) is what `tft serve` reads.

    \b
    Examples:
      tft export --checkpoint runs/afqmc/best --int8
      tft export --checkpoint runs/afqmc/best --fp16 --trt --max-batch 64 --max-seq-length 128
    """
    from tft.export.pipeline import run_export

    cfg = EXPORT.build(options, EXPORT.load_yaml(config_file) if config_file else {})
    out = run_export(checkpoint, cfg)
    click.echo(f"export: {out}")
