"""User accounts, shared by the auth service (register, password change, logout everywhere) and
the admin service (create, update, role, status, delete): the `users` table (`models`) and the
one code path for policy, hashing, revocation and events (`accounts`)."""
