#!/usr/bin/env bash
# Build the CPU image and check it answers, on a machine that reaches no container
# registry (ponder's development machines): the base image is made here from Debian's
# own packages (mmdebstrap), imported into the local image store, and the usual
# docker/Dockerfile.cpu is built on it with BASE pointing there. Everyone else builds
# the Dockerfile as it is (FROM python:3.11-slim).
#
#   sudo docker/build-local.sh            # build, run, check /ready and one request
#   KEEP=1 sudo docker/build-local.sh     # leave the container running
#
# Daemonless: buildah and podman with the vfs storage driver (no overlay mounts are
# needed), chroot isolation for the build steps and the host's network. The build
# steps see this machine's pip configuration, CA bundle and wheel folders read-only, so pip
# installs what `make install` installs here (torch 2.13.0+cpu from /opt/wheels).
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${SUITE:-bookworm}
BASE=localhost/ponder-base:$SUITE
IMAGE=${IMAGE:-localhost/ponder:cpu}
PORT=${PORT:-8123}
WORK=${WORK:-/var/tmp/ponder-image}
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
PODMAN=(podman --storage-driver vfs --cgroup-manager cgroupfs --events-backend file)

need=()
for tool in buildah podman mmdebstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
    apt-get install -y --no-install-recommends "${need[@]}" uidmap
fi
mkdir -p "$WORK"

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

if ! "${PODMAN[@]}" image exists "$BASE"; then
    step "base image: Debian $SUITE with CPython 3.11 from Debian's packages"
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        --aptopt='APT::Install-Recommends "false"' "$SUITE" "$WORK/base.tar"
    "${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$WORK/base.tar" "$BASE"
    rm -f "$WORK/base.tar"
fi

step "build $IMAGE (docker/Dockerfile.cpu, BASE=$BASE)"
mounts=()
for path in /etc/pip.conf /etc/xdg/pip /etc/ssl/certs/ca-certificates.crt /opt/wheels /opt/pypi /opt/pypi-more; do
    [[ -e $path ]] && mounts+=(--volume "$path:$path:ro")
done
start=$(date +%s)
buildah --storage-driver vfs bud --pull=never --network host --layers --build-arg BASE="$BASE" "${mounts[@]}" \
    -f docker/Dockerfile.cpu -t "$IMAGE" .
echo "built in $(($(date +%s) - start)) s"
"${PODMAN[@]}" image inspect "$IMAGE" --format 'size {{.Size}} bytes, user {{.User}}'
"${PODMAN[@]}" history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | head -12

step "run it: /ready, then one request"
name=ponder-image-check
"${PODMAN[@]}" rm -f "$name" >/dev/null 2>&1 || true
"${PODMAN[@]}" volume create ponder-cache >/dev/null 2>&1 || true
"${PODMAN[@]}" run -d --name "$name" --network host -v ponder-cache:/home/ponder/.cache \
    -e VLLM_CPU_KVCACHE_SPACE=1 "$IMAGE" --port "$PORT" >/dev/null
cleanup() { [[ ${KEEP:-} == 1 ]] || "${PODMAN[@]}" rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
start=$(date +%s)
until curl -fsS "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1; do
    if [[ $("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$name") != true ]]; then
        "${PODMAN[@]}" logs "$name" | tail -40
        echo "the container exited before it was ready" >&2
        exit 1
    fi
    if (($(date +%s) - start > 900)); then
        "${PODMAN[@]}" logs "$name" | tail -40
        echo "not ready after 900 s" >&2
        exit 1
    fi
    sleep 5
done
echo "ready after $(($(date +%s) - start)) s"
curl -fsS "http://127.0.0.1:$PORT/v1/chat/completions" -H 'content-type: application/json' -d '{
  "model": "SmolLM2-135M-Instruct", "max_tokens": 16,
  "messages": [{"role": "user", "content": "What is the capital of France?"}]}'
echo
"${PODMAN[@]}" exec "$name" id
