"""The OpenAPI document's own pieces: what it declares must be what the HTTP side sends (the
rest of the document is checked against the app in `test_http_app.py`)."""

from gateway.openapi import openapi_document


def test_every_ideation_route_is_a_create_of_its_job_type() -> None:
    document = openapi_document({"/api/ideation/generate-titles": "title_generation"})
    operation = document["paths"]["/api/ideation/generate-titles"]["post"]
    assert operation["operationId"] == "createTitleGenerationJob"
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/TitleGenerationInput"}
