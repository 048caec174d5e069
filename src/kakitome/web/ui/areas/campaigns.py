"""placeholder"""
EN: dict[str, str] = {}
JA: dict[str, str] = {}
