"""Close the loop: fine-tune a model on a run's pairs (``equal train``) and score it (``equal eval``).

Needs the ``train`` extra (``pip install 'equal[train]'``: TRL, peft, gguf); nothing here is imported by the
core pipeline, and every heavy import is made inside the function that needs it.

* :mod:`equal.tune.models`: load a base model (Hugging Face folder or name, or a ``.gguf`` file), a trained
  adapter folder, the device and dtype choice.
* :mod:`equal.tune.train`: the run's ``messages`` data, the split, TRL ``SFTTrainer`` + LoRA, ``train_log.jsonl``.
* :mod:`equal.tune.bench_eval`: benchmarks (GSM8K-style exact match, code pass@1), batched greedy generators.
* :mod:`equal.tune.coderun`: run a program in a subprocess with a time limit and no network.
"""
