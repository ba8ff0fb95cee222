"""Publishing a mix as a self-contained, verifiable bundle, and verifying one.

    BUNDLE/data/<source index>/<token files, .csv.gz metadata, index Parquet>
    BUNDLE/mix.json              spans rewritten to bundle-relative paths
    BUNDLE/manifests/*.json      the tokenize stage manifests (tokenizer, lineage, checksums)
    BUNDLE/README.md             the dataset card
    BUNDLE/SHA256SUMS            every file above, written last

Nothing about the publisher's environment or credentials is written; storage options are not
serialised anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from curation.core import io as fio
from curation.core import layout
from curation.core.errors import CurationError

SUMS = "SHA256SUMS"


def _copy(source: str, target: str, storage: fio.Storage) -> tuple[str, str]:
    data = fio.read_bytes(source, storage)
    fio.write_atomic(target, data, storage)
    return fio.sha256_bytes(data), target


def publish(mix_dir: str, bundle: str, storage: fio.Storage | None = None) -> dict[str, Any]:
    storage = storage or fio.Storage()
    mix_dir, bundle = fio.normalize_root(mix_dir), fio.normalize_root(bundle)
    mix_path = fio.join(mix_dir, "mix.json")
    if not fio.exists(mix_path, storage):
        raise CurationError(f"no mix.json in {mix_dir} (run `curate mix SPEC --output {mix_dir}` first)")
    mix = json.loads(fio.read_bytes(mix_path, storage))
    sums: dict[str, str] = {}

    # Token files used by the mix, with their metadata, and the index shards they belong to.
    index_dirs = sorted({span["file"].rsplit("/", 1)[0] for span in mix["spans"]})
    alias = {d: f"data/{_name(d, i)}" for i, d in enumerate(index_dirs)}
    used = sorted({span["file"] for span in mix["spans"]})
    manifests = []
    for directory in index_dirs:
        _, manifest = layout.find_stage(directory, storage, kind="tokenize")
        manifests.append((directory, manifest))
        used_names = {u.rsplit("/", 1)[-1] for u in used if u.startswith(directory + "/")}
        shards = {name.rsplit("-", 2)[0] for name in used_names}  # part-00000-train-000.npy -> part-00000
        wanted = used_names | {n.removesuffix(".npy") + ".csv.gz" for n in used_names} | {f"{s}.parquet" for s in shards}
        for entry in manifest["files"]:
            name = entry["name"]
            if name in wanted:
                digest, _ = _copy(fio.join(directory, name), fio.join(bundle, alias[directory], name), storage)
                if digest != entry["sha256"]:
                    raise CurationError(f"{directory}/{name} does not match its manifest checksum; refusing to publish")
                sums[f"{alias[directory]}/{name}"] = digest
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        target = f"manifests/{alias[directory].removeprefix('data/')}.json"
        fio.write_atomic(fio.join(bundle, target), body, storage)
        sums[target] = fio.sha256_bytes(body)

    bundled = dict(mix)
    bundled["spans"] = [{**s, "file": f"{alias[s['file'].rsplit('/', 1)[0]]}/{s['file'].rsplit('/', 1)[-1]}"} for s in mix["spans"]]
    for source in bundled["sources"]:
        source["index"] = alias.get(fio.normalize_root(source["index"]), source["index"])
    body = json.dumps(bundled, indent=1, sort_keys=True).encode()
    fio.write_atomic(fio.join(bundle, "mix.json"), body, storage)
    sums["mix.json"] = fio.sha256_bytes(body)

    card = dataset_card(bundled, manifests, storage).encode()
    fio.write_atomic(fio.join(bundle, "README.md"), card, storage)
    sums["README.md"] = fio.sha256_bytes(card)
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))
    fio.write_atomic(fio.join(bundle, SUMS), listing.encode(), storage)
    return {"bundle": bundle, "files": len(sums), "tokens": mix["total_tokens"]}


def _name(directory: str, index: int) -> str:
    parts = [p for p in directory.replace("://", "/").split("/") if p]
    return f"{index:02d}-{'-'.join(parts[-2:])}"


def dataset_card(mix: dict[str, Any], manifests: list[tuple[str, dict]], storage: fio.Storage) -> str:
    lines = [f"# {mix['name']}", "", mix["spec"].get("description") or "A token mix published by curation.", ""]
    lines += ["## Sources", "", "| source | selection | documents | available tokens | tokens in mix | repetition | share |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for s in mix["sources"]:
        selection = " AND ".join(x for x in [s.get("where") or "", f"top {s['top_percent']}% by {s['score']}" if s.get("top_percent") else ""] if x) or "all"
        lines.append(f"| {s['name']} | {selection} | {s['documents']:,} | {s['available_tokens']:,} | {s['achieved_tokens']:,} | "
                     f"{s['repetition']:.2f} | {s['proportion']:.1%} |")
    lines += ["", f"Total: **{mix['total_tokens']:,} tokens**.", ""]
    for directory, manifest in manifests:
        tokenizer = manifest.get("resolved", {}).get("tokenizer", {})
        lines += [f"## Shards from `{directory.rsplit('/', 1)[-1]}`", "",
                  f"- format {manifest.get('resolved', {}).get('format')}, dtype {tokenizer.get('dtype')}, "
                  f"vocabulary {tokenizer.get('vocab_size')}, EOS {tokenizer.get('eos_id')}, "
                  f"tokenizer sha256 `{tokenizer.get('sha256', '')[:16]}…`",
                  f"- stage key `{manifest['key'][:16]}…`, input lineage `{manifest['input_sha256'][:16]}…`", ""]
        lines += _funnel_lines(directory, storage)
        lines += _stage_summaries(directory, storage)
    lines += ["## License", "", mix["spec"].get("license", ""), "",
              "## Verify", "", "`curate verify BUNDLE` re-checks every file against `SHA256SUMS`.", ""]
    return "\n".join(lines)


def _funnel_lines(directory: str, storage: fio.Storage) -> list[str]:
    from curation.core.stats import discover, funnel

    run_root = directory.rsplit("/", 1)[0]
    try:
        steps = funnel(discover(run_root, storage))
    except CurationError:
        return []
    if not steps:
        return []
    out = ["### Filter funnel", "", "| step | documents |", "| --- | ---: |"]
    out += [f"| {s.label} | {s.documents:,} |" for s in steps]
    return out + [""]


def _stage_summaries(directory: str, storage: fio.Storage) -> list[str]:
    """What each stage of the run behind a tokenize output says about itself for a card."""
    run_root = directory.rsplit("/", 1)[0]
    try:
        from curation.core.stats import discover

        stages = discover(run_root, storage)
    except CurationError:
        return []
    return [line for stage in stages if stage.manifest for line in stage.manifest.get("summary", [])]


@dataclass
class Verification:
    checked: int = 0
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.mismatched or self.missing or self.unlisted)


def verify(bundle: str, storage: fio.Storage | None = None) -> Verification:
    storage = storage or fio.Storage()
    bundle = fio.normalize_root(bundle)
    sums_path = fio.join(bundle, SUMS)
    if not fio.exists(sums_path, storage):
        raise CurationError(f"{bundle} has no {SUMS}: not a published bundle, or publishing did not finish")
    result = Verification()
    listed = set()
    for line in fio.read_bytes(sums_path, storage).decode().splitlines():
        digest, name = line.split("  ", 1)
        listed.add(name)
        path = fio.join(bundle, name)
        if not fio.exists(path, storage):
            result.missing.append(name)
            continue
        result.checked += 1
        if fio.sha256_file(path, storage) != digest:
            result.mismatched.append(name)
    fs, root = fio.filesystem(bundle, storage)
    for path in fs.find(root):
        relative = path[len(root.rstrip("/")) + 1 :]
        if relative != SUMS and relative not in listed:
            result.unlisted.append(relative)
    return result
