#!/usr/bin/env sh
# Writes secrets.env for the local overlay with fresh random values (refuses to overwrite).
set -eu
cd "$(dirname "$0")"
if [ -e secrets.env ]; then
  echo "secrets.env exists; delete it first to regenerate" >&2
  exit 1
fi
gen() { python3 -c 'import secrets; print(secrets.token_urlsafe(48))'; }
pg=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
umask 077
{
  echo "POSTGRES_PASSWORD=$pg"
  echo "DATABASE_URL=postgresql://postgres:$pg@postgres:5432/paysys"
  echo "REDIS_URL=redis://redis:6379/0"
  echo "JWT_ACCESS_SECRET=$(gen)"
  echo "JWT_REFRESH_SECRET=$(gen)"
  echo "JWT_ACCESS_SECRET_PREVIOUS="
  echo "JWT_REFRESH_SECRET_PREVIOUS="
  echo "PSP_WEBHOOK_SECRET=$(gen)"
  echo "STUDIO_SESSION_SECRET=$(gen)"
} > secrets.env
echo "wrote $(pwd)/secrets.env"
