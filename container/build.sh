#!/usr/bin/env bash
# Builds the container image with buildah, without a daemon and without pulling anything, then
# smoke-runs it: `--version`, and a `run` on a mounted copy of the bundled sample (with a mounted
# config file) whose tables must equal those of the same run on the host.
#
#   container/build.sh [TAG]        (default tag: localhost/telemetry-hunt:<crate version>)
#
# Needs: buildah and musl-tools (Debian: apt-get install -y buildah musl-tools) and the Rust
# target (rustup target add x86_64-unknown-linux-musl). The binary is built here with cargo and
# handed to container/Dockerfile as its `prebuilt` stage, so only the final stage is built: the
# same instructions a registry build runs after its build stage.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tag=${1:-localhost/telemetry-hunt:$version}
storage=(--storage-driver vfs)

missing=()
command -v buildah >/dev/null || missing+=("buildah (apt-get install -y buildah)")
command -v musl-gcc >/dev/null || missing+=("musl-gcc (apt-get install -y musl-tools)")
rustup target list --installed | grep -qx "$target" || missing+=("the Rust target (rustup target add $target)")
if ((${#missing[@]})); then
  printf 'container/build.sh needs %s\n' "${missing[@]}" >&2
  exit 2
fi

echo "== static binary ($target)"
CARGO_PROFILE_RELEASE_STRIP=debuginfo cargo build --release --locked --target "$target"
binary=target/$target/release/telemetry-hunt
file "$binary" | grep -Eq 'static-pie linked|statically linked' || { file "$binary" >&2; echo "not a static binary" >&2; exit 1; }

work=$(mktemp -d)
ctr=""
cleanup() {
  [[ -n $ctr ]] && buildah "${storage[@]}" rm "$ctr" >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

echo "== image $tag"
mkdir -p "$work/context/work" "$work/out" "$work/host-out"
cp "$binary" "$work/context/telemetry-hunt"
cp /etc/ssl/certs/ca-certificates.crt "$work/context/"
started=$(date +%s%N)
# --layers --force-rm: without them buildah 1.28 leaves the `FROM ${BINARY_STAGE}` stage behind as a container.
buildah "${storage[@]}" bud --quiet --isolation chroot --pull-never --layers --force-rm --build-arg BINARY_STAGE=prebuilt \
  -f container/Dockerfile -t "$tag" "$work/context" >/dev/null
build_ms=$((($(date +%s%N) - started) / 1000000))
config=$(buildah "${storage[@]}" inspect --type image --format '{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}} {{.OCIv1.Config.Cmd}}' "$tag")
[[ $config == "65532:65532 [/usr/local/bin/telemetry-hunt] [run]" ]] || { echo "unexpected image config: $config" >&2; exit 1; }

echo "== smoke run"
ctr=$(buildah "${storage[@]}" from --pull-never "$tag")
entrypoint=/usr/local/bin/telemetry-hunt
printed=$(buildah "${storage[@]}" run --isolation chroot "$ctr" -- "$entrypoint" --version)
[[ $printed == "telemetry-hunt $version" ]] || { echo "--version printed: $printed" >&2; exit 1; }
echo "$printed"

# The mounted config switches the match mode, so the run proves the file was read.
printf 'match_mode = "normalized"\n' >"$work/telemetry-hunt.toml"
chmod -R a+rwX "$work/out"
buildah "${storage[@]}" run --isolation chroot \
  -v "$PWD/fixtures/sample:/data:ro" -v "$work/telemetry-hunt.toml:/config/telemetry-hunt.toml:ro" -v "$work/out:/results" \
  --env TELEMETRY_HUNT_CONFIG=/config/telemetry-hunt.toml --env TELEMETRY_HUNT_INPUT=/data --env TELEMETRY_HUNT_OUT=/results \
  "$ctr" -- "$entrypoint" run --no-progress >"$work/summary.txt"
"$binary" run --no-progress --quiet --config "$work/telemetry-hunt.toml" --input fixtures/sample --out "$work/host-out" >/dev/null
for table in MdeTelemetryDaily MdeTelemetryHosts MdeTelemetryProcesses; do
  diff -r "$work/host-out/$table" "$work/out/$table" >/dev/null || { echo "$table differs from the host run" >&2; exit 1; }
done
grep -q '"MatchMode":"normalized"' "$work/out/MdeTelemetryDaily/day=2026-11-30/part-0.jsonl" || { echo "the mounted config was not applied" >&2; exit 1; }
days=$(find "$work/out/MdeTelemetryDaily" -name 'part-0.parquet' | wc -l)
owner=$(stat -c %u "$work/out/MdeTelemetryRuns")
[[ $owner == 65532 ]] || { echo "results written by uid $owner, not the image's non-root user" >&2; exit 1; }
echo "run on the mounted sample: $days days, tables equal to the host run, written by uid $owner"

image_bytes=$(buildah "${storage[@]}" images --format '{{.Size}}' "$tag")
echo "== $tag: image $image_bytes, binary $(du -h "$binary" | cut -f1), built in ${build_ms} ms"
