"""equal: extract instruction-tuning QA pairs only from the documents that matter.

EQUAL (Zhang et al., arXiv 2505.12250): warm-up extraction and contrastive
alignment, k-means clusters as bandit arms, UCB selection with an
optimal-transport reward against a reference set.

>>> from equal import Config, run
>>> result = run(Config(corpus="corpus.jsonl", reference="ref.jsonl", out="runs/x"))  # doctest: +SKIP
"""

from .version import __version__  # noqa: E402

from .config import Config, ConfigError  # noqa: E402
from .run import Pipeline, RunError, RunResult, run  # noqa: E402

__all__ = ["Config", "ConfigError", "Pipeline", "RunError", "RunResult", "run", "__version__"]
