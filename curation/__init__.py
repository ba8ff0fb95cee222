"""curation: staged Ray pipelines that turn raw web crawl into a DCLM-style pretraining mix.

One import namespace, ``curation.*``. The repository keeps ``tokenize/`` and ``classifiers/`` as
top-level folders (the layout the project was asked for); they are the subpackages ``curation.tokenize`` and
``curation.classifiers``. Installed, setuptools maps them in place. Run from a source checkout
(Ray's ``working_dir``, ``python -m`` from the repo root) the checkout root is added to this
package's search path below. Neither folder has a top-level ``__init__.py``, so the standard
library's ``tokenize`` is never shadowed.
"""

from pathlib import Path

__version__ = "0.1.0"

_CHECKOUT_ROOT = Path(__file__).resolve().parent.parent
if (_CHECKOUT_ROOT / "tokenize" / "shards.py").is_file() and str(_CHECKOUT_ROOT) not in __path__:
    __path__.append(str(_CHECKOUT_ROOT))
