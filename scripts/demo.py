"""`make demo`: the main job on a small offline sample, through the stages built so far
(sample -> train -> eval -> predict -> export with parity -> predict with ONNX Runtime).

    make demo                          # synthetic AFQMC-format sample, scratch:tiny model
    make demo DATA=path MODEL=name     # your data (AFQMC format) and model
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tft(*args: str) -> None:
    cmd = [sys.executable, "-m", "tft", *args]
    print("+ tft " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="AFQMC-format folder (default: generate a synthetic sample)")
    parser.add_argument("--model", default="scratch:tiny")
    parser.add_argument("--out", default=str(ROOT / "demo_out"))
    args = parser.parse_args()
    out = Path(args.out)
    data = args.data_dir
    if not data:
        data = str(out / "data")
        tft("data", "sample", "--task", "afqmc", "--out", data)
    tft("data", "check", "--task", "afqmc", "--data-dir", data)
    run = out / "run"
    tft("--quiet", "train", "--task", "afqmc", "--data-dir", data, "--model", args.model, "--output-dir", str(run),
        "--epochs", "8", "--batch-size", "32", "--lr", "3e-4", *(["--resume", "auto"] if run.exists() else []))
    tft("eval", "--checkpoint", str(run / "best"))
    examples = out / "examples.txt"
    examples.write_text("花呗怎么还款\t花呗如何还款\n借呗怎么开通\t余额宝额度是多少\n", encoding="utf-8")
    tft("predict", "--checkpoint", str(run / "best"), str(examples), "-o", str(out / "predictions.jsonl"))
    print((out / "predictions.jsonl").read_text(encoding="utf-8"))
    export = out / "export"
    tft("export", "--checkpoint", str(run / "best"), "--output-dir", str(export), "--int8", "--fp16")
    tft("predict", "--onnx", str(export), str(examples), "-o", str(out / "predictions.onnx.jsonl"))
    print((out / "predictions.onnx.jsonl").read_text(encoding="utf-8"))
    print(f"parity of each artifact: {export / 'manifest.json'}")
    print(f"demo finished; outputs in {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as e:
        print(f"demo failed: {' '.join(e.cmd[2:])} exited {e.returncode}", file=sys.stderr)
        sys.exit(1)
