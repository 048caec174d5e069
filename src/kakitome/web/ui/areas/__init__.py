"""The areas of the admin UI: each module here that defines ``AREA`` is mounted.

See ``kakitome.web.ui.nav`` for the contract. To add an area, add a module here and a
template folder ``web/templates/<area>/``; nothing else changes.
"""
