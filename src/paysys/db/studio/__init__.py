"""`paysys db studio`: a small web GUI over every table, for ADMIN accounts only.

Policy (docs/development.md, "Database studio"):
- sign-in through `paysys.auth.service.check_credentials`: the API login's lockout (shared
  counts), timing and answers; only ADMIN accounts get a studio session;
- secret columns (password hashes, token hashes, secrets) are never selected, so never shown;
- every table is read-only except the ones in `tables.EDITABLE`, whose edits call the same
  domain function as the API (validation, audit event);
- every form carries a CSRF token bound to the session; the session cookie is HttpOnly,
  SameSite=Strict, and Secure unless the studio runs in development on a loopback address;
- with `ENV=production` it starts only when `STUDIO_ENABLED=true`.

Modules: `app` (the Starlette app, start-up checks), `auth` (session, CSRF, sign-in), `tables`
(what is shown and what may change), `views` (the pages), `templates/`.
"""

from paysys.db.studio.app import DEFAULT_PORT, StudioRefused, check_allowed, create_app

__all__ = ["DEFAULT_PORT", "StudioRefused", "check_allowed", "create_app"]
