"""`tft export`."""

from __future__ import annotations

import click


@click.command("export", context_settings={"max_content_width": 100})
@click.option("--checkpoint", required=True, type=click.Path(exists=True, file_okay=False), help="A `tft train` best/ folder.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Default: exports/<run name>.")
@click.option("--int8", is_flag=True, help="Also write a dynamically quantized int8 ONNX model (CPU).")
@click.option("--int8-static", is_flag=True,
              help="Also write a static Q/DQ int8 ONNX model calibrated on training texts (CPU; batch-invariant).")
@click.option("--calibration-samples", default=256, show_default=True, type=click.IntRange(1),
              help="Training examples that fix --int8-static's activation scales.")
@click.option("--fp16", is_flag=True, help="Also write an fp16 ONNX model (GPU; LayerNorm/Softmax kept fp32).")
@click.option("--trt", is_flag=True, help="Also build a TensorRT fp16 engine (NVIDIA GPU + tft[trt]; TensorRT 10 or 11).")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(17, 23), help="ONNX opset (17+ keeps LayerNormalization whole).")
@click.option("--exporter", type=click.Choice(["torchscript", "dynamo"]), default="torchscript", show_default=True,
              help="PyTorch ONNX exporter; torchscript fuses fully in ONNX Runtime.")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1, 4096), help="Largest batch served (parity and TensorRT profile).")
@click.option("--max-seq-length", type=click.IntRange(1, 8192), help="Longest sequence served.  [default: the checkpoint's]")
@click.option("--opt-batch", type=click.IntRange(1, 4096), help="TensorRT profile: batch size to optimize for.  [default: min(8, max batch)]")
@click.option("--opt-seq-length", type=click.IntRange(1, 8192), help="TensorRT profile: sequence length to optimize for.  [default: min(max, 128)]")
@click.option("--parity-samples", default=512, show_default=True, type=click.IntRange(1), help="Dev examples compared against PyTorch.")
@click.option("--parity-data", type=click.Path(exists=True, dir_okay=False), help="Compare on this file (task format) instead of dev.")
@click.option("--atol-fp32", type=click.FloatRange(0), help="fp32 max |logit diff|.  [default: 1e-4]")
@click.option("--atol-fp16", type=click.FloatRange(0), help="fp16 max |logit diff|.  [default: 1e-2]")
@click.option("--int8-min-agreement", type=click.FloatRange(0, 1), help="int8: least prediction agreement.  [default: 0.99]")
@click.option("--int8-max-metric-drop", type=click.FloatRange(0, 1), help="int8: largest dev metric drop (fraction).  [default: 0.01]")
@click.option("--int8-min-batch-invariance", type=click.FloatRange(0, 1),
              help="int8: least fraction of dev answers unchanged between batch 1 and serving batches.  [default: off]")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default="auto", show_default=True,
              help="ONNX Runtime device of the parity gate (auto: CUDA when onnxruntime-gpu offers it).")
@click.option("--trt-version-compatible", is_flag=True,
              help="Build the engine version-compatible (loads on later TensorRT releases; slower to start).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in --output-dir (never a folder of other files).")
def export_command(checkpoint, output_dir, int8, int8_static, calibration_samples, fp16, trt, opset, exporter, max_batch, max_seq_length, opt_batch,
                   opt_seq_length, parity_samples, parity_data, atol_fp32, atol_fp16, int8_min_agreement,
                   int8_max_metric_drop, int8_min_batch_invariance, device, trt_version_compatible, overwrite):
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
    from tft.export.parity import THRESHOLDS
    from tft.export.pipeline import run_export

    thresholds = {k: dict(v) for k, v in THRESHOLDS.items()}
    if atol_fp32 is not None:
        thresholds["fp32"]["atol"] = atol_fp32
    if atol_fp16 is not None:
        thresholds["fp16"]["atol"] = atol_fp16
    if int8_min_agreement is not None:
        thresholds["int8"]["min_agreement"] = int8_min_agreement
    if int8_max_metric_drop is not None:
        thresholds["int8"]["max_metric_drop"] = int8_max_metric_drop
    if int8_min_batch_invariance is not None:
        thresholds["int8"]["min_batch_invariance"] = int8_min_batch_invariance
    out = run_export(checkpoint, output_dir, int8=int8, int8_static=int8_static,
                     calibration_samples=calibration_samples, fp16=fp16, trt=trt, opset=opset, max_batch=max_batch,
                     max_seq_length=max_seq_length, parity_samples=parity_samples, parity_data=parity_data,
                     exporter=exporter, thresholds=thresholds, opt_batch=opt_batch, opt_seq_length=opt_seq_length,
                     overwrite=overwrite, trt_version_compatible=trt_version_compatible, device=device)
    click.echo(f"export: {out}")
