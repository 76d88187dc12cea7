#!/usr/bin/env bash
# `bentoml containerize` with the arguments given, run from a scratch directory.
#
# The Bento carries its own Dockerfile template (deploy/Dockerfile.template: a lean image).
# BentoML 1.4.36 to 1.4.40 refuses that template at containerize time unless the temporary
# build context lies under the current directory (bentoml/BentoML#5566; fixes proposed in
# #5596 and #5673, not released): running from a scratch TMPDIR satisfies that check.
#
#   scripts/containerize.sh recsys:latest                                            # Docker
#   scripts/containerize.sh --backend buildah --opt isolation=chroot recsys:latest -t recsys:local
set -euo pipefail
BENTOML=${BENTOML:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/bentoml}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
TMPDIR="$scratch" "$BENTOML" containerize "$@"
