#!/usr/bin/env bash
# Opens the reference pages `make docs` built (_build/edoc) in a real
# browser, headless Chromium: every module's page must render with its
# title and one entry per exported function; the overview must render and
# each of its links to the guides must name a file that exists.  Leaves
# screenshots of the overview and of the py module's page in
# _build/edoc/screenshots/ (to look at).  Exits 1 on any problem.
set -euo pipefail
cd "$(dirname "$0")/.."
DOCS=_build/edoc
CHROMIUM=${CHROMIUM:-chromium}
command -v "$CHROMIUM" >/dev/null || { echo "docs-check: no $CHROMIUM (apt-get install chromium)"; exit 1; }
[ -f "$DOCS/index.html" ] || { echo "docs-check: no $DOCS/index.html (make docs)"; exit 1; }
browse() { # browse ARGS... URL: chromium's output, its noise on stderr dropped
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
              --user-data-dir="$PROFILE" "$@" 2>/dev/null
}
PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
fail=0
PUBLIC=$(escript scripts/check_docs.escript --public src)
for src in src/*.erl; do
  mod=$(basename "$src" .erl)
  page="$DOCS/$mod.html"
  [ -f "$page" ] || { echo "  $mod: no page"; fail=1; continue; }
  dom=$(browse --dump-dom "file://$PWD/$page")
  grep -q "<title>Module $mod</title>" <<<"$dom" || { echo "  $mod: page does not render its title"; fail=1; }
  # Every exported function the pages show has its entry (an anchor name-arity).
  for fa in $(awk -v m="$mod" '$1 == m {print $2}' <<<"$PUBLIC"); do
    grep -q "name=\"$fa\"" <<<"$dom" || { echo "  $mod: no entry for $fa"; fail=1; }
  done
done
dom=$(browse --dump-dom "file://$PWD/$DOCS/overview-summary.html")
grep -q "erlang_python reference" <<<"$dom" || { echo "  overview: does not render"; fail=1; }
links=$(grep -o 'href="\.\./\.\./docs/[^"#]*' <<<"$dom" | sed 's/^href="//' | sort -u)
[ -n "$links" ] || { echo "  overview: no links to the guides"; fail=1; }
for l in $links; do
  [ -f "$DOCS/$l" ] || { echo "  overview: broken link $l"; fail=1; }
done
mkdir -p "$DOCS/screenshots"
browse --window-size=1280,900 --screenshot="$PWD/$DOCS/screenshots/index.png" "file://$PWD/$DOCS/index.html" >/dev/null
browse --window-size=1280,1600 --screenshot="$PWD/$DOCS/screenshots/py.png" "file://$PWD/$DOCS/py.html" >/dev/null
for s in index py; do
  [ -s "$DOCS/screenshots/$s.png" ] || { echo "  no screenshot of $s"; fail=1; }
done
n=$(ls src/*.erl | wc -l)
if [ "$fail" = 0 ]; then
  echo "docs-check: $n module pages ($(wc -l <<<"$PUBLIC") functions) and the overview render in Chromium ($(wc -w <<<"$links") guide links resolve); screenshots in $DOCS/screenshots/"
else
  echo "docs-check: FAILED"; exit 1
fi
