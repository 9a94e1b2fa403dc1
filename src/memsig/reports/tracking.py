"""Logger glue: build the configured loggers, and send the signature to each of them."""

from __future__ import annotations

import logging
import netrc
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig

from memsig.config.compose import build
from memsig.runtime.distributed import is_rank_zero
from memsig.runtime.errors import ConfigError
from memsig.signature.record import Signature, json_number

log = logging.getLogger(__name__)
WANDB_SERVER = "https://api.wandb.ai"
WANDB_TIMEOUT_S = 5.0  # seconds to reach the W&B server before giving up on online logging


def wandb_logger(
    project: str,
    save_dir: str,
    offline: bool | None = None,
    entity: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    name: str | None = None,
) -> WandbLogger:
    """A W&B logger that never prompts or waits: offline unless `offline=False` or
    WANDB_API_KEY is set. An online run whose server cannot be reached within seconds (a
    compute node without network) runs offline with a warning when online was only implied
    by the key, and is refused when asked for (`offline=False`)."""
    asked_online = offline is False
    if offline is None:
        offline = not os.environ.get("WANDB_API_KEY")
    if not offline and not _has_wandb_credentials():
        raise ConfigError(
            "logger.wandb.offline=false needs W&B credentials: set WANDB_API_KEY or run "
            "`wandb login`; or keep the run offline (logger.wandb.offline=true) and upload it "
            "later with `wandb sync <run dir>/wandb/offline-run-*`"
        )
    if not offline and os.environ.get("WANDB_MODE") not in ("offline", "dryrun", "disabled"):
        server = os.environ.get("WANDB_BASE_URL", WANDB_SERVER)
        problem = unreachable(server, WANDB_TIMEOUT_S)
        if problem and asked_online:
            raise ConfigError(
                f"logger.wandb.offline=false but the W&B server {server} cannot be reached "
                f"({problem}): check the network (compute nodes often have none), or run "
                f"offline (logger.wandb.offline=true) and upload later with "
                f"`wandb sync {save_dir}/wandb/offline-run-*`"
            )
        if problem:
            log.warning(
                "the W&B server %s cannot be reached (%s): this run logs offline; upload it "
                "later with `wandb sync %s/wandb/offline-run-*` (logger.wandb.offline=false "
                "makes this an error instead)",
                server,
                problem,
                save_dir,
            )
            offline = True
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        offline=offline,
        entity=entity,
        group=group,
        tags=list(tags or []),
        name=name,
        log_model=False,
    )


def unreachable(url: str, timeout: float) -> str | None:
    """Why a TCP connection to the server of `url` fails within `timeout` seconds (name
    lookup included), or None when it succeeds."""
    parsed = urlsplit(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(str(err) or type(err).__name__)

    thread = threading.Thread(target=connect, daemon=True)  # name lookups ignore timeouts
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def _has_wandb_credentials() -> bool:
    """An API key in the environment or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def build_loggers(logger_cfg: DictConfig | None, config: Mapping) -> list[Logger]:
    """Every logger named in the `logger` group (none for `logger=none`), each given the
    composed config as the run's hyperparameters."""
    loggers = []
    for entry in (logger_cfg or {}).values():
        if isinstance(entry, Mapping) and "_target_" in entry:
            logger = build(entry)
            if isinstance(logger, CSVLogger) and is_rank_zero():
                keep_earlier_metrics(Path(logger.log_dir))
            logger.log_hyperparams(dict(config))
            loggers.append(logger)
    return loggers


def keep_earlier_metrics(log_dir: Path) -> None:
    """Lightning's CSV logger deletes an existing metrics.csv: an earlier attempt's file
    (a rerun in the same run dir) is kept as metrics.1.csv, metrics.2.csv, ... in order."""
    metrics = log_dir / "metrics.csv"
    if not metrics.is_file():
        return
    attempt = 1
    while (log_dir / f"metrics.{attempt}.csv").exists():
        attempt += 1
    metrics.rename(log_dir / f"metrics.{attempt}.csv")


SIGNATURE_COLUMNS = (
    "view",
    "offset",
    "accuracy",
    "xent_bits",
    "info_bits",
    "majority_accuracy",
    "prior_entropy_bits",
)


# the per-offset curves charted on W&B, one line per view: score and information side by side
SIGNATURE_CHARTS = {
    "accuracy": "probe accuracy by offset",
    "info_bits": "information by offset (bits: prior entropy - probe cross-entropy)",
}


def log_signature(loggers: list[Logger], signature: Signature, figure: Path) -> None:
    """Capacities to every logger; the table, a per-view line plot and the figure to W&B."""
    base = signature.baseline
    rows = [
        (
            view,
            k,
            scores.accuracy[i],
            scores.xent_bits[i],
            scores.info_bits[i],
            base["majority_accuracy"][i],
            base["prior_entropy_bits"][i],
        )
        for view, scores in signature.views.items()
        for i, k in enumerate(signature.offsets)
    ]
    summary = {f"signature/{view}/capacity": s.capacity for view, s in signature.views.items()}
    summary.update(_summary_scalars(signature))
    conditional = signature.extra.get("conditional_memory", {}).get("views", {})
    summary |= {
        f"signature/{view}/capacity_beyond_context": record["capacity_beyond_context"]
        for view, record in conditional.items()
    }
    log_report(loggers, "signature", summary, SIGNATURE_COLUMNS, rows, figure)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            every_metric = wandb.Table(
                columns=["view", "offset", "metric", "value"],
                data=[[v, str(k), m, json_number(x)] for v, k, m, x in signature.rows()],
            )
            logger.experiment.log({"signature/long_table": every_metric})
            views = list(signature.views)
            for metric, title in SIGNATURE_CHARTS.items():
                lines = wandb.plot.line_series(
                    xs=signature.offsets,
                    ys=[getattr(signature.views[v], metric) for v in views],
                    keys=views,
                    title=title,
                    xname="offset",
                )
                logger.experiment.log({f"signature/{metric}": lines})


def _summary_scalars(signature: Signature) -> dict[str, float]:
    """The optional per-view numbers (summary, interval bounds of the summary, mean
    selectivity, the untrained twin's capacity) as `signature/<view>/<name>` scalars."""
    out = {}
    extra = signature.extra
    for view, numbers in extra.get("summary", {}).items():
        out.update({f"signature/{view}/{k}": v for k, v in numbers.items() if k != "capacity"})
    for view, bounds in extra.get("intervals", {}).get("views", {}).items():
        for name in ("capacity", "half_life"):
            for end, value in zip(("lo", "hi"), bounds.get(name) or (), strict=False):
                out[f"signature/{view}/{name}_{end}"] = value
    for view, scores in extra.get("control", {}).get("views", {}).items():
        out[f"signature/{view}/mean_selectivity"] = sum(scores["selectivity"]) / len(
            scores["selectivity"]
        )
    for view, scores in extra.get("untrained", {}).get("views", {}).items():
        out[f"signature/{view}/untrained_capacity"] = scores["capacity"]
    return {k: float(v) for k, v in out.items() if v is not None}


def log_report(
    loggers: list[Logger],
    name: str,
    scalars: Mapping[str, float],
    columns: Sequence[str],
    rows: Sequence[Sequence],
    figure: Path,
) -> None:
    """Scalars to every logger (none when empty); the figure to W&B as `name`/figure, and the
    table as `name`/table when it has rows."""
    for logger in loggers:
        if scalars:
            logger.log_metrics(dict(scalars))
        if isinstance(logger, WandbLogger):
            import wandb

            media = {f"{name}/figure": wandb.Image(str(figure))}
            if rows:
                media[f"{name}/table"] = wandb.Table(
                    columns=list(columns), data=list(map(list, rows))
                )
            logger.experiment.log(media)
        logger.save()


def checkpoint_artifact(checkpoint: Path, sha256: str, metrics: Mapping[str, float]):
    """The base checkpoint as a W&B model artifact, named by its content digest (the same
    file is the same artifact in every run that trains or reuses it)."""
    import wandb

    artifact = wandb.Artifact(
        f"base-{sha256[:16]}", type="model", metadata={"sha256": sha256, **dict(metrics)}
    )
    artifact.add_file(str(checkpoint), name="base.ckpt")
    return artifact


def log_checkpoint(loggers: list[Logger], checkpoint: Path, sha256: str, metrics: Mapping) -> None:
    """The base stage's output: the trained checkpoint as an artifact of this run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.log_artifact(checkpoint_artifact(checkpoint, sha256, metrics))


def log_signature_artifact(
    loggers: list[Logger],
    signature: Signature,
    files: Sequence[Path],
    checkpoint: Path,
    checkpoint_logged: bool,
) -> None:
    """The signature files as a W&B artifact with lineage to the checkpoint they measure.

    Online, the run declares the checkpoint artifact as its input (`use_artifact`), so W&B
    draws checkpoint -> run -> signature. Offline runs cannot declare inputs (the W&B SDK
    refuses `use_artifact` offline): the checkpoint artifact is logged by the run (unless the
    base stage already did) and the signature artifact names it in its metadata
    (`checkpoint_artifact`, `checkpoint_sha256`)."""
    sha256 = signature.model["checkpoint_sha256"]
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        run = logger.experiment
        model = checkpoint_artifact(checkpoint, sha256, signature.model["metrics"])
        if not run.offline:
            run.use_artifact(model)
        elif not checkpoint_logged:
            run.log_artifact(model)
        capacities = {view: scores.capacity for view, scores in signature.views.items()}
        artifact = wandb.Artifact(
            f"signature-{run.id}",
            type="signature",
            metadata={
                "checkpoint_artifact": model.name,
                "checkpoint_sha256": sha256,
                "capacity": capacities,
            },
        )
        for path in files:
            artifact.add_file(str(path), name=Path(path).name)
        run.log_artifact(artifact)


def finish_loggers(loggers: list, status: str) -> None:
    """Tell every logger the outcome and close the W&B run, so its files are complete before
    the process ends."""
    for logger in loggers:
        logger.finalize(status)
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish(exit_code=0 if status == "success" else 1)
