# The local stack's settings, shared by scripts/stack-up.sh (which runs paytrack with
# them and writes .dev/stack.env) and the CLI's tests (which render stack.env with the
# same function, so a renamed key fails them). Sourced, not run.
#
# One naming scheme: every setting a paytrack program reads is PAYTRACK_<KEY>, the key
# being a line of shared/config.default.toml or one of the CLI's own (PAYTRACK_INGEST_URL,
# PAYTRACK_EDGE_URL, PAYTRACK_SIMULATOR_URL, PAYTRACK_TENANT, PAYTRACK_TOKEN). stack.env
# exports exactly those, so `source .dev/stack.env` then `paytrack …` works; the short
# names after them (INGEST_URL, DEV_TOKEN, …) are plain shell variables for curl
# examples, and no program reads them.
#
# Inputs (shell variables of the caller): nats_url database_url ingest_url edge_url
# simulator_url dev_tenant other_tenant jwt_issuer jwt_audience token other_token
# dashboard_url PAYTRACK_JWT_SECRET WEBHOOK_SECRET_STDWEBHOOKS WEBHOOK_SECRET_RAZORPAY
# WEBHOOK_SECRET_STRIPE OTHER_WEBHOOK_SECRET_STDWEBHOOKS PUSH_API_KEY SIMULATOR_TOKEN
# PAYTRACK_NATS_ADMIN_PASSWORD PAYTRACK_NATS_PROJECTOR_PASSWORD PAYTRACK_NATS_READER_PASSWORD.

# webhook_secrets_setting: PAYTRACK_WEBHOOK_SECRETS, the dev tenant's three providers
# and the second tenant's stdwebhooks endpoint.
webhook_secrets_setting() {
  printf '%s' "$dev_tenant/stdwebhooks=$WEBHOOK_SECRET_STDWEBHOOKS,$dev_tenant/razorpay=$WEBHOOK_SECRET_RAZORPAY"
  printf '%s' ",$dev_tenant/stripe=$WEBHOOK_SECRET_STRIPE,$other_tenant/stdwebhooks=$OTHER_WEBHOOK_SECRET_STDWEBHOOKS"
}

# gateway_urls_setting URL: `provider=URL` for every sandbox provider, the shape of both
# PAYTRACK_PROVIDER_URLS (ingest initiates payments there) and
# PAYTRACK_RECONCILER_STATUS_QUERY_URLS (the stuck-payment sweep asks there).
gateway_urls_setting() {
  printf 'stdwebhooks=%s,razorpay=%s,stripe=%s' "$1" "$1" "$1"
}

# env_line KEY VALUE: written bare when the value is safe as a shell assignment word (so
# naive KEY=value readers get it verbatim), single-quoted otherwise.
env_line() {
  local key="$1" value="$2"
  if [[ "$value" =~ ^[A-Za-z0-9_./:@%+=,?-]*$ ]]; then
    printf '%s=%s\n' "$key" "$value"
  else
    printf "%s='%s'\n" "$key" "${value//\'/\'\\\'\'}"
  fi
}

# The settings stack.env exports, in the order they are written.
stack_env_exported=(PAYTRACK_NATS_URL PAYTRACK_DATABASE_URL PAYTRACK_NATS_ADMIN_PASSWORD
  PAYTRACK_NATS_PROJECTOR_PASSWORD
  PAYTRACK_INGEST_URL PAYTRACK_EDGE_URL PAYTRACK_SIMULATOR_URL PAYTRACK_SIMULATOR_TOKEN
  PAYTRACK_TENANT PAYTRACK_TOKEN PAYTRACK_JWT_SECRET PAYTRACK_JWT_ISSUER PAYTRACK_JWT_AUDIENCE
  PAYTRACK_WEBHOOK_SECRETS)

# render_stack_env: prints .dev/stack.env.
render_stack_env() {
  echo "# paytrack's local stack, written by scripts/stack-up.sh: source .dev/stack.env"
  echo "# Settings every paytrack program reads (exported at the end of this file)."
  env_line PAYTRACK_NATS_URL "$nats_url"
  env_line PAYTRACK_DATABASE_URL "$database_url"
  env_line PAYTRACK_NATS_ADMIN_PASSWORD "$PAYTRACK_NATS_ADMIN_PASSWORD"
  # `paytrack rebuild` reads the streams as the projector's NATS user.
  env_line PAYTRACK_NATS_PROJECTOR_PASSWORD "$PAYTRACK_NATS_PROJECTOR_PASSWORD"
  env_line PAYTRACK_INGEST_URL "$ingest_url"
  env_line PAYTRACK_EDGE_URL "$edge_url"
  env_line PAYTRACK_SIMULATOR_URL "$simulator_url"
  env_line PAYTRACK_SIMULATOR_TOKEN "$SIMULATOR_TOKEN"
  env_line PAYTRACK_TENANT "$dev_tenant"
  env_line PAYTRACK_TOKEN "$token"
  env_line PAYTRACK_JWT_SECRET "$PAYTRACK_JWT_SECRET"
  env_line PAYTRACK_JWT_ISSUER "$jwt_issuer"
  env_line PAYTRACK_JWT_AUDIENCE "$jwt_audience"
  env_line PAYTRACK_WEBHOOK_SECRETS "$(webhook_secrets_setting)"
  echo "# Shell shorthands for curl examples (not exported; no program reads them)."
  env_line NATS_URL "$nats_url"
  env_line NATS_ADMIN_USER admin
  env_line NATS_ADMIN_PASSWORD "$PAYTRACK_NATS_ADMIN_PASSWORD"
  env_line NATS_READER_USER reader
  env_line NATS_READER_PASSWORD "$PAYTRACK_NATS_READER_PASSWORD"
  # Readers of one tenant each (docs/readers.md): tenants dev and other.
  env_line NATS_DEV_READER_USER reader-dev
  env_line NATS_DEV_READER_PASSWORD "$PAYTRACK_NATS_READER_PASSWORD_dev"
  env_line NATS_OTHER_READER_USER reader-other
  env_line NATS_OTHER_READER_PASSWORD "$PAYTRACK_NATS_READER_PASSWORD_other"
  env_line DATABASE_URL "$database_url"
  env_line INGEST_URL "$ingest_url"
  env_line EDGE_URL "$edge_url"
  env_line SIMULATOR_URL "$simulator_url"
  env_line SIMULATOR_TOKEN "$SIMULATOR_TOKEN"
  env_line DEV_TENANT "$dev_tenant"
  env_line JWT_ALG HS256
  env_line JWT_SECRET "$PAYTRACK_JWT_SECRET"
  env_line JWT_ISSUER "$jwt_issuer"
  env_line JWT_AUDIENCE "$jwt_audience"
  env_line WEBHOOK_SECRET_STDWEBHOOKS "$WEBHOOK_SECRET_STDWEBHOOKS"
  env_line WEBHOOK_SECRET_RAZORPAY "$WEBHOOK_SECRET_RAZORPAY"
  env_line WEBHOOK_SECRET_STRIPE "$WEBHOOK_SECRET_STRIPE"
  env_line PUSH_API_KEY "$PUSH_API_KEY"
  env_line DASHBOARD_URL "$dashboard_url"
  env_line DEV_TOKEN "$token"
  env_line OTHER_TENANT "$other_tenant"
  env_line OTHER_WEBHOOK_SECRET_STDWEBHOOKS "$OTHER_WEBHOOK_SECRET_STDWEBHOOKS"
  env_line OTHER_TOKEN "$other_token"
  echo "export ${stack_env_exported[*]}"
}
