"""Generate the JSON Schemas of the contract from the typed models.

    python -m edgepack.manifest.schema          # rewrite the shipped schema files
    python -m edgepack.manifest.schema --check  # exit 1 if they differ from the models

The files ship in the package beside this module (`manifest.schema.json`,
`device-result.schema.json`) so that anyone can validate a bundle without edgepack.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .jsonio import DEVICE_RESULT_SCHEMA, MANIFEST_SCHEMA
from .models import DeviceResult, Manifest

HERE = Path(__file__).resolve().parent
SCHEMA_FILES = {
    "manifest.schema.json": (Manifest, MANIFEST_SCHEMA, "edgepack bundle manifest (manifest.json)"),
    "device-result.schema.json": (DeviceResult, DEVICE_RESULT_SCHEMA,
                                  "edgepack device runner result (python -m edgepack.device verify --json)"),
}


def json_schema(model, schema_id: str, title: str) -> dict:
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schema_id, "title": title, **schema}


def render(name: str) -> str:
    model, schema_id, title = SCHEMA_FILES[name]
    return json.dumps(json_schema(model, schema_id, title), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stale = []
    for name in SCHEMA_FILES:
        text, path = render(name), HERE / name
        if "--check" in argv:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale: {', '.join(stale)} (run python -m edgepack.manifest.schema)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
