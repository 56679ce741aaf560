"""The OpenAPI document's own pieces: what it declares must be what the HTTP side sends (the
rest of the document is checked against the app in `test_http_app.py`)."""

import msgspec

from gateway.openapi import openapi_document
from jobs_proto import api
from jobs_proto.job_types import JOB_TYPES


def test_every_ideation_route_is_a_create_of_its_job_type() -> None:
    document = openapi_document({"/api/ideation/generate-titles": "title_generation"})
    operation = document["paths"]["/api/ideation/generate-titles"]["post"]
    assert operation["operationId"] == "createTitleGenerationJob"
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/TitleGenerationInput"}


def test_every_body_documents_the_names_it_has_on_the_wire() -> None:
    # Each component built from a msgspec Struct names exactly its fields' encoded names
    # (camelCase, as sent): `JobPage.nextCursor`, never `next_cursor`.
    schemas = openapi_document({})["components"]["schemas"]
    structs = {
        cls.__name__: cls
        for cls in (*vars(api).values(), *(t.input_type for t in JOB_TYPES.values()))
        if isinstance(cls, type) and issubclass(cls, msgspec.Struct)
    }
    # `CreateJob` is documented by `type` (one body per job type), checked below.
    documented = {
        name: schema for name, schema in schemas.items() if name in structs and name != "CreateJob"
    }
    assert {"JobPage", "JobView", "JobSummary", "JobToken", "Problem"} <= set(documented)
    for name, schema in documented.items():
        wire = {f.encode_name for f in msgspec.structs.fields(structs[name])}
        assert set(schema["properties"]) == wire, name
    assert "nextCursor" in schemas["JobPage"]["properties"]


def test_each_job_type_has_its_input_output_and_create_body_by_name() -> None:
    document = openapi_document({})
    schemas = document["components"]["schemas"]
    create = schemas["CreateJob"]
    assert create["discriminator"]["propertyName"] == "type"
    for job_type, spec in JOB_TYPES.items():
        stem = "".join(part.capitalize() for part in job_type.split("_"))
        body = schemas[f"{stem}Job"]
        assert body["properties"]["type"] == {"const": job_type}
        assert body["properties"]["input"] == {
            "$ref": f"#/components/schemas/{spec.input_type.__name__}"
        }
        assert schemas[f"{stem}Output"]["type"] == "string"
        assert create["discriminator"]["mapping"][job_type] == f"#/components/schemas/{stem}Job"
        assert document["x-job-types"][job_type]["output"] == {
            "$ref": f"#/components/schemas/{stem}Output"
        }
    request = document["paths"]["/api/jobs"]["post"]["requestBody"]
    assert request["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateJob"
    }


def test_operation_ids_are_camel_case_and_the_server_is_relative() -> None:
    document = openapi_document({"/api/ideation/generate-script": "script_generation"})
    assert document["servers"] == [{"url": "/"}]
    ids = {
        (path, method): operation["operationId"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert ids[("/api/jobs/{jobId}/token", "post")] == "createJobToken"
    assert ids[("/api/ideation/generate-script", "post")] == "createScriptGenerationJob"
    assert len(set(ids.values())) == len(ids)


def test_progress_events_are_documented_without_an_id() -> None:
    operation = openapi_document({})["paths"]["/api/jobs/{jobId}/events"]["get"]
    events = operation["responses"]["200"]["content"]["text/event-stream"]["schema"]["oneOf"]
    by_name = {e["properties"]["event"]["const"]: e["properties"] for e in events}
    assert "id" in by_name["status"]
    assert "id" not in by_name["progress"]
