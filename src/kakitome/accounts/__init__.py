"""Accounts of the admin web UI: users and roles, sessions, login lock-outs, and the
storage behind them (``kakitome.accounts.store.WebStore``; also message search and the
dashboard's hourly roll-up, which the UI reads through the same store), and the API keys
(``kakitome.accounts.api_keys.ApiKeyStore``).
"""
