#!/usr/bin/env bash
# Builds dist/opsicle (one file, stripped) and dist/opsicle.sha256 from this checkout.
# PyInstaller builds the program folder; packaging/onefile.sh wraps it into the one file.
set -euo pipefail
cd "$(dirname "$0")/.."

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit-dirty"
fi
cat > src/entrypoints/_build.py <<PY
"""Written by packaging/build.sh."""

COMMIT = "$commit"
DATE = "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
PY
trap 'rm -f src/entrypoints/_build.py' EXIT

uv run --frozen pyinstaller packaging/opsicle.spec \
  --distpath build/folder --workpath build/pyinstaller --noconfirm --clean --log-level WARN

mkdir -p dist
name=$(packaging/onefile.sh build/folder/opsicle \
  "$(sed -n 's/^VERSION = "\(.*\)"$/\1/p' src/entrypoints/version.py)" dist/opsicle)
(cd dist && sha256sum opsicle > opsicle.sha256)
echo "built dist/opsicle ($(du -h dist/opsicle | cut -f1)), $name, commit $commit"
cat dist/opsicle.sha256
