"""How a run's quality scores fell: per model, the distribution among documents selection kept and
among those it dropped (`curate stats RUN` prints it and, with plots on, draws it)."""

from __future__ import annotations

from typing import Any

from curation.core import io as fio

QUANTILES = (0.1, 0.5, 0.9)


def _stage_of_kind(stages, kind: str):
    return next((s for s in stages if s.manifest and s.manifest.get("kind") == kind), None)


def score_distribution(run_root: str, storage: fio.Storage | None = None) -> list[dict[str, Any]]:
    """One row per (score column, kept or dropped): documents, mean and quantiles. Kept means the
    document's id reached the run's ``select`` output; without a select stage every row is 'all'."""
    from curation.core.stats import connect

    connection, stages = connect(run_root, storage or fio.Storage())
    try:
        quality = _stage_of_kind(stages, "quality")
        if quality is None:
            return []
        columns = [c for c in connection.sql(f'SELECT * FROM "{quality.name}" LIMIT 0').columns if c.startswith("quality_")]
        select = _stage_of_kind(stages, "select")
        if select is not None:
            group = (f'CASE WHEN id IN (SELECT id FROM "{select.name}") THEN \'kept\' ELSE \'dropped\' END')
        else:
            group = "'all'"
        rows = []
        for column in columns:
            quantiles = ", ".join(f"quantile_cont({column}, {q}) AS q{int(q * 100)}" for q in QUANTILES)
            table = connection.sql(
                f'SELECT {group} AS documents_in, count({column}) AS documents, avg({column}) AS mean, {quantiles} '
                f'FROM "{quality.name}" GROUP BY 1 ORDER BY 1 DESC').to_arrow_table().to_pylist()
            rows += [{"score": column, **row} for row in table if row["documents"]]
        return rows
    finally:
        connection.close()


def format_distribution(rows: list[dict[str, Any]]) -> str:
    header = f"  {'score':<22}{'documents':<11}{'count':>8}{'mean':>8}" + "".join(f"{'p' + str(int(q * 100)):>8}"
                                                                           for q in QUANTILES)
    lines = ["quality scores, kept and dropped by selection:", header]
    for row in rows:
        lines.append(f"  {row['score']:<22}{row['documents_in']:<11}{row['documents']:>8,}{row['mean']:>8.3f}"
                     + "".join(f"{row['q' + str(int(q * 100))]:>8.3f}" for q in QUANTILES))
    return "\n".join(lines)


def plot_distribution(run_root: str, storage: fio.Storage | None = None) -> str | None:
    """Histograms of each quality score, kept against dropped, into ``plots/quality_kept_dropped.png``."""
    from curation.core.plots import pyplot, save_png
    from curation.core.stats import connect

    storage = storage or fio.Storage()
    connection, stages = connect(run_root, storage)
    try:
        quality, select = _stage_of_kind(stages, "quality"), _stage_of_kind(stages, "select")
        if quality is None or select is None:
            return None
        columns = [c for c in connection.sql(f'SELECT * FROM "{quality.name}" LIMIT 0').columns if c.startswith("quality_")]
        if not columns:
            return None
        plt = pyplot()
        figure, axes = plt.subplots(len(columns), 1, figsize=(8, 3 * len(columns)), squeeze=False)
        for axis, column in zip(axes[:, 0], columns, strict=True):
            for label, condition in (("kept", "IN"), ("dropped", "NOT IN")):
                values = connection.sql(
                    f'SELECT {column} FROM "{quality.name}" WHERE {column} IS NOT NULL AND id {condition} '
                    f'(SELECT id FROM "{select.name}")').to_arrow_table().column(0).to_numpy()
                axis.hist(values, bins=40, range=(0, 1), histtype="stepfilled", alpha=0.5, label=f"{label} ({len(values):,})")
            axis.set_title(f"{column}: kept and dropped by selection")
            axis.set_xlabel("score")
            axis.legend()
        return save_png(figure, fio.join(run_root, "plots", "quality_kept_dropped.png"), storage)
    finally:
        connection.close()
