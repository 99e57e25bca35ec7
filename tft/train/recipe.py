"""The training recipe: setup -> train -> save_checkpoint, on the Hugging Face Trainer.

One process (CPU or one GPU):
    tft train --task afqmc --data-dir data/afqmc --model bert-base-chinese
Several GPUs on one node (tft starts torchrun itself; `torchrun -m tft train ...` works too):
    tft train --task afqmc --nproc-per-node 4 --fp16 --output-dir runs/afqmc
Several nodes (run on each, node rank 0..M-1):
    tft train --task afqmc --nproc-per-node 8 --nnodes 2 --node-rank R --master-addr HOST --master-port 29500 \
        --output-dir runs/afqmc
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from tft.data.dataset import load_dataset, resolve_data_dir
from tft.data.features import encode, make_collator, mark_words_as_spaced, max_chars_for, model_input_names
from tft.errors import TftError, first_line
from tft.families import family_of, usable_positions
from tft.fsutil import atomic_dir, atomic_write_json, command_line, hold
from tft.manifest import checkpoint_files, check_tokenizer_files, now, versions, write_checkpoint_manifest
from tft.tasks import get_task
from tft import metrics as task_metrics
from tft.train.config import TrainConfig
from tft.train.feature_cache import feature_fingerprint, load_features, save_features
from tft.fsutil import check_free_space, clear_own_dir
from tft.train.preflight import PreflightError, check_model, skipped_record
from tft.train.rundir import CLAIMED_ENV, claim, mark, read_marker, tool_entry
from tft.train.scratch import is_scratch, scratch_config, scratch_size, texts_of, train_tokenizer

log = logging.getLogger("tft")

def is_distributed_launch() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


class FeatureDataset(torch.utils.data.Dataset):
    def __init__(self, features: list[dict]):
        self.features = features

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i]


class TrainRecipe:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.task = None
        self.trainer = None
        self.held = contextlib.ExitStack()  # the run folder's lock, held until the run ends

    # ------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        self._resolve_task_and_model()
        self.settings = {**{k: v for k, v in vars(cfg).items() if k != "wait"}, "model": self.model_name}
        if os.environ.get(CLAIMED_ENV) != str(self.output_dir.resolve()) and is_rank0():
            # one training per run folder: a second one (or a pipeline's) waits or stops with one line
            self.held.enter_context(hold(self.output_dir, wait=cfg.wait))
        created_here = not self.output_dir.exists()
        claimed = claim(self.output_dir, cfg.resume, cfg.overwrite and is_rank0(), self.settings)
        self.finished, self.resume_from = claimed.finished, claimed.resume_from
        if self.finished:
            return
        if self.resume_from:  # its tokenizer is the one its weights were trained with: never build another
            check_tokenizer_files(self.resume_from)
        train_examples, dev_examples = self._read_data()
        self._check_same_data()
        self.args = self._training_args(has_dev=dev_examples is not None)
        with self.args.main_process_first(desc="tokenizer"):
            self.tokenizer = self._load_tokenizer(train_examples)
        self.model = self._load_model()
        self._fit_tokenizer_to_family()
        if is_rank0():
            # each checkpoint holds the weights and AdamW's two moments; best/ the weights again
            weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
            check_free_space(self.output_dir, weights * (3 * cfg.save_total_limit + 1), what="this run's checkpoints")
        try:
            self.preflight = self._preflight(train_examples)
        except PreflightError:
            if created_here and is_rank0() and self.output_dir.is_dir():  # its own folder: leave nothing behind
                clear_own_dir(self.output_dir, tool_entry)
                self.output_dir.rmdir()
            raise
        if self.cfg.pad_to_max_length:
            from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

            cls = DataCollatorForTokenClassification if self.task.is_token_task else DataCollatorWithPadding
            collator = cls(self.tokenizer, padding="max_length", max_length=cfg.max_seq_length)
        else:
            from tft.train.precision import padding_multiple

            multiple = padding_multiple(self.precision_name, cfg.max_seq_length, cuda=torch.cuda.is_available())
            collator = make_collator(self.tokenizer, self.task.is_token_task, multiple)
            if multiple:
                log.info("batches padded to a multiple of %d tokens (%s on tensor cores)", multiple,
                         self.precision_name)
        self.train_set = FeatureDataset(self._features(self.data["train"], train_examples, cfg.limit_train))
        self.dev_set = (FeatureDataset(self._features(self.data["dev"], dev_examples, cfg.limit_eval))
                        if dev_examples is not None else None)
        self.trainer = self._make_trainer(collator)
        self._check_warmup()

    def _check_warmup(self) -> None:
        """A warm-up of more steps than the run has never reaches the peak learning rate: say so."""
        cfg = self.cfg
        if cfg.warmup < 1:
            return
        per_epoch = -(-len(self.train_set) // (cfg.batch_size * cfg.grad_accum * self.args.world_size))
        total = cfg.max_steps if cfg.max_steps > 0 else int(np.ceil(per_epoch * cfg.epochs))
        if int(cfg.warmup) >= total:
            log.warning("--warmup %d steps is not shorter than the run (%d optimizer steps): the learning rate never "
                        "reaches --lr %g; use fewer warm-up steps or a fraction (e.g. --warmup 0.1)", int(cfg.warmup),
                        total, cfg.lr)

    def _check_same_data(self) -> None:
        """A resumed run continues on the training file it started with: the run marker records its sha256."""
        path = self.data["train"].path
        self.settings["train_sha256"] = self.data["train"].sha256
        recorded = ((read_marker(self.output_dir) or {}).get("settings") or {}).get("train_sha256")
        if self.resume_from and recorded and recorded != self.settings["train_sha256"]:
            raise TftError(f"--resume: {path} changed since this run started (its sha256 differs from the one "
                           f"{self.output_dir / 'tft-run.json'} records); continuing would mix two trainings: restore "
                           "the file, or --overwrite to start over")

    def _resolve_task_and_model(self) -> None:
        cfg = self.cfg
        if not cfg.task:
            raise TftError("--task is required (see `tft tasks`)")
        self.task = task = get_task(cfg.task).with_fields(**cfg.task_options())
        self._check_precision()
        if cfg.output_dir is None:
            if is_distributed_launch():
                raise TftError("pass --output-dir when launching with torchrun directly (every rank must agree on it)")
            cfg.output_dir = f"runs/{task.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.output_dir = Path(cfg.output_dir)
        self.model_name = cfg.model or task.default_model
        if is_scratch(self.model_name):
            scratch_size(self.model_name)  # a bad name is one line before the run folder is created
        elif self.model_name.startswith(("/", "./", "../", "~")) and not Path(self.model_name).expanduser().exists():
            # a path, not a hub name: say so, not the hub's rules for repository ids
            raise TftError(f"--model {self.model_name}: no such folder (a local model is a folder holding config.json, "
                           "the weights and a tokenizer)")

    def _read_data(self):
        cfg, task = self.cfg, self.task
        self._check_positions()
        root = resolve_data_dir(task, cfg.data_dir)
        splits = ("train", "dev") if (root / task.files["dev"]).exists() else ("train",)
        self.data = load_dataset(task, root, splits)
        self.labels = self.data.labels
        if cfg.limit_train is not None and cfg.limit_train < 1:
            raise TftError("--limit-train must be at least 1")
        train_examples = self.data["train"].examples[: cfg.limit_train]
        dev_examples = self.data["dev"].examples[: cfg.limit_eval] if "dev" in self.data.splits else None
        return train_examples, dev_examples

    def check_only(self) -> dict:
        """`tft check-model`: the preflight alone, writing nothing (a scratch tokenizer stays in memory)."""
        self.cfg.skip_preflight, self.resume_from = False, None
        self._resolve_task_and_model()
        train_examples, _ = self._read_data()
        self.tokenizer = (train_tokenizer(texts_of(train_examples, tokenizer_text_cap(self.cfg)),
                                          max_length=max(512, self.cfg.max_seq_length))
                          if is_scratch(self.model_name) else self._tokenizer_from(self.model_name))
        self.model = self._load_model()
        self._fit_tokenizer_to_family()
        return self._preflight(train_examples)

    def _preflight(self, train_examples) -> dict:
        """The model checked before the first step (tft/train/preflight.py); what it learned about a family tft has
        no description for (padding side, inputs) is set on the tokenizer, which every later stage reads."""
        if self.cfg.skip_preflight:
            return skipped_record()
        if self.resume_from:
            return {"passed": None, "skipped": True, "why": "resumed run"}
        sample = encode(train_examples[:6], self.tokenizer, self.cfg.max_seq_length, self.labels, self.task.kind,
                        self.cfg.max_chars).features
        result = check_model(self.model, self.tokenizer, sample, self.task.kind, self.cfg.max_seq_length,
                             self.model_name)
        self.tokenizer.padding_side = result.padding_side
        self.tokenizer.model_input_names = list(result.inputs)
        log.info("preflight passed in %.1f s: train step, padding, trial ONNX export", result.seconds)
        return result.record()

    def _check_precision(self) -> None:
        cfg = self.cfg
        cuda = torch.cuda.is_available()
        # the default is auto: native bf16 trained MiniLM SST-2 at 1.25-2.2x fp32 within 0.1 point (docs/benchmarks.md)
        requested = cfg.precision if cfg.precision is not None else (None if cfg.fp16 or cfg.bf16 else "auto")
        if requested is not None:
            from tft.train.precision import choose_precision, cpu_flags

            chosen, why = choose_precision(requested, cuda=cuda, cuda_bf16=cuda and native_cuda_bf16(),
                                           flags=cpu_flags())
            if requested == "auto":  # said once training starts, not in front of a refusal's one line
                self.precision_note = (f"precision auto: {chosen} ({why})"
                                       + ("; --precision fp32 trains in fp32" if chosen != "fp32" else ""))
            cfg.fp16, cfg.bf16 = chosen == "fp16", chosen == "bf16"
        if cfg.fp16 and not cuda:
            if not cfg.allow_fp32_fallback:
                raise TftError("--fp16 needs a CUDA GPU and none is available; drop --fp16 or add --allow-fp32-fallback")
            log.warning("no CUDA GPU: --fp16 ignored, training in fp32 (--allow-fp32-fallback)")
            cfg.fp16 = False
        if cfg.bf16 and not cfg.force_bf16:
            from tft.train.precision import bf16_problem, cpu_flags

            problem = bf16_problem(cuda=cuda, cuda_bf16_native=cuda and native_cuda_bf16(), flags=cpu_flags())
            if problem and not cfg.allow_fp32_fallback:
                flag = "--precision bf16" if cfg.precision == "bf16" else "--bf16"
                raise TftError(f"{flag}: {problem}; use --precision auto or fp32{' (or --fp16)' if cuda else ''}, or "
                               "add --force-bf16 to train in emulated bf16 anyway")
            if problem:
                log.warning("bf16 would be emulated here: training in fp32 (--allow-fp32-fallback)")
                cfg.bf16 = False

    def _check_positions(self) -> None:
        """--max-seq-length within the model's positions, checked before any data is read."""
        if is_scratch(self.model_name):
            return
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(self.model_name, trust_remote_code=self.cfg.trust_remote_code)
        except (OSError, ValueError):
            return  # _load_tokenizer / _load_model say what is wrong with the model
        positions = usable_positions(family_of(config.model_type), config)
        if positions is not None and self.cfg.max_seq_length > positions:
            raise TftError(f"--max-seq-length {self.cfg.max_seq_length}: model '{self.model_name}' has {positions} "
                           "positions; use at most that")

    def _load_tokenizer(self, train_examples):
        cfg = self.cfg
        if self.resume_from:
            return self._tokenizer_from(self.resume_from)
        if is_scratch(self.model_name):
            saved = self.output_dir / "scratch_tokenizer"
            if not (saved / "tokenizer.json").exists():
                if not self.args.process_index == 0 and is_distributed_launch():
                    raise TftError("scratch tokenizer missing on a non-main rank")
                tok = train_tokenizer(texts_of(train_examples, tokenizer_text_cap(cfg)),
                                      max_length=max(512, cfg.max_seq_length))
                with atomic_dir(saved, overwrite=True) as tmp:
                    tok.save_pretrained(tmp)
        return self._tokenizer_from(str(self.output_dir / "scratch_tokenizer") if is_scratch(self.model_name)
                                    else self.model_name)

    def _tokenizer_from(self, source):
        from transformers import AutoTokenizer

        cfg = self.cfg
        try:
            tok = AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
        except (OSError, ValueError) as e:
            raise TftError(f"cannot load the tokenizer of '{source}': {str(e).splitlines()[0]}") from None
        if not getattr(tok, "is_fast", False):
            raise TftError(f"'{source}' has no fast tokenizer (tokenizer.json); tft needs one for training and serving")
        return tok

    def _load_model(self):
        import transformers
        from transformers import AutoConfig, set_seed

        set_seed(self.cfg.seed)
        task = self.task
        cls = getattr(transformers, task.kind.auto_model)
        labels = self.labels
        extra = task.kind.model_config(labels)
        spec = self.head_spec()
        if spec is not None:
            cls = transformers.AutoModel  # the encoder alone; the head is tft's (tft/heads.py)
        attention = self._attention()
        if is_scratch(self.model_name):
            config = scratch_config(self.model_name, self.tokenizer, self.cfg.max_seq_length)
            for k, v in extra.items():
                setattr(config, k, v)
            model = cls.from_config(config, **attention)
        else:
            try:
                config = AutoConfig.from_pretrained(self.model_name, trust_remote_code=self.cfg.trust_remote_code,
                                                    **extra)
                for k, v in family_of(config.model_type, quiet=True).config_overrides.items():
                    setattr(config, k, v)
                model = cls.from_pretrained(self.model_name, config=config, trust_remote_code=self.cfg.trust_remote_code,
                                            ignore_mismatched_sizes=True, **attention)
            except (OSError, ValueError) as e:
                raise TftError(f"cannot load model '{self.model_name}': {str(e).splitlines()[0]}") from None
        if spec is None:
            return model
        from tft.head_modules import with_head

        set_seed(self.cfg.seed)  # the head's weights, the same on every rank
        return with_head(model, spec, task.kind)

    def _attention(self) -> dict:
        """from_pretrained's attention argument for this precision and device ({} keeps the family's default)."""
        import torch

        from tft.train.precision import training_attention

        chosen = training_attention(self.precision_name, cuda=torch.cuda.is_available())
        if chosen is None:
            return {}
        log.info("attention: %s (faster than SDPA for bf16 training on a CPU; the same function)", chosen)
        return {"attn_implementation": chosen}

    @property
    def precision_name(self) -> str:
        """The precision training runs in, as decided (`_check_precision`)."""
        return "bf16" if self.cfg.bf16 else "fp16" if self.cfg.fp16 else "fp32"

    def head_spec(self):
        """The --head cnn/lstm/gru options as one HeadSpec; None for the family's own linear head."""
        from tft.heads import HeadSpec, parse_filter_sizes

        cfg = self.cfg
        if cfg.head == "linear":
            return None
        return HeadSpec(cfg.head, cfg.head_dropout, parse_filter_sizes(cfg.cnn_filter_sizes), cfg.cnn_filters,
                        cfg.rnn_hidden, cfg.rnn_layers, cfg.rnn_bidirectional)

    def _fit_tokenizer_to_family(self) -> None:
        """Pad where the family's classifier does not read (left for a model that reads its last token), and refuse a
        tokenizer that does not put the pooled token where the family's model reads it."""
        if "attention_mask" not in self.tokenizer.model_input_names:  # tft's features always carry it: pad it too
            self.tokenizer.model_input_names = [*self.tokenizer.model_input_names, "attention_mask"]
        if self.task.is_token_task and not self.resume_from and mark_words_as_spaced(self.tokenizer):
            log.info("tokenizer: pre-split words get their leading-space marker (add_prefix_space), as in running text")
        family = family_of(self.model.config.model_type, quiet=True)
        if not family.known:
            return  # the tokenizer's own padding side stands
        self.tokenizer.padding_side = family.padding_side
        if family.pooled_token == "last" and self.tokenizer.cls_token_id is not None:
            ids = self.tokenizer("a")["input_ids"]
            if not ids or ids[-1] != self.tokenizer.cls_token_id:
                raise TftError(f"the tokenizer of '{self.model_name}' does not end inputs with its class token "
                               f"{self.tokenizer.cls_token!r}, where a {family.model_type} model reads it")

    def _features(self, split, examples, limit) -> list[dict]:
        cfg = self.cfg
        key = feature_fingerprint(split, self.tokenizer, cfg.max_seq_length, self.labels, limit, self.task,
                                  cfg.max_chars)
        from tft.fsutil import cache_root

        path = cache_root() / "features" / f"{key}.npz"
        if cfg.cache and path.exists():
            log.debug("features of %s from cache %s", split.path, path)
            return load_features(path)
        enc = encode(examples, self.tokenizer, cfg.max_seq_length, self.labels, self.task.kind, cfg.max_chars)
        if enc.capped:
            log.warning("%s: %d texts longer than %d characters were cut before tokenizing (--max-chars)",
                        split.path, enc.capped, max_chars_for(cfg.max_seq_length, cfg.max_chars))
        if enc.truncated:
            log.warning("%s: %d of %d examples truncated to --max-seq-length %d", split.path, enc.truncated,
                        len(enc), cfg.max_seq_length)
        if cfg.cache:
            try:
                save_features(path, enc.features)
            except OSError as e:  # a read-only cache is no reason to stop training
                log.warning("could not write the feature cache %s: %s", path, e)
        return enc.features

    def _training_args(self, has_dev: bool):
        from transformers import TrainingArguments

        from tft.console import on_terminal
        from tft.cpus import available_cpus

        cfg = self.cfg
        cuda = torch.cuda.is_available()
        if not cuda and "OMP_NUM_THREADS" not in os.environ:  # the user's own setting wins
            # torch sizes its pool from the machine's cores; a pod limited to 2 CPUs of a large node then spins
            torch.set_num_threads(min(torch.get_num_threads(), available_cpus()))
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.output_dir / "tensorboard")
        if cfg.compile and not cuda and not cfg.pad_to_max_length:
            # measured (MiniLM, SST-2, AMD EPYC AVX2): 4.7 samples/s cold and 30.3 warm against 58-60 eager, because
            # per-batch padding hands torch.compile a new shape nearly every step and it recompiles for each
            log.warning("--compile does not pay on the CPU with per-batch padding (each new batch shape recompiles: "
                        "30 samples/s warm against 58 eager on an AVX2 EPYC); drop it, or add --pad-to-max-length")
        strategy = "steps" if cfg.eval_every else "epoch"
        if cfg.max_steps > 0 and not cfg.eval_every:
            strategy, cfg.eval_every = "steps", cfg.max_steps
        warmup = cfg.warmup if cfg.warmup < 1 else int(cfg.warmup)  # transformers 5: ratio or steps in one field
        try:
            return TrainingArguments(
                output_dir=str(self.output_dir),
                num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
                per_device_train_batch_size=cfg.batch_size,
                per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size * 2,
                gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
                lr_scheduler_type=cfg.lr_scheduler,
                seed=cfg.seed, data_seed=cfg.seed, fp16=cfg.fp16, bf16=cfg.bf16,
                use_cpu=not cuda,  # without it, CPU DDP ranks train un-synchronised copies
                ddp_backend="gloo" if (is_distributed_launch() and not cuda) else None,
                # BERT-style models ignore num_items_in_batch: averaging tokens across ranks would
                # multiply the reported loss by the world size.
                average_tokens_across_devices=False, ddp_find_unused_parameters=False,
                eval_strategy=strategy if has_dev else "no", eval_steps=cfg.eval_every,
                save_strategy=strategy, save_steps=cfg.eval_every, save_total_limit=cfg.save_total_limit,
                load_best_model_at_end=has_dev, metric_for_best_model=self.task.main_metric if has_dev else None,
                greater_is_better=True,
                logging_strategy="steps", logging_steps=cfg.logging_steps, logging_first_step=True,
                report_to=["tensorboard"],
                train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
                optim="adamw_torch_fused", torch_compile=cfg.compile,
                dataloader_num_workers=cfg.workers, dataloader_pin_memory=cuda,
                remove_unused_columns=False, disable_tqdm=not (is_rank0() and on_terminal()),
                warmup_steps=warmup,
            )
        except (ValueError, TypeError) as e:
            raise TftError(f"invalid training options: {str(e).splitlines()[0]}") from None

    def _make_trainer(self, collator):
        from transformers import EarlyStoppingCallback
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from tft.console import on_terminal
        from tft.train.callbacks import CheckpointMarker, JsonlLogger, LineProgress, Progress
        from tft.train.cpu_step import trainer_class

        callbacks = [CheckpointMarker(), JsonlLogger(self.output_dir / "train_log.jsonl")]
        if self.cfg.early_stopping:
            if self.dev_set is None:
                raise TftError("--early-stopping needs a dev split")
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=self.cfg.early_stopping))
        trainer = trainer_class(cuda=torch.cuda.is_available())(
            model=self.model, args=self.args, train_dataset=self.train_set, eval_dataset=self.dev_set,
            data_collator=collator, processing_class=self.tokenizer,
            compute_metrics=task_metrics.trainer_metrics(self.task.kind, self.labels), callbacks=callbacks,
        )
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)  # printed dicts on a pipe: LineProgress says it in lines
        trainer.add_callback(Progress(self.args) if on_terminal() else LineProgress(self.args))
        return trainer

    # ------------------------------------------------------------------------------------------------
    def train(self) -> dict:
        if self.trainer.is_world_process_zero():
            mark(self.output_dir, self.settings, finished=False)
        if getattr(self, "precision_note", None):
            log.info("%s", self.precision_note)
        if self.resume_from:
            log.info("resuming from %s", self.resume_from)
        try:
            result = self.fit()
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            if log.isEnabledFor(logging.DEBUG):  # -v: the traceback
                raise
            skipped = " (preflight was skipped: `tft check-model` says why)" if self.cfg.skip_preflight else ""
            raise TftError(f"training stopped in the model's own code: {first_line(e)}{skipped}") from None
        self.final_metrics = {"train": {k: v for k, v in result.metrics.items()}}
        if self.dev_set is not None:
            if self.args.bf16 or self.args.fp16:
                # the dev metric of record in fp32, as `tft eval`, export and serving compute it: accelerate runs the
                # model's forward under autocast until its wrapper is taken off (a bf16 dev pass differs by a row or
                # two: 0.7000 against 0.7033 on a tiny AFQMC model)
                self.trainer.accelerator.unwrap_model(self.trainer.model, keep_fp32_wrapper=False)
            out = self.trainer.predict(self.dev_set, metric_key_prefix="eval")
            logits = out.predictions[0] if isinstance(out.predictions, tuple) else out.predictions
            dev = task_metrics.compute(self.task.kind, self.labels, np.asarray(logits), np.asarray(out.label_ids),
                                       report=True)
            tuned = self.task.kind.tuned(np.asarray(logits), np.asarray(out.label_ids), self.labels)
            if tuned is not self.task.kind:  # parameters chosen on dev (multi-label thresholds): recorded, and used
                self.task = dataclasses.replace(self.task, kind=tuned)
                before, dev = dev, task_metrics.compute(tuned, self.labels, np.asarray(logits),
                                                        np.asarray(out.label_ids), report=True)
                log.info("tuned on dev: %s; dev %s %.4f -> %.4f (tuned on the split it is judged on: judge on test)",
                         tuned.params(), self.task.main_metric, before.get(self.task.main_metric, 0.0),
                         dev.get(self.task.main_metric, 0.0))
            self.final_metrics["dev"] = dev
        return self.final_metrics

    def fit(self):
        """The Trainer's loop, under what makes a CPU step faster (`_step_modes`)."""
        with self._step_modes():
            return self.trainer.train(resume_from_checkpoint=self.resume_from)

    def _step_modes(self) -> contextlib.AbstractContextManager:
        """What the training loop runs under besides the Trainer's own: NumPy-drawn dropout masks on a CPU."""
        from tft.train.cpu_step import FastCpuDropout, fast_dropout_wanted

        if not fast_dropout_wanted(cuda=torch.cuda.is_available(), compiled=self.cfg.compile,
                                   asked=self.cfg.fast_dropout):
            return contextlib.nullcontext()
        log.info("dropout: masks drawn by NumPy's SFC64 generator, seeded from PyTorch's (3x faster on a CPU; "
                 "--no-fast-dropout: PyTorch's own)")
        return FastCpuDropout()

    def save_checkpoint(self) -> Path | None:
        """Write best/ (HF format + tft.json), metrics.json and the training plot; rank 0 only."""
        if not self.trainer.is_world_process_zero():
            return None
        cfg, task = self.cfg, self.task
        best = self.output_dir / "best"
        with atomic_dir(best, overwrite=True) as tmp:
            self.trainer.save_model(str(tmp))
            if hasattr(self.model, "save_config"):  # a tft head: config.json is the encoder's plus the head
                self.model.save_config(Path(tmp))
            (Path(tmp) / "training_args.bin").unlink(missing_ok=True)  # a pickle; best/ holds safetensors + JSON only
            self.tokenizer.save_pretrained(str(tmp))
            files = checkpoint_files(tmp)  # what export, eval and verify prove they read
            dev = self.final_metrics.get("dev", {})
            write_checkpoint_manifest(tmp, {
                "task": task.name, "kind": task.kind.name, "kind_params": task.kind.params(), "text_field": task.text_field,
                "text_pair_field": task.text_pair_field, "label_field": task.label_field,
                "labels": list(self.labels), "entity_types": sorted({t[2:] for t in self.labels if t != "O"})
                if task.is_token_task else None, "word_joiner": task.word_joiner,
                "max_seq_length": cfg.max_seq_length, "max_chars": max_chars_for(cfg.max_seq_length, cfg.max_chars),
                "model_input_names": list(model_input_names(self.tokenizer)),
                "main_metric": task.main_metric, "metrics": {k: v for k, v in dev.items() if k != "per_type"},
                "base_model": self.model_name, "smoke_test_model": is_scratch(self.model_name),
                "model_type": self.model.config.model_type, "padding_side": self.tokenizer.padding_side,
                "head": cfg.head, "preflight": getattr(self, "preflight", skipped_record()), "files": files,
                "data_dir": str(Path(self.data.data_dir).resolve()), "created": now(), "versions": versions(),
                "command": command_line(), "train_config": {k: v for k, v in vars(cfg).items()},
            })
        atomic_write_json(self.output_dir / "metrics.json", self.final_metrics)
        mark(self.output_dir, self.settings, finished=True,
             metrics={k: v for k, v in self.final_metrics.get("dev", {}).items() if k != "per_type"})
        if cfg.plot:
            from tft.train.callbacks import plot_history

            plot_history(self.trainer.state.log_history, task.main_metric, self.output_dir / "training.png")
        return best


def tokenizer_text_cap(cfg: TrainConfig) -> int:
    """Characters of each text a scratch tokenizer learns from: the larger of --max-chars and the default cap (32 x
    max seq length, at least 4,096). It bounds the trainer's memory (a 200 MB line cost 15 GB), and a small --max-chars
    still leaves the vocabulary learnt from whole words."""
    return max(max_chars_for(cfg.max_seq_length, cfg.max_chars), max_chars_for(cfg.max_seq_length, None))


def native_cuda_bf16() -> bool:
    """bf16 in the GPU's hardware, not emulated (`is_bf16_supported` counts emulation by default)."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the argument
        return torch.cuda.get_device_capability()[0] >= 8


def run(cfg: TrainConfig) -> Path | None:
    recipe = TrainRecipe(cfg)
    with recipe.held:
        recipe.setup()
        if recipe.finished:
            metrics = (read_marker(recipe.output_dir) or {}).get("metrics") or {}
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            log.info("%s already finished training%s; nothing to do (--overwrite starts it over)", recipe.output_dir,
                     f" (dev {shown})" if shown else "")
            return recipe.output_dir / "best"
        recipe.train()
        return recipe.save_checkpoint()
