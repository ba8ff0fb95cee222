"""The embedding scorer's schedule, measured without a GPU: the real tokenizer (in worker
processes, as on a GPU machine) feeding a simulated GPU that runs each batch asynchronously for a
time proportional to its padded tokens, with a bounded launch queue (a full queue blocks the
launch, as CUDA's does).

On the H200 (session 8) the scorer's end-to-end time was the tokenizer's time plus the model's:
nothing overlapped. This measures how close a schedule comes to the ideal (the slower of the two
alone) on this machine, for a model as fast as the tokenizer, twice as fast and half as fast:

- ``embed_stream``: the encoder's stream over record-batch-sized lists, as the `quality` stage
  calls it (the next list is tokenized while the model runs this one);
- one ``embed`` call per list, as the stage called it before streaming;
- the serial peer: tokenize a batch, run it, wait for it, as sentence-transformers' ``encode`` does;
- shards of a few batches, each its own stream (each fills and drains the pipeline), one after
  another as an actor ran them, and two at once in threads, as the stage's GPU actor now does.

    .venv/bin/python -u benchmarks/bench_embed_pipeline.py [--lists 4] [--list-docs 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from common import median_seconds, print_table


class SimulatedDevice:
    """An asynchronous device: ``launch`` queues ``seconds`` of work and returns at once unless
    more than ``queue_s`` is already queued; ``wait`` returns when the queue is empty."""

    def __init__(self, queue_s: float):
        self.queue_s, self.busy_until = queue_s, 0.0
        self.lock = threading.Lock()  # two shards' threads share one device, as on a GPU actor

    def launch(self, seconds: float) -> None:
        while True:
            with self.lock:
                now = time.perf_counter()
                excess = self.busy_until - now - self.queue_s
                if excess <= 0:
                    self.busy_until = max(now, self.busy_until) + seconds
                    return
            time.sleep(excess)

    def wait(self) -> None:  # as a copy back waits for the whole stream, other threads' work too
        time.sleep(max(0.0, self.busy_until - time.perf_counter()))


def simulated_encoder(model_path: str, processes: int, device: SimulatedDevice):
    """The real encoder (tokenizer, windows, stream) with ``device`` in place of the model, which
    runs ``tokens_per_s`` padded tokens a second (set it before a run)."""
    from curation.classifiers.encoder import SentenceEncoder

    class SimulatedEncoder(SentenceEncoder):
        tokens_per_s = 1.0

        def _new_output(self, documents: int) -> np.ndarray:
            return np.zeros((documents, self.model.config.hidden_size), dtype=np.float32)

        def _launch(self, vectors, rows, ids, lengths) -> None:
            device.launch(ids.size / self.tokens_per_s)

        def _collect(self, vectors) -> np.ndarray:
            device.wait()
            return vectors

    return SimulatedEncoder(model_path, 256, tokenizer_processes=processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lists", type=int, default=4, help="record batches")
    parser.add_argument("--list-docs", type=int, default=2048, help="documents per record batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-lists", type=int, default=2, help="record batches per shard (the shard rows)")
    parser.add_argument("--processes", type=int, default=None, help="tokenizer processes (default: CPUs but one)")
    args = parser.parse_args()

    from curation.classifiers.encoder import _ragged_in_process, available_cpus
    from curation.classifiers.models import default_embedding_model
    from gpu_check import documents

    processes = args.processes or max(1, available_cpus() - 1)
    texts = documents(args.lists * args.list_docs, seed=4)
    lists = [texts[i : i + args.list_docs] for i in range(0, len(texts), args.list_docs)]
    device = SimulatedDevice(queue_s=0.05)
    encoder = simulated_encoder(default_embedding_model(), processes, device)
    encoder.WINDOW_DOCS = min(encoder.WINDOW_DOCS, args.list_docs)  # windows per list as on a GPU with 8k batches

    # the two sides alone: the tokenizer processes over every chunk, and the padded tokens they make
    pool, _ = encoder._tokenizer_pool()
    window = encoder.window_size(args.list_docs)
    size = encoder.chunk_size(window)
    chunks = [t[i : i + size] for t in lists for i in range(0, len(t), size)]
    list(pool.map(_ragged_in_process, chunks[:processes]))  # warm-up
    tokenizer_s, _ = median_seconds(lambda: list(pool.map(_ragged_in_process, chunks)), args.repeats)
    padded = sum(ids.size for t in lists for w in range(0, len(t), window)
                 for _, ids, _ in encoder.batcher.batches(t[w : w + window]))
    print(f"{len(texts):,} documents in {len(lists)} lists of {args.list_docs:,}; {processes} tokenizer processes: "
          f"{len(texts) / tokenizer_s:,.0f} docs/s alone; {padded:,} padded tokens")

    shards = [lists[i : i + args.shard_lists] for i in range(0, len(lists), args.shard_lists)]
    for model_speed in (1.0, 2.0, 0.5):  # the model alone, as a multiple of the tokenizer's rate
        model_s = tokenizer_s / model_speed
        tokens_per_s = padded / model_s
        encoder.tokens_per_s = tokens_per_s

        def streamed() -> None:
            for _ in encoder.embed_stream(lists):
                pass

        def per_call() -> None:
            for texts_of_list in lists:
                encoder.embed(texts_of_list, progress=False)

        def serial(rate: float = tokens_per_s) -> None:  # sentence-transformers' encode: batch by batch
            for texts_of_list in lists:
                for start in range(0, len(texts_of_list), 256):
                    for _, ids, _ in encoder.batcher.batches(texts_of_list[start : start + 256]):
                        device.launch(ids.size / rate)
                    device.wait()

        def shards_in_turn() -> None:  # one stream per shard, as an actor running one shard at a time
            for shard in shards:
                for _ in encoder.embed_stream(shard):
                    pass

        def shards_two_at_once() -> None:  # the GPU actor now: two shards' streams in threads
            with ThreadPoolExecutor(2) as threads:
                list(threads.map(lambda shard: list(encoder.embed_stream(shard)), shards))

        ideal = max(tokenizer_s, model_s)
        rows = []
        for name, run in (("embed_stream over the lists (the stage now)", streamed),
                          ("one embed call per list (the stage before)", per_call),
                          ("serial peer: tokenize a batch, run it, wait", serial),
                          (f"shards of {args.shard_lists} lists, a stream each, one after another", shards_in_turn),
                          (f"shards of {args.shard_lists} lists, two at once (the GPU actor now)", shards_two_at_once)):
            seconds, _ = median_seconds(run, args.repeats)
            rows.append((name, len(texts) / seconds, f"{ideal / seconds:.2f} of ideal"))
        rows.append(("ideal: the slower side alone", len(texts) / ideal, ""))
        rows.append(("no overlap: the two sides one after the other", len(texts) / (tokenizer_s + model_s), ""))
        print_table(f"model alone {model_speed:g}x the tokenizer's rate ({len(texts) / model_s:,.0f} docs/s)",
                    rows, "docs/s")
    encoder.close()


if __name__ == "__main__":
    main()
