#!/usr/bin/env bash
# Follows README.md's "In Rust, from scratch" as a new user would: writes the
# hello-sinew crate it shows (every `hello-sinew/...` code block, exactly) into
# a temporary directory beside a link to this checkout, builds it offline, runs
# it, and checks that it prints what the README says it prints.
#
#   scripts/getting-started.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ln -s "$root" "$work/sinew"

python3 - "$root/README.md" "$work" <<'PY'
import pathlib, re, sys
readme, work = pathlib.Path(sys.argv[1]).read_text(), pathlib.Path(sys.argv[2])
section = readme.split("### In Rust, from scratch", 1)[1].split("\n### ", 1)[0]
files = re.findall(r"^`(hello-sinew/[^`]+)`.*?\n```[a-z]*\n(.*?)^```", section, re.M | re.S)
expected = re.search(r"prints:\n+```text\n(.*?)^```", section, re.M | re.S)
if len(files) < 4 or not expected:
    sys.exit(f"README: expected the crate's files and its output, found {[f for f, _ in files]}")
for name, text in files:
    path = work / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {name}")
(work / "expected.txt").write_text(expected.group(1))
PY

cd "$work/hello-sinew"
# The checkout's target directory: the workspace's dependencies are built once.
export CARGO_TARGET_DIR="$root/target/getting-started"
# As the workspace's dev profile: no debug info for dependencies, a smaller disk.
export CARGO_PROFILE_DEV_DEBUG=false
cargo build --offline --quiet
timeout 60 cargo run --offline --quiet > "$work/actual.txt"
if ! diff -u "$work/expected.txt" "$work/actual.txt"; then
    echo "hello-sinew does not print what README.md says it prints" >&2
    exit 1
fi
echo "hello-sinew builds, runs and prints what README.md says"
