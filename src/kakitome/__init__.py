"""Kakitome: self-hostable email delivery that proves, per message, how it travelled."""

__version__ = "0.1.0"
