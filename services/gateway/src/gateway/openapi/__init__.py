"""The OpenAPI document of the gateway's HTTP API: `document` assembles it from the job
routes' operations (`jobs`), the event streams' (`events`) and their common parts (`parts`)."""

from .document import component_schemas, openapi_document

__all__ = ["component_schemas", "openapi_document"]
