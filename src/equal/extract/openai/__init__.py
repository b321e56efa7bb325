"""The ``openai`` extractor: QA pairs from any OpenAI-compatible chat-completions endpoint.

One small unit per concern, composed by :class:`~.extractor.OpenAIExtractor`:

* :mod:`.prompt`: prompt templates (:func:`read_prompt`, :func:`render`) and token counting/cutting;
* :mod:`.parse`: lenient JSON parsing of the answer and validation of the pairs (:data:`PAIRS_SCHEMA`);
* :mod:`.rate`: token buckets and the Retry-After pause;
* :mod:`.transport`: requests, retries and backoff, the response_format dialect, the circuit breaker;
* :mod:`.spend`: token usage, cost (:func:`spend_cost`) and the hard spend caps;
* :mod:`.loop`: the private asyncio loop thread;
* :mod:`.extractor`: batches, de-duplication, the cache and refine.
"""

from .extractor import FORMAT_VERSION, OpenAIExtractor
from .parse import PAIRS_SCHEMA, parse_pairs, validate_pairs
from .prompt import read_prompt, render
from .spend import spend_cost

__all__ = ["FORMAT_VERSION", "OpenAIExtractor", "PAIRS_SCHEMA", "parse_pairs", "read_prompt", "render",
           "spend_cost", "validate_pairs"]
