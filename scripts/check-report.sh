#!/usr/bin/env bash
# Renders a run's report.html with headless Chromium and saves a screenshot beside it, to check
# that the page renders (charts, images) without a network. Needs the Debian package chromium.
#   ./scripts/check-report.sh runs/fmnist/train
set -euo pipefail
dir="${1:?usage: check-report.sh OUTPUT_DIR}"
report="$(cd "$dir" && pwd)/report.html"
[ -f "$report" ] || { echo "check-report: $report does not exist (run bamtool report $dir)" >&2; exit 1; }
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "check-report: chromium not found (apt-get install chromium)" >&2; exit 1; }
shot="$dir/report.png"
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,2400 \
  --screenshot="$shot" "file://$report" >/dev/null 2>&1
[ -s "$shot" ] || { echo "check-report: no screenshot was written" >&2; exit 1; }
echo "check-report: wrote $shot ($(stat -c %s "$shot") bytes)"
