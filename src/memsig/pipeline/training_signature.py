"""Signatures while the base model trains: watch memory form, step by step.

Every `probe.during_training.every_n_steps` training steps (and before the first), the model
being trained is run over the first `chars` characters of probe-train and probe-test, and
each view x offset gets a linear-discriminant probe (the warm start of MultiOffsetProbe: one
pass over the states, no gradient training) scored on the probe-test slice. At the end of
training the information (bits) by step x offset goes to training_signature.json/.png in the
run dir and to the loggers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from memsig.data.corpus import Corpus
from memsig.extraction.loader import PositionBatches, position_loader, targets_of
from memsig.extraction.offsets import valid_positions
from memsig.extraction.state_cache import ExtractSettings, build_cache
from memsig.probes.baselines import prior_baselines
from memsig.probes.moments import fit_moments
from memsig.probes.multi_offset import MultiOffsetProbe, indicator_columns, probe_views
from memsig.probes.prior_guard import PriorGuard
from memsig.reports.figures import save_figure, training_heatmap
from memsig.reports.tracking import log_report
from memsig.runtime.atomic import write_json_atomic
from memsig.runtime.distributed import is_rank_zero
from memsig.signature.record import capacity

FILENAME = "training_signature"


class SignatureDuringTraining(Callback):
    """Small signatures at chosen training steps; a step x offset heatmap at the end."""

    def __init__(
        self,
        corpus: Corpus,
        offsets: Sequence[int],
        views: Sequence[str] | None,
        every_n_steps: int,
        chars: int,
        run_dir: Path,
        loggers: list,
        settings: ExtractSettings,
        batch_size: int = 1024,
    ) -> None:
        self.corpus, self.offsets, self.views = corpus, list(offsets), views
        self.every_n_steps, self.chars, self.run_dir = every_n_steps, chars, Path(run_dir)
        self.loggers, self.settings, self.batch_size = loggers, settings, batch_size
        self.steps: list[int] = []
        self.info: dict[str, list[list[float]]] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step not in self.steps:
            self._measure(pl_module.net, trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 and step not in self.steps:
            self._measure(pl_module.net, step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not is_rank_zero():  # every rank measured the same numbers; one writes them
            return
        record = {"steps": self.steps, "offsets": self.offsets, "info_bits": self.info}
        write_json_atomic(self.run_dir / f"{FILENAME}.json", record)
        figure = save_figure(
            training_heatmap(self.steps, self.offsets, self.info),
            self.run_dir / f"{FILENAME}.png",
        )
        rows = [
            (view, step, k, value)
            for view, grid in self.info.items()
            for step, row in zip(self.steps, grid, strict=True)
            for k, value in zip(self.offsets, row, strict=True)
        ]
        log_report(
            self.loggers, FILENAME, {}, ("view", "step", "offset", "info_bits"), rows, figure
        )

    def state_dict(self) -> dict:
        return {"steps": self.steps, "info": self.info}

    def load_state_dict(self, state_dict: dict) -> None:
        self.steps, self.info = list(state_dict["steps"]), dict(state_dict["info"])

    @torch.no_grad()
    def _measure(self, net: torch.nn.Module, step: int) -> None:
        """One small signature of `net` as it is now."""
        was_training = net.training
        net.eval()
        views = probe_views(net.view_dims, self.views)
        device = next(net.parameters()).device
        offs = np.asarray(self.offsets)
        with tempfile.TemporaryDirectory() as scratch:
            sets = []
            for part in ("probe_train", "probe_test"):
                tokens = self.corpus.parts[part][: self.chars]
                cache = build_cache(
                    net.views,
                    tokens,
                    Path(scratch) / part,
                    {"views": views, "part": part},
                    self.settings,
                    device,
                )
                positions = np.asarray(valid_positions(len(tokens), self.offsets))
                sets.append(PositionBatches(cache.views, tokens, positions, offs))
            fit, test = sets
            vocab = len(self.corpus.vocab)
            probe = MultiOffsetProbe(
                views,
                len(offs),
                vocab,
                None,
                *fit_moments(fit, views, self.batch_size),
                guard=PriorGuard(len(views), vocab, targets_of(fit)),
                indicators=indicator_columns(net, views),
            )
            # every rank holds the same slices: the fit pass is every rank's own, the test
            # pass is split across the ranks and its scores added over them
            probe.warm_start(position_loader(fit, self.batch_size, shuffle=False, shard=False))
            test_batches = position_loader(test, self.batch_size, shuffle=False, shard=True)
            for i, batch in enumerate(test_batches):
                probe.test_step(batch, i)
            probe.on_test_epoch_end()
            baseline = prior_baselines(targets_of(fit), targets_of(test), len(self.corpus.vocab))
        net.train(was_training)
        prior = np.asarray(baseline["prior_entropy_bits"])
        info = prior[None, :] - probe.test_results["xent_bits"].numpy()
        self.steps.append(step)
        for i, view in enumerate(views):
            self.info.setdefault(view, []).append(info[i].tolist())
        metrics = {
            f"{FILENAME}/{view}/capacity": capacity(self.offsets, info[i], prior)
            for i, view in enumerate(views)
        }
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)
