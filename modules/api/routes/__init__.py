"""The API's routes, one module per resource, each a `create_router(services)` without prefix or auth:
modules/api/api.py mounts them under their prefixes behind --api-auth."""
