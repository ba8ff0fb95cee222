"""Kill-and-resume inside a resolve: the corpus-wide phases of MinHash dedup and BFF checkpoint in
the stage's work folder, so a driver killed (SIGKILL) after a phase resumes after it, and the output
is byte-identical to an uninterrupted run's."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from conftest import run_curate

from curation.core.layout import CHECKPOINT
from curation.core.phases import KILL_AFTER_PHASE
from curation.dedup.bff import KILL_AT_SHARD

pytestmark = pytest.mark.slow


def _corpus(folder: Path, files: int = 3, docs: int = 60) -> list[str]:
    """Documents with exact and near copies across files, so every phase has work to do."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.choice(words) for _ in range(120)) for _ in range(docs)]
    paths = []
    for f in range(files):
        rows = []
        for i, text in enumerate(texts):
            if i % 3 == 0:  # a third of each file repeats the other files' documents, some edited
                text = text if f % 2 else text.replace(text.split()[5], "edited", 1)
            else:
                text = f"file {f} doc {i} " + " ".join(rng.choice(words) for _ in range(120))
            lines = [" ".join(text.split()[k:k + 30]) for k in range(0, 120, 30)]
            rows.append({"id": f"f{f}-{i}", "text": "\n".join(lines)})
        path = folder / f"docs-{f}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(str(path))
    return paths


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))
            if not {"_receipts", "_stats", "_input"} & set(p.relative_to(folder).parts)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[str], dict[str, dict[str, bytes]]]:
    """The corpus, and each method's output from an uninterrupted run."""
    folder = tmp_path_factory.mktemp("corpus")
    inputs = _corpus(folder)
    fresh = {}
    for method in ("minhash", "bff"):
        out = run_curate(["dedup", "--method", method, "--input", *inputs, "--output", str(folder / method)])
        assert "resumed" not in out.stdout and "before)" not in out.stdout
        fresh[method] = _outputs(folder / method)
        assert fresh[method]
    return inputs, fresh


@pytest.mark.parametrize(("method", "phase", "resumed"), [
    ("minhash", "verify", ["signatures resumed", "buckets resumed", "join resumed", "verify resumed"]),
    ("minhash", "clusters", ["signatures resumed", "components resumed", "clusters resumed"]),  # as if killed in the shard pass
    ("bff", "hashing", ["hashing resumed"]),
])
def test_a_resolve_killed_after_a_phase_resumes_after_it(corpus, tmp_path, method, phase, resumed):
    inputs, fresh = corpus
    args = ["dedup", "--method", method, "--input", *inputs, "--output", str(tmp_path / "killed")]
    killed = run_curate(args, env={KILL_AFTER_PHASE: phase}, check=False)
    assert killed.returncode == -9, killed.stdout + killed.stderr  # SIGKILL, as a lost driver
    checkpoint = json.loads((tmp_path / "killed" / "_work" / CHECKPOINT).read_text())
    assert phase in checkpoint["finished"]

    again = run_curate(args)
    stage = "dedup" if method == "minhash" else "bff_dedup"
    line = next(line for line in again.stdout.splitlines() if line.startswith(f"[{stage}] ") and "(" in line)
    for note in resumed:
        assert note in line, line
    assert not (tmp_path / "killed" / "_work").exists()  # spent once the stage is committed
    assert _outputs(tmp_path / "killed") == fresh[method]


def test_signatures_cut_short_resume_from_the_shards_already_signed(corpus, tmp_path):
    """A kill inside the signatures phase: the shards whose tables are whole are not signed again."""
    inputs, fresh = corpus
    args = ["dedup", "--input", *inputs, "--output", str(tmp_path / "killed")]
    work = tmp_path / "killed" / "_work"
    assert run_curate(args, env={KILL_AFTER_PHASE: "signatures"}, check=False).returncode == -9
    # the state a kill during the phase leaves: some shards signed, the phase not finished
    checkpoint = json.loads((work / CHECKPOINT).read_text())
    del checkpoint["finished"]["signatures"]
    (work / CHECKPOINT).write_text(json.dumps(checkpoint))
    (work / "signed" / "s000001").unlink()
    again = run_curate(args)
    assert re.search(r"signatures \d+s \(2 of 3 shards signed before\)", again.stdout), again.stdout
    assert _outputs(tmp_path / "killed") == fresh["minhash"]


def test_a_work_folder_of_another_configuration_is_not_resumed(corpus, tmp_path):
    inputs, _ = corpus
    killed = run_curate(["dedup", "--input", *inputs, "--output", str(tmp_path / "run")],
                        env={KILL_AFTER_PHASE: "join"}, check=False)
    assert killed.returncode == -9
    other = run_curate(["dedup", "--input", *inputs, "--output", str(tmp_path / "run"), "--threshold", "0.7"])
    assert "resumed" not in other.stdout and "signed before" not in other.stdout
    run_curate(["dedup", "--input", *inputs, "--output", str(tmp_path / "fresh"), "--threshold", "0.7"])
    assert _outputs(tmp_path / "run") == _outputs(tmp_path / "fresh")


def test_a_worker_killed_in_bffs_ordered_pass_is_retried_from_its_saved_filter(corpus, tmp_path):
    """The ordered pass's Ray task dies (SIGKILL) right after saving its filter at shard 2 of 3; Ray
    runs the task again, which goes on from the save: one shard taken in again instead of three,
    and the output of a pass never cut."""
    inputs, fresh = corpus
    out = run_curate(["dedup", "--method", "bff", "--input", *inputs, "--output", str(tmp_path / "killed"),
                      "--set", "bff_dedup.checkpoint_interval_s=0"], env={KILL_AT_SHARD: "2"})
    assert "(2 of 3 shards taken in before)" in out.stdout, out.stdout
    assert _outputs(tmp_path / "killed") == fresh["bff"]
