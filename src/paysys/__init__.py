"""paysys: a payments platform backend (API gateway + auth, payments, admin, profile services)."""

__version__ = "0.1.0"

SERVICES = ("gateway", "auth", "payments", "admin", "profile")
