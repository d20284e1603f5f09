#!/usr/bin/env bash
# Fetch the web assets the server ships (Swagger UI, ReDoc, and for the web UI uPlot for its
# charts, marked and DOMPurify for notes in markdown)
# from npm at pinned versions into api/static/vendor/, and check them against
# api/static/vendor/SHA256SUMS.
# The files are committed, so installing the package never needs Node or the network; this
# script only reproduces (or, with --update, upgrades) them. Needs `npm`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=api/static/vendor
# package@version  file-in-package  name-in-vendor-dir
assets=(
  "swagger-ui-dist@5.35.0 swagger-ui-bundle.js swagger-ui-bundle.js"
  "swagger-ui-dist@5.35.0 swagger-ui.css swagger-ui.css"
  "swagger-ui-dist@5.35.0 favicon-32x32.png favicon-32x32.png"
  "swagger-ui-dist@5.35.0 LICENSE swagger-ui.LICENSE"
  "redoc@3.0.1 bundles/redoc.standalone.js redoc.standalone.js"
  "redoc@3.0.1 LICENSE redoc.LICENSE"
  "uplot@1.6.32 dist/uPlot.iife.min.js uPlot.iife.min.js"
  "uplot@1.6.32 dist/uPlot.min.css uPlot.min.css"
  "uplot@1.6.32 LICENSE uPlot.LICENSE"
  "marked@18.3.0 lib/marked.esm.js marked.esm.js"
  "marked@18.3.0 LICENSE marked.LICENSE"
  "dompurify@3.5.0 dist/purify.es.mjs purify.es.js"
  "dompurify@3.5.0 LICENSE dompurify.LICENSE"
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
for line in "${assets[@]}"; do
  read -r package file name <<<"$line"
  dir="$work/${package//[@\/]/_}"
  if [[ ! -d "$dir" ]]; then
    mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "$package" >/dev/null && tar xzf ./*.tgz)
  fi
  cp "$dir/package/$file" "$out/$name"
done
if [[ "${1:-}" == "--update" ]]; then
  (cd "$out" && sha256sum -- *.js *.css *.png *.LICENSE > SHA256SUMS)
fi
(cd "$out" && sha256sum --check --quiet SHA256SUMS)
echo "web assets in $out match SHA256SUMS"
