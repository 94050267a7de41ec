#!/bin/bash
# Conclusion: the grouped coder (a pass's symbols sorted by table, one constriction call
# per group, offsets and escape test over the whole pass) replaced the coder of commit
# 3eb821e: 22.1, 23.5 and 23.2 ns per coded symbol against 24.4, 24.7 and 25.5 in three
# rounds taking turns, faster in every round (float ladder q3 weights on Kodak;
# experiments/results/coder_ab.txt). Needs a git worktree of the older commit.
#
# Entropy-decoding speed of the codec at an earlier commit against this checkout's: the
# same shipped weights (this checkout's q3), the same machine, the two taking turns.
# Prints benchmarks.kodak's "ns per coded symbol" (median over the Kodak images) per run.
#
#   experiments/coder_ab.sh REV [ROUNDS]      (KODAK=DIR to point at the images)
set -euo pipefail
rev=${1:?usage: experiments/coder_ab.sh REV [ROUNDS]}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
git -C "$root" rev-parse -q --verify "$rev^{commit}" > /dev/null ||
  { echo "coder_ab.sh: $rev is not a commit of this repository" >&2; exit 2; }
kodak=${KODAK:-$root/../shared/data/kodak}
model=$root/fastlic/weights/q3.safetensors
old=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$old"' EXIT
git -C "$root" worktree add --detach -q "$old" "$rev"
echo "# old: $rev ($(git -C "$root" rev-parse --short "$rev")), new: $(git -C "$root" rev-parse --short HEAD) plus any uncommitted changes; model $model"
for r in $(seq "$rounds"); do
  for side in old new; do
    dir=$root
    [ "$side" = old ] && dir=$old
    ns=$(cd "$dir" && PYTHONPATH=. python -m benchmarks.kodak "$kodak" --model "$model" 2>/dev/null |
         sed -n 's/^entropy decoding: \([0-9.]*\) ns.*/\1/p')
    echo "round $r $side: $ns ns per coded symbol"
  done
done
