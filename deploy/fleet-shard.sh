#!/bin/sh
# One shard of a fleet run, for a Kubernetes Indexed Job or an ssh loop: runs shard $SHARD_INDEX of $SHARDS
# (SHARD_INDEX defaults to Kubernetes' JOB_COMPLETION_INDEX) and prints its --json after a marker line, so that
# the JSON can be cut out of logs that also hold stderr (kubectl logs mixes the two):
#   ... | awk 'seen; /^--- dialout shard json ---$/ {seen = 1}' > shard-I.json
# Exits as the shard does: 0 ok, 1 the shard failed, 2 usage/config/certificate error.
set -u
index="${SHARD_INDEX:-${JOB_COMPLETION_INDEX:?set SHARD_INDEX or JOB_COMPLETION_INDEX}}"
: "${SHARDS:?set SHARDS, the number of shards}"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
"${PYTHON:-python}" -m sim_switch --config "${CONFIG:-config.yaml}" --scenario "${SCENARIO:-fleet}" \
    --shard "$index/$SHARDS" --workers "${WORKERS:-1}" --json > "$out"
code=$?
echo "--- dialout shard json ---"
cat "$out"
exit "$code"
