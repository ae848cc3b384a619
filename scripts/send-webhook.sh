#!/usr/bin/env bash
# Sends one signed provider webhook to the local stack's ingest service.
#
# Why this exists: to move a payment through its statuses by hand (demos, debugging the
# reconciler, checking what the dashboard shows) without a real provider. It builds an
# event in paytrack's generic `stdwebhooks` format and signs it exactly as the Standard
# Webhooks spec says, with the dev tenant's secret from .dev/stack.env (run
# scripts/stack-up.sh first).
#
# Usage: scripts/send-webhook.sh <payment_id> <status> [merchant_id]
#   status: pending | held | succeeded | failed | cancelled | returned
#   merchant_id defaults to m_demo
# Prints the HTTP status and the response body; exits non-zero unless the answer is 2xx.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
stack_env="$repo/.dev/stack.env"

die() { printf 'send-webhook: error: %s\n' "$*" >&2; exit 1; }

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 <payment_id> <status> [merchant_id]" >&2
  exit 2
fi
payment_id="$1"
status="$2"
merchant_id="${3:-m_demo}"

# The values go into JSON unescaped, so keep them to identifier characters.
for value in "$payment_id" "$status" "$merchant_id"; do
  [[ "$value" =~ ^[A-Za-z0-9_.:-]+$ ]] || die "'$value' has characters other than [A-Za-z0-9_.:-]"
done
case "$status" in
  pending | held | succeeded | failed | cancelled | returned) ;;
  *) printf 'send-webhook: warning: %s is not a known provider status; sending anyway\n' "$status" >&2 ;;
esac

[[ -r "$stack_env" ]] || die "$stack_env not found; start the stack with scripts/stack-up.sh"
# shellcheck source=/dev/null
source "$stack_env"
: "${INGEST_URL:?missing in stack.env}" "${DEV_TENANT:?missing in stack.env}"
: "${WEBHOOK_SECRET_STDWEBHOOKS:?missing in stack.env}"

# One instant for both the header and the body.
timestamp="$(date -u +%s)"
rfc3339="$(date -u -d "@$timestamp" +%Y-%m-%dT%H:%M:%SZ)"
msg_id="msg_$(openssl rand -hex 12)"
provider_ref="prov_$(openssl rand -hex 8)"

body="$(printf '{"type":"payment.%s","timestamp":"%s","data":{"payment_id":"%s","provider_ref":"%s","amount_minor":1250,"currency":"USD","merchant_id":"%s"}}' \
  "$status" "$rfc3339" "$payment_id" "$provider_ref" "$merchant_id")"

# Standard Webhooks: the key is the base64 part of the whsec_ secret, the signed content
# is "<msg_id>.<timestamp>.<body>", the signature is base64(HMAC-SHA256(key, content)).
secret="${WEBHOOK_SECRET_STDWEBHOOKS#whsec_}"
key_hex="$(printf '%s' "$secret" | base64 -d | od -An -v -tx1 | tr -d ' \n')"
[[ -n "$key_hex" ]] || die "WEBHOOK_SECRET_STDWEBHOOKS is not base64 after whsec_"
signature="$(printf '%s.%s.%s' "$msg_id" "$timestamp" "$body" \
  | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key_hex" -binary | base64 -w 0)"

url="$INGEST_URL/v1/webhooks/$DEV_TENANT/stdwebhooks"
response="$(mktemp)"
trap 'rm -f "$response"' EXIT

code="$(printf '%s' "$body" | curl -sS -o "$response" -w '%{http_code}' -X POST \
  -H 'content-type: application/json' \
  -H "webhook-id: $msg_id" \
  -H "webhook-timestamp: $timestamp" \
  -H "webhook-signature: v1,$signature" \
  --data-binary @- "$url")" || die "could not reach $url"

echo "POST $url -> HTTP $code"
cat "$response"
# End with a newline whether or not the body had one.
[[ ! -s "$response" || "$(tail -c 1 "$response")" == "" ]] || echo
[[ "$code" == 2?? ]]
