#!/usr/bin/env bash
# The selection issue's grid on the shared corpus: every policy, budgets 5% and 10%, 5 seeds, for the
# math (GSM8K) and code (MBPP) references, replayed against one extraction table (no LLM calls), plus
# the ablation of the default's options against the paper's setting (10%, 3 seeds).
# Writes docs/results/<target>/ and docs/results/<target>-ablation/ (results.md, results.csv, results.json, *.png).
#   bash bench/selection_grid.sh            # TABLE=runs/table-heuristic by default
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${EQUAL_SHARED_DATA:-../shared/data}
TABLE=${TABLE:-runs/table-heuristic}
EQ=${EQUAL:-.venv/bin/equal}
$EQ extract-all --corpus "$DATA/corpus.jsonl" --out "$TABLE" -q
PAPER="align.warmup_fraction=0.5;align.warmup_sampling=random;bandit.prior=none;bandit.in_cluster=random;bandit.similarity=mean;bandit.docs_per_pull=10;bandit.alpha=0.02;extract.drop_rules=[]"
ABLATION="equal,avg-sim"
ABLATION+=",equal[$PAPER]"                                                       # the paper's setting
ABLATION+=",equal[$PAPER;bandit.prior=similarity]"                               # + zero-cost prior
ABLATION+=",equal[$PAPER;bandit.in_cluster=similarity]"                          # + in-cluster ranking
ABLATION+=",equal[$PAPER;align.warmup_fraction=0.1;align.warmup_sampling=targeted]"  # + small targeted warm-up
ABLATION+=",equal[bandit.prior_similarity=knn;align.warmup_similarity=knn;align.warmup_pool_factor=3]"  # the last default
ABLATION+=",equal[bandit.prior_similarity=knn]"                                  # the prior's line read on knn, not mean
ABLATION+=",equal[align.warmup_similarity=knn;align.warmup_pool_factor=3]"       # the last default's warm-up pool
ABLATION+=",equal[extract.drop_rules=[]]"                                        # every pair kept (the default before the rules were switched on)
ABLATION+=",equal[align.warmup_fraction=0]"                                      # no warm-up, no alignment (the default before)
ABLATION+=",equal[align.warmup_sampling=random]"                                 # a random warm-up instead of a targeted one
ABLATION+=",equal[align.mode=none]"                                              # the targeted warm-up without alignment
ABLATION+=",equal[align.warmup_fraction=0.1]"                                    # a 10% warm-up
ABLATION+=",equal[align.warmup_fraction=0.5]"                                    # a 50% warm-up (the paper's share)
ABLATION+=",equal[bandit.prior=similarity]"                                     # a prior fixed at the start
ABLATION+=",equal[bandit.docs_per_pull=10]"                                    # 10 documents per pull (the paper)
ABLATION+=",equal[bandit.similarity=mean]"                                       # in-cluster order by mean instead of kNN
ABLATION+=",equal[bandit.prior=none]"                                            # without the prior
ABLATION+=",equal[bandit.in_cluster=random]"                                     # without in-cluster ranking
ABLATION+=",equal[bandit.reward=marginal]"                                       # marginal-gain reward
ABLATION+=",equal[bandit.cost_aware=true]"                                       # reward per token
for target in ${TARGETS:-math code}; do
  $EQ compare --corpus "$DATA/corpus.jsonl" --reference "$DATA/reference_$target.jsonl" --table "$TABLE" \
    --policies all --budgets 0.05,0.1 --seeds 5 --label-field domain --target $target \
    --out docs/results/$target -q
  $EQ compare --corpus "$DATA/corpus.jsonl" --reference "$DATA/reference_$target.jsonl" --table "$TABLE" \
    --policies "$ABLATION" --budgets 0.1 --seeds 3 --label-field domain --target $target \
    --out docs/results/$target-ablation -q
done
