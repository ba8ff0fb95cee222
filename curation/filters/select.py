"""Selection: the one step that drops rows, from attribute columns written upstream.

Thresholds can be absolute or quantiles resolved over the whole dataset (or per group, e.g.
per source or per crawl), so a new threshold is a re-select, not a re-run. The resolved
threshold is logged and stored in the stage manifest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.core import io as fio
from curation.core.errors import ConfigError
from curation.core.schema import true_in
from curation.core.stage import BatchStage, ShardStats, ShardTask, StageContext, register


@dataclass
class SelectConfig:
    require: list[str] = field(default_factory=lambda: ["filter_keep"])  # boolean columns that must be true
    drop_duplicates: bool = True  # drop rows whose is_duplicate column is true, when it exists
    where: str | None = None  # extra DuckDB SQL predicate over the columns
    # score column for a threshold; ``best_human_labelled``: the quality_<kind> column of the upstream
    # quality stage's model that agrees best with human labels (its manifest's ``human_eval``)
    score: str | None = None
    top_percent: float | None = None  # keep the top k% by score (quantile over the whole dataset)
    min_score: float | None = None  # or an absolute threshold
    group_by: str | None = None  # resolve the quantile per group (e.g. source, crawl)
    num_cpus: float = 1.0

    def __post_init__(self) -> None:
        if (self.top_percent is not None or self.min_score is not None) and not self.score:
            raise ValueError("a threshold (top_percent or min_score) needs 'score'")
        if self.top_percent is not None and not 0 < self.top_percent <= 100:
            raise ValueError("top_percent must be in (0, 100]")
        if self.top_percent is not None and self.min_score is not None:
            raise ValueError("give top_percent or min_score, not both")


POOL_BATCH_ROWS = 65_536  # rows of a shard read at a time for the quantile pool


@register("select")
class SelectStage(BatchStage):
    Config = SelectConfig

    def _prefilter(self, batch: pa.RecordBatch | pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """(mask of rows passing everything but the score threshold, reason per row)."""
        n = batch.num_rows
        keep = np.ones(n, dtype=bool)
        reason = np.full(n, None, dtype=object)
        names = batch.schema.names

        def apply(mask: np.ndarray, why: np.ndarray | str) -> None:
            newly = keep & ~mask
            reason[newly] = why[newly] if isinstance(why, np.ndarray) else why
            keep[:] = keep & mask

        for column in self.config.require:
            mask = true_in(batch, column, "select")
            if column == "filter_keep" and "filter_reason" in names:
                why = pc.binary_join_element_wise("filter:", pc.fill_null(batch.column("filter_reason"), "unknown"), "").to_numpy(
                    zero_copy_only=False)
            else:
                why = f"not_{column}"
            apply(mask, why)
        if self.config.drop_duplicates and "is_duplicate" in names:
            apply(~pc.fill_null(batch.column("is_duplicate"), False).to_numpy(zero_copy_only=False), "duplicate")
        if self.config.where:
            apply(self._where_mask(batch), "where")
        return keep, reason

    def _where_mask(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        connection = duckdb.connect()
        try:
            connection.register("docs", table)
            result = connection.sql(f"SELECT coalesce(({self.config.where}), false) AS keep FROM docs").to_arrow_table()
        except duckdb.Error as exc:
            raise ConfigError(f"select.where: {exc}") from None
        finally:
            connection.close()
        return result.column("keep").to_numpy(zero_copy_only=False).astype(bool)

    def _pool_columns(self, names: list[str], score: str) -> list[str] | None:
        """The columns the quantile pool reads: the score and what the prefilter looks at, not the
        text (a crawl's shards are mostly text). All of them when a ``where`` predicate may name any,
        or when a required column is missing (the prefilter's error lists what there is)."""
        c = self.config
        if c.where or any(column not in names for column in c.require):
            return None
        wanted = [score, *c.require, "filter_reason", "is_duplicate", *([c.group_by] if c.group_by else [])]
        return [name for name in dict.fromkeys(wanted) if name in names]

    BEST_HUMAN_LABELLED = "best_human_labelled"

    def _best_human_labelled(self, inputs: list[str], ctx: StageContext) -> tuple[str, dict[str, float]]:
        """The upstream quality column whose model has the highest human-label ROC AUC (the
        cross-validated one for a model fitted on those labels)."""
        from curation.core import layout

        directories = sorted({path.rsplit("/", 1)[0] for path in inputs})
        manifest = layout.read_manifest(directories[0], ctx.storage) if directories else None
        models = ((manifest or {}).get("resolved") or {}).get("models", {})
        agreement = {}
        for kind, info in models.items():
            figures = [e.get("cv_roc_auc_mean", e["roc_auc"]) if e.get("in_training") else e["roc_auc"]
                       for e in info.get("human_eval", {}).values()]
            if figures:
                agreement[f"quality_{kind}"] = round(float(np.mean(figures)), 4)
        if not agreement and len(models) == 1:  # no labels to compare by: the one model there is
            return f"quality_{next(iter(models))}", {}
        if not agreement:
            raise ConfigError(f"select.score: {self.BEST_HUMAN_LABELLED} needs an upstream quality stage with one model, "
                              "or models measured on human labels (quality.train.eval_labels)")
        return max(sorted(agreement), key=agreement.__getitem__), agreement

    def resolve(self, inputs: list[str], ctx: StageContext) -> dict[str, Any]:
        c = self.config
        if c.score is None:
            return {}
        chosen: dict[str, Any] = {}
        if c.score == self.BEST_HUMAN_LABELLED:
            column, agreement = self._best_human_labelled(inputs, ctx)
            chosen = {"score": column, "human_label_roc_auc": agreement}
        score = chosen.get("score", c.score)
        if c.min_score is not None:
            return {"thresholds": {"*": c.min_score}, **chosen}
        scores: list[np.ndarray] = []
        groups: list[np.ndarray] = []
        for path in inputs:
            fs, p = fio.filesystem(path, ctx.storage)
            with fs.open(p, "rb") as handle:
                shard = pq.ParquetFile(handle)
                names = shard.schema_arrow.names
                for role, column in (("score", score), ("group_by", c.group_by)):
                    if column and column not in names:
                        raise ConfigError(f"select: {role} column {column!r} is missing; have {', '.join(names)}")
                for batch in shard.iter_batches(batch_size=POOL_BATCH_ROWS, columns=self._pool_columns(names, score)):
                    keep, _ = self._prefilter(batch)
                    scores.append(pc.fill_null(batch.column(score), -np.inf).to_numpy(zero_copy_only=False)[keep])
                    if c.group_by:
                        groups.append(np.asarray(batch.column(c.group_by).to_pylist(), dtype=object)[keep])
        values = np.concatenate(scores) if scores else np.array([])
        quantile = 1.0 - c.top_percent / 100.0
        thresholds: dict[str, float] = {}
        if c.group_by:
            labels = np.concatenate(groups) if groups else np.array([], dtype=object)
            for group in sorted({str(g) for g in labels}):
                selected = values[labels.astype(str) == group]
                thresholds[group] = float(np.quantile(selected, quantile, method="higher"))
        elif values.size:
            thresholds["*"] = float(np.quantile(values, quantile, method="higher"))
        return {"thresholds": thresholds, "pool_rows": int(values.size), **chosen}

    def describe_resolved(self, resolved: dict[str, Any]) -> str | None:
        c = self.config
        if "pool_rows" not in resolved:
            return None
        chosen = (f" (best human-label ROC AUC of {resolved['human_label_roc_auc']})"
                  if "human_label_roc_auc" in resolved else "")
        return (f"resolved {resolved.get('score', c.score)} >= {resolved['thresholds']}{chosen} "
                f"(top {c.top_percent}% of {resolved['pool_rows']:,} rows)")

    def begin_shard(self, task: ShardTask, ctx: StageContext) -> tuple[str | None, dict[str, float] | None]:
        # the state of a shard: the score column and its global thresholds
        return ctx.resolved.get("score", self.config.score), ctx.resolved.get("thresholds")

    def process_batch(self, batch: pa.RecordBatch, state: tuple[str | None, dict[str, float] | None],
                      stats: ShardStats) -> pa.RecordBatch:
        column, thresholds = state
        keep, reason = self._prefilter(batch)
        if column and thresholds:
            score = pc.fill_null(batch.column(column), -np.inf).to_numpy(zero_copy_only=False)
            if self.config.group_by:
                group = np.asarray([str(g) for g in batch.column(self.config.group_by).to_pylist()], dtype=object)
                limit = np.array([thresholds.get(g, np.inf) for g in group], dtype=np.float64)
            else:
                limit = np.full(batch.num_rows, thresholds["*"])
            above = score >= limit
            newly = keep & ~above
            reason[newly] = f"below_{column}_threshold"
            keep &= above
        stats.dropped.update(Counter(r for r in reason if r is not None))
        return batch.filter(pa.array(keep))
