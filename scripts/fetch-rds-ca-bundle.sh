#!/usr/bin/env bash
# Downloads the Amazon RDS global CA bundle into the RdsCaBundleLayer directory
# (template.yaml), where the functions find it as /opt/rds-global-bundle.pem.
set -euo pipefail
cd "$(dirname "$0")/.."

url="https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"
target="layers/rds-ca-bundle/rds-global-bundle.pem"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT

curl --fail --silent --show-error --location --max-time 60 "$url" -o "$tmp"
count="$(grep -c -- '-----BEGIN CERTIFICATE-----' "$tmp" || true)"
if [ "${count:-0}" -eq 0 ]; then
    echo "fetch-rds-ca-bundle: $url holds no PEM certificate" >&2
    exit 1
fi
# Each certificate must parse.
if command -v openssl >/dev/null 2>&1; then
    openssl crl2pkcs7 -nocrl -certfile "$tmp" | openssl pkcs7 -print_certs -noout >/dev/null
fi
install -m 0644 "$tmp" "$target"
echo "fetch-rds-ca-bundle: $count certificates in $target"
