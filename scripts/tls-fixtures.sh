# Sourced by the interop scripts: certificates from `sinew certs` and two
# `sinew serve` processes on 127.0.0.1, for clients of other stacks to call
# over TLS. Needs $sinew, $work and the $pids array of the caller (whose
# cleanup stops the servers). Sets:
#   pki, other_pki  two CAs' directories: $pki has ca.crt, server.*, teller.*,
#                   intern.*, expired.*; $other_pki ca.crt and stranger.*
#   tls_port        a server with a certificate only
#   mtls_port       a server that requires client certificates from $pki's CA
#                   and denies ServerStreamingEcho to the intern
pki="$work/pki"
other_pki="$work/other-pki"
$sinew certs "$pki" --issue server=127.0.0.1,localhost \
  --issue teller=spiffe://example.org/ns/test/sa/teller \
  --issue intern=spiffe://example.org/ns/test/sa/intern \
  --issue-expired expired=spiffe://example.org/ns/test/sa/retired > /dev/null
$sinew certs "$other_pki" --issue stranger=spiffe://elsewhere.org/ns/test/sa/stranger > /dev/null
cat > "$pki/policy.toml" <<'TOML'
[[deny]]
principals = ["spiffe://example.org/ns/test/sa/intern"]
methods = ["/grpc.examples.echo.Echo/ServerStreamingEcho"]

[[allow]]
principals = ["spiffe://example.org/*"]
TOML
$sinew serve --listen tls://127.0.0.1:0 --tls-cert "$pki/server.crt" --tls-key "$pki/server.key" > "$work/serve-tls.log" 2>&1 &
pids+=($!)
$sinew serve --listen tls://127.0.0.1:0 --tls-cert "$pki/server.crt" --tls-key "$pki/server.key" \
  --client-ca "$pki/ca.crt" --policy "$pki/policy.toml" > "$work/serve-mtls.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q "listening on tls://" "$work/serve-tls.log" 2>/dev/null && grep -q "listening on tls://" "$work/serve-mtls.log" 2>/dev/null && break
  sleep 0.1
done
tls_port="$(grep -m1 -o 'listening on tls://127.0.0.1:[0-9]*' "$work/serve-tls.log" | sed 's/.*://')"
mtls_port="$(grep -m1 -o 'listening on tls://127.0.0.1:[0-9]*' "$work/serve-mtls.log" | sed 's/.*://')"
if [ -z "$tls_port" ] || [ -z "$mtls_port" ]; then
  echo "sinew serve over TLS did not start:"; cat "$work/serve-tls.log" "$work/serve-mtls.log"; exit 1
fi
