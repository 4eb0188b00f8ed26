#!/bin/sh
# Boots the shipped units under a real systemd 252 (in a rootful podman
# container, since systemd is not PID 1 on the build VM) and checks what the
# unit test cannot: the sandbox lets Node run, socket activation on 443 without
# a capability, READY=1 (systemctl start returns), reload, and a graceful stop.
# Manual: the Debian rootfs takes ~200 s and network; not for CI.
# Usage: sh scripts/systemd-boot-check.sh [repo dir]   (run as root; dist/ built)
set -eu
REPO=$(cd "${1:-.}" && pwd)
W=$(mktemp -d)
NAME=nasguard-sdboot-$$
PODMAN="podman --runtime runc"
ULIMITS="--ulimit nofile=20000:20000 --ulimit nproc=32768:32768"
cleanup () { $PODMAN rm -f "$NAME" >/dev/null 2>&1 || true; [ -f "$W/nas.pid" ] && kill "$(cat "$W/nas.pid")" 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
if ! $PODMAN image exists localhost/nasguard-sdboot:base; then
  mmdebstrap --variant=minbase --include=systemd,systemd-sysv,libstdc++6 bookworm "$W/rootfs.tar"
  $PODMAN import "$W/rootfs.tar" localhost/nasguard-sdboot:base
fi
# The package as an admin installs it: npm pack, npm install -g (prefix /usr).
(cd "$REPO" && npm pack --ignore-scripts --pack-destination "$W" --loglevel=error >/dev/null)
mkdir -p "$W/ctx/usr/bin" "$W/ctx/etc/nasguard"
npm install -g --prefix "$W/ctx/usr" --prefer-offline --no-audit --no-fund --loglevel=error "$W"/nasguard-*.tgz
cp "$(command -v node)" "$W/ctx/usr/bin/node"
cp "$REPO"/deploy/systemd/* "$W/ctx/"
# A throw-away CA and server certificate, and an HS256 secret.
node -e "
const { createCa, issueServerCert } = await import('$REPO/dist/tls/certificates.js')
const fs = await import('node:fs')
const ca = createCa('boot check CA'); const s = issueServerCert(ca, ['localhost', '127.0.0.1'])
fs.writeFileSync('$W/ca.crt', ca.certPem); fs.writeFileSync('$W/ctx/etc/nasguard/server.crt', s.certPem); fs.writeFileSync('$W/ctx/etc/nasguard/server.key', s.keyPem)
" --input-type=module
printf '%s' 'boot-check-secret-that-is-at-least-32-bytes' > "$W/ctx/etc/nasguard/jwt.secret"
cat > "$W/ctx/etc/nasguard/nasguard.yaml" <<YAML
listen: { host: 0.0.0.0, port: 8443 }
tls: { cert: server.crt, key: server.key }
upstream: { url: "http://127.0.0.1:18080" }
auth: { jwt: { secretFile: jwt.secret } }
policy: [{ name: r, path: /medicall/**, scopes: [recordings:read] }]
audit: { dir: /var/lib/nasguard/audit }
admin: { host: 127.0.0.1, port: 9464 }
workers: 2
YAML
cat > "$W/ctx/Containerfile" <<'CF'
FROM localhost/nasguard-sdboot:base
COPY usr/ /usr/
COPY nasguard.service nasguard.socket nasguard-admin.socket /etc/systemd/system/
COPY nasguard.sysusers /usr/lib/sysusers.d/nasguard.conf
COPY nasguard.tmpfiles /usr/lib/tmpfiles.d/nasguard.conf
COPY etc/nasguard/ /etc/nasguard/
RUN systemd-sysusers && systemd-tmpfiles --create nasguard.conf && chown -R root:nasguard /etc/nasguard && chmod 0640 /etc/nasguard/* && systemctl enable nasguard.socket nasguard-admin.socket
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
CF
$PODMAN build $ULIMITS -q -t localhost/nasguard-sdboot:test "$W/ctx" >/dev/null
# The NAS: a plain file server on the host's loopback.
mkdir -p "$W/nas/medicall/2016/01/01" && head -c 20000 /dev/urandom > "$W/nas/medicall/2016/01/01/call.wav"
(cd "$W/nas" && python3 -m http.server 18080 --bind 127.0.0.1 >/dev/null 2>&1 & echo $! > "$W/nas.pid")
# Host network: the unit's ListenStream=443 is the host's port 443.
$PODMAN run -d --name "$NAME" --network=host --systemd=always $ULIMITS localhost/nasguard-sdboot:test >/dev/null
for i in $(seq 60); do $PODMAN exec "$NAME" systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded' && break; sleep 1; done
$PODMAN exec "$NAME" systemctl start nasguard.service   # returns once READY=1 arrived (Type=notify)
$PODMAN exec "$NAME" systemctl status nasguard.service --no-pager | sed -n 1,12p
$PODMAN exec "$NAME" systemd-analyze security nasguard.service | tail -1
$PODMAN exec "$NAME" sh -c 'grep -E "^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/$(systemctl show -p MainPID --value nasguard)/status'
TOKEN=$(cd "$REPO" && node -e "console.log(require('fast-jwt').createSigner({ key: 'boot-check-secret-that-is-at-least-32-bytes', algorithm: 'HS256' })({ sub: 'alice', scope: 'recordings:read', exp: Math.floor(Date.now() / 1000) + 600 }))")
for v in --http1.1 --http2; do
  curl -sS $v --cacert "$W/ca.crt" --resolve localhost:443:127.0.0.1 -H "Authorization: Bearer $TOKEN" -o "$W/got.wav" -w "GET through systemd's socket: %{http_code} HTTP/%{http_version} %{size_download} bytes\n" https://localhost/medicall/2016/01/01/call.wav
  cmp "$W/got.wav" "$W/nas/medicall/2016/01/01/call.wav"
done
curl -sS http://127.0.0.1:9464/readyz; echo
$PODMAN exec "$NAME" systemctl reload nasguard.service && echo "reload: ok"
$PODMAN exec "$NAME" systemctl stop nasguard.service
$PODMAN exec "$NAME" systemctl show nasguard -p Result -p ExecMainStatus
