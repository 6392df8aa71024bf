"""Views, one module per screen family; each is thin: access check, form, one
selector or service call, render. Access checks live in `access.py`."""
