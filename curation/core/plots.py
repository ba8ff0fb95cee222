"""Plots of a run's tokens and of a mix, written as PNG next to them.

``curate stats RUN --plots`` writes ``RUN/plots/``: tokens per language, per domain (top 20),
document length (tokens) distribution, and the distribution of every score column by source
(crawl file). ``curate stats MIX_DIR --plots`` writes ``MIX_DIR/plots/``: tokens per source.
"""

from __future__ import annotations

import io

import pyarrow as pa

from curation.core import io as fio


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure, path: str, storage: fio.Storage) -> str:
    plt = pyplot()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    fio.write_atomic(path, buffer.getvalue(), storage)
    return path


def _bars(table: pa.Table, label: str, value: str, title: str, path: str, storage: fio.Storage) -> str:
    plt = pyplot()
    labels = [str(x) for x in table.column(label).to_pylist()][::-1]
    values = table.column(value).to_pylist()[::-1]
    figure, axis = plt.subplots(figsize=(8, 0.3 * len(labels) + 1.5))
    axis.barh(labels, values, color="#4C78A8")
    axis.set_xlabel(value)
    axis.set_title(title)
    axis.spines[["top", "right"]].set_visible(False)
    return save_png(figure, path, storage)


def run_plots(run_root: str, storage: fio.Storage | None = None) -> list[str]:
    from curation.core.stats import connect

    storage = storage or fio.Storage()
    connection, stages = connect(run_root, storage)
    names = {s.name for s in stages if s.manifest}
    kinds = {s.name: s.manifest["kind"] for s in stages if s.manifest}
    token_stage = next((n for n, k in kinds.items() if k == "tokenize"), None)
    out: list[str] = []
    plots = fio.join(run_root, "plots")
    if token_stage:
        view = f'"{token_stage}"'
        columns = set(connection.sql(f"SELECT * FROM {view} LIMIT 0").columns)
        if "language" in columns:
            t = connection.sql(f"SELECT coalesce(language, '?') AS language, sum(num_tokens) AS tokens FROM {view} "
                               "GROUP BY 1 ORDER BY 2 DESC LIMIT 20").to_arrow_table()
            out.append(_bars(t, "language", "tokens", "tokens per language", fio.join(plots, "tokens_by_language.png"), storage))
        if "url" in columns:
            t = connection.sql(f"SELECT coalesce(regexp_extract(url, '://([^/]+)', 1), '?') AS domain, sum(num_tokens) AS tokens "
                               f"FROM {view} GROUP BY 1 ORDER BY 2 DESC LIMIT 20").to_arrow_table()
            out.append(_bars(t, "domain", "tokens", "tokens per domain (top 20)", fio.join(plots, "tokens_by_domain.png"), storage))
        lengths = connection.sql(f"SELECT num_tokens FROM {view}").to_arrow_table().column(0).to_numpy()
        plt = pyplot()
        figure, axis = plt.subplots(figsize=(8, 4))
        axis.hist(lengths, bins=50, color="#4C78A8")
        axis.set_xlabel("tokens per document")
        axis.set_ylabel("documents")
        axis.set_title(f"document length ({len(lengths):,} documents)")
        out.append(save_png(figure, fio.join(plots, "document_length.png"), storage))
    # Score distributions by source, over the widest stage with attributes (before selection).
    attribute_stage = next((n for n in ("decontaminate", "dedup", "filter") if n in names), None)
    if attribute_stage:
        view = f'"{attribute_stage}"'
        schema = connection.sql(f"SELECT * FROM {view} LIMIT 0")
        scores = [c for c, t in zip(schema.columns, schema.types, strict=True)
                  if str(t) in ("FLOAT", "DOUBLE") and (c.endswith("_score") or c.startswith("quality"))]
        if scores:
            plt = pyplot()
            figure, axes = plt.subplots(len(scores), 1, figsize=(8, 3 * len(scores)), squeeze=False)
            table = connection.sql(f"SELECT regexp_extract(source, '[^/]+$') AS source, {', '.join(scores)} FROM {view}").to_arrow_table()
            sources = sorted(set(table.column("source").to_pylist()))[:8]
            for axis, score in zip(axes[:, 0], scores, strict=True):
                for source in sources:
                    mask = pa.compute.equal(table.column("source"), source)
                    values = table.filter(mask).column(score).drop_null().to_numpy()
                    axis.hist(values, bins=40, histtype="step", label=source)
                axis.set_title(f"{score} by source")
                axis.legend(fontsize=6)
            out.append(save_png(figure, fio.join(plots, "scores_by_source.png"), storage))
    connection.close()
    return out


def mix_plots(mix_dir: str, storage: fio.Storage | None = None) -> list[str]:
    import json

    storage = storage or fio.Storage()
    mix = json.loads(fio.read_bytes(fio.join(mix_dir, "mix.json"), storage))
    table = pa.table({"source": [s["name"] for s in mix["sources"]], "tokens": [s["achieved_tokens"] for s in mix["sources"]]})
    return [_bars(table, "source", "tokens", f"mix {mix['name']}: tokens per source", fio.join(mix_dir, "plots", "tokens_by_source.png"), storage)]
